"""The run directory as a file format: its file names, and (below) its writer and reader.

Every other module asks this one for a run's files; none spells ``"metrics.json"`` itself
(the Hugging Face habit: ``configuration_utils`` owns ``config.json``).
"""

from __future__ import annotations

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
