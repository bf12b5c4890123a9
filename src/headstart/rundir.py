"""The run directory as a file format: its file names, and (below) its writer and reader.

Every other module asks this one for a run's files; none spells ``"metrics.json"`` itself
(the Hugging Face habit: ``configuration_utils`` owns ``config.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"  # architecture, cut, head, classes, preprocessing, training settings, dataset summary
WEIGHTS_NAME = "model.safetensors"  # every tensor of the model
ASSETS_DIR = "backbone"  # tokenizer / Hugging Face config files the backbone needs to be rebuilt
METRICS_NAME = "metrics.json"
HISTORY_NAME = "history.json"
LOG_NAME = "log.txt"
DATASET_NAME = "dataset.json"
PREDICTIONS_NAME = "predictions.json"
REPORT_NAME = "report.html"
LR_FIND_NAME = "lr_find.json"
PROFILE_NAME = "profile.json"
CHECKPOINT_DIR = "checkpoint"  # while training: what `headstart resume` needs
ARGS_NAME = "fit.json"  # in CHECKPOINT_DIR: the arguments of the interrupted fit
STATE_NAME = "state.json"  # in CHECKPOINT_DIR: the commit point of the last saved epoch


def read_run_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a saved run, or a one-line error saying what the directory lacks."""
    config_file = Path(directory) / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory}: not a headstart run (no {CONFIG_NAME}); pass the directory `headstart fit` wrote")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{config_file}: not valid JSON ({error}); the run is damaged, fit it again") from None
    if not isinstance(config, dict) or "headstart_version" not in config:
        raise ValueError(f"{config_file}: not written by headstart (no headstart_version)")
    return config
