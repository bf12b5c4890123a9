"""A headstart run directory read back: its backbone's architecture, and its trained backbone and head.

:func:`load_run` is the one reader of a run's weights; :meth:`TransferModel.from_pretrained
<headstart.model.TransferModel.from_pretrained>` wraps its result in a model, and
:func:`load_run_backbone` keeps the backbone (with the run's head as its source head), which is what
``create_backbone(run_dir)`` returns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from headstart.backbones.base import Backbone
from headstart.backbones.hf import _hf_from_config
from headstart.backbones.lora import add_lora
from headstart.backbones.timm import _timm_from_config
from headstart.data.preprocessing import load_preprocessing
from headstart.heads import ClassifierHead
from headstart.rundir import ASSETS_DIR, CONFIG_NAME, WEIGHTS_NAME, read_run_config


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run headstart wrote (its ``config.json`` names a ``headstart_version``)."""
    return bool((path / CONFIG_NAME).is_file() and json.loads((path / CONFIG_NAME).read_text()).get("headstart_version"))


def backbone_from_config(config: dict[str, Any], assets: Path, preprocessing: dict[str, Any]) -> Backbone:
    """Rebuild a backbone's architecture (random weights) from :meth:`Backbone.architecture_config`.

    The inverse of ``architecture_config`` + ``save_assets`` (+ the saved preprocessing); weights
    are loaded by the caller.
    """
    prep = load_preprocessing(preprocessing, assets)
    if config["family"] == "timm":
        return _timm_from_config(config, prep)
    if config["family"] == "hf":
        return _hf_from_config(config, assets, prep)
    raise ValueError(f"Unknown backbone family {config['family']!r} in a saved config")


def load_run(directory: str | Path) -> tuple[dict[str, Any], Backbone, ClassifierHead]:
    """A run's config, and its backbone (with its LoRA adapter, if any) and head with the trained weights loaded.

    ``model.safetensors`` holds ``backbone.*`` and ``head.*``; every key must match, or the run is
    reported damaged.
    """
    directory = Path(directory)
    config = read_run_config(directory)
    backbone = backbone_from_config(config["backbone"], directory / ASSETS_DIR, config["preprocessing"])
    if config.get("adapter"):  # the same LoRA layers before the weights (adapter and head) load
        add_lora(backbone, **config["adapter"])
    head = ClassifierHead.from_config(config["head"])
    try:
        state = load_file(str(directory / WEIGHTS_NAME))
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{directory / WEIGHTS_NAME}: unreadable weights ({str(error).splitlines()[0]}); the run is damaged, fit it again") from None
    parts = {"backbone.": backbone, "head.": head}
    missing: list[str] = []
    unexpected = [key for key in state if not key.startswith(tuple(parts))]
    for prefix, module in parts.items():
        result = module.load_state_dict({key.removeprefix(prefix): v for key, v in state.items() if key.startswith(prefix)}, strict=False)
        missing += [prefix + key for key in result.missing_keys]
        unexpected += [prefix + key for key in result.unexpected_keys]
    if missing or unexpected:
        raise ValueError(
            f"{directory / WEIGHTS_NAME}: weights do not match the saved config "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    return config, backbone, head


def load_run_backbone(directory: str | Path) -> Backbone:
    """The trained backbone of a run, laid out and in eval mode as a reloaded model's; the run's head is its source head (LEEP, NCE)."""
    _, backbone, head = load_run(directory)
    backbone.fast_layout().eval()
    head.eval()
    backbone.keep_run_head(head)
    return backbone
