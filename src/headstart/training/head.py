"""Training a head on cached features as what it is: a small model on an in-memory tensor.

A linear head (or an MLP without dropout) on a few thousand pooled features is a convex (or nearly
convex) problem that fits in memory: full-batch L-BFGS solves it in a few hundred cheap steps, where
mini-batches of 32 through a DataLoader, validated every epoch, cost thousands of tiny operations
(sms_spam: 100 epochs of 119 steps, 15.8 s on a quiet machine; scikit-learn's LogisticRegression
fits the same features in under a second). Here an *epoch* is one round of ``ROUND_ITERATIONS``
L-BFGS iterations over the whole training set, then a validation pass; :class:`KeepBest` and
:class:`EarlyStopping` stop on the validation loss as they do for any phase, so early stopping
still regularises. The loss is the mean cross-entropy plus ``settings.weight_decay`` times the
squared norm of the weight matrices (an L2 penalty, as in logistic regression; biases are free); for
regression and multi-label targets the task's loss replaces the cross-entropy (:mod:`headstart.tasks`).

Each round starts a fresh L-BFGS from the current weights, so the weights alone are the state: a
run resumed from a checkpoint after round ``k`` continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from headstart.freezing import audit_freeze, frozen_parameter_names
from headstart.progress import Progress
from headstart.tasks import CLASSIFICATION, Task
from headstart.training.callbacks import Callback, EarlyStopping, KeepBest
from headstart.training.evaluation import validate
from headstart.training.loop import end_epoch
from headstart.training.state import History, TrainSettings, TrainState

ROUND_ITERATIONS = 10  # L-BFGS iterations per epoch (a validation pass and the callbacks after each)
ONE_THREAD_WORK = 1 << 26  # multiply-adds of one forward pass below which one thread is faster than several


@contextlib.contextmanager
def _threads_for(work: int) -> Iterator[None]:
    """One intra-op thread for small work: a 208 x 1280 head's step took 32 ms on two threads of a
    busy 2-core machine (threads spin, waiting for each other) and 1.7 ms on one."""
    before = torch.get_num_threads()
    if work < ONE_THREAD_WORK:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def full_batch_trainable(head: nn.Module) -> bool:
    """Whether ``head`` can be fitted full batch: no dropout (it would make every L-BFGS evaluation a different function)."""
    return not any(isinstance(m, nn.Dropout) and m.p > 0 for m in head.modules())


def fit_head(
    head: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    settings: TrainSettings,
    *,
    phase: str = "feature-extraction",
    progress: Progress | None = None,
    callbacks: Sequence[Callback] = (),
    weights: torch.Tensor | None = None,
    task: Task = CLASSIFICATION,
) -> History:
    """Fit ``head`` on in-memory ``(features, labels)`` by full-batch L-BFGS rounds; keep the best validation weights.

    ``weights``: one per training example; the training loss is their weighted mean (validation stays unweighted).
    ``task``: the loss (cross-entropy, MSE/Huber or BCE: all smooth, so L-BFGS applies to each) and the score.
    """
    work = train[0].numel() * sum(p.shape[0] for p in head.parameters() if p.ndim > 1)
    with _threads_for(work):
        return _fit_head(head, train, val, settings, phase=phase, progress=progress, callbacks=callbacks, weights=weights, task=task)


def _fit_head(
    head: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    settings: TrainSettings,
    *,
    phase: str,
    progress: Progress | None,
    callbacks: Sequence[Callback],
    weights: torch.Tensor | None,
    task: Task,
) -> History:
    history = History()
    device = next(head.parameters()).device
    kind = torch.long if task.name == "classification" else torch.float32
    x, y = train[0].to(device), train[1].to(device, kind)
    val_batches = [(val[0].to(device), val[1].to(device, kind))]
    params = [p for p in head.parameters() if p.requires_grad]
    matrices = [p for p in params if p.ndim > 1]
    example_weights = None if weights is None else weights.to(device).float()

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return task.loss(logits, y, example_weights, settings.label_smoothing)

    def new_optimizer() -> torch.optim.LBFGS:
        return torch.optim.LBFGS(params, lr=1.0, max_iter=ROUND_ITERATIONS, history_size=10, line_search_fn="strong_wolfe",
                                 tolerance_grad=1e-7, tolerance_change=1e-10)  # fmt: skip

    optimizer = new_optimizer()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)  # L-BFGS has no schedule; the checkpoint saves one
    state = TrainState(model=head, phase=phase, settings=settings, history=history, optimizer=optimizer, scheduler=scheduler,
                       train_loader=None, val_loader=val_batches, progress=progress, task=task)  # fmt: skip
    hooks = [KeepBest(), *callbacks, EarlyStopping()]
    for hook in hooks:
        hook.on_fit_start(state)
    if state.epochs_done < settings.epochs:
        line = audit_freeze(head, optimizer, meant_frozen=frozen_parameter_names(head), phase=phase) + (" (after resume)" if state.resumed else "")
        history.audits.append(line)
        if progress is not None:
            progress.log(line)
    first_epoch = (history.epochs[-1]["epoch"] if history.epochs else 0) + 1

    def objective() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(head(x), y) + settings.weight_decay * sum((w * w).sum() for w in matrices)
        loss.backward()
        return loss

    # Each epoch is one full-batch L-BFGS round: the bar counts rounds, so a long head fit shows an ETA too.
    bar = progress.task(f"{phase} epoch {state.epochs_done + 1}/{settings.epochs}", total=settings.epochs - state.epochs_done) if progress else None
    for epoch in range(first_epoch, first_epoch + settings.epochs - state.epochs_done):
        started = time.perf_counter()
        head.train()
        if bar is not None:
            bar.update(f"{phase} epoch {epoch - first_epoch + 1 + state.epochs_done}/{settings.epochs}")
        optimizer = state.optimizer = new_optimizer()
        optimizer.step(objective)
        optimizer.zero_grad(set_to_none=True)  # no gradients left on the head, as after any phase
        with torch.no_grad():
            logits = head(x)
            train_loss = float(loss_fn(logits, y))
        if not torch.isfinite(torch.tensor(train_loss)):
            raise FloatingPointError(f"{phase} epoch {epoch - first_epoch + 1 + state.epochs_done}/{settings.epochs}: loss became {train_loss}; a feature or a head weight is not finite: check the inputs, or clear the embedding cache ($HEADSTART_CACHE)")
        record: dict[str, Any] = {"epoch": epoch, "phase": phase, "train_loss": train_loss, "train_accuracy": task.mean_score(logits, y),
                                  "lr": 1.0, "train_seconds": time.perf_counter() - started}  # fmt: skip
        record.update(validate(head, val_batches, device, task) if len(val[1]) else {"val_loss": train_loss, "val_accuracy": record["train_accuracy"]})
        record["seconds"] = time.perf_counter() - started
        if bar is not None:
            bar.advance()
        if end_epoch(state, hooks, record, first_epoch=first_epoch):
            break
    if bar is not None:
        bar.done()
    for hook in hooks:
        hook.on_fit_end(state)
    return history
