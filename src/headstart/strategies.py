"""The four ways to reuse (or not) a pretrained network, each a few readable lines.

=====================  ===========================================================================
``feature-extraction``  whole body frozen; pooled features computed once (cached); only the head trains
``fine-tune``           head first on cached features, then the top blocks train (smaller rate than the head)
``full``                head first on cached features, then every block trains (smaller body rate)
``scratch``             same architecture from random initialisation: what transfer bought
=====================  ===========================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from headstart.activations import TopModel, boundary_activations, budget_from_env, plan_boundary
from headstart.data import Dataset, make_loader, tensor_loader
from headstart.features import EmbeddingCache
from headstart.freezing import freeze, freeze_bottom, freeze_report, set_batchnorm, unfreeze
from headstart.image_cache import DecodedImageCache
from headstart.model import TransferModel
from headstart.progress import Progress
from headstart.training import Callback, History, TrainSettings, fit_model


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


class Strategy:
    """Trains a :class:`TransferModel` on a :class:`Dataset`; subclasses set ``name`` and ``pretrained``."""

    name: ClassVar[str]
    pretrained: ClassVar[bool] = True
    settings: TrainSettings

    def run(self, model: TransferModel, data: Dataset, ctx: FitContext) -> History:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "settings": self.settings.to_dict()}

    def _train_end_to_end(self, model: TransferModel, data: Dataset, ctx: FitContext, default_augment: str, history: History | None = None) -> History:
        report = freeze_report(model)
        ctx.progress.log(f"{self.name}: {report}")
        augment = ctx.augment or (default_augment if model.modality in ("image", "audio") else "none")
        plan = plan_boundary(model, len(data.items("train")) + len(data.items("val")), augment=augment, budget=budget_from_env())
        if plan.start:
            ctx.progress.log(plan.reason)
        if plan.use:  # the frozen bottom runs once; only the top trains per step
            train_x, val_x = (boundary_activations(model, data.items(s), plan.start, progress=ctx.progress) for s in ("train", "val"))
            train = tensor_loader(train_x, data.labels("train"), batch_size=ctx.batch_size, shuffle=True, seed=ctx.seed)
            val = tensor_loader(val_x, data.labels("val"), batch_size=ctx.batch_size * 2, shuffle=False, seed=ctx.seed)
            top = TopModel(model, plan.start)
            return fit_model(top, train, val, self.settings, phase=self.name, history=history, progress=ctx.progress, callbacks=ctx.callbacks)
        train_items, val_items = data.items("train"), data.items("val")
        if ctx.images is not None and model.modality == "image":  # decode and resize once, not every epoch
            train_items, line = ctx.images.prepare(train_items, model.preprocessing, augment=augment, progress=ctx.progress)
            val_items, _ = ctx.images.prepare(val_items, model.preprocessing, progress=ctx.progress)
            ctx.progress.log(line)
        train = make_loader(train_items, data.labels("train"), model.preprocessing, batch_size=ctx.batch_size, train=True, augment=augment, seed=ctx.seed)
        val = make_loader(val_items, data.labels("val"), model.preprocessing, batch_size=ctx.batch_size * 2)
        return fit_model(model, train, val, self.settings, phase=self.name, history=history, progress=ctx.progress, callbacks=ctx.callbacks)


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
            array, computed = ctx.cache.embed(model.backbone, data.items(split), batch_size=64, progress=ctx.progress)
            ctx.progress.log(f"{split}: {len(array)} embeddings ({computed} computed, {len(array) - computed} from cache)")
            features[split] = np.ascontiguousarray(array)
        train = tensor_loader(features["train"], data.labels("train"), batch_size=ctx.batch_size, shuffle=True, seed=ctx.seed)
        val = tensor_loader(features["val"], data.labels("val"), batch_size=1024)
        model.head.train()
        history = fit_model(model.head, train, val, self.settings, phase=self.name, progress=ctx.progress, callbacks=ctx.callbacks)
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
        history = warm_up_head(model, data, ctx) if self.head_warmup else None
        freeze_bottom(model, len(model.blocks) - self.frozen_count(model))
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


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (FeatureExtraction, FineTune, Full, Scratch)}


def make_strategy(
    name: str,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    body_lr: float | None = None,
    patience: int | None | str = "default",
    monitor: str | None = None,
    trainable_blocks: int | None = None,
    freeze: float | None = None,
    batchnorm: str | None = None,
) -> Strategy:
    """Build a strategy by name, overriding only the settings that were given."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {list(STRATEGIES)}")
    if (trainable_blocks is not None or freeze is not None) and name != "fine-tune":
        raise ValueError("--trainable-blocks/--freeze only apply to --strategy fine-tune")
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
    if monitor is not None:
        overrides["monitor"] = monitor
    strategy.settings = replace(strategy.settings, **overrides)
    if batchnorm is not None:
        if not isinstance(strategy, (FineTune, Full)):
            raise ValueError("--batchnorm applies to --strategy fine-tune or full")
        strategy.batchnorm = batchnorm
    if isinstance(strategy, FineTune):
        strategy.trainable_blocks = trainable_blocks
        if freeze is not None:
            strategy.freeze = freeze
    return strategy
