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

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch

from headstart.caches.activations import TopModel, boundary_activations, budget_from_env, plan_boundary, pooled_features
from headstart.caches.embeddings import EmbeddingCache
from headstart.caches.images import DecodedImageCache
from headstart.config import DEFAULTS, check_strategy_options
from headstart.data import Dataset, make_loader, tensor_loader
from headstart.freezing import freeze, freeze_bottom, freeze_report, set_batchnorm, unfreeze
from headstart.model import TransferModel
from headstart.progress import Progress
from headstart.training import distributed
from headstart.training.loop import Callback, History, TrainSettings, fit_model
from headstart.training.regularizers import Penalty


@dataclass
class FitContext:
    """What every strategy needs besides the model and the data."""

    progress: Progress
    cache: EmbeddingCache
    images: DecodedImageCache | None = None
    batch_size: int = 32
    seed: int = 0
    augment: str | None = None
    log: list[str] = field(default_factory=list)
    callbacks: list[Callback] = field(default_factory=list)
    penalties: list[Penalty] = field(default_factory=list)
    boundary: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)  # frozen-bottom outputs computed ahead of their phase
    features: dict[str, np.ndarray] = field(default_factory=dict)  # pooled features per split for the next feature-extraction phase


class Strategy:
    """Trains a :class:`TransferModel` on a :class:`Dataset`; subclasses set ``name`` and ``pretrained``."""

    name: ClassVar[str]
    pretrained: ClassVar[bool] = True
    settings: TrainSettings

    def run(self, model: TransferModel, data: Dataset, ctx: FitContext) -> History:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "settings": self.settings.to_dict()}

    def _train_end_to_end(
        self, model: TransferModel, data: Dataset, ctx: FitContext, default_augment: str, history: History | None = None,
        *, settings: TrainSettings | None = None, phase: str | None = None,
    ) -> History:
        report = freeze_report(model)
        ctx.progress.log(f"{phase or self.name}: {report}")
        augment = augmentation(model, ctx, default_augment)
        plan = plan_boundary(model, len(data.items("train")) + len(data.items("val")), augment=augment, budget=budget_from_env())
        if plan.start:
            ctx.progress.log(plan.reason)
        if plan.use and not any(p.needs_features for p in ctx.penalties):  # the frozen bottom runs once; only the top trains per step
            train_x, val_x = (ctx.boundary.pop((plan.start, s), None) for s in ("train", "val"))
            if train_x is None or val_x is None:
                train_x, val_x = (boundary_activations(model, data.items(s), plan.start, progress=ctx.progress) for s in ("train", "val"))
            train = tensor_loader(train_x, data.labels("train"), batch_size=ctx.batch_size, shuffle=True, seed=ctx.seed, shard=True)
            val = tensor_loader(val_x, data.labels("val"), batch_size=ctx.batch_size * 2, shuffle=False, seed=ctx.seed, shard=True)
            top = TopModel(model, plan.start)
            return fit_model(top, train, val, settings or self.settings, phase=phase or self.name, history=history, progress=ctx.progress,
                             callbacks=ctx.callbacks, penalties=ctx.penalties)  # fmt: skip
        train_items, val_items = data.items("train"), data.items("val")
        if ctx.images is not None and model.modality == "image":  # decode and resize once, not every epoch
            train_items, line = ctx.images.prepare(train_items, model.preprocessing, augment=augment, progress=ctx.progress)
            val_items, _ = ctx.images.prepare(val_items, model.preprocessing, progress=ctx.progress)
            ctx.progress.log(line)
        train = make_loader(train_items, data.labels("train"), model.preprocessing, batch_size=ctx.batch_size, train=True, augment=augment, seed=ctx.seed, shard=True)
        val = make_loader(val_items, data.labels("val"), model.preprocessing, batch_size=ctx.batch_size * 2, shard=True)
        return fit_model(model, train, val, settings or self.settings, phase=phase or self.name, history=history, progress=ctx.progress,
                         callbacks=ctx.callbacks, penalties=ctx.penalties)  # fmt: skip


def augmentation(model: TransferModel, ctx: FitContext, default: str) -> str:
    """The augmentation preset a phase trains with: the user's, else the strategy's default for images and audio."""
    return ctx.augment or (default if model.modality in ("image", "audio") else "none")


def share_frozen_bottom(model: TransferModel, data: Dataset, ctx: FitContext, start: int, augment: str) -> None:
    """Run a frozen bottom once for both the head warm-up and the phase after it.

    When the phase after the warm-up will train from the cached output of its frozen first ``start``
    blocks (see :func:`headstart.caches.activations.plan_boundary`), that output is computed now; the top
    blocks turn it into the pooled features the warm-up needs (kept in ``ctx``, not the embedding
    cache: they equal the cached features only to float rounding, and a seeded run must not depend
    on what the cache already holds). Without this the bottom runs twice over train and val (P3 in
    BENCHMARKS.md). Under torchrun the sharded embedding pass is kept instead.
    """
    plan = plan_boundary(model, len(data.items("train")) + len(data.items("val")), augment=augment, budget=budget_from_env(), start=start)
    if not plan.use or distributed.active() or any(p.needs_features for p in ctx.penalties):
        return
    for split in ("train", "val"):
        activations = boundary_activations(model, data.items(split), plan.start, progress=ctx.progress)
        ctx.boundary[(plan.start, split)] = activations
        ctx.features[split] = pooled_features(model, activations, plan.start)
    ctx.progress.log(f"head warm-up: pooled features of train and val from the activations after {model.backbone.blocks[plan.start - 1].name} (the bottom runs once)")


def warm_up_head(model: TransferModel, data: Dataset, ctx: FitContext) -> History:
    """Fit the new head on cached features of the frozen body before any body weight moves.

    The head is fitted to convergence on clean features, so its validation loss is hard to beat
    for a body trained on augmented inputs that trades confidence for accuracy: the phases after
    it monitor validation accuracy (ties broken by loss). On SMS spam, monitoring the loss kept
    the head (98.47%); monitoring accuracy kept the fine-tuned model (99.37%).

    A random head sends large, noisy gradients into pretrained blocks and distorts the features
    it should reuse; training the head first (linear probing, then fine-tuning: Kumar et al.,
    ICLR 2022; fastai's ``fine_tune``) avoids that. It costs one cached forward pass.
    """
    return FeatureExtraction().run(model, data, ctx)


@dataclass
class FeatureExtraction(Strategy):
    """Freeze the body, embed every example once (cached on disk), train only the head."""

    name: ClassVar[str] = "feature-extraction"
    settings: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=100, lr=1e-3, patience=15, warmup=0.05))

    def run(self, model: TransferModel, data: Dataset, ctx: FitContext) -> History:
        report = freeze(model.backbone)
        ctx.progress.log(f"{self.name}: {report}")
        features = {}
        for split in ("train", "val"):
            if split in ctx.features:  # computed from a frozen bottom's activations (see share_frozen_bottom)
                features[split] = np.ascontiguousarray(ctx.features.pop(split))
                ctx.progress.log(f"{split}: {len(features[split])} embeddings (from the frozen bottom's activations)")
                continue
            array, computed = ctx.cache.embed(model.backbone, data.items(split), batch_size=ctx.batch_size, progress=ctx.progress)
            ctx.progress.log(f"{split}: {len(array)} embeddings ({computed} computed, {len(array) - computed} from cache)")
            features[split] = np.ascontiguousarray(array)
        train = tensor_loader(features["train"], data.labels("train"), batch_size=ctx.batch_size, shuffle=True, seed=ctx.seed)
        val = tensor_loader(features["val"], data.labels("val"), batch_size=1024)
        model.head.train()
        history = fit_model(model.head, train, val, self.settings, phase=self.name, progress=ctx.progress, callbacks=ctx.callbacks)
        distributed.broadcast_module(model.head)  # under torchrun every rank trained the same head; rank 0's is the one saved
        return history


@dataclass
class FineTune(Strategy):
    """Freeze the first blocks of the body; train the rest (small rate) and the new head.

    Parameters
    ----------
    trainable_blocks : int or None, default=None
        Number of backbone blocks (counted from the top) that train.
    freeze : float, default=0.5
        Used when ``trainable_blocks`` is None: the fraction of backbone blocks, from the input,
        that stay frozen. Half is a conservative default: early blocks hold the general features.
    head_warmup : bool, default=True
        Fit the head on cached features first (see :func:`warm_up_head`).
    batchnorm : {"eval", "train"}, default="eval"
        BatchNorm mode of trainable blocks (see :func:`headstart.freezing.set_batchnorm`).
    """

    name: ClassVar[str] = "fine-tune"
    trainable_blocks: int | None = None
    freeze: float = 0.5
    head_warmup: bool = True
    batchnorm: str = "eval"
    settings: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=15, lr=1e-3, body_lr=1e-4, patience=5, monitor="val_accuracy"))

    def frozen_count(self, model: TransferModel) -> int:
        n = len(model.backbone.blocks)
        if self.trainable_blocks is not None:
            if not 0 <= self.trainable_blocks <= n:
                raise ValueError(f"trainable_blocks={self.trainable_blocks} must be between 0 and {n} for {model.backbone.spec.name}")
            return n - self.trainable_blocks
        if not 0.0 <= self.freeze <= 1.0:
            raise ValueError(f"freeze={self.freeze} must be a fraction between 0 and 1")
        return math.floor(self.freeze * n + 1e-9)

    def run(self, model: TransferModel, data: Dataset, ctx: FitContext) -> History:
        frozen = self.frozen_count(model)
        if self.head_warmup:
            share_frozen_bottom(model, data, ctx, frozen, augmentation(model, ctx, "light"))
        history = warm_up_head(model, data, ctx) if self.head_warmup else None
        freeze_bottom(model, len(model.blocks) - frozen)
        set_batchnorm(model, self.batchnorm)
        return self._train_end_to_end(model, data, ctx, default_augment="light", history=history)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "trainable_blocks": self.trainable_blocks, "freeze": self.freeze, "head_warmup": self.head_warmup, "batchnorm": self.batchnorm}


@dataclass
class Full(Strategy):
    """Every block trains; the body with a smaller learning rate than the new head."""

    name: ClassVar[str] = "full"
    head_warmup: bool = True
    batchnorm: str = "eval"
    settings: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=15, lr=1e-3, body_lr=1e-4, patience=5, monitor="val_accuracy"))

    def run(self, model: TransferModel, data: Dataset, ctx: FitContext) -> History:
        history = warm_up_head(model, data, ctx) if self.head_warmup else None
        unfreeze(model)
        set_batchnorm(model, self.batchnorm)
        return self._train_end_to_end(model, data, ctx, default_augment="light", history=history)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "head_warmup": self.head_warmup, "batchnorm": self.batchnorm}


@dataclass
class Scratch(Strategy):
    """The same architecture from random weights, everything at one rate: the no-transfer baseline."""

    name: ClassVar[str] = "scratch"
    pretrained: ClassVar[bool] = False
    settings: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=15, lr=1e-3, body_lr=1e-3, patience=5))

    def run(self, model: TransferModel, data: Dataset, ctx: FitContext) -> History:
        unfreeze(model)
        set_batchnorm(model, "train")  # random statistics must be learned
        return self._train_end_to_end(model, data, ctx, default_augment="light")


@dataclass
class Gradual(Strategy):
    """Head first, then backbone blocks unfrozen from the top, ``per_stage`` more at each stage.

    Each stage is a training phase of ``settings.epochs`` epochs (the ``E`` of "unfreeze every E
    epochs") with its own warm-up and cosine decay, as fastai's ``fit_one_cycle`` per stage in
    ULMFiT. With ``settings.patience`` set, a stage also ends on a validation plateau (that many
    epochs without improvement) and the next block is unfrozen. The schedule goes to the run log,
    and, being a sequence of phases, survives a resume exactly (each phase is checkpointed).

    Parameters
    ----------
    blocks : int or None, default=None
        How many backbone blocks are unfrozen by the last stage; ``None``: all of them.
    per_stage : int, default=1
        Blocks unfrozen at each stage.
    head_warmup : bool, default=True
        Fit the head on cached features first (see :func:`warm_up_head`).
    batchnorm : {"eval", "train"}, default="eval"
    """

    name: ClassVar[str] = "gradual"
    blocks: int | None = None
    per_stage: int = 1
    head_warmup: bool = True
    batchnorm: str = "eval"
    settings: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=2, lr=1e-3, body_lr=1e-4, patience=None, monitor="val_accuracy"))

    def schedule(self, model: TransferModel) -> list[int]:
        """Number of trainable backbone blocks at each stage."""
        n = len(model.backbone.blocks)
        last = n if self.blocks is None else self.blocks
        if not 1 <= last <= n or self.per_stage < 1:
            raise ValueError(f"gradual unfreezing: blocks={self.blocks} must be between 1 and {n} and per_stage={self.per_stage} at least 1")
        return [min(k, last) for k in range(self.per_stage, last + self.per_stage, self.per_stage)]

    def run(self, model: TransferModel, data: Dataset, ctx: FitContext) -> History:
        stages = self.schedule(model)
        if self.head_warmup:  # the first stage's frozen bottom also gives the warm-up its features
            share_frozen_bottom(model, data, ctx, len(model.backbone.blocks) - stages[0], augmentation(model, ctx, "light"))
        history = warm_up_head(model, data, ctx) if self.head_warmup else History()
        names = model.backbone.blocks.names()
        for stage, trainable in enumerate(stages, start=1):
            freeze_bottom(model, trainable + 1)  # + the head
            set_batchnorm(model, self.batchnorm)
            start = (history.epochs[-1]["epoch"] if history.epochs else 0) + 1
            ctx.progress.log(
                f"gradual: stage {stage}/{len(stages)} from epoch {start}: trainable {', '.join(names[len(names) - trainable:])} + classifier"
                + (f" (next block after {self.settings.epochs} epochs or {self.settings.patience} without improvement)" if self.settings.patience else f" (next block after {self.settings.epochs} epochs)")
            )
            history = self._train_end_to_end(model, data, ctx, default_augment="light", history=history, phase=f"gradual-{stage}")
        return history

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "blocks": self.blocks, "per_stage": self.per_stage, "head_warmup": self.head_warmup, "batchnorm": self.batchnorm}


@dataclass
class LoRA(Strategy):
    """Head first, then low-rank adapters (PEFT's LoRA) in a transformer backbone; base weights stay frozen.

    Parameters
    ----------
    rank : int, default=8
    alpha : float, default=16
        LoRA scaling numerator (the update is ``alpha / rank * B @ A``).
    dropout : float, default=0.1
    targets : tuple of str, default=("query", "value")
        Names of the linear layers that get adapters (PEFT's ``target_modules``).
    head_warmup : bool, default=True
    """

    name: ClassVar[str] = "lora"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    targets: tuple[str, ...] = ("query", "value")
    head_warmup: bool = True
    settings: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=15, lr=1e-3, body_lr=5e-4, patience=5, monitor="val_accuracy"))

    def run(self, model: TransferModel, data: Dataset, ctx: FitContext) -> History:
        from headstart.backbones.lora import add_lora

        history = warm_up_head(model, data, ctx) if self.head_warmup else None
        report = add_lora(model.backbone, rank=self.rank, alpha=self.alpha, dropout=self.dropout, targets=self.targets)
        ctx.progress.log(f"lora: {report}")
        return self._train_end_to_end(model, data, ctx, default_augment="light", history=history)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "targets": list(self.targets), "head_warmup": self.head_warmup}


@dataclass
class Contrastive(Strategy):
    """Few-shot text (SetFit): tune the sentence encoder on pairs, then fit the head on its frozen features.

    With a handful of examples per class, a head alone is limited by how the pretrained geometry
    separates the classes; contrastive tuning (:func:`headstart.strategies.fewshot.contrastive_tune`) reshapes it
    from thousands of pairs. ``templates`` adds that many "This sentence is {class}" examples per
    class (:func:`headstart.strategies.fewshot.templated_examples`) to the pairs and to the head's training set.
    The tuning is seeded, so a resumed run re-tunes to the same encoder before continuing the head.

    Parameters
    ----------
    iterations : int, default=20
        Pair sampling rounds (each example gets one same-class and one other-class partner per round).
    templates : int, default=0
    """

    name: ClassVar[str] = "contrastive"
    iterations: int = 20
    templates: int = 0
    settings: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=100, lr=1e-3, patience=15, warmup=0.05))

    def run(self, model: TransferModel, data: Dataset, ctx: FitContext) -> History:
        from headstart.strategies.fewshot import contrastive_tune, templated_examples

        if data.modality != "text":
            raise ValueError(f"--strategy contrastive tunes a sentence encoder; {data.source or 'this data'} is {data.modality}: use fine-tune or full")
        if self.templates:
            texts, labels = templated_examples(data.classes, per_class=self.templates)
            items, known = data.splits["train"]
            data = replace(data, splits={**data.splits, "train": ([*items, *texts], [*known, *labels])})
            ctx.progress.log(f"contrastive: {len(texts)} class-name examples added to train ({self.templates} per class)")
        with torch.random.fork_rng():
            torch.manual_seed(ctx.seed)
            losses = contrastive_tune(model.backbone, data.items("train"), data.labels("train"), iterations=self.iterations, seed=ctx.seed, progress=ctx.progress)
        ctx.progress.log(f"contrastive: {len(losses)} steps over same/different-class pairs, loss {losses[0]:.3f} -> {np.mean(losses[-10:]):.3f} (last 10)")
        return FeatureExtraction(settings=self.settings).run(model, data, ctx)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "iterations": self.iterations, "templates": self.templates}


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
