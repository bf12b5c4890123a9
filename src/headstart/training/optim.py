"""AdamW parameter groups with per-block learning rates, and the warm-up + cosine schedule.

A custom loop can build the optimizer :func:`~headstart.training.loop.fit_model` builds from these.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any

import torch
from torch import nn


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
