"""Freeze-boundary activation cache: a frozen bottom is computed once per fit, not once per epoch.

When the first ``k`` blocks of a backbone are frozen (eval mode, no gradient) and the inputs are
the same every epoch (no augmentation), the output of block ``k - 1`` is the same every epoch too.
The textbook fine-tuning loop recomputes it anyway; here it is computed once, kept in memory, and
only the trainable top (blocks ``k`` onwards, pooling and head) runs per step. Unfreezing a block
changes which blocks are frozen, so the plan is made again at the start of every phase.

It pays whenever the frozen bottom costs more to recompute than its output costs to keep: on CPU
the frozen bottom of a CNN is most of the forward pass, so the only limit is memory. The plan
keeps activations when they fit in ``budget`` bytes (default: a quarter of the memory available
now, at most 4 GiB) and otherwise says why it recomputes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from headstart.backbones import TimmBackbone
from headstart.data import make_loader
from headstart.freezing import fold_batchnorm, is_frozen
from headstart.model import TransferModel
from headstart.progress import Progress
from headstart.training.evaluation import to_device

MAX_BUDGET = 4 << 30


def available_memory() -> int:
    """Bytes of memory available now (Linux ``/proc/meminfo``), or 8 GiB where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def default_budget() -> int:
    return min(MAX_BUDGET, available_memory() // 4)


def frozen_prefix(model: TransferModel) -> int:
    """Number of leading backbone blocks that are frozen (no trainable parameter)."""
    count = 0
    for block in model.backbone.blocks:
        if not is_frozen(block):
            break
        count += 1
    return count


@dataclass(frozen=True)
class BoundaryPlan:
    """Whether to cache the output of the frozen bottom, and why (the line goes to the run log)."""

    start: int  # first trainable block; activations are the output of block start - 1
    bytes_per_example: int
    total_bytes: int
    use: bool
    reason: str


def plan_boundary(model: TransferModel, examples: int, *, augment: str, budget: int | None = None, start: int | None = None) -> BoundaryPlan:
    """Decide if the frozen bottom of ``model`` is computed once for ``examples`` inputs.

    ``start``: the first trainable block of the phase being planned (default: as ``model`` is frozen now).
    """
    backbone = model.backbone
    start = frozen_prefix(model) if start is None else start
    if not isinstance(backbone, TimmBackbone):
        return BoundaryPlan(start, 0, 0, False, f"activation cache: not used ({type(backbone).__name__} backbones recompute their frozen blocks)")
    if start == 0:
        return BoundaryPlan(0, 0, 0, False, "activation cache: not used (no frozen bottom block)")
    if start >= len(backbone.blocks):
        return BoundaryPlan(start, 0, 0, False, "activation cache: not used (the whole body is frozen: feature extraction caches pooled features instead)")
    if augment != "none":
        return BoundaryPlan(start, 0, 0, False, f"activation cache: not used (augment={augment!r} changes the inputs every epoch; use augment='none' to cache)")
    size = backbone.preprocessing.input_size
    was_training = backbone.training
    backbone.eval()
    with torch.inference_mode():
        probe = _bottom(backbone, start, torch.zeros(1, 3, size, size, device=backbone.device))
    backbone.train(was_training)
    per_example = probe.numel() * probe.element_size()
    total = per_example * examples
    budget = default_budget() if budget is None else budget
    boundary = backbone.blocks[start - 1].name
    if total > budget:
        return BoundaryPlan(
            start, per_example, total, False,
            f"activation cache: not used ({examples} x {tuple(probe.shape[1:])} activations after {boundary} = {total / 2**20:.0f} MiB "
            f"> budget {budget / 2**20:.0f} MiB); the frozen blocks are recomputed every epoch",
        )  # fmt: skip
    return BoundaryPlan(
        start, per_example, total, True,
        f"activation cache: blocks up to {boundary} are frozen and inputs are fixed, so their output is computed once "
        f"({examples} x {tuple(probe.shape[1:])} = {total / 2**20:.0f} MiB) and only the top {len(backbone.blocks) - start} blocks run per step",
    )  # fmt: skip


def _bottom(backbone: TimmBackbone, start: int, x: torch.Tensor) -> torch.Tensor:
    for stage in list(backbone.stages.values())[:start]:
        x = stage(x)
    return x


def boundary_activations(model: TransferModel, items: Sequence[Any], start: int, *, batch_size: int = 64, progress: Progress | None = None) -> torch.Tensor:
    """Output of the first ``start`` blocks for every item (evaluation transform), float32 on CPU.

    Runs through a copy with BatchNorm folded into the convolutions (see
    :func:`headstart.freezing.fold_batchnorm`; the bottom is frozen, so its BatchNorm is fixed).
    """
    backbone = model.backbone
    assert isinstance(backbone, TimmBackbone)
    was_training = backbone.training
    backbone.eval()
    loader = make_loader(items, None, backbone.preprocessing, batch_size=batch_size)
    task = progress.task(f"activations after {backbone.blocks[start - 1].name}", total=len(items)) if progress else None
    parts = []
    runner = None
    for inputs, _ in loader:
        inputs = to_device(inputs, backbone.device)
        if runner is None:
            runner = fold_batchnorm(backbone, inputs[:2])[0]
        with torch.inference_mode():
            parts.append(_bottom(runner, start, inputs).float().cpu())
        if task is not None:
            task.advance(len(inputs))
    if task is not None:
        task.done()
    backbone.train(was_training)
    if not parts:
        return torch.empty(0)
    return torch.cat(parts).contiguous(memory_format=torch.channels_last)


class TopModel(nn.Module):
    """The trainable top of a :class:`TransferModel`: blocks ``start`` onwards, pooling and head.

    It shares (and registers under the same names) the model's ``backbone`` and ``head``, so its
    state dict, optimizer groups and checkpoints are those of the whole model, and training it
    trains the model in place.
    """

    def __init__(self, model: TransferModel, start: int) -> None:
        super().__init__()
        assert isinstance(model.backbone, TimmBackbone)
        self.backbone, self.head, self.start = model.backbone, model.head, start
        self._whole = [model]  # unregistered: train()/eval() go through the model's freezing rules

    def train(self, mode: bool = True) -> TopModel:
        self._whole[0].train(mode)
        self.training = mode
        return self

    def pooled(self, activations: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features (what the head reads) from the boundary activations."""
        x = activations
        for stage in list(self.backbone.stages.values())[self.start :]:
            x = stage(x)
        return self.backbone.pool(x)

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(activations))


@torch.inference_mode()
def pooled_features(model: TransferModel, activations: torch.Tensor, start: int, *, batch_size: int = 64) -> np.ndarray:
    """Pooled features of the whole backbone in inference mode, from the output of its first ``start`` blocks.

    Equal (to float rounding) to embedding the inputs with the whole backbone, for the cost of its top
    blocks only: a fit that needs both the frozen bottom's output and the pooled features of the same
    examples runs the bottom once.
    """
    backbone = model.backbone
    was_training = backbone.training
    backbone.eval()
    top = TopModel(model, start)
    parts = [top.pooled(activations[i : i + batch_size].to(backbone.device)).float().cpu().numpy() for i in range(0, len(activations), batch_size)]
    backbone.train(was_training)
    return np.concatenate(parts) if parts else np.empty((0, backbone.feature_dim), dtype=np.float32)


def budget_from_env() -> int | None:
    """``HEADSTART_ACTIVATION_BUDGET`` (bytes; ``0`` turns the cache off) or None for the default."""
    value = os.environ.get("HEADSTART_ACTIVATION_BUDGET")
    return int(value) if value else None
