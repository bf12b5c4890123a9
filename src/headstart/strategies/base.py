"""What every strategy shares: its context, the base class with its end-to-end training phase, and
the head warm-up that most strategies start with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

import headstart.training.distributed as distributed
from headstart.caches.activations import TopModel, boundary_activations, budget_from_env, plan_boundary, pooled_features
from headstart.caches.embeddings import EmbeddingCache
from headstart.caches.images import DecodedImageCache
from headstart.data import Dataset, make_loader, tensor_loader
from headstart.freezing import freeze, freeze_report
from headstart.model import TransferModel
from headstart.outcome import WARMUP
from headstart.progress import Progress
from headstart.training.callbacks import Callback
from headstart.training.head import fit_head, full_batch_trainable
from headstart.training.loop import fit_model
from headstart.training.regularizers import Penalty
from headstart.training.state import History, TrainSettings


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
    """Trains a :class:`TransferModel` on a :class:`Dataset`; subclasses set ``name``, ``settings``
    and ``pretrained`` and write :meth:`run`: freeze what should stay frozen, then call :meth:`train`.

    A strategy of one's own, passed as ``headstart.fit(data, strategy=TopBlocks())``::

        @dataclass
        class TopBlocks(Strategy):
            # the head on cached features first, then the last two backbone blocks with it
            name: ClassVar[str] = "top-blocks"
            settings: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=5, monitor="val_accuracy"))

            def run(self, model, data, ctx):
                history = warm_up_head(model, data, ctx)  # the new head first, on the frozen body's features
                freeze_bottom(model, 3)  # the last two backbone blocks and the head train
                return self.train(model, data, ctx, history=history)
    """

    name: ClassVar[str]
    pretrained: ClassVar[bool] = True
    settings: TrainSettings

    def run(self, model: TransferModel, data: Dataset, ctx: FitContext) -> History:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "settings": self.settings.to_dict()}

    def train(
        self, model: TransferModel, data: Dataset, ctx: FitContext, *, default_augment: str = "light", history: History | None = None,
        settings: TrainSettings | None = None, phase: str | None = None,
    ) -> History:  # fmt: skip
        """Train whatever is trainable in ``model`` end to end; call it from :meth:`run` after freezing what should stay frozen.

        One phase of :func:`~headstart.training.loop.fit_model` with ``settings`` (default
        ``self.settings``), named ``phase`` (default ``self.name``), appended to ``history`` (an
        earlier phase's, e.g. :func:`warm_up_head`'s). A frozen bottom runs once and only the
        blocks above it train per step when that fits (see
        :func:`headstart.caches.activations.plan_boundary`); otherwise images are decoded and
        resized once (``ctx.images``). Augmentation is the user's, else ``default_augment``;
        ``ctx.callbacks`` and ``ctx.penalties`` apply.
        """
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
            train = tensor_loader(train_x, model.encoded_labels(data.labels("train")), batch_size=ctx.batch_size, shuffle=True, seed=ctx.seed, shard=True)
            val = tensor_loader(val_x, model.encoded_labels(data.labels("val")), batch_size=ctx.batch_size * 2, shuffle=False, seed=ctx.seed, shard=True)
            top = TopModel(model, plan.start)
            return fit_model(top, train, val, settings or self.settings, phase=phase or self.name, history=history, progress=ctx.progress,
                             callbacks=ctx.callbacks, penalties=ctx.penalties, task=model.task)  # fmt: skip
        train_items, val_items = data.items("train"), data.items("val")
        if ctx.images is not None and model.modality == "image":  # decode and resize once, not every epoch
            train_items, line = ctx.images.prepare(train_items, model.preprocessing, augment=augment, progress=ctx.progress)
            val_items, _ = ctx.images.prepare(val_items, model.preprocessing, progress=ctx.progress)
            ctx.progress.log(line)
        train = make_loader(train_items, model.encoded_labels(data.labels("train")), model.preprocessing, batch_size=ctx.batch_size, train=True, augment=augment,
                            seed=ctx.seed, shard=True)  # fmt: skip
        val = make_loader(val_items, model.encoded_labels(data.labels("val")), model.preprocessing, batch_size=ctx.batch_size * 2, shard=True)
        return fit_model(model, train, val, settings or self.settings, phase=phase or self.name, history=history, progress=ctx.progress,
                         callbacks=ctx.callbacks, penalties=ctx.penalties, task=model.task)  # fmt: skip




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


def head_settings() -> TrainSettings:
    """Training a head alone on cached features: up to 30 rounds of full-batch L-BFGS (see
    :mod:`headstart.training.head`), stopped after 5 without a lower validation loss; a light L2
    penalty on the weights (``weight_decay``). A head with dropout trains in mini-batches instead."""
    return TrainSettings(epochs=30, lr=1e-3, patience=5, warmup=0.05, weight_decay=1e-4)


def train_head(model: TransferModel, data: Dataset, ctx: FitContext, settings: TrainSettings, *, phase: str = "feature-extraction") -> History:
    """Freeze the body, embed every example once (cached on disk, or from a frozen bottom's
    activations kept in ``ctx.features``), train only the head on the features."""
    report = freeze(model.backbone)
    ctx.progress.log(f"{phase}: {report}")
    features = {}
    for split in ("train", "val"):
        if split in ctx.features:  # computed from a frozen bottom's activations (see share_frozen_bottom)
            features[split] = np.ascontiguousarray(ctx.features.pop(split))
            ctx.progress.log(f"{split}: {len(features[split])} embeddings (from the frozen bottom's activations)")
            continue
        array, computed = ctx.cache.embed(model.backbone, data.items(split), batch_size=ctx.batch_size, progress=ctx.progress)
        ctx.progress.log(f"{split}: {len(array)} embeddings ({computed} computed, {len(array) - computed} from cache)")
        features[split] = np.ascontiguousarray(array)
    model.head.train()
    weights = data.weights["train"] if data.weights is not None else None  # the training loss's per-example weights (sample_weight)
    if full_batch_trainable(model.head):  # a small model on an in-memory tensor: full-batch L-BFGS, no DataLoader
        as_tensors = {s: (torch.from_numpy(features[s]), torch.from_numpy(np.asarray(model.encoded_labels(data.labels(s))))) for s in ("train", "val")}
        history = fit_head(model.head, as_tensors["train"], as_tensors["val"], settings, phase=phase, progress=ctx.progress, callbacks=ctx.callbacks,
                           weights=None if weights is None else torch.from_numpy(weights), task=model.task)  # fmt: skip
    else:  # dropout makes every full-batch evaluation a different function: mini-batches
        train = tensor_loader(features["train"], model.encoded_labels(data.labels("train")), batch_size=ctx.batch_size, shuffle=True, seed=ctx.seed, weights=weights)
        val = tensor_loader(features["val"], model.encoded_labels(data.labels("val")), batch_size=1024)
        history = fit_model(model.head, train, val, settings, phase=phase, progress=ctx.progress, callbacks=ctx.callbacks, task=model.task)
    distributed.broadcast_module(model.head)  # under torchrun every rank trained the same head; rank 0's is the one saved
    return history


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
    return train_head(model, data, ctx, head_settings(), phase=WARMUP)
