"""The registry of named backbones and :func:`create_backbone`, the one entry point (timm's ``create_model`` habit).

Embedded backbones register themselves (:mod:`headstart.backbones.embedded`); ``timm:ARCH``,
``hf:ID_OR_DIR`` and run directories are recognised by their form.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

from headstart.backbones.base import Backbone, BackboneSpec
from headstart.backbones.hf import _hf_backbone
from headstart.backbones.runs import backbone_from_config, check_run_config, is_run_dir, load_run_backbone
from headstart.backbones.timm import _timm_backbone
from headstart.rundir import ASSETS_DIR, CONFIG_NAME, read_run_config

_REGISTRY: dict[str, tuple[BackboneSpec, Callable[[bool], Backbone]]] = {}


_AVAILABLE: dict[str, Callable[[], bool]] = {}  # for backbones whose weights come from optional packages


def register_backbone(spec: BackboneSpec, *, available: Callable[[], bool] | None = None) -> Callable[[Callable[[bool], Backbone]], Callable[[bool], Backbone]]:
    """Register ``builder(pretrained) -> Backbone`` under ``spec.name``; ``available()``: whether its weights are installed."""

    def decorator(builder: Callable[[bool], Backbone]) -> Callable[[bool], Backbone]:
        _REGISTRY[spec.name] = (spec, builder)
        if available is not None:
            _AVAILABLE[spec.name] = available
        return builder

    return decorator


def list_backbones(modality: str | None = None, *, installed: bool = False) -> list[BackboneSpec]:
    """Embedded backbones (usable offline), optionally only those of one modality, or only those whose packages are installed."""
    return [spec for spec, _ in _REGISTRY.values() if modality in (None, spec.modality) and (not installed or _AVAILABLE.get(spec.name, lambda: True)())]


def create_backbone(name: str, *, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """Build a backbone by name (the accepted forms are listed in :mod:`headstart.backbones`).

    Parameters
    ----------
    name : str
        ``efficientnet_lite0``, ``minilm``, ``timm:resnet50``, ``hf:bert-base-uncased``, ``hf:/path``
        or a headstart run directory.
    pretrained : bool, default=True
        ``False`` gives the same architecture from random initialisation (the ``scratch`` baseline).
    weights : path, optional
        A local weights file for a ``timm:`` model (safetensors or a weights-only torch file).
    """
    if name in _REGISTRY:
        return _REGISTRY[name][1](pretrained)
    if name.startswith("timm:"):
        return _timm_backbone(name.removeprefix("timm:"), pretrained=pretrained, weights=weights)
    if name.startswith("hf:"):
        return _hf_backbone(name.removeprefix("hf:"), pretrained=pretrained, name=name)
    path = Path(name)
    if is_run_dir(path):
        if not pretrained:
            saved = read_run_config(path)
            check_run_config(saved, path / CONFIG_NAME)
            return backbone_from_config(saved["backbone"], path / ASSETS_DIR, saved["preprocessing"])
        return load_run_backbone(path)
    known = sorted(_REGISTRY) + ["timm:<arch>", "hf:<id or folder>", "<run dir>"]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f"did you mean {close}? " if close else ""
    raise ValueError(f"Unknown backbone {name!r}; {hint}known: {', '.join(known)} (see `headstart list`)")
