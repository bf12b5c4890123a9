"""A headstart run directory read back: its backbone's architecture, and its trained backbone and head.

:func:`load_run` is the one reader of a run's weights; :meth:`TransferModel.from_pretrained
<headstart.model.TransferModel.from_pretrained>` wraps its result in a model, and
:func:`load_run_backbone` keeps the backbone (with the run's head as its source head), which is what
``create_backbone(run_dir)`` returns.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from headstart.backbones.base import Backbone
from headstart.backbones.hf import _hf_from_config
from headstart.backbones.lora import add_lora
from headstart.backbones.timm import _timm_from_config
from headstart.config import LONG_TEXT_MODES
from headstart.data.preprocessing import load_preprocessing
from headstart.heads import ClassifierHead
from headstart.rundir import ASSETS_DIR, CONFIG_NAME, WEIGHTS_NAME, read_run_config


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run headstart wrote (its ``config.json`` names a ``headstart_version``)."""
    return bool((path / CONFIG_NAME).is_file() and json.loads((path / CONFIG_NAME).read_text()).get("headstart_version"))


MAX_WIDTH = 65_536  # features and hidden units of a head
MAX_CLASSES = 1_000_000
MAX_HEAD_PARAMETERS = 2**31  # 8 GB of float32: far beyond any head fit has written
MAX_INPUT_SIZE = 4096  # pixels a side the network sees; a 40,000-pixel input would need ~19 GB for one image
LARGEST_RESIZE = 2 * MAX_INPUT_SIZE


def check_run_config(config: dict[str, Any], source: Path) -> None:
    """Refuse a saved config whose sizes would allocate absurd memory (an edited or damaged ``config.json``), before anything is built.

    Each value must be of its kind and within bounds: the head's widths and class count, the
    preprocessing's input size, crop and audio settings. ``source`` names the file in the message.
    """

    def fail(key: str, value: Any, expected: str) -> None:
        raise ValueError(f"{source}: {key} is {value!r}, expected {expected}; the run's config is damaged or was edited: fix the value or fit the run again")

    def number(key: str, value: Any, low: float, high: float, *, whole: bool = False, low_open: bool = False, high_open: bool = False) -> None:
        kind = numbers.Integral if whole else numbers.Real
        ok = isinstance(value, kind) and not isinstance(value, bool) and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
        if not ok:
            fail(key, value, f"{'a whole number' if whole else 'a number'} from {low}{' (excluded)' if low_open else ''} to {high}{' (excluded)' if high_open else ''}")

    head, prep = config.get("head"), config.get("preprocessing")
    if not isinstance(head, dict) or not isinstance(prep, dict) or not isinstance(config.get("backbone"), dict):
        fail("head/preprocessing/backbone", None, "sections of settings")
    number("head.in_features", head.get("in_features"), 1, MAX_WIDTH, whole=True)
    task = config.get("task", "classification")
    if task not in ("classification", "regression", "multilabel"):
        fail("task", task, "classification, regression or multilabel")
    number("head.num_classes", head.get("num_classes"), 2 if task == "classification" else 1, 1 if task == "regression" else MAX_CLASSES, whole=True)
    if task == "regression":
        target = config.get("target")
        if not isinstance(target, dict):
            fail("target", target, "the training targets' mean and std")
        number("target.mean", target.get("mean"), -float("inf"), float("inf"), low_open=True, high_open=True)
        number("target.std", target.get("std"), 0, float("inf"), low_open=True, high_open=True)
    if task == "multilabel" and config.get("thresholds") is not None:
        thresholds = config["thresholds"]
        if not isinstance(thresholds, list) or len(thresholds) != head["num_classes"] or not all(isinstance(t, numbers.Real) for t in thresholds):
            fail("thresholds", thresholds, f"{head['num_classes']} numbers (one per label)")
    if head.get("hidden") is not None:
        number("head.hidden", head["hidden"], 1, MAX_WIDTH, whole=True)
    number("head.dropout", head.get("dropout", 0.0), 0, 1, high_open=True)
    width = head.get("hidden") or head["num_classes"]
    parameters = head["in_features"] * width + (width * head["num_classes"] if head.get("hidden") else 0)
    if parameters > MAX_HEAD_PARAMETERS:
        fail("head", {k: head.get(k) for k in ("in_features", "hidden", "num_classes")}, f"a head of at most {MAX_HEAD_PARAMETERS:,} weights (this one has {parameters:,})")
    classes = config.get("classes")
    if not isinstance(classes, list) or len(classes) != head["num_classes"]:
        fail("classes", classes if not isinstance(classes, list) else f"{len(classes)} names", f"{head['num_classes']} class names (head.num_classes)")
    kind = prep.get("kind", "image")
    images = {"image": prep, "spectrogram": prep.get("image")}.get(kind)
    if kind in ("image", "spectrogram"):
        prefix = "preprocessing." if kind == "image" else "preprocessing.image."
        if not isinstance(images, dict):
            fail(prefix.rstrip("."), images, "a section of settings")
        number(prefix + "input_size", images.get("input_size"), 8, MAX_INPUT_SIZE, whole=True)
        number(prefix + "crop_pct", images.get("crop_pct", 0.875), 0, 2, low_open=True)
        if images["input_size"] / images.get("crop_pct", 0.875) > LARGEST_RESIZE:
            fail(prefix + "crop_pct", images.get("crop_pct"), f"a crop that resizes to at most {LARGEST_RESIZE} pixels a side (input_size / crop_pct)")
        for key in ("mean", "std"):
            values = images.get(key)
            if not isinstance(values, list) or len(values) != 3 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
                fail(prefix + key, values, "3 numbers (red, green, blue)")
    if kind == "spectrogram":
        number("preprocessing.sample_rate", prep.get("sample_rate", 16000), 1000, 384_000, whole=True)
        number("preprocessing.clip_seconds", prep.get("clip_seconds", 1.0), 0, 3600, low_open=True)
        number("preprocessing.n_mels", prep.get("n_mels", 64), 1, 1024, whole=True)
        number("preprocessing.window_ms", prep.get("window_ms", 25.0), 1, 1000)
        number("preprocessing.hop_ms", prep.get("hop_ms", 10.0), 1, 1000)
    if kind == "audio" and prep.get("clip_seconds") is not None:
        number("preprocessing.clip_seconds", prep["clip_seconds"], 0, 3600, low_open=True)
    if kind == "text":
        number("preprocessing.max_length", prep.get("max_length"), 1, MAX_WIDTH, whole=True)
        if prep.get("long_text", "truncate") not in LONG_TEXT_MODES:
            fail("preprocessing.long_text", prep.get("long_text"), f"one of {list(LONG_TEXT_MODES)}")
        if prep.get("stride") is not None:
            number("preprocessing.stride", prep["stride"], 0, prep["max_length"] - 3, whole=True)


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
    check_run_config(config, directory / CONFIG_NAME)
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
