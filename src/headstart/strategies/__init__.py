"""The four ways to reuse (or not) a pretrained network, each a few readable lines.

=====================  ===========================================================================
``feature-extraction``  whole body frozen; pooled features computed once (cached); only the head trains
``fine-tune``           head first on cached features, then the top blocks train (smaller rate than the head)
``full``                head first on cached features, then every block trains (smaller body rate)
``gradual``             head first, then blocks unfrozen from the top one stage at a time (ULMFiT)
``lora``                head first, then low-rank adapters in the attention layers (transformers only)
``contrastive``         few-shot text (SetFit): the encoder tuned on same/different-class pairs, then the head
``scratch``             same architecture from random initialisation: what transfer bought
=====================  ===========================================================================

``fine-tune`` is LP-FT (Kumar et al., ICLR 2022) by default: the head is fitted to convergence on
cached features before any backbone weight moves; ``head_warmup=False`` gives plain fine-tuning.
Every end-to-end phase can add penalties toward the pretrained weights (``FitContext.penalties``,
see :mod:`headstart.training.regularizers`) and use per-block rates (``TrainSettings.layer_decay``,
``TrainSettings.block_lrs``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from headstart.config import DEFAULTS, check_strategy_options
from headstart.strategies.base import FitContext, Strategy, augmentation, share_frozen_bottom, warm_up_head
from headstart.strategies.builtin import Contrastive, FeatureExtraction, FineTune, Full, Gradual, LoRA, Scratch

__all__ = ["STRATEGIES", "Contrastive", "FeatureExtraction", "FineTune", "FitContext", "Full", "Gradual", "LoRA", "Scratch", "Strategy",
           "augmentation", "make_strategy", "share_frozen_bottom", "warm_up_head"]  # fmt: skip


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (FeatureExtraction, FineTune, Full, Gradual, LoRA, Contrastive, Scratch)}


def make_strategy(
    name: str,
    *,
    epochs: int | None = DEFAULTS.epochs,
    lr: float | None = DEFAULTS.lr,
    body_lr: float | None = DEFAULTS.body_lr,
    patience: int | None | str = DEFAULTS.patience,
    monitor: str | None = DEFAULTS.monitor,
    trainable_blocks: int | None = DEFAULTS.trainable_blocks,
    freeze: float | None = DEFAULTS.freeze,
    batchnorm: str | None = DEFAULTS.batchnorm,
    head_warmup: bool | None = DEFAULTS.head_warmup,
    layer_decay: float | None = DEFAULTS.layer_decay,
    block_lrs: tuple[float, float] | dict[str, float] | None = DEFAULTS.block_lrs,
    accumulate: int | None = DEFAULTS.accumulate,
    grad_clip: float | None | str = DEFAULTS.grad_clip,
    precision: str | None = DEFAULTS.precision,
    torch_compile: bool | None = DEFAULTS.torch_compile,
    unfreeze_blocks: int | None = DEFAULTS.unfreeze_blocks,
    lora_rank: int | None = DEFAULTS.lora_rank,
    label_templates: int | None = DEFAULTS.label_templates,
) -> Strategy:
    """Build a strategy by name, overriding only the settings that were given.

    The keywords are :data:`headstart.config.STRATEGY_OPTIONS`, with :class:`~headstart.config.FitConfig`'s
    defaults (tests/test_config.py keeps them equal); :func:`headstart.api.fit` passes them from its config.
    """
    check_strategy_options(name, {key: value for key, value in locals().items() if key != "name"})
    strategy = STRATEGIES[name]()
    overrides: dict[str, Any] = {}
    if epochs is not None:
        overrides["epochs"] = epochs
    if lr is not None:
        overrides["lr"] = lr
        if body_lr is None and strategy.settings.body_lr is not None:
            overrides["body_lr"] = lr * (strategy.settings.body_lr / strategy.settings.lr)
    if body_lr is not None:
        overrides["body_lr"] = body_lr
    if patience != "default":
        overrides["patience"] = patience
    if grad_clip != "default":
        overrides["grad_clip"] = grad_clip
    for key, value in (("monitor", monitor), ("layer_decay", layer_decay), ("block_lrs", block_lrs), ("accumulate", accumulate), ("precision", precision),
                       ("torch_compile", torch_compile)):
        if value is not None:
            overrides[key] = value
    strategy.settings = replace(strategy.settings, **overrides)
    if batchnorm is not None:
        strategy.batchnorm = batchnorm
    if head_warmup is not None:
        strategy.head_warmup = head_warmup
    if isinstance(strategy, FineTune):
        strategy.trainable_blocks = trainable_blocks
        if freeze is not None:
            strategy.freeze = freeze
    if isinstance(strategy, Gradual):
        strategy.blocks = unfreeze_blocks
    if isinstance(strategy, LoRA) and lora_rank is not None:
        strategy.rank = lora_rank
    if isinstance(strategy, Contrastive) and label_templates is not None:
        strategy.templates = label_templates
    return strategy
