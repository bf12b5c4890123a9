"""The run directory as a file format: its file names, its writer and its reader.

Every other module asks this one for a run's files; none spells ``"metrics.json"`` itself
(the Hugging Face habit: ``configuration_utils`` owns ``config.json``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from headstart.io import atomic_write_text

CONFIG_NAME = "config.json"  # architecture, cut, head, classes, preprocessing, training settings, dataset summary
WEIGHTS_NAME = "model.safetensors"  # every tensor of the model
ASSETS_DIR = "backbone"  # tokenizer / Hugging Face config files the backbone needs to be rebuilt
METRICS_NAME = "metrics.json"
HISTORY_NAME = "history.json"
LOG_NAME = "log.txt"
DATASET_NAME = "dataset.json"
PREDICTIONS_NAME = "predictions.json"
INTERPRETATION_NAME = "interpretation.json"  # what only the model could say about the test split: top-loss heat maps, 2-D projection
REPORT_NAME = "report.html"
LR_FIND_NAME = "lr_find.json"
PROFILE_NAME = "profile.json"
CHECKPOINT_DIR = "checkpoint"  # while training: what `headstart resume` needs
ARGS_NAME = "fit.json"  # in CHECKPOINT_DIR: the arguments of the interrupted fit
STATE_NAME = "state.json"  # in CHECKPOINT_DIR: the commit point of the last saved epoch
FINISHED_FILES = (WEIGHTS_NAME, CONFIG_NAME, METRICS_NAME, HISTORY_NAME, DATASET_NAME, PREDICTIONS_NAME, INTERPRETATION_NAME, LOG_NAME, REPORT_NAME)  # a finished run's, beside ASSETS_DIR


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


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a finished or loadable headstart run (a config.json that headstart wrote)."""
    config_file = Path(path) / CONFIG_NAME
    if not config_file.is_file():
        return False
    try:
        return "headstart_version" in json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, TypeError):
        return False


def run_seed(directory: str | Path) -> int:
    """The seed a run split its data with (0 when the directory is not a run): evaluation splits the same way."""
    return int(read_run_config(directory).get("training", {}).get("seed", 0)) if is_run_dir(directory) else 0


def default_run_dir(data: Any, strategy: str) -> Path:
    """``runs/<data>-<strategy>-<time>``: where a run goes when no ``out`` is given (``data``: a path or a Dataset)."""
    source = getattr(data, "source", data)
    return Path("runs") / f"{Path(source).stem or 'data'}-{strategy}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_new_run_dir(directory: Path, overwrite: bool) -> None:
    """Refuse to start a run over an interrupted one or over anything else, unless ``overwrite``."""
    if (directory / CHECKPOINT_DIR / ARGS_NAME).is_file() and not overwrite:
        raise FileExistsError(f"{directory}: holds an interrupted run; continue it with `headstart resume {directory}`, or pass --overwrite")
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise FileExistsError(f"{directory}: already exists and is not empty; choose another --out or pass --overwrite")


def write_run_files(
    directory: Path, *, metrics: dict[str, Any], history: dict[str, Any], dataset: dict[str, Any], predictions: dict[str, Any], log_lines: list[str],
    interpretation: dict[str, Any] | None = None
) -> None:
    """Write a finished run's JSON files and log (the weights and config.json are written by ``TransferModel.save_pretrained``)."""
    if interpretation:
        atomic_write_text(directory / INTERPRETATION_NAME, json.dumps(interpretation))
    atomic_write_text(directory / METRICS_NAME, json.dumps(metrics, indent=2))
    atomic_write_text(directory / HISTORY_NAME, json.dumps(history, indent=2))
    atomic_write_text(directory / DATASET_NAME, json.dumps(dataset, indent=2))
    atomic_write_text(directory / PREDICTIONS_NAME, json.dumps(predictions))
    skipped = [f"skipped: {d['file']} ({d['reason']})" for d in dataset["skipped_files"]]
    atomic_write_text(directory / LOG_NAME, "\n".join(log_lines + skipped) + "\n")


def remove_finished_files(directory: Path) -> None:
    """Remove what a finished run writes (weights, config, metrics, ...), e.g. a final save that a full disk cut short; keep the checkpoint."""
    for name in FINISHED_FILES:
        (directory / name).unlink(missing_ok=True)
    shutil.rmtree(directory / ASSETS_DIR, ignore_errors=True)


def write_json(directory: str | Path, name: str, data: Any) -> Path:
    """Add one more JSON file to a run (``lr_find.json``, ``profile.json``): read back by :class:`SavedRun`."""
    path = Path(directory) / name
    atomic_write_text(path, json.dumps(data))
    return path


@dataclass
class SavedRun:
    """The files of one run directory, parsed (missing optional files are empty)."""

    directory: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: dict[str, Any]
    dataset: dict[str, Any]
    predictions: dict[str, Any] = field(default_factory=dict)
    lr_find: dict[str, Any] | None = None
    interpretation: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    log: str = ""

    @property
    def training(self) -> dict[str, Any]:
        return self.config.get("training", {})

    @property
    def strategy(self) -> str:
        return str(self.training.get("strategy", {}).get("name", "?"))

    @property
    def test(self) -> dict[str, Any] | None:
        return self.metrics.get("test") or self.metrics.get("val")

    @classmethod
    def load(cls, directory: str | Path) -> SavedRun:
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file() or not (directory / METRICS_NAME).is_file():
            raise FileNotFoundError(f"{directory}: not a finished headstart run (needs {CONFIG_NAME} and {METRICS_NAME}); pass a directory `headstart fit` wrote")

        def read(name: str) -> Any:
            path = directory / name
            if not path.is_file():
                return None
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except ValueError as error:
                raise ValueError(f"{path}: not valid JSON ({error}); the run is damaged, fit it again") from None

        config = read(CONFIG_NAME)
        log = directory / LOG_NAME
        return cls(
            directory=directory,
            config=config,
            metrics=read(METRICS_NAME),
            history=read(HISTORY_NAME) or {"epochs": []},
            dataset=read(DATASET_NAME) or config.get("dataset", {}),
            predictions=read(PREDICTIONS_NAME) or {},
            lr_find=read(LR_FIND_NAME),
            interpretation=read(INTERPRETATION_NAME),
            profile=read(PROFILE_NAME),
            log=log.read_text(encoding="utf-8", errors="replace") if log.is_file() else "",
        )
