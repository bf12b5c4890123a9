"""Learning-rate range test (Smith 2017; fastai's ``lr_find``): rates rise exponentially, one batch each.

The loss of each step is smoothed; the test stops once it exceeds ``diverge`` times its minimum.
The suggestion is the rate where the smoothed loss falls fastest (steepest negative slope against
log rate), which is fastai's "steep"; ``minimum / 10`` is also reported. On a fitted model the
curve is flat until it breaks, and its steepest point is noise: then the suggestion is a tenth of
the rate where the loss blew up, and the result says so (``flat``). The model is restored
afterwards (weights, train/eval mode, frozen set, gradients), so the test can run before a fit or
on a fitted model (fastai #3658 crashes there) and change nothing.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from headstart.backbones import match_data
from headstart.caches.embeddings import EmbeddingCache
from headstart.data import Dataset, load_dataset, make_loader
from headstart.io import atomic_path, atomic_write_text
from headstart.model import TransferModel
from headstart.progress import Progress
from headstart.rundir import LR_FIND_NAME
from headstart.training.evaluation import to_device
from headstart.training.loop import seed_everything
from headstart.training.optim import param_groups


@dataclass
class LRFinderResult:
    """Rates tried, their smoothed losses, and the suggested rate."""

    lrs: list[float]
    losses: list[float]
    suggestion: float
    minimum: float  # the rate of the lowest smoothed loss
    flat: bool = False  # no rate lowered the loss by 10%: a fitted model; the suggestion is then ceiling / 10
    ceiling: float | None = None  # the rate at which the smoothed loss blew up (``diverge`` times its minimum), if it did

    def to_dict(self) -> dict[str, Any]:
        return {"suggestion": self.suggestion, "minimum_over_10": self.minimum / 10, "flat": self.flat, "ceiling": self.ceiling,
                "lrs": self.lrs, "losses": self.losses}  # fmt: skip

    def describe(self) -> str:
        """One line for the terminal and the report: what the curve says."""
        if self.flat:
            above = f"; it blows up at {self.ceiling:.2g}" if self.ceiling else ""
            return f"no rate lowers the loss by 10% (the model is already near a minimum){above}: keep rates at or below {self.suggestion:.2g}"
        return f"suggested rate {self.suggestion:.2g} (steepest descent; minimum/10: {self.minimum / 10:.2g})"

    def plot(self, path: str | Path) -> Path:
        """Loss against rate (log scale) with the suggestion marked; written as PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt


        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses)
        ax.set_xscale("log")
        ax.axvline(self.suggestion, color="tab:red", linestyle="--", label=f"{'ceiling/10' if self.flat else 'steepest'} {self.suggestion:.2g}")
        ax.axvline(self.minimum / 10, color="tab:green", linestyle=":", label=f"minimum/10 {self.minimum / 10:.2g}")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("smoothed training loss")
        ax.legend()
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        return path


def lr_find(
    model: nn.Module,
    train_loader: Iterable[Any],
    *,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    smooth: float = 0.98,
    diverge: float = 4.0,
    weight_decay: float = 0.01,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> LRFinderResult:
    """Range test on the trainable parameters of ``model`` (all at one rate); ``model`` is left as it was."""
    if not 0 < start < end or steps < 5:
        raise ValueError(f"lr_find: need 0 < start < end and at least 5 steps (got start={start}, end={end}, steps={steps})")
    saved = copy.deepcopy(model.state_dict())
    was_training = model.training
    grads = {p: p.grad for p in model.parameters()}
    device = next(model.parameters()).device
    groups = param_groups(model, start, start, weight_decay)
    optimizer = torch.optim.AdamW(groups)
    loss_fn = loss or nn.CrossEntropyLoss()  # find_lr passes the run's task loss (MSE/Huber for a number, BCE for label sets)
    lrs: list[float] = []
    losses: list[float] = []
    average, best = 0.0, math.inf
    ceiling: float | None = None  # the rate at which the loss blew up, if it did
    try:
        model.train()
        batches = itertools.cycle(train_loader) if hasattr(train_loader, "__len__") else iter(train_loader)
        for step, (inputs, y) in zip(range(steps), batches):
            lr = start * (end / start) ** (step / (steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = loss_fn(model(to_device(inputs, device)).float(), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            if not math.isfinite(value):
                ceiling = lr
                break
            average = smooth * average + (1 - smooth) * value
            smoothed = average / (1 - smooth ** (step + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if step > 5 and smoothed > diverge * best:
                ceiling = lr
                break
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
        for param, grad in grads.items():
            param.grad = grad
    if len(losses) < 5:
        raise FloatingPointError(f"lr_find: the loss diverged after {len(losses)} steps; start lower than {start:g}")
    logs = np.log10(lrs)
    slopes = np.gradient(np.asarray(losses), logs)
    skip = max(1, len(losses) // 10)  # the first steps are dominated by the smoothing's warm-up
    window = slopes[skip : len(slopes) - 1] if len(slopes) - 1 > skip else slopes
    steepest = int(np.argmin(window)) + (skip if len(slopes) - 1 > skip else 0)
    lowest = skip + int(np.argmin(losses[skip:]))
    # A fitted model (lr-find after fit) has nothing left to descend: the "steepest" point is noise.
    # Flat: the loss falls by less than 10% of where it started, or by less than 0.02 nats.
    flat = losses[skip] - losses[lowest] < max(0.1 * abs(losses[skip]), 0.02)
    suggestion = (ceiling or float(lrs[-1])) / 10 if flat else float(lrs[steepest])
    return LRFinderResult(lrs, losses, suggestion, float(lrs[lowest]), flat, ceiling)


def find_lr(
    data: str | Path | Dataset,
    *,
    backbone: str = "efficientnet_lite0",
    run: str | Path | None = None,
    trainable_blocks: int = 0,
    steps: int = 100,
    start: float = 1e-7,
    end: float = 10.0,
    batch_size: int = 32,
    image_size: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    quiet: bool = True,
) -> LRFinderResult:
    """Learning-rate range test on ``data``'s training split, before a fit or on a saved ``run``.

    ``trainable_blocks=0`` tests the head alone on cached features (the rate of feature extraction
    and of the head warm-up); ``k > 0`` tests the top ``k`` backbone blocks and the head end to end
    (the rate of ``fine-tune``). The model is not changed (see :mod:`headstart.analysis.lr_finder`); with
    ``run``, the curve is saved as ``RUN/lr_find.json`` for the run's report.
    """
    from torch.utils.data import DataLoader, TensorDataset

    from headstart.freezing import freeze_bottom
    from headstart.tasks import get_task

    saved = TransferModel.from_pretrained(run) if run is not None else None
    task = saved.task.name if saved is not None else "auto"  # a run's data is read as the run's task; otherwise as fit reads it
    dataset = data if isinstance(data, Dataset) else load_dataset(data, text_column=text_column, label_column=label_column, seed=seed, task=task)
    seed_everything(seed)
    if saved is None:
        kind = get_task(dataset.task)
        saved = TransferModel.from_backbone(backbone, dataset.classes, task=kind, target=kind.fit_encoding(dataset.labels("train")))
    model = saved
    if model.classes != dataset.classes:
        raise ValueError(f"{run}: the run's classes {model.classes[:5]} differ from {dataset.source}'s {dataset.classes[:5]}")
    match_data(model.backbone, dataset, image_size=image_size)
    model = model.to("cuda" if torch.cuda.is_available() else "cpu").fast_layout()
    items, labels = dataset.items("train"), model.encoded_labels(dataset.labels("train"))
    task_loss = model.task.loss
    generator = torch.Generator().manual_seed(seed)
    if trainable_blocks == 0:
        with Progress(quiet=quiet) as progress:
            features, _ = EmbeddingCache(cache_dir).embed(model.backbone, items, progress=progress)
        loader: Any = DataLoader(TensorDataset(torch.from_numpy(np.ascontiguousarray(features)), torch.as_tensor(np.asarray(labels))), batch_size=batch_size, shuffle=True, generator=generator)
        result = lr_find(model.head, loader, start=start, end=end, steps=steps, loss=task_loss)
    else:
        freeze_bottom(model, trainable_blocks + 1)
        loader = make_loader(items, labels, model.preprocessing, batch_size=batch_size, train=True, augment="none", seed=seed)
        result = lr_find(model, loader, start=start, end=end, steps=steps, loss=task_loss)
    if run is not None:  # the run's report.html shows the curve (headstart report RUN)
        atomic_write_text(Path(run) / LR_FIND_NAME, json.dumps(result.to_dict()))
    return result
