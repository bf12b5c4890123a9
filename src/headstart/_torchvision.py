"""Make ``import torchvision`` (and therefore ``import timm``) work beside a CPU-only torch.

Why this exists
---------------
PyPI's ``torchvision`` wheel is a CUDA build. Installed beside a CPU build of torch its compiled
extension (``torchvision/_C.so``) fails to load. torchvision tolerates that for most of its ops,
but ``torchvision/_meta_registrations.py`` registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` unconditionally, and ``torch.library.register_fake`` raises
``RuntimeError: operator torchvision::nms does not exist``. That aborts ``import torchvision``,
and timm imports torchvision, so every timm model becomes unusable.

What we do
----------
We first import torchvision normally. Only if that fails with exactly this error do we declare the
two operator *schemas* (no kernels) and import again. Everything pure-Python in torchvision
(transforms, model definitions) then works; calling ``torchvision.ops.nms`` still raises
torchvision's own "Couldn't load custom C++ ops" error, which is the truth on such a machine.
Where torchvision loads normally nothing here runs, so a correct install is left untouched.

This is the only place in headstart that knows about the problem. ``import headstart`` does not
import torch (the CLI's ``--help`` must stay fast); it installs :func:`install_import_hook`, a finder
that runs :func:`import_torchvision` the first time anything imports torchvision, whether headstart,
timm, transformers or the user's own code after ``import headstart``.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

# Schemas of the operators torchvision's meta registrations refer to without checking that its
# compiled extension loaded (torchvision/csrc/ops/nms.cpp and quantized/cpu/qnms_kernel.cpp).
_UNGUARDED_OPS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

#: Set to True when the workaround had to be applied (reported by ``headstart env``/tests).
patched: bool = False


def _is_missing_op_error(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and "operator torchvision::" in str(error) and "does not exist" in str(error)


def _forget_torchvision() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def import_torchvision() -> ModuleType:
    """Import torchvision, declaring its unguarded operator schemas only if the plain import fails."""
    global patched
    import torch

    try:
        import torchvision
    except RuntimeError as error:
        if not _is_missing_op_error(error):
            raise
        _forget_torchvision()
        for op, schema in _UNGUARDED_OPS.items():
            with contextlib.suppress(RuntimeError):  # already declared by an earlier call
                torch.library.define(f"torchvision::{op}", schema)
        import torchvision

        patched = True
    return torchvision


class _Imported(importlib.abc.Loader):
    """Hands the import system a module that :func:`import_torchvision` has already imported."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self.module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was executed by its own loader."""


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    """Runs :func:`import_torchvision` for the first ``import torchvision``, then leaves the import system."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "torchvision":
            return None
        uninstall_import_hook()  # the import inside import_torchvision goes through the ordinary finders
        return importlib.util.spec_from_loader(fullname, _Imported(import_torchvision()))


def install_import_hook() -> None:
    """Apply the workaround lazily: at the first ``import torchvision``, not at ``import headstart``."""
    if "torchvision" not in sys.modules and not any(isinstance(f, _TorchvisionHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionHook())


def uninstall_import_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionHook)]
