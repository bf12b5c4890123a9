"""A pretrained backbone plus a new head: the model headstart trains, saves and reloads.

:meth:`TransferModel.save_pretrained` and :meth:`TransferModel.from_pretrained` are exact inverses
(the Hugging Face habit): ``config.json`` holds the architecture, cut, head, class names and
preprocessing; ``model.safetensors`` holds every tensor; ``backbone/`` holds tokenizer or HF config
files where the backbone needs them. Nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from headstart import __version__
from headstart.backbones.base import Backbone
from headstart.backbones.registry import create_backbone
from headstart.backbones.runs import load_run
from headstart.blocks import Block, BlockList
from headstart.data.preprocessing import Preprocessing
from headstart.freezing import FreezableMixin
from headstart.heads import ClassifierHead
from headstart.io import atomic_path, atomic_write_text
from headstart.rundir import ASSETS_DIR, CONFIG_NAME, WEIGHTS_NAME
from headstart.tasks import Task, get_task


class TransferModel(FreezableMixin, nn.Module):
    """``head(backbone(x))``: an ``nn.Module`` usable as a layer in a user's own model.

    Its :attr:`blocks` are the backbone's blocks followed by ``classifier`` (the new head), so
    ``freeze(model, model.blocks[:-3])`` leaves the last two backbone blocks and the head trainable.
    """

    def __init__(self, backbone: Backbone, head: ClassifierHead, classes: Sequence[str], *, task: str | Task | None = None,
                 target: dict[str, Any] | None = None, thresholds: Sequence[float] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.task = get_task(task, loss=(target or {}).get("loss"))
        if self.task.name == "classification" and len(classes) < 2:
            raise ValueError(f"A classifier needs at least 2 classes, got {len(classes)}")
        if self.task.head_width(classes) != head.num_classes:
            raise ValueError(f"{len(classes)} class names for a head with {head.num_classes} outputs")
        self.backbone = backbone
        self.head = head
        self.classes = [str(c) for c in classes]
        self.target = target  # regression: the training targets' mean and std (and the loss), what predictions are de-standardised with
        self.thresholds = list(thresholds) if thresholds is not None else None  # multilabel: per-label thresholds chosen on validation

    def encoded_labels(self, labels: Any) -> Any:
        """``labels`` (a split's :meth:`Dataset.labels`) as the targets the loss compares the head with (:meth:`Task.encode`)."""
        return self.task.encode(labels, self.target)

    @classmethod
    def from_backbone(
        cls,
        backbone: Backbone | str,
        classes: Sequence[str],
        *,
        cut: int | str | None = None,
        hidden: int | None = None,
        dropout: float = 0.0,
        pretrained: bool = True,
        weights: str | Path | None = None,
        task: str | Task | None = None,
        target: dict[str, Any] | None = None,
    ) -> TransferModel:
        """Replace the source head of ``backbone`` (cut at block ``cut``) with a new one for ``classes`` (its width: ``task``'s)."""
        task = get_task(task, loss=(target or {}).get("loss"))
        if task.name == "classification" and len(classes) < 2:
            raise ValueError(f"A classifier needs at least 2 classes, got {len(classes)}")
        if isinstance(backbone, str):
            backbone = create_backbone(backbone, pretrained=pretrained, weights=weights)
        if cut is not None:
            backbone = backbone.cut(cut)
        head = ClassifierHead(backbone.feature_dim, task.head_width(classes), hidden=hidden, dropout=dropout)
        return cls(backbone, head, classes, task=task, target=target).fast_layout()

    @property
    def blocks(self) -> BlockList:
        inner = list(self.backbone.blocks)
        return BlockList(inner + [Block(len(inner), "classifier", self.head)])

    def require_blocks(self, purpose: str) -> None:
        """See :meth:`headstart.backbones.Backbone.require_blocks`."""
        self.backbone.require_blocks(purpose)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.backbone.preprocessing

    @property
    def modality(self) -> str:
        """What the model reads: ``"image"``, ``"text"`` or ``"audio"`` (an image CNN reading spectrograms too)."""
        return self.preprocessing.modality

    def forward(self, inputs: Any, return_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits; with ``return_features`` also the pooled features (for penalties on them, e.g. BSS, inside one DDP forward)."""
        features = self.backbone(inputs)
        return (features, self.head(features)) if return_features else self.head(features)

    def fast_layout(self) -> TransferModel:
        """Store image models channels-last (:meth:`Backbone.fast_layout`; the head has no 4-d tensors to lay out)."""
        self.backbone.fast_layout()
        return self

    @contextlib.contextmanager
    def frozen_batchnorm_folded(self) -> Iterator[list[str]]:
        """For one training phase: frozen bottom blocks run with BatchNorm folded (:meth:`Backbone.fold_frozen`); yields their names."""
        try:
            yield self.backbone.fold_frozen()
        finally:
            self.backbone.unfold()

    # ---------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "headstart_version": __version__,
            "backbone": self.backbone.architecture_config(),
            "preprocessing": self.preprocessing.to_dict(),
            "head": self.head.config(),
            "classes": self.classes,
            "task": self.task.name,
            **({"target": self.target} if self.target is not None else {}),
            **({"thresholds": self.thresholds} if self.thresholds is not None else {}),
            **({"adapter": self.backbone.adapter} if self.backbone.adapter else {}),
        }

    def save_pretrained(self, directory: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Write config, weights and assets to ``directory``; reload with :meth:`from_pretrained`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        assets = directory / ASSETS_DIR
        assets.mkdir(exist_ok=True)
        self.backbone.save_assets(assets)
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp))
        atomic_write_text(directory / CONFIG_NAME, json.dumps({**self.config(), **(extra or {})}, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TransferModel:
        """Load a model written by :meth:`save_pretrained`, with its preprocessing (:func:`headstart.backbones.runs.load_run`)."""
        config, backbone, head = load_run(directory)
        return cls(backbone, head, config["classes"], task=config.get("task"), target=config.get("target"), thresholds=config.get("thresholds")).fast_layout().eval()
