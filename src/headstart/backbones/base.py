"""What every backbone is, whatever its family: a spec, a module over named blocks, a source head.

:class:`Backbone` is the base class the timm and Hugging Face families implement
(:mod:`headstart.backbones.timm`, :mod:`headstart.backbones.hf`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from headstart.backbones.weights import state_fingerprint
from headstart.blocks import BlockList
from headstart.data.preprocessing import Preprocessing
from headstart.errors import Unsplittable
from headstart.freezing import FreezableMixin

OFFLINE_HINT = (
    "no network or hub access; use a local copy instead: "
    "`--weights FILE` for timm models, a local folder for hf: models, or an embedded backbone (`headstart list`)"
)


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is, as data: enough to rebuild its architecture and describe it."""

    name: str
    modality: str  # "image", "text" or "audio"
    family: str  # "timm" or "hf"
    architecture: str
    description: str = ""


class Backbone(FreezableMixin, nn.Module):
    """A pretrained network body that maps a batch of inputs to pooled features ``(batch, feature_dim)``."""

    spec: BackboneSpec
    preprocessing: Preprocessing
    _run_head: tuple[nn.Module, ...] = ()  # see keep_run_head
    adapter: dict[str, Any] | None = None  # LoRA settings once headstart.backbones.lora.add_lora ran

    @property
    def blocks(self) -> BlockList:
        raise NotImplementedError

    @property
    def feature_dim(self) -> int:
        raise NotImplementedError

    @property
    def splittable(self) -> bool:
        """False for a body headstart could not split exactly into blocks (one block, ``features``)."""
        return True

    def require_blocks(self, purpose: str) -> None:
        """Refuse ``purpose`` (which freezes, trains or cuts part of the body) on a body that is one block."""
        if not self.splittable:
            raise Unsplittable(
                f"{self.spec.name} has no exact block layout (headstart keeps it as one block), so {purpose} would train or cut "
                "its whole body; use --strategy feature-extraction (frozen body) or full (whole body, on purpose)"
            )

    def cut(self, at: int | str) -> Backbone:
        """A backbone that stops after block ``at`` (name or index) and pools its output.

        The result shares weights with ``self``; blocks after the cut are not part of it.
        """
        raise NotImplementedError

    def forward_blocks(self, x: Any, names: list[str]) -> dict[str, torch.Tensor]:
        """Pooled features after each named block, equal to ``self.cut(name)(x)`` for each name.

        Subclasses compute them in one forward pass; this fallback runs one cut per block.
        """
        return {name: self.cut(name)(x) for name in names}

    def block_widths(self) -> dict[str, int]:
        """Width of the pooled features of a cut after each block (``headstart summary`` prints it).

        Image backbones run one blank image through the blocks; encoders whose every cut pools the
        hidden states (Hugging Face) override this with their hidden size.
        """
        size = getattr(self.preprocessing, "input_size", None)
        if size is None:
            return {block.name: self.feature_dim for block in self.blocks}
        was_training = self.training
        self.eval()
        with torch.inference_mode():
            pooled = self.forward_blocks(torch.zeros(1, 3, size, size, device=self.device), self.blocks.names())
        self.train(was_training)
        return {name: int(features.shape[-1]) for name, features in pooled.items()}

    def architecture_config(self) -> dict[str, Any]:
        """JSON-able data from which :func:`backbone_from_config` rebuilds this architecture."""
        raise NotImplementedError

    def source_head(self) -> nn.Module | None:
        """The classifier trained on this very body, if any: what LEEP and NCE read.

        For a backbone loaded from a run directory it is that run's head (e.g. the source classes
        of a :func:`headstart.pretrain` model); a cut backbone has none.
        """
        return self._run_head[0] if self._run_head else None

    def keep_run_head(self, head: nn.Module) -> None:
        """Remember the head of the run this backbone was loaded from (not a submodule: never trained or saved with it)."""
        self._run_head = (head,)

    def save_assets(self, directory: Path) -> None:
        """Write files besides the weights that a reload needs (tokenizer, HF config)."""

    def fingerprint(self) -> str:
        """Content hash of architecture, cut and weights: what embedding caches are keyed by."""
        return f"{self.spec.name.replace('/', '_').replace(':', '_')}-{self.blocks[-1].name}-{state_fingerprint(self)}"

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def fold_frozen(self) -> list[str]:
        """Fold the BatchNorm of frozen bottom blocks for a training phase; the blocks folded (none here: no BatchNorm)."""
        return []

    def unfold(self) -> None:
        """Undo :meth:`fold_frozen`."""

    def fast_layout(self) -> Backbone:
        """Store image backbones channels-last: depthwise and 1x1 convolutions run ~1.5x faster on CPU."""
        if self.spec.modality == "image":
            self.to(memory_format=torch.channels_last)
        return self


def source_probabilities(backbone: Backbone, features: np.ndarray) -> np.ndarray | None:
    """Softmax of the backbone's own source-task head (e.g. ImageNet classes) on its pooled features.

    ``None`` when the backbone has no source head (embedded text encoders, cut backbones). A
    backbone loaded from a run directory (e.g. a :func:`headstart.pretrain` model) has its run's head.
    """
    head = backbone.source_head()
    if head is None:
        return None
    with torch.inference_mode():
        logits = head.to(backbone.device)(torch.from_numpy(features).to(backbone.device)).double()
    return logits.softmax(-1).cpu().numpy()
