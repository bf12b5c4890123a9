"""What one training phase is: its settings, the history it extends, and the state callbacks share.

:class:`TrainState` is the one object :func:`~headstart.training.loop.fit_model` hands to every
:class:`~headstart.training.callbacks.Callback`; its fields are typed and documented, so a resuming
callback (:class:`~headstart.training.checkpoint.Checkpoint`) and the built-in ones that keep the
best weights and stop early speak one checked contract instead of a dict with magic keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from headstart.outcome import kept_weights, overfitting
from headstart.progress import Progress
from headstart.tasks import CLASSIFICATION, Task

MONITORS = ("val_loss", "val_accuracy")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainSettings:
    """Optimisation settings of one training phase.

    Parameters
    ----------
    epochs : int, default=10
    lr : float, default=1e-3
        Learning rate of the new head (and of every parameter when there is no backbone).
    body_lr : float or None, default=None
        Learning rate of trainable backbone blocks; ``None`` means ``lr / 10``.
    weight_decay : float, default=0.01
        AdamW decay, not applied to biases and normalisation weights.
    warmup : float, default=0.1
        Fraction of steps with a linear warm-up before the cosine decay.
    patience : int or None, default=5
        Stop after this many epochs without a better monitored value; ``None`` never stops early.
    monitor : {"val_loss", "val_accuracy"}, default="val_loss"
        What "better" means for early stopping and for the weights kept. ``val_accuracy`` breaks
        ties (frequent on small validation sets) by the lower validation loss.
    label_smoothing : float, default=0.0
    grad_clip : float or None, default=1.0
        Clip the gradient norm at this value.
    layer_decay : float or None, default=None
        Layer-wise learning-rate decay (timm, BEiT): the backbone block at depth ``k`` below the
        head trains at ``lr * layer_decay**k``; replaces ``body_lr``.
    block_lrs : (low, high) or dict or None, default=None
        Explicit per-block rates. ``(low, high)`` spreads rates geometrically from ``low`` (first
        block) to ``high`` (the head), fastai's ``slice(lo, hi)``; a dict maps block names or globs
        (``"layer5"``, ``"stage*"``, ``"classifier"`` for the head) to rates, other blocks keep the
        rule above. Both replace ``body_lr``.
    accumulate : int, default=1
        Gradient accumulation: one optimizer step per ``accumulate`` batches.
    precision : {"fp32", "bf16"}, default="fp32"
        ``"bf16"`` runs forward passes under bfloat16 autocast on a GPU that supports it (the
        weights and the optimizer stay in float32).
    torch_compile : bool, default=False
        Run the training steps through ``torch.compile`` (the model's weights, checkpoints and
        evaluation are unchanged). Compiling costs tens of seconds up front and pays off on a GPU
        over many steps; on the CPU it was not measured faster.
    """

    epochs: int = 10
    lr: float = 1e-3
    body_lr: float | None = None
    weight_decay: float = 0.01
    warmup: float = 0.1
    patience: int | None = 5
    monitor: str = "val_loss"
    label_smoothing: float = 0.0
    grad_clip: float | None = 1.0
    layer_decay: float | None = None
    block_lrs: tuple[float, float] | dict[str, float] | None = None
    accumulate: int = 1
    precision: str = "fp32"
    torch_compile: bool = False

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor={self.monitor!r}; choose one of {MONITORS}")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"layer_decay={self.layer_decay} must be in (0, 1]; 0.7-0.9 is usual")
        if self.layer_decay is not None and self.block_lrs is not None:
            raise ValueError("pass layer_decay or block_lrs, not both")
        if isinstance(self.block_lrs, (list, tuple)):
            if len(self.block_lrs) != 2 or not 0 < self.block_lrs[0] <= self.block_lrs[1]:
                raise ValueError(f"block_lrs={self.block_lrs!r}: give (low, high) with 0 < low <= high, e.g. (1e-5, 1e-3)")
            self.block_lrs = (float(self.block_lrs[0]), float(self.block_lrs[1]))
        if not isinstance(self.accumulate, int) or self.accumulate < 1:
            raise ValueError(f"accumulate={self.accumulate!r} must be a positive integer")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; choose one of {PRECISIONS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def improved(self, record: dict[str, Any], best: dict[str, Any] | None) -> bool:
        """Whether ``record`` (val_loss, val_accuracy) beats ``best`` under :attr:`monitor`."""
        if best is None:
            return True
        lower_loss = record["val_loss"] < best["val_loss"] - 1e-6
        if self.monitor == "val_loss":
            return lower_loss
        gain = record["val_accuracy"] - best["val_accuracy"]
        return gain > 1e-9 or (abs(gain) <= 1e-9 and lower_loss)


@dataclass
class History:
    """Per-epoch records of every phase, and whether overfitting was seen."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    kept_epoch: int | None = None  # the epoch whose weights the model holds after training
    audits: list[str] = field(default_factory=list)  # the freeze audit line of every phase that trained

    def overfitting(self) -> dict[str, Any]:
        """Epochs where validation loss rose beyond its noise while training loss fell (:func:`headstart.outcome.overfitting`)."""
        return overfitting(self.epochs, self.kept_epoch)

    def kept(self) -> dict[str, Any] | None:
        """Which weights the model holds, from which phase, in words (:func:`headstart.outcome.kept_weights`)."""
        return kept_weights(self.epochs, self.kept_epoch)

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "kept_epoch": self.kept_epoch, "kept": self.kept(), "overfitting": self.overfitting(), "freeze_audits": self.audits}


@dataclass
class Best:
    """The best epoch of a phase so far: what early stopping counts from and what the phase ends with."""

    record: dict[str, Any] | None = None  # its metrics (val_loss, val_accuracy, ...); None before any
    weights: dict[str, torch.Tensor] | None = None  # a copy of model.state_dict() then; None: nothing to restore
    epoch: int = 0
    waited: int = 0  # epochs since, without improvement


@dataclass
class TrainState:
    """The state of one :func:`~headstart.training.loop.fit_model` call, shared by its callbacks.

    Set by the loop, read by callbacks:

    * ``model``: the module being trained (the plain one, never its DDP or compiled wrapper).
    * ``phase``: the phase name (``"fine-tune"``, ``"gradual-2"``...), ``settings``: its :class:`TrainSettings`.
    * ``history``: the :class:`History` this phase appends to (earlier phases' epochs included).
    * ``optimizer``, ``scheduler``: AdamW and its warm-up + cosine schedule (a resuming callback loads their state).
    * ``train_loader``, ``val_loader``: the phase's batches (``val_loader`` may be None: the training
      metrics stand in for validation).
    * ``progress``: where log lines go (None: nowhere).
    * ``epoch``: the last finished epoch, numbered across phases (0 before the first).
    * ``record``: that epoch's metrics (empty before the first ``on_epoch_end``).
    * ``task``: what a label is (:mod:`headstart.tasks`): the loss and the score validation uses.

    Set by callbacks:

    * ``best`` (:class:`Best`): kept by :class:`~headstart.training.callbacks.KeepBest`; a resuming
      callback replaces it in ``on_fit_start``.
    * ``epochs_done``: epochs of this phase already run, set in ``on_fit_start`` by a resuming
      callback; the loop runs the rest (none when it equals ``settings.epochs``).
    * ``resumed``: True when a callback restored the phase mid-way (the freeze audit says so).
    * ``stop``: set True in ``on_epoch_end`` to end the phase after this epoch
      (:class:`~headstart.training.callbacks.EarlyStopping` sets it on a plateau).
    """

    model: nn.Module
    phase: str
    settings: TrainSettings
    history: History
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_loader: Sequence[Any] | Iterable[Any]
    val_loader: Sequence[Any] | Iterable[Any] | None = None
    progress: Progress | None = None
    epoch: int = 0
    record: dict[str, Any] = field(default_factory=dict)
    best: Best = field(default_factory=Best)
    epochs_done: int = 0
    resumed: bool = False
    stop: bool = False
    task: Task = CLASSIFICATION
