"""The built-in strategies (see :mod:`headstart.strategies` for the table): each freezes what it
keeps, then trains with :meth:`~headstart.strategies.base.Strategy.train`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch

from headstart.data import Dataset
from headstart.freezing import freeze_bottom, set_batchnorm, unfreeze
from headstart.model import TransferModel
from headstart.strategies.base import FitContext, Strategy, augmentation, head_settings, share_frozen_bottom, train_head, warm_up_head
from headstart.training.state import History, TrainSettings


@dataclass
class FeatureExtraction(Strategy):
    """Freeze the body, embed every example once (cached on disk), train only the head."""

    name: ClassVar[str] = "feature-extraction"
    settings: TrainSettings = field(default_factory=head_settings)

    def run(self, model: TransferModel, data: Dataset, ctx: FitContext) -> History:
        return train_head(model, data, ctx, self.settings, phase=self.name)


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
        model.require_blocks("--strategy fine-tune")  # before any feature is computed
        frozen = self.frozen_count(model)
        if self.head_warmup:
            share_frozen_bottom(model, data, ctx, frozen, augmentation(model, ctx, "light"))
        history = warm_up_head(model, data, ctx) if self.head_warmup else None
        freeze_bottom(model, len(model.blocks) - frozen)
        set_batchnorm(model, self.batchnorm)
        return self.train(model, data, ctx, default_augment="light", history=history)

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
        return self.train(model, data, ctx, default_augment="light", history=history)

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
        return self.train(model, data, ctx, default_augment="light")


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
        model.require_blocks("--strategy gradual")
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
            history = self.train(model, data, ctx, default_augment="light", history=history, phase=f"gradual-{stage}")
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
        return self.train(model, data, ctx, default_augment="light", history=history)

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
    settings: TrainSettings = field(default_factory=head_settings)

    def run(self, model: TransferModel, data: Dataset, ctx: FitContext) -> History:
        from headstart.strategies.fewshot import contrastive_tune, templated_examples

        if data.task != "classification":
            raise ValueError(f"--strategy contrastive pairs examples of the same class; {data.source or 'this data'} has a {data.task} target: use feature-extraction or fine-tune")
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
