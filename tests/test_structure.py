"""The package's shape, checked from its source: no import cycles, one owner of the run files, small modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "headstart"
LONG_MODULE = 400  # lines; a longer module says why in its docstring ("Why this module is long: ...")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, modules: dict[str, Path], here: str, is_package: bool) -> set[str]:
    """Every headstart module ``here`` imports, at module level or inside functions, outside ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "headstart":
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = here.split(".") if is_package else here.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] == "headstart":
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    # Importing headstart.a.b from outside headstart.a runs headstart/a/__init__.py first: the package
    # is imported too (a sibling inside the package finds it already initialising, so no edge there).
    found |= {pkg for m in found for pkg in (".".join(m.split(".")[:i]) for i in range(2, m.count(".") + 1)) if not (here + ".").startswith(pkg + ".")}
    return {m for m in found if m in modules and m != here}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(ast.parse(path.read_text(encoding="utf-8")), modules, name, path.name == "__init__.py") for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_imports_inside_functions() -> None:
    modules = {"headstart.x": Path(), "headstart.y": Path(), "headstart.z": Path()}
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import headstart.z\ndef f():\n    from headstart.y import thing\n")
    assert _imports(tree, modules, "headstart.x", False) == {"headstart.y"}


def test_importing_a_submodule_imports_its_package() -> None:
    modules = {"headstart.p": Path(), "headstart.p.m": Path(), "headstart.p.n": Path(), "headstart.x": Path()}
    assert _imports(ast.parse("from headstart.p.m import thing"), modules, "headstart.x", False) == {"headstart.p", "headstart.p.m"}
    assert _imports(ast.parse("from headstart.p.m import thing"), modules, "headstart.p.n", False) == {"headstart.p.m"}


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles (counting imports inside functions): " + "; ".join(" <-> ".join(c) for c in found)


def test_run_file_names_are_spelled_in_one_module() -> None:
    """rundir.py owns the run directory's format; every other module asks it for the names."""
    from headstart import rundir

    names = [v for k, v in vars(rundir).items() if k.endswith("_NAME") and isinstance(v, str)]
    assert "metrics.json" in names and "config.json" in names
    spelled = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "rundir.py":
            continue
        text = path.read_text(encoding="utf-8")
        hits = [n for n in names if re.search(rf"[\"']{re.escape(n)}[\"']", text)]
        if hits:
            spelled[str(path.relative_to(PACKAGE))] = hits
    assert not spelled, f"run file names spelled outside headstart/rundir.py: {spelled}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_are_short_or_say_why(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if lines <= LONG_MODULE:
        return
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert "Why this module is long:" in docstring, f"{path.relative_to(PACKAGE)} has {lines} lines; split it or say why in its docstring"
