"""The training loop: AdamW, warm-up + cosine, validation every epoch, callbacks around each.

Progressive disclosure, the Keras way: :func:`fit_model` does the common case in one call;
:class:`~headstart.training.callbacks.Callback` hooks (a fixed, listed set) let users watch, resume
or stop it (keeping the best weights and early stopping are two such callbacks); a custom loop can
reuse :func:`~headstart.training.optim.param_groups`, :func:`~headstart.training.optim.make_scheduler`
and :func:`~headstart.training.evaluation.evaluate_loader`. What stays here is executing a step:
accumulation, precision, the NaN guard and DistributedDataParallel.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

import headstart.training.distributed as distributed
from headstart.freezing import audit_freeze, frozen_parameter_names
from headstart.progress import Progress
from headstart.tasks import CLASSIFICATION, Task
from headstart.training.callbacks import Callback, EarlyStopping, KeepBest
from headstart.training.evaluation import to_device, validate
from headstart.training.optim import make_scheduler, param_groups
from headstart.training.regularizers import Penalty
from headstart.training.state import History, TrainSettings, TrainState


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    task: Task = CLASSIFICATION,
) -> History:
    """Train the parameters of ``model`` that require gradients; restore the best validation weights.

    Frozen parameters are neither given gradients nor handed to the optimizer, which is built here
    from what is trainable at the start of the phase. Before the first step, :func:`audit_freeze`
    checks that this is still so (after any callback, e.g. a restored checkpoint) and logs the result.
    ``penalties`` (see :mod:`headstart.training.regularizers`) are added to the loss. ``callbacks``
    run between :class:`~headstart.training.callbacks.KeepBest` and
    :class:`~headstart.training.callbacks.EarlyStopping`, all sharing one
    :class:`~headstart.training.state.TrainState`. ``task`` (:mod:`headstart.tasks`) gives the loss and the score.
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
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    split_forward = any(p.needs_features for p in penalties)
    state = TrainState(model=model, phase=phase, settings=settings, history=history, optimizer=optimizer, scheduler=scheduler,
                       train_loader=train_loader, val_loader=val_loader, progress=progress, task=task)  # fmt: skip
    # KeepBest first: a resuming callback (headstart.training.checkpoint) then replaces the best it set;
    # EarlyStopping last: it sees the stop requests of every other callback.
    hooks = [KeepBest(), *callbacks, EarlyStopping()]
    for hook in hooks:
        hook.on_fit_start(state)
    done, resumed = state.epochs_done, state.resumed
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
    folding = contextlib.ExitStack()  # frozen bottom blocks run with BatchNorm folded while the phase trains (TransferModel.frozen_batchnorm_folded)
    if hasattr(model, "frozen_batchnorm_folded") and done < settings.epochs:
        folded = folding.enter_context(model.frozen_batchnorm_folded())
        if folded and progress is not None:
            progress.log(f"{phase}: BatchNorm folded into the convolutions of the frozen blocks {', '.join(folded)} (their statistics never move)")
    with folding:
        # One bar of steps for the whole phase (as the HF Trainer's): its ETA holds across epochs and moves inside a long one.
        bar = progress.task(f"{phase} epoch {done + 1}/{settings.epochs}", total=(settings.epochs - done) * batches_per_epoch) if progress else None
        for epoch in range(first_epoch, first_epoch + settings.epochs - done):
            started = time.perf_counter()
            model.train()
            if hasattr(getattr(train_loader, "sampler", None), "set_epoch"):
                train_loader.sampler.set_epoch(epoch)  # type: ignore[union-attr]  # a new shuffle per epoch, the same on every rank
            total_loss, correct, seen = 0.0, 0, 0
            if bar is not None:
                bar.update(f"{phase} epoch {epoch - first_epoch + 1 + done}/{settings.epochs}")
            optimizer.zero_grad(set_to_none=True)
            for batch, (inputs, y, *weight) in enumerate(train_loader, start=1):  # a third tensor: per-example loss weights (tensor_loader)
                inputs, y = to_device(inputs, device), y.to(device)
                stepping = batch % settings.accumulate == 0 or batch == batches_per_epoch
                # Accumulated micro-batches skip DDP's all-reduce; the stepping one reduces the sum.
                with autocast(device, settings.precision), (contextlib.nullcontext() if stepping or net is model else net.no_sync()):  # type: ignore[operator]
                    features, logits = net(inputs, return_features=True) if split_forward else (None, net(inputs))
                    logits = logits.float()
                    loss = task.loss(logits, y, weight[0].to(device) if weight else None, settings.label_smoothing)
                    penalty = sum((p(model, features) for p in penalties), torch.zeros((), device=device))
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"{phase} epoch {epoch - first_epoch + 1 + done}/{settings.epochs}: loss became {loss.item()}; lower the learning rate (now {settings.lr:g})"
                        )
                    ((loss + penalty.float()) / settings.accumulate).backward()
                if stepping:
                    if settings.grad_clip:
                        nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                total_loss += loss.item() * len(y)
                correct += task.batch_score(logits, y)
                seen += len(y)
                if bar is not None:
                    bar.advance()
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
                record.update(validate(model, val_loader, device, task))
            else:
                record.update(val_loss=record["train_loss"], val_accuracy=record["train_accuracy"])
            record["seconds"] = time.perf_counter() - started
            if end_epoch(state, hooks, record, first_epoch=first_epoch):
                break
        if bar is not None:
            bar.done()
    for hook in hooks:
        hook.on_fit_end(state)
    return history


def end_epoch(state: TrainState, hooks: Sequence[Callback], record: dict[str, Any], *, first_epoch: int) -> bool:
    """Record one finished epoch (history, log line), run the callbacks' ``on_epoch_end``; whether the phase stops.

    The log line numbers the epoch within its phase ("fine-tune epoch 2/6"), as the progress bar
    does; the record keeps both numberings (``epoch`` across phases, ``phase_epoch`` of ``phase_epochs``).
    """
    epoch = record["epoch"]
    in_phase = epoch - first_epoch + 1 + state.epochs_done
    record.update(phase_epoch=in_phase, phase_epochs=state.settings.epochs)
    state.history.epochs.append(record)
    if state.progress is not None and _should_log(in_phase, state.settings.epochs):
        state.progress.log(
            f"{state.phase} epoch {in_phase}/{state.settings.epochs}: train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.3f} | "
            f"val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.3f} | {record['seconds']:.1f}s"
        )
    state.epoch, state.record = epoch, record
    for hook in hooks:
        hook.on_epoch_end(state)
    return state.stop
