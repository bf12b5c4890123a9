"""What differs between kinds of target: one class per example, a number, or a set of labels.

Every other module asks the :class:`Task` of a run (``model.task``, ``get_task(name)``) instead of
branching on its name: the head's width, the training loss, how the head's outputs become
predictions, how targets are encoded for the loss, and which metrics apply.

=================  ==============  =======================  ===============================  ==========================
task               head width      loss                     outputs (``Task.outputs``)        prediction
=================  ==============  =======================  ===============================  ==========================
``classification``  classes         cross-entropy            softmax probabilities             the most probable class
``regression``      1               MSE (or Huber)           the standardised value            value * std + mean
``multilabel``      labels          BCE with logits          sigmoid per label                 labels at or above their threshold
=================  ==============  =======================  ===============================  ==========================

Regression targets are standardised with the training split's mean and standard deviation (saved
with the run as ``target``), so one learning rate and weight decay suit any unit; predictions are
de-standardised. The per-epoch records keep the names ``train_accuracy``/``val_accuracy`` for the
task's higher-is-better score, so early stopping, the kept weights and the curves work unchanged:
classification accuracy; regression ``1 - MSE`` of the standardised targets (R² against the training
variance); multilabel the per-label accuracy at probability 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from headstart.config import REGRESSION_LOSSES, TASK_NAMES


def weighted_cross_entropy(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy averaged with per-example ``weights`` (scikit-learn's ``sample_weight``): an example of weight 2 counts as two."""
    losses = nn.functional.cross_entropy(logits, y, reduction="none", label_smoothing=label_smoothing)
    return _weighted_mean(losses, weights)


def _weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (losses * weights).sum() / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)


class Task:
    """The behaviour of one kind of target; subclasses are registered in :data:`TASKS`."""

    name: ClassVar[str]

    def head_width(self, classes: Sequence[str]) -> int:
        return len(classes)

    def fit_encoding(self, train_labels: np.ndarray) -> dict[str, float] | None:
        """What ``encode`` needs, from the training targets (saved with the run); None when nothing."""
        return None

    def encode(self, labels: np.ndarray, target: dict[str, float] | None) -> np.ndarray:
        """The targets the loss compares the head's logits with."""
        return labels

    def loss(self, logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
        raise NotImplementedError

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """What a model's logits mean (probabilities, or the standardised value): what evaluation averages over views."""
        raise NotImplementedError

    def output_losses(self, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-example validation loss from :meth:`outputs` and encoded targets (float64)."""
        raise NotImplementedError

    def output_scores(self, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-example higher-is-better score from :meth:`outputs` (the records' ``val_accuracy``)."""
        raise NotImplementedError

    def batch_score(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        """Sum over a training batch of the per-example score (the records' ``train_accuracy``)."""
        raise NotImplementedError

    def mean_score(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        """The mean of :meth:`batch_score` over a full batch (the cached-feature head's ``train_accuracy``)."""
        return self.batch_score(logits, y) / max(len(y), 1)

    def decode(self, outputs: np.ndarray, target: dict[str, float] | None) -> np.ndarray:
        """Predictions in the user's terms from :meth:`outputs`: probabilities, or values in target units."""
        return outputs

    def export_output(self, logits: torch.Tensor, target: dict[str, float] | None) -> torch.Tensor:
        """What an exported graph returns: logits (classification), the value in target units, or per-label probabilities."""
        return logits

    export_name: ClassVar[str] = "logits"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class Classification(Task):
    name = "classification"

    def loss(self, logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
        if weights is not None:
            return weighted_cross_entropy(logits, y, weights, label_smoothing)
        return nn.functional.cross_entropy(logits, y, label_smoothing=label_smoothing)

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1)

    def output_losses(self, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
        return -np.log(np.clip(outputs[np.arange(len(y)), y].astype(np.float64), 1e-12, None))

    def output_scores(self, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (outputs.argmax(1) == y).astype(np.float64)

    def batch_score(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        return int((logits.argmax(-1) == y).sum())

    def mean_score(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        return float((logits.argmax(-1) == y).float().mean())


class Regression(Task):
    """One number per example; ``loss``: ``"mse"`` or ``"huber"`` (delta 1 in standard deviations: robust to outliers)."""

    name = "regression"
    export_name = "value"

    def __init__(self, loss: str | None = None) -> None:
        loss = loss or "mse"
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"loss={loss!r}; choose one of {list(REGRESSION_LOSSES)}")
        self.loss_name = loss

    def head_width(self, classes: Sequence[str]) -> int:
        return 1

    def fit_encoding(self, train_labels: np.ndarray) -> dict[str, float]:
        values = np.asarray(train_labels, dtype=np.float64)
        std = float(values.std()) if len(values) else 1.0
        return {"mean": float(values.mean()) if len(values) else 0.0, "std": std if std > 0 else 1.0, "loss": self.loss_name}

    def encode(self, labels: np.ndarray, target: dict[str, float] | None) -> np.ndarray:
        mean, std = _stats(target)
        return ((np.asarray(labels, dtype=np.float64) - mean) / std).astype(np.float32)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
        pred, y = logits.reshape(-1), y.reshape(-1).to(logits.dtype)
        fn = nn.functional.huber_loss if self.loss_name == "huber" else nn.functional.mse_loss
        if weights is None:
            return fn(pred, y)
        return _weighted_mean(fn(pred, y, reduction="none"), weights)

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def output_losses(self, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
        error = np.abs(outputs.reshape(-1).astype(np.float64) - np.asarray(y, dtype=np.float64).reshape(-1))
        return np.where(error <= 1, 0.5 * error**2, error - 0.5) if self.loss_name == "huber" else error**2

    def output_scores(self, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 1.0 - (outputs.reshape(-1).astype(np.float64) - np.asarray(y, dtype=np.float64).reshape(-1)) ** 2

    def batch_score(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        return float((1.0 - (logits.detach().reshape(-1).float() - y.reshape(-1).float()) ** 2).sum())

    def decode(self, outputs: np.ndarray, target: dict[str, float] | None) -> np.ndarray:
        mean, std = _stats(target)
        return outputs.reshape(len(outputs), -1)[:, 0].astype(np.float64) * std + mean

    def export_output(self, logits: torch.Tensor, target: dict[str, float] | None) -> torch.Tensor:
        mean, std = _stats(target)
        return logits[:, 0] * std + mean

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "loss": self.loss_name}


class MultiLabel(Task):
    """Any number of labels per example: one sigmoid per label, binary cross-entropy."""

    name = "multilabel"
    export_name = "probabilities"

    def loss(self, logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
        y = y.to(logits.dtype)
        if weights is None:
            return nn.functional.binary_cross_entropy_with_logits(logits, y)
        return _weighted_mean(nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(-1), weights)

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid()

    def output_losses(self, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
        p = np.clip(outputs.astype(np.float64), 1e-12, 1 - 1e-12)
        y = np.asarray(y, dtype=np.float64)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(1)

    def output_scores(self, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
        return ((outputs >= 0.5) == (np.asarray(y) > 0.5)).mean(1).astype(np.float64)

    def batch_score(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        return float(((logits.detach() > 0) == (y > 0.5)).float().mean(-1).sum())

    def export_output(self, logits: torch.Tensor, target: dict[str, float] | None) -> torch.Tensor:
        return logits.sigmoid()


def _stats(target: dict[str, float] | None) -> tuple[float, float]:
    if not target:
        raise ValueError("a regression model needs the training target's mean and std (config.json 'target'); the run is damaged, fit it again")
    return float(target["mean"]), float(target["std"])


TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Classification, Regression, MultiLabel)}
CLASSIFICATION = Classification()
assert tuple(TASKS) == TASK_NAMES[1:], "config.TASK_NAMES (after 'auto') names the registered tasks in order"


def get_task(name: str | Task | None, *, loss: str | None = None) -> Task:
    """The task called ``name`` (None: classification); ``loss``: the regression loss (mse or huber)."""
    if isinstance(name, Task):
        return name
    if name in (None, "classification"):
        return CLASSIFICATION
    if name not in TASKS:
        raise ValueError(f"task={name!r}; choose one of {list(TASKS)}")
    return Regression(loss) if name == "regression" else TASKS[name]()
