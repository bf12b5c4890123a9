"""timm image models as backbones: the block layout of each family, pooling, and building ``timm:ARCH``.

``import timm`` (inside the functions that build models, so text runs never import it) is absolute,
so it reaches the timm package, not this module.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import OFFLINE_HINT, Backbone, BackboneSpec
from headstart.backbones.timm_blocks import generic_blocks, generic_pooling, generic_post_pool_norm
from headstart.backbones.weights import load_state_dict
from headstart.blocks import Block, BlockList
from headstart.data.preprocessing import ImagePreprocessing, Preprocessing, SpectrogramPreprocessing
from headstart.errors import Unavailable
from headstart.freezing import fold_batchnorm, is_frozen


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
    """The one block of a timm model that cannot be split exactly (see :mod:`headstart.backbones.timm_blocks`)."""

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
    return None if _hand_split(model) else generic_post_pool_norm(model)


def _hand_split(model: nn.Module) -> bool:
    """Families split by hand since before the generic split: their block names are in saved runs and the docs."""
    from timm.models.convnext import ConvNeXt
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet
    from timm.models.vgg import VGG
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, (ConvNeXt, EfficientNet, ResNet, VGG, VisionTransformer))


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
    generic = generic_blocks(model)
    if generic is not None:
        return generic, generic_pooling(model)
    return [("features", _TimmFeatures(model))], "none"


def _pool_maps(x: torch.Tensor, pooling: str, prefix_tokens: int) -> torch.Tensor:
    """Pooling of an intermediate block's output, as :meth:`TimmBackbone.pool` does without post-pool norm."""
    if pooling == "avg":  # NCHW maps, or tokens (LeViT) after any prefix tokens
        return x.mean(dim=(2, 3)) if x.ndim == 4 else x[:, prefix_tokens:].mean(dim=1) if x.ndim == 3 else x
    if pooling == "avg_nhwc":  # channels-last maps (Swin, MambaOut)
        return x.mean(dim=(1, 2)) if x.ndim == 4 else x
    if pooling == "token":
        return x[:, 0]
    if pooling == "avg_tokens":
        return x[:, prefix_tokens:].mean(dim=1)
    return x


class StaticSameConv2d(nn.Conv2d):
    """timm's ``Conv2dSame`` (TensorFlow's "same" padding) with the padding of each input size worked out once.

    TF-ported models (``tf_efficientnet_lite*``) pad their strided convolutions asymmetrically, and
    timm computes the amounts from the input's size at every call. A run's input size is fixed, so
    the amounts are kept per size; a symmetric padding goes to the convolution itself (no padded copy
    of the input), an asymmetric one is applied as before. Outputs are equal to ``Conv2dSame``'s
    (tested); the parameters are the replaced module's own, under the same names.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, dilation=conv.dilation, groups=conv.groups,
                         bias=conv.bias is not None, device="meta")  # fmt: skip
        self.weight, self.bias = conv.weight, conv.bias
        self.train(conv.training)
        self._pads: dict[tuple[int, int], tuple[int, int, int, int]] = {}

    def _pad(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) as timm's ``pad_same`` computes them."""
        from timm.layers.padding import get_same_padding

        pad_h = get_same_padding(height, self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = get_same_padding(width, self.kernel_size[1], self.stride[1], self.dilation[1])
        return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        pad = self._pads.get(size)
        if pad is None:
            pad = self._pads[size] = self._pad(*size)
        left, right, top, bottom = pad
        if left == right and top == bottom:
            return nn.functional.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        return nn.functional.conv2d(nn.functional.pad(x, pad), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def static_same_padding(*roots: nn.Module) -> int:
    """Replace every timm ``Conv2dSame`` under ``roots`` by a :class:`StaticSameConv2d` (in every parent that holds it); returns how many."""
    from timm.layers import Conv2dSame

    replaced: dict[int, nn.Module] = {}
    for root in roots:
        for parent in list(root.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, Conv2dSame):
                    setattr(parent, name, replaced.setdefault(id(child), StaticSameConv2d(child)))
    return len(replaced)


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
        self._num_prefix_tokens = getattr(model, "num_prefix_tokens", 0)
        all_blocks = BlockList([Block(i, n, m) for i, (n, m) in enumerate(named)])
        stop = len(all_blocks) - 1 if cut is None else all_blocks.index_of(cut)
        self.stages = nn.ModuleDict({name: module for name, module in named[: stop + 1]})
        self.post_norm = _post_pool_norm(model) if self.keeps_full_body else None  # only the last block's output was trained with it
        self._feature_dim: int | None = None
        self._folded: dict[str, tuple[nn.Module, list[tuple[torch.Tensor, int]]]] = {}  # see fold_frozen; not registered, never saved

    @property
    def blocks(self) -> BlockList:
        named = list(self.stages.items())
        if self.post_norm is not None:  # the norm after pooling only ever reads the last block: it freezes and trains with it
            named[-1] = (named[-1][0], nn.ModuleList([named[-1][1], self.post_norm]))
        return BlockList([Block(i, name, module) for i, (name, module) in enumerate(named)])

    @property
    def splittable(self) -> bool:
        return self.pooling != "none"

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled output of the last kept block (feature maps or tokens)."""
        for name, stage in self.stages.items():
            x = self._runner(name, stage)(x)
        return x

    @torch.no_grad()
    def fold_frozen(self) -> list[str]:
        """Run the frozen bottom blocks with their BatchNorm folded into their convolutions; the names of those blocks.

        A frozen block is in eval mode (:class:`~headstart.freezing.FreezableMixin`), so its
        BatchNorm is a fixed affine map while the blocks above it train: folded
        (:func:`~headstart.freezing.fold_batchnorm`, checked within 1e-5 of the largest output on a
        seeded random batch at the input size) it costs nothing. The folded copies are kept beside
        the model, not in it: state dicts, checkpoints and saved runs hold the original weights.
        A copy is used only while its block stays frozen, in eval mode and unchanged (the version
        counters of its tensors); :meth:`unfold` drops them all.
        """
        self.unfold()
        size = self.preprocessing.input_size
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(self.device, memory_format=torch.channels_last)
        names = []
        for block in self.blocks:
            module = block.module
            if any(True for _ in module.parameters()) and (not is_frozen(block) or module.training):
                break  # the frozen bottom ends here
            folded, count = fold_batchnorm(module, x, tolerance=1e-5)
            if count:
                self._folded[block.name] = (folded, [(t, t._version) for t in (*module.parameters(), *module.buffers())])
                names.append(block.name)
            x = module(x)
        return names

    def unfold(self) -> None:
        """Run every block as stored again (see :meth:`fold_frozen`)."""
        self._folded.clear()

    def _runner(self, name: str, stage: nn.Module) -> nn.Module:
        """The folded copy of ``stage`` while it is valid (see :meth:`fold_frozen`), else ``stage``."""
        entry = self._folded.get(name)
        if entry is None:
            return stage
        folded, versions = entry
        if not stage.training and all(t._version == v and not t.requires_grad for t, v in versions):
            return folded
        del self._folded[name]  # unfrozen, put in training mode or changed since it was folded
        return stage

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
            x = self._runner(name, stage)(x)
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

    def fast_layout(self) -> TimmBackbone:
        """Channels-last (:meth:`Backbone.fast_layout`) and TF "same" padding worked out once per input size (:class:`StaticSameConv2d`)."""
        static_same_padding(self, self._source[0])
        super().fast_layout()
        return self

    def architecture_config(self) -> dict[str, Any]:
        return {
            "family": "timm",
            "architecture": self.spec.architecture,
            "name": self.spec.name,
            "description": self.spec.description,
            "cut": self.blocks[-1].name,
        }


def _timm_preprocessing(model: nn.Module) -> ImagePreprocessing:
    cfg = model.pretrained_cfg
    return ImagePreprocessing(
        input_size=int(cfg["input_size"][-1]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
    )


def _timm_backbone(arch: str, *, pretrained: bool, weights: str | Path | None) -> TimmBackbone:
    import timm  # on first use: text runs and joblib workers skip timm's import (torchvision, torch._dynamo)

    try:
        model = timm.create_model(arch, pretrained=pretrained and weights is None)
    except RuntimeError as error:
        if "Unknown model" in str(error):
            close = difflib.get_close_matches(arch, timm.list_models(), n=3)
            raise ValueError(f"Unknown timm model {arch!r}; did you mean {close}?") from None
        raise
    except Exception as error:  # noqa: BLE001 - hub/network errors come in many types
        raise Unavailable(f"Cannot download timm:{arch} weights ({type(error).__name__}); {OFFLINE_HINT}") from None
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


def _timm_from_config(config: dict[str, Any], prep: Preprocessing) -> TimmBackbone:
    """The timm half of :func:`~headstart.backbones.runs.backbone_from_config` (random weights)."""
    import timm  # on first use: text runs and joblib workers skip timm's import (torchvision, torch._dynamo)

    model = timm.create_model(config["architecture"], pretrained=False)
    spec = BackboneSpec(config["name"], "image", "timm", config["architecture"], config.get("description", ""))
    if not isinstance(prep, (ImagePreprocessing, SpectrogramPreprocessing)):
        raise ValueError(f"a timm backbone saved with {prep.to_dict()['kind']} preprocessing; the run's config.json is damaged")
    return TimmBackbone(model, spec, prep, cut=config["cut"])
