"""Paths, names and archives: nothing the page sends may reach outside the allowed folders.

Every folder the page names is resolved (symbolic links too) and refused unless it lies inside an
allowed one; an uploaded zip is checked entry by entry before anything is written, and the bytes are
counted again while unpacking. Uploaded images and audio are checked one by one and a file that does
not open is refused.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headstart.data import FILE_KINDS, IMAGE_EXTENSIONS, TABLE_EXTENSIONS, check_file

if TYPE_CHECKING:
    from fastapi import UploadFile

MAX_UNPACKED = 2 * 1024**3  # bytes an uploaded zip may unpack to (``--max-upload-mb``)
MAX_MEMBERS = 100_000  # entries in one zip
_NAME = re.compile(r"[^\w.\- ]+")


def inside(path: str | Path, allowed: Sequence[Path], *, base: Path | None = None) -> Path:
    """``path`` resolved (``~``, ``..`` and symbolic links), or ``PermissionError`` unless it lies inside one of ``allowed``.

    A relative ``path`` is taken relative to ``base`` (default the first allowed folder).
    """
    given = Path(str(path).strip()).expanduser()
    if not given.is_absolute():
        given = (base or allowed[0]) / given
    resolved = given.resolve()
    if not any(resolved.is_relative_to(root.resolve()) for root in allowed):
        roots = ", ".join(str(r) for r in allowed)
        raise PermissionError(f"{path}: outside the folders this page may read ({roots}); restart with `headstart ui --allow FOLDER` to add one")
    if not resolved.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return resolved


def safe_name(text: str, what: str) -> str:
    """A file or folder name made from user text: no separators, no leading dot, at most 80 characters."""
    name = _NAME.sub("_", Path(str(text).replace("\\", "/")).name).strip(" .")[:80]
    if not name:
        raise ValueError(f"{what} {text!r} is empty once unsafe characters are removed; use letters, digits, '-', '_' or '.'")
    return name


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def check_zip(archive: zipfile.ZipFile, *, label: str, max_unpacked: int = MAX_UNPACKED) -> list[zipfile.ZipInfo]:
    """The entries of ``archive`` worth unpacking, after refusing the whole archive if any entry is unsafe.

    Refused: absolute names (``/x``, ``C:x``), names with a ``..`` part, symbolic links, more than
    :data:`MAX_MEMBERS` entries, or a declared unpacked size above ``max_unpacked`` (zip bombs).
    macOS ``__MACOSX/`` resource forks and hidden files are left out.
    """
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ValueError(f"{label}: {len(infos):,} entries, more than {MAX_MEMBERS:,}; split the archive")
    total = 0
    kept = []
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
            raise ValueError(f"{label}: entry {info.filename!r} has an absolute path; refused, nothing was unpacked")
        if ".." in parts:
            raise ValueError(f"{label}: entry {info.filename!r} points outside the folder it would be unpacked into ('..'); refused, nothing was unpacked")
        if _is_symlink(info):
            raise ValueError(f"{label}: entry {info.filename!r} is a symbolic link; refused, nothing was unpacked")
        total += info.file_size
        if total > max_unpacked:
            raise ValueError(f"{label}: unpacks to more than {_size(max_unpacked)} (a zip bomb, or a dataset too big for an upload); refused, nothing was unpacked; "
                             "pass the folder instead, or restart with a larger --max-upload-mb")  # fmt: skip
        if info.is_dir() or not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
            continue
        kept.append(info)
    return kept


def extract_zip(archive: zipfile.ZipFile, target: Path, *, label: str, max_unpacked: int = MAX_UNPACKED) -> None:
    """Unpack the entries :func:`check_zip` accepts into ``target``, counting the bytes actually written."""
    entries = check_zip(archive, label=label, max_unpacked=max_unpacked)
    root = target.resolve()
    written = 0
    for info in entries:
        path = (root / info.filename.replace("\\", "/")).resolve()
        if not path.is_relative_to(root):  # check_zip refused this already; a second lock on the same door
            raise ValueError(f"{label}: entry {info.filename!r} escapes the target folder; refused")
        path.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as source, path.open("wb") as sink:
            while chunk := source.read(1 << 20):
                written += len(chunk)
                if written > max_unpacked:
                    raise ValueError(f"{label}: unpacks to more than {_size(max_unpacked)}; refused")
                sink.write(chunk)


def browse_folder(folder: Path, readable: list[Path]) -> dict[str, Any]:
    """The sub-folders and tables of ``folder`` the page may offer (links out of the allowed folders are left out)."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    entries = []
    for child in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
        if child.name.startswith(".") or not (child.is_dir() or child.suffix.lower() in TABLE_EXTENSIONS):
            continue
        try:
            target = inside(child, readable)
        except (PermissionError, FileNotFoundError):
            continue  # a link out of the allowed folders is not offered
        entries.append({"name": child.name, "path": str(target), "kind": "folder" if target.is_dir() else "table", "images": _images_in(target)})
    images = _images_in(folder)
    parent = folder.parent
    up = str(parent) if parent != folder and any(parent.is_relative_to(r) for r in readable) else None
    return {"path": str(folder), "parent": up, "entries": entries[:500], "images": images, "roots": [str(r) for r in readable]}


def save_examples(folder: Path, files: list[UploadFile], max_unpacked: int) -> dict[str, Any]:
    """Save uploaded images or audio into one class folder, refusing files that are not of a known kind or do not open."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds = {ext: kind for kind, (extensions, _) in FILE_KINDS.items() for ext in extensions}
    saved, refused, written = 0, [], 0
    for upload in files:
        name = safe_name(upload.filename or "image", "file name")
        kind = kinds.get(Path(name).suffix.lower())
        if kind is None:
            refused.append(f"{name} (not an image or audio file)")
            continue
        path = folder / name
        for n in range(1, 10_000):
            if not path.exists():
                break
            path = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
        with path.open("wb") as sink:
            while chunk := upload.file.read(1 << 20):
                written += len(chunk)
                if written > max_unpacked:
                    sink.close()
                    path.unlink()
                    raise ValueError(f"upload larger than {_size(max_unpacked)}; pass the folder instead")
                sink.write(chunk)
        problem = check_file(path, kind)
        if problem:
            path.unlink()
            refused.append(f"{name} ({problem})")
        else:
            saved += 1
    root = folder.parent
    counts = {c.name: sum(1 for f in c.iterdir() if f.is_file()) for c in sorted(root.iterdir()) if c.is_dir()}
    return {"path": str(root), "dataset": root.name, "class": folder.name, "saved": saved, "refused": refused, "classes": counts}


def _dataset_root(folder: Path) -> Path:
    """The folder itself, or its only sub-folder when a zip wrapped everything in one (``pets/cats``, ``pets/dogs``)."""
    children = [c for c in folder.iterdir() if not c.name.startswith(".")]
    return children[0] if len(children) == 1 and children[0].is_dir() and any(c.is_dir() for c in children[0].iterdir()) else folder


def _images_in(folder: Path, most: int = 10_000) -> int:
    """Image files directly inside ``folder`` (counting stops at ``most``): tells class folders apart in the folder list."""
    if not folder.is_dir():
        return 0
    found = 0
    for i, child in enumerate(folder.iterdir()):
        found += child.suffix.lower() in IMAGE_EXTENSIONS
        if i >= most:
            break
    return found


def _size(n: int) -> str:
    return f"{n / 1024**3:.1f} GB" if n >= 1024**3 else f"{n / 1024**2:.0f} MB"
