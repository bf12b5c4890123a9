"""The training loop: AdamW, warm-up + cosine, validation every epoch, early stopping, best weights kept.

Progressive disclosure, the Keras way: :func:`fit_model` does the common case in one call;
:class:`Callback` hooks (a fixed, listed set) let users watch or stop it; a custom loop can reuse
:func:`param_groups`, :func:`make_scheduler` and :func:`evaluate_loader`.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from headstart.freezing import audit_freeze, frozen_parameter_names
from headstart.progress import Progress
from headstart.training import distributed
from headstart.training.regularizers import Penalty

EVENTS = ("on_fit_start", "on_epoch_end", "on_fit_end")
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
        """Flag epochs where validation loss rose for 2+ epochs while training loss kept falling."""
        flagged: list[int] = []
        rows = self.epochs
        for i in range(2, len(rows)):
            a, b, c = rows[i - 2], rows[i - 1], rows[i]
            if a["phase"] == b["phase"] == c["phase"] and c["val_loss"] > b["val_loss"] > a["val_loss"] and c["train_loss"] < b["train_loss"] < a["train_loss"]:
                flagged.append(c["epoch"])
        kept = self.kept_epoch if self.kept_epoch is not None else (min(rows, key=lambda r: r["val_loss"])["epoch"] if rows else None)
        return {
            "detected": bool(flagged),
            "epochs": flagged,
            "best_epoch": kept,
            "message": (
                f"overfitting: validation loss rose while training loss fell (epochs {flagged}); "
                f"the best weights (epoch {kept}) were kept"
                if flagged and kept is not None
                else ""
            ),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "kept_epoch": self.kept_epoch, "overfitting": self.overfitting(), "freeze_audits": self.audits}


class Callback:
    """Hooks called by :func:`fit_model`. ``state`` is a dict with ``model``, ``epoch``, ``history``,
    ``phase``, ``settings``, ``optimizer``, ``scheduler``, ``train_loader``, ``record`` (the epoch's
    metrics, in ``on_epoch_end``), ``best`` (``(best record, its weights, its epoch, epochs without
    improvement)``, in ``on_epoch_end``) and ``stop`` (set True to stop)."""

    def on_fit_start(self, state: dict[str, Any]) -> None:
        """Before the first epoch. To continue an interrupted phase, a callback may set
        ``state['epochs_done']`` (epochs of this phase already run) and ``state['resume']`` (a ``best`` tuple)."""

    def on_epoch_end(self, state: dict[str, Any]) -> None:
        """After validation of each epoch; ``state['record']`` holds its metrics."""

    def on_fit_end(self, state: dict[str, Any]) -> None:
        """After the best weights were restored."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def block_rates(model: nn.Module, lr: float, body_lr: float | None, *, layer_decay: float | None = None,
                block_lrs: tuple[float, float] | dict[str, float] | None = None) -> list[tuple[str, list[nn.Parameter], float]]:
    """``(block name, parameters, rate)`` from the head down to the first block (see :class:`TrainSettings`)."""
    if not (hasattr(model, "backbone") and hasattr(model, "head")):
        return [("all", list(model.parameters()), lr)]
    blocks = list(model.backbone.blocks)
    body = body_lr if body_lr is not None else lr / 10
    head_rate = lr
    rates = [body] * len(blocks)
    if layer_decay is not None:
        rates = [lr * layer_decay ** (len(blocks) - i) for i in range(len(blocks))]
    elif isinstance(block_lrs, tuple):
        low, high = block_lrs
        rates = [low * (high / low) ** (i / len(blocks)) for i in range(len(blocks))]
        head_rate = high
    elif isinstance(block_lrs, dict):
        unknown = [g for g in block_lrs if not any(fnmatch.fnmatchcase(b.name, g) for b in [*blocks, *model.blocks[-1:]])]
        if unknown:
            raise KeyError(f"block_lrs: no block matches {unknown}; blocks are {model.blocks.names()}")
        rates = [next((r for g, r in block_lrs.items() if fnmatch.fnmatchcase(b.name, g)), rate) for b, rate in zip(blocks, rates)]
        head_rate = next((r for g, r in block_lrs.items() if fnmatch.fnmatchcase("classifier", g)), lr)
    parts = [("classifier", list(model.head.parameters()), head_rate)]
    seen: set[int] = set()
    for block, rate in reversed(list(zip(blocks, rates))):
        params = [p for p in block.module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        parts.append((block.name, params, rate))
    rest = [p for p in model.backbone.parameters() if id(p) not in seen]  # parameters outside every block
    if rest:
        parts.append(("backbone-other", rest, body))
    return parts


def param_groups(
    model: nn.Module,
    lr: float,
    body_lr: float | None,
    weight_decay: float,
    *,
    layer_decay: float | None = None,
    block_lrs: tuple[float, float] | dict[str, float] | None = None,
    decay_body: bool = True,
) -> list[dict[str, Any]]:
    """AdamW groups of trainable parameters only, one rate per block (see :func:`block_rates`); no decay on 1-D tensors.

    Each group carries the ``block`` it belongs to. ``decay_body=False`` turns weight decay off in
    the backbone (L2-SP pulls it toward the pretrained weights instead of toward zero).
    """
    groups = []
    for name, params, rate in block_rates(model, lr, body_lr, layer_decay=layer_decay, block_lrs=block_lrs):
        trainable = [p for p in params if p.requires_grad]
        decay = weight_decay if decay_body or name == "classifier" or name == "all" else 0.0
        matrices = [p for p in trainable if p.ndim > 1]
        vectors = [p for p in trainable if p.ndim <= 1]
        groups += [g for g in ({"params": matrices, "lr": rate, "weight_decay": decay, "block": name},
                               {"params": vectors, "lr": rate, "weight_decay": 0.0, "block": name}) if g["params"]]  # fmt: skip
    if not groups:
        raise ValueError("Nothing to train: every parameter is frozen; unfreeze some blocks or use feature extraction")
    return groups


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` of the steps, then cosine decay to zero."""
    warm = max(1, int(warmup * total_steps)) if warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def to_device(inputs: Any, device: torch.device) -> Any:
    """Move a batch (tensor or dict of tensors) to ``device``; image batches go channels-last.

    Batches from pinned memory (loaders pin on a GPU machine) are copied asynchronously.
    """
    if isinstance(inputs, dict):
        return {k: to_device(v, device) for k, v in inputs.items()}
    blocking = not inputs.is_pinned() if device.type == "cuda" else True
    if inputs.ndim == 4:
        return inputs.to(device, memory_format=torch.channels_last, non_blocking=not blocking)
    return inputs.to(device, non_blocking=not blocking)


@torch.inference_mode()
def evaluate_loader(
    model: nn.Module, loader: Iterable[Any], device: torch.device | None = None, views: Sequence[Any] | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean cross-entropy loss, class probabilities and labels over ``loader``.

    ``views`` (test-time augmentation, see :data:`headstart.data.preprocessing.TTA_VIEWS`): functions of
    the input batch whose class probabilities are averaged.
    """
    model.eval()
    device = device or next(model.parameters()).device
    losses, probs, labels = [], [], []
    for inputs, y in loader:
        inputs = to_device(inputs, device)
        p = torch.stack([model(view(inputs)).float().softmax(-1) for view in views]).mean(0) if views and len(views) > 1 else model(inputs).float().softmax(-1)
        y = y.to(device)
        if (y >= 0).all():
            losses.append(nn.functional.nll_loss(p.clamp_min(1e-12).log(), y, reduction="sum").item())
        probs.append(p.cpu().numpy())
        labels.append(y.cpu().numpy())
    if not labels:  # this rank's share of a tiny set can be empty
        return float("nan"), np.empty((0, 0), dtype=np.float32), np.empty(0, dtype=np.int64)
    n = sum(len(x) for x in labels)
    return (sum(losses) / n if losses and n else float("nan")), np.concatenate(probs), np.concatenate(labels)


def validate(model: nn.Module, loader: Iterable[Any], device: torch.device) -> dict[str, float]:
    """``val_loss`` and ``val_accuracy`` over ``loader``; under torchrun each rank holds a share and the sums are reduced."""
    loss, probs, labels = evaluate_loader(model, loader, device)
    n = len(labels)
    loss_sum, correct, n = distributed.sum_over_ranks(loss * n if n else 0.0, float((probs.argmax(1) == labels).sum()) if n else 0.0, n)
    return {"val_loss": loss_sum / n if n else float("nan"), "val_accuracy": correct / n if n else float("nan")}


def _should_log(epoch: int, epochs: int) -> bool:
    """Every epoch for short runs; about ten lines for long ones (e.g. head training on features)."""
    return epochs <= 20 or epoch == 1 or epoch % math.ceil(epochs / 10) == 0


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on a GPU that supports it; nothing elsewhere.

    CPU bf16 autocast is refused: it was not shown to be faster on the shared CPU headstart is
    developed on (the measurement could not be made reliably, see BENCHMARKS.md), and it costs
    accuracy, so it stays GPU-only until a measurement says otherwise.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type != "cuda" or not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision='bf16' needs a GPU with bfloat16 support; this run is on {device.type} (use precision='fp32')")
    return torch.autocast("cuda", dtype=torch.bfloat16)


def fit_model(
    model: nn.Module,
    train_loader: Sequence[Any] | Iterable[Any],
    val_loader: Sequence[Any] | Iterable[Any] | None,
    settings: TrainSettings,
    *,
    phase: str = "train",
    history: History | None = None,
    progress: Progress | None = None,
    callbacks: Sequence[Callback] = (),
    penalties: Sequence[Penalty] = (),
) -> History:
    """Train the parameters of ``model`` that require gradients; restore the best validation weights.

    Frozen parameters are neither given gradients nor handed to the optimizer, which is built here
    from what is trainable at the start of the phase. Before the first step, :func:`audit_freeze`
    checks that this is still so (after any callback, e.g. a restored checkpoint) and logs the result.
    ``penalties`` (see :mod:`headstart.training.regularizers`) are added to the loss.
    """
    history = history or History()
    device = next(model.parameters()).device
    decay_body = not any(p.replaces_weight_decay for p in penalties)
    optimizer = torch.optim.AdamW(param_groups(model, settings.lr, settings.body_lr, settings.weight_decay, layer_decay=settings.layer_decay,
                                               block_lrs=settings.block_lrs, decay_body=decay_body))  # fmt: skip
    meant_frozen = frozen_parameter_names(model)
    batches_per_epoch = max(1, len(train_loader))  # type: ignore[arg-type]
    steps_per_epoch = math.ceil(batches_per_epoch / settings.accumulate)
    scheduler = make_scheduler(optimizer, settings.epochs * steps_per_epoch, settings.warmup)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    split_forward = any(p.needs_features for p in penalties)
    best: dict[str, Any] | None = None
    best_state, best_epoch, waited = None, 0, 0
    if history.epochs and val_loader is not None:
        # A later phase (fine-tuning after the head warm-up) must not end worse than it started.
        best = validate(model, val_loader, device)
        best_state, best_epoch = copy.deepcopy(model.state_dict()), history.epochs[-1]["epoch"]
    state: dict[str, Any] = {
        "model": model, "epoch": 0, "history": history, "stop": False, "phase": phase,
        "settings": settings, "optimizer": optimizer, "scheduler": scheduler, "train_loader": train_loader,
    }  # fmt: skip
    for callback in callbacks:
        callback.on_fit_start(state)
    if "resume" in state:  # a callback restored a checkpoint of this phase (see headstart.training.checkpoint)
        best, best_state, best_epoch, waited = state.pop("resume")
    done = state.pop("epochs_done", 0)
    resumed = state.pop("resumed", False)
    first_epoch = (history.epochs[-1]["epoch"] if history.epochs else 0) + 1
    if done < settings.epochs:
        model.train()
        line = audit_freeze(model, optimizer, meant_frozen=meant_frozen, phase=phase) + (" (after resume)" if resumed else "")
        history.audits.append(line)
        if progress is not None:
            progress.log(line)
    net = distributed.wrap(model, train_loader)  # DDP over what trains in this phase when batches are sharded across ranks
    if settings.torch_compile:  # only the training steps: state dicts, checkpoints and validation read the plain module
        net = torch.compile(net)
    if net is not model and progress is not None:
        progress.log(f"{phase}: DistributedDataParallel on {distributed.world_size()} ranks ({distributed.backend()}): "
                     f"{sum(p.requires_grad for p in model.parameters())} trainable tensors all-reduced, {len(meant_frozen)} frozen left out")  # fmt: skip
    for epoch in range(first_epoch, first_epoch + settings.epochs - done):
        started = time.perf_counter()
        model.train()
        if hasattr(getattr(train_loader, "sampler", None), "set_epoch"):
            train_loader.sampler.set_epoch(epoch)  # type: ignore[union-attr]  # a new shuffle per epoch, the same on every rank
        total_loss, correct, seen = 0.0, 0, 0
        task = progress.task(f"{phase} epoch {epoch - first_epoch + 1 + done}/{settings.epochs}", total=batches_per_epoch) if progress else None
        optimizer.zero_grad(set_to_none=True)
        for batch, (inputs, y) in enumerate(train_loader, start=1):
            inputs, y = to_device(inputs, device), y.to(device)
            stepping = batch % settings.accumulate == 0 or batch == batches_per_epoch
            # Accumulated micro-batches skip DDP's all-reduce; the stepping one reduces the sum.
            with autocast(device, settings.precision), (contextlib.nullcontext() if stepping or net is model else net.no_sync()):  # type: ignore[operator]
                features, logits = net(inputs, return_features=True) if split_forward else (None, net(inputs))
                logits = logits.float()
                loss = loss_fn(logits, y)
                penalty = sum((p(model, features) for p in penalties), torch.zeros((), device=device))
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{phase} epoch {epoch}: loss became {loss.item()}; lower the learning rate (now {settings.lr:g})"
                    )
                ((loss + penalty.float()) / settings.accumulate).backward()
            if stepping:
                if settings.grad_clip:
                    nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(-1) == y).sum())
            seen += len(y)
            if task is not None:
                task.advance()
        if task is not None:
            task.done()
        total_loss, correct, seen = distributed.sum_over_ranks(total_loss, correct, seen)
        record: dict[str, Any] = {
            "epoch": epoch,
            "phase": phase,
            "train_loss": total_loss / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": time.perf_counter() - started,  # the training steps alone, without validation
        }
        if val_loader is not None:
            record.update(validate(model, val_loader, device))
        else:
            record.update(val_loss=record["train_loss"], val_accuracy=record["train_accuracy"])
        record["seconds"] = time.perf_counter() - started
        history.epochs.append(record)
        if progress is not None and _should_log(epoch - first_epoch + 1, settings.epochs):
            progress.log(
                f"{phase} epoch {epoch}: train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.3f} | "
                f"val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.3f} | {record['seconds']:.1f}s"
            )
        if settings.improved(record, best):
            best, best_epoch, waited = record, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
        state.update(epoch=epoch, record=record, best=(best, best_state, best_epoch, waited))
        for callback in callbacks:
            callback.on_epoch_end(state)
        if state["stop"] or (settings.patience is not None and waited >= settings.patience):
            if progress is not None:
                progress.log(f"{phase}: early stop after epoch {epoch} (best epoch {best_epoch})")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
        history.kept_epoch = best_epoch
    for callback in callbacks:
        callback.on_fit_end(state)
    return history
