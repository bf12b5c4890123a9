"""Running a model over batches without training it: device moves, loss and probabilities, validation.

Shared by the training loop and the callbacks that validate (:class:`~headstart.training.callbacks.KeepBest`
scores the starting weights of a later phase), so it lives apart from both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

import headstart.training.distributed as distributed
from headstart.tasks import CLASSIFICATION, Task


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
    model: nn.Module, loader: Iterable[Any], device: torch.device | None = None, views: Sequence[Any] | None = None, task: Task = CLASSIFICATION
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean loss, outputs and labels over ``loader``: for classification the cross-entropy and class probabilities;
    for other tasks their :meth:`~headstart.tasks.Task.outputs` and validation loss (:mod:`headstart.tasks`).

    ``views`` (test-time augmentation, see :data:`headstart.data.preprocessing.TTA_VIEWS`): functions of
    the input batch whose outputs are averaged.
    """
    model.eval()
    device = device or next(model.parameters()).device
    losses, probs, labels = [], [], []
    classify = task.name == "classification"
    for inputs, y in loader:
        inputs = to_device(inputs, device)
        p = torch.stack([task.outputs(model(view(inputs)).float()) for view in views]).mean(0) if views and len(views) > 1 else task.outputs(model(inputs).float())
        y = y.to(device)
        if classify and (y >= 0).all():
            losses.append(nn.functional.nll_loss(p.clamp_min(1e-12).log(), y, reduction="sum").item())
        probs.append(p.cpu().numpy())
        labels.append(y.cpu().numpy())
    if not labels:  # this rank's share of a tiny set can be empty
        return float("nan"), np.empty((0, 0), dtype=np.float32), np.empty(0, dtype=np.int64)
    n = sum(len(x) for x in labels)
    outputs, targets = np.concatenate(probs), np.concatenate(labels)
    if not classify:  # unlabelled batches (prediction) carry -1: their loss is meaningless and unused
        losses = [float(task.output_losses(outputs, targets).sum())] if targets.shape[:1] == outputs.shape[:1] and targets.ndim == outputs.ndim - (task.name == "regression") else []
    return (sum(losses) / n if losses and n else float("nan")), outputs, targets


def validate(model: nn.Module, loader: Iterable[Any], device: torch.device, task: Task = CLASSIFICATION) -> dict[str, float]:
    """``val_loss`` and ``val_accuracy`` (the task's score, :mod:`headstart.tasks`) over ``loader``, with ``val_n`` and
    ``val_loss_se``, the standard error of the mean per-example loss (the noise the overfitting flag weighs a rise
    against); under torchrun each rank holds a share and the sums are reduced."""
    loss, probs, labels = evaluate_loader(model, loader, device, task=task)
    n = len(labels)
    each = task.output_losses(probs, labels) if n else np.zeros(0)
    loss_sum, correct, squares, plain, n = distributed.sum_over_ranks(loss * n if n else 0.0, float(task.output_scores(probs, labels).sum()) if n else 0.0,
                                                                      float((each**2).sum()), float(each.sum()), n)  # fmt: skip
    variance = (squares - plain * plain / n) / (n - 1) if n > 1 else float("nan")
    return {"val_loss": loss_sum / n if n else float("nan"), "val_accuracy": correct / n if n else float("nan"),
            "val_n": int(n), "val_loss_se": float(np.sqrt(max(variance, 0.0) / n)) if n > 1 else float("nan")}  # fmt: skip
