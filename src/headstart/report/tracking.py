"""Experiment tracking: per-epoch metrics, held-out results and the run's report sent where teams look.

``fit(..., log_to="tensorboard")`` writes TensorBoard event files (``loss/train``, ``loss/val``,
``accuracy/train``, ``accuracy/val``, ``lr``; one step per epoch, numbered across phases), the test
metrics as ``test/<name>``, the report as text with the page copied beside the events, and for the
held-out split (test, else val) the fit's arguments with its final metrics as hparams, one
precision-recall curve per class (``pr/<class>``, one-vs-rest) and the pooled features with their
true and predicted classes for the projector. Regression and multi-label runs log their own held-out
scores (``test/mae``, ``test/rmse``, ``test/r2``; ``test/micro_f1``, ``test/macro_f1``, ``test/map``,
``test/subset_accuracy``; :data:`headstart.report.targets.SCORES`); their ``accuracy/*`` curves hold
the task's per-epoch score (:data:`headstart.report.targets.EPOCH_SCORE`).
``log_to="mlflow"`` logs the fit's arguments as parameters, the same curves as metrics, the test
metrics as ``test/<name>`` (as in TensorBoard), ``report.html``, ``metrics.json`` and ``history.json``
as artifacts, and the model as an MLflow pyfunc (``mlflow.pyfunc.load_model(uri).predict(paths or texts)``,
see :mod:`headstart.report.pyfunc`).

Both are optional extras (``pip install headstart[tensorboard]`` or ``headstart[mlflow]``); nothing
is imported unless asked for.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headstart.report.targets import SCORES, task_of
from headstart.rundir import CONFIG_NAME, HISTORY_NAME, METRICS_NAME, REPORT_NAME
from headstart.training.callbacks import Callback
from headstart.training.state import TrainState

if TYPE_CHECKING:
    from headstart.report.interpret import Interpretation

TRACKERS = ("tensorboard", "mlflow")
CURVES = {"train_loss": "loss/train", "val_loss": "loss/val", "train_accuracy": "accuracy/train", "val_accuracy": "accuracy/val", "lr": "lr"}
HELD_OUT = ("accuracy", "balanced_accuracy", "macro_f1", "mcc", "loss")


def held_out_scores(values: dict[str, Any]) -> dict[str, float]:
    """The held-out scores of one split's metrics for its task: HELD_OUT for classes, MAE/RMSE/R² or micro/macro F1, mAP, subset accuracy."""
    task = task_of(values)
    names = HELD_OUT if task == "classification" else (*(key for key, _, _ in SCORES[task]), "loss")
    return {name: float(values[name]) for name in names if values.get(name) is not None}


def split_scores(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``split -> held_out_scores`` for the scored splits of ``metrics.json`` (its other entries, the regression
    target's statistics or the bag-of-words baseline, are not a split's scores)."""
    return {split: held_out_scores(metrics[split]) for split in ("val", "test") if isinstance(metrics.get(split), dict)}

MAX_PR_CURVES = 50  # one-vs-rest curves beyond this many classes would bury the tab


class Tracker(Callback):
    """A training callback that also hears about the start and the end of the whole fit.

    ``on_epoch_end`` (see :class:`headstart.training.callbacks.Callback`) sends each epoch's record.
    """

    def start(self, name: str, arguments: dict[str, Any]) -> None:
        """Before training; ``arguments`` are the fit's (JSON-able) arguments."""

    def held_out(self, interpretation: Interpretation) -> None:
        """Before :meth:`finish`: the held-out split's labels, probabilities and pooled features."""

    def finish(self, metrics: dict[str, Any], directory: Path | None) -> None:
        """After the run was saved: held-out ``metrics`` and the run ``directory`` (report inside)."""

    def abort(self, error: BaseException) -> None:
        """The fit raised ``error`` (KeyboardInterrupt for Ctrl-C): close what :meth:`start` opened."""


class TensorBoardTracker(Tracker):
    """Event files under ``log_dir/<run name>`` (default ``<run>/tensorboard``), readable by ``tensorboard --logdir``."""

    def __init__(self, log_dir: str | Path, *, per_run: bool = False) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("--log-to tensorboard needs the tensorboard package: pip install headstart[tensorboard]") from None
        self._writer_class = SummaryWriter
        self.log_dir, self.per_run = Path(log_dir), per_run  # per_run: a shared log dir gets one sub-folder per run
        self.writer: Any = None
        self.arguments: dict[str, Any] = {}
        self.interpretation: Interpretation | None = None

    def start(self, name: str, arguments: dict[str, Any]) -> None:
        self.arguments = arguments
        if self.per_run:
            self.log_dir = self.log_dir / name
        self.writer = self._writer_class(log_dir=str(self.log_dir))
        self.writer.add_text("arguments", "\n".join(f"    {k}: {v}" for k, v in sorted(arguments.items())), 0)

    def on_epoch_end(self, state: TrainState) -> None:
        record = state.record
        for key, tag in CURVES.items():
            if key in record:
                self.writer.add_scalar(tag, float(record[key]), record["epoch"])
        self.writer.flush()

    def finish(self, metrics: dict[str, Any], directory: Path | None) -> None:
        for split, scores in split_scores(metrics).items():
            for name, value in scores.items():
                self.writer.add_scalar(f"{split}/{name}", value, 0)
        if self.interpretation is not None:
            self._held_out_summaries(self.interpretation, metrics)
        report = _report(directory)
        if report is not None:
            copy = shutil.copy(report, self.log_dir / report.name)
            self.writer.add_text("report", f"Run report (self-contained HTML): `{Path(copy).resolve()}`", 0)
        self.writer.close()

    def held_out(self, interpretation: Interpretation) -> None:
        self.interpretation = interpretation

    def _held_out_summaries(self, found: Interpretation, metrics: dict[str, Any]) -> None:
        """hparams (arguments and final metrics), one-vs-rest PR curves and the projector's embedding of the held-out split."""
        split = found.data["split"]
        final = {f"hparam/{split}_{name}": value for name, value in held_out_scores(metrics.get(split, {})).items()}
        hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in self.arguments.items()}
        self.writer.add_hparams(hparams, final, run_name=".")  # "." : the same run as the curves, not a sub-folder
        if task_of(metrics.get(split)) != "classification":  # the curves and projection below read class probabilities
            return
        for k, name in enumerate(found.classes[:MAX_PR_CURVES]):
            self.writer.add_pr_curve(f"pr/{name}", found.labels == k, found.probs[:, k], 0)
        if found.features is not None:
            metadata = [[found.classes[int(found.labels[i])], found.classes[int(found.probs[i].argmax())], str(found.labels[i] == found.probs[i].argmax()).lower()] for i in found.index]
            self.writer.add_embedding(found.features, metadata=metadata, metadata_header=["true", "predicted", "correct"], tag=f"{split}_features", global_step=0)

    def abort(self, error: BaseException) -> None:
        if self.writer is not None:
            self.writer.add_text("error", f"{type(error).__name__}: {error}", 0)
            self.writer.close()


class MLflowTracker(Tracker):
    """One MLflow run per fit, in experiment ``experiment`` at ``tracking_uri`` (default: MLflow's own setting)."""

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None) -> None:
        try:
            import mlflow
        except ImportError:
            raise ImportError("--log-to mlflow needs the mlflow package: pip install headstart[mlflow]") from None
        self.mlflow = mlflow
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.run_id: str | None = None

    def start(self, name: str, arguments: dict[str, Any]) -> None:
        try:
            if self.tracking_uri:
                self.mlflow.set_tracking_uri(self.tracking_uri)
            if self.experiment:
                self.mlflow.set_experiment(self.experiment)
            run = self.mlflow.start_run(run_name=name)
        except self.mlflow.exceptions.MlflowException as error:  # e.g. a retired file store: say so in one line
            raise ValueError(f"mlflow at {self.mlflow.get_tracking_uri()}: {str(error).split('. ')[0]}") from None
        self.run_id = run.info.run_id
        self.mlflow.log_params({k: ("" if v is None else str(v)[:500]) for k, v in arguments.items()})

    def on_epoch_end(self, state: TrainState) -> None:
        record = state.record
        self.mlflow.log_metrics({key: float(record[key]) for key in CURVES if key in record}, step=int(record["epoch"]))

    def finish(self, metrics: dict[str, Any], directory: Path | None) -> None:
        for split, scores in split_scores(metrics).items():
            self.mlflow.log_metrics({f"{split}/{name}": value for name, value in scores.items()})
        if directory is not None:
            for name in (REPORT_NAME, METRICS_NAME, HISTORY_NAME, CONFIG_NAME):
                if (directory / name).is_file():
                    self.mlflow.log_artifact(str(directory / name))
            self._log_model(directory)
        self.mlflow.end_run()

    def _log_model(self, directory: Path) -> None:
        """The run as a pyfunc model; a missing pandas (which mlflow.pyfunc needs) costs the model, not the run."""
        try:
            from headstart.report.pyfunc import log_model
        except ImportError as error:
            warnings.warn(f"mlflow: the model was not logged ({error}); pip install headstart[mlflow]", stacklevel=3)
            return
        log_model(directory)

    def abort(self, error: BaseException) -> None:
        """End the run as KILLED (Ctrl-C) or FAILED, with the error as a tag, so the UI does not show it running forever."""
        if self.run_id is None:
            return
        self.mlflow.set_tag("error", f"{type(error).__name__}: {error}"[:5000])
        self.mlflow.end_run(status="KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")


def make_tracker(log_to: str | None, *, uri: str | None, directory: Path | None, experiment: str | None) -> Tracker | None:
    """The tracker for ``--log-to`` (None when not asked for); ``uri`` is the TensorBoard log dir or the MLflow tracking URI."""
    if log_to is None:
        return None
    if log_to == "tensorboard":
        if uri is None and directory is None:
            raise ValueError("--log-to tensorboard without a run directory needs a log directory (--log-uri DIR)")
        return TensorBoardTracker(uri, per_run=True) if uri is not None else TensorBoardTracker(directory / "tensorboard")  # type: ignore[operator]
    if log_to == "mlflow":
        return MLflowTracker(uri, experiment)
    raise ValueError(f"log_to={log_to!r}; choose one of {list(TRACKERS)}")


def _report(directory: Path | None) -> Path | None:
    path = directory / REPORT_NAME if directory is not None else None
    return path if path is not None and path.is_file() else None
