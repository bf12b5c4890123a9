"""What style transfer minimises: content and style losses measured by a frozen backbone's blocks, plus smoothness."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from headstart.backbones import Backbone, TimmBackbone
from headstart.freezing import select_blocks
from headstart.style.defaults import (
    DEFAULT_CONTENT_LAYER,
    DEFAULT_STYLE_LAYERS,
    DEFAULT_STYLE_WEIGHT,
    DEFAULT_TEMPERATURE,
    DEFAULT_TV_WEIGHT,
    TRANSFORMS,
)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Channel correlations ``(batch, C, C)`` of feature maps ``(batch, C, H, W)``, averaged over positions.

    Averaging (not summing) makes Gram matrices of different image sizes comparable.
    """
    batch, channels, height, width = features.shape
    flat = features.reshape(batch, channels, height * width)
    return flat @ flat.transpose(1, 2) / (height * width)


def softmax_features(features: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    """SWAG's softmax over all activations of each map (Wang et al. 2021), rescaled to mean 1.

    The softmax bounds every activation's share of the map, so a few peaky activations no longer
    dominate the Gram matrix; multiplying by the number of activations keeps values near 1 whatever
    the image size.
    """
    batch = features.shape[0]
    flat = (features / temperature).reshape(batch, -1)
    return (F.softmax(flat, dim=1) * flat.shape[1]).reshape(features.shape)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared feature difference relative to the target's energy (1.0 means "as far as zero is")."""
    return F.mse_loss(features, target) / target.pow(2).mean().clamp_min(1e-12)


def style_loss(gram: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Squared Gram difference relative to the target Gram's energy, so every block counts alike."""
    return F.mse_loss(gram, target_gram) / target_gram.pow(2).mean().clamp_min(1e-12)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels: penalises high-frequency noise."""
    return (image[..., 1:, :] - image[..., :-1, :]).pow(2).mean() + (image[..., :, 1:] - image[..., :, :-1]).pow(2).mean()


def default_layers(backbone: Backbone) -> tuple[str, tuple[str, ...]]:
    """Content block and style blocks used when none are given.

    EfficientNet-Lite's were tuned by eye (docs/style-transfer.md); for other backbones the content
    block sits two thirds of the way down and every block but the last measures style.
    """
    names = backbone.blocks.names()
    if DEFAULT_CONTENT_LAYER in names and set(DEFAULT_STYLE_LAYERS) <= set(names):
        return DEFAULT_CONTENT_LAYER, DEFAULT_STYLE_LAYERS
    return names[(len(names) - 1) * 2 // 3], tuple(names[:-1] or names)


def _block_names(backbone: Backbone, selectors: str | Iterable[str]) -> list[str]:
    return [block.name for block in select_blocks(backbone, [selectors] if isinstance(selectors, str) else list(selectors))]


@dataclass
class StyleLosses:
    """The weighted loss terms for one image; ``total`` is what the optimiser minimises."""

    content: torch.Tensor
    style: torch.Tensor
    tv: torch.Tensor
    total: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


class StyleObjective:
    """Content, style and smoothness of an image in ``[0, 1]``, measured by a frozen backbone.

    Targets (content features, style Gram matrices, temperatures) are computed once here. Calling
    the objective never changes the backbone: it runs in eval mode (BatchNorm statistics fixed) and
    gradients are only taken with respect to the image.

    Parameters
    ----------
    backbone : Backbone
        A convolutional image backbone whose blocks output feature maps ``(batch, C, H, W)``.
    content, style : Tensor
        ``(1, 3, H, W)`` images in ``[0, 1]`` (not normalised).
    content_layer : str, default="stage4"
        Block whose features the result must share with the content image.
    style_layers : sequence of str, default=("stem", "stage1", "stage2", "stage3", "stage5")
        Blocks (names or globs) whose Gram matrices the result must share with the style image.
    content_weight, style_weight, tv_weight : float, default=1, 30, 1
        Weights of the three terms. Content and style terms are relative errors, so they are
        comparable across blocks and backbones.
    transform : {"softmax", "none"}, default="softmax"
        SWAG's softmax of each feature map before the losses, or raw features (Gatys).
    temperature : float, default=3.0
        Softmax temperature, in units of each block's activation standard deviation.
    """

    def __init__(
        self,
        backbone: Backbone,
        content: torch.Tensor,
        style: torch.Tensor,
        *,
        content_layer: str = DEFAULT_CONTENT_LAYER,
        style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
        content_weight: float = 1.0,
        style_weight: float = DEFAULT_STYLE_WEIGHT,
        tv_weight: float = DEFAULT_TV_WEIGHT,
        transform: str = "softmax",
        temperature: float = DEFAULT_TEMPERATURE,
    ) -> None:
        if not isinstance(backbone, TimmBackbone):
            raise ValueError(f"{backbone.spec.name}: style transfer needs a convolutional image backbone (efficientnet_lite0, timm:vgg19, timm:resnet50 ...)")
        if transform not in TRANSFORMS:
            raise ValueError(f"transform={transform!r}; use one of {TRANSFORMS}")
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be positive")
        self.backbone = backbone
        self.content_layers = _block_names(backbone, content_layer) if content_weight else []
        self.style_layers = _block_names(backbone, style_layers) if style_weight else []
        if not self.content_layers and not self.style_layers:
            raise ValueError("Nothing to optimise: give a content layer with content_weight > 0 or style layers with style_weight > 0")
        self.weights = (content_weight, style_weight, tv_weight)
        self.transform = transform
        prep = backbone.preprocessing
        self._mean = torch.tensor(prep.mean).view(1, -1, 1, 1)
        self._std = torch.tensor(prep.std).view(1, -1, 1, 1)
        wanted = set(self.content_layers) | set(self.style_layers)
        self._stop = max(backbone.blocks.index_of(name) for name in wanted)
        with torch.no_grad():
            raw_content = self._raw_features(content)
            self.temperatures = {name: temperature * float(raw_content[name].std()) + 1e-6 for name in wanted}
            self.content_targets = {name: self._transform(name, raw_content[name]) for name in self.content_layers}
            style_features = self.features(style)
            self.style_targets = {name: gram_matrix(style_features[name]) for name in self.style_layers}

    def _raw_features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        wanted = set(self.content_layers) | set(self.style_layers)
        x = (image - self._mean) / self._std
        found: dict[str, torch.Tensor] = {}
        was_training = self.backbone.training
        self.backbone.eval()  # BatchNorm uses (and never updates) its running statistics
        try:
            for block in self.backbone.blocks[: self._stop + 1]:
                x = block.module(x)
                if block.name in wanted:
                    if x.ndim != 4:
                        raise ValueError(f"Block {block.name!r} of {self.backbone.spec.name} outputs {tuple(x.shape)}, not feature maps; style transfer needs a CNN")
                    found[block.name] = x
        finally:
            self.backbone.train(was_training)
        return found

    def _transform(self, name: str, features: torch.Tensor) -> torch.Tensor:
        return softmax_features(features, self.temperatures[name]) if self.transform == "softmax" else features

    def features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The (transformed) feature maps of the content and style blocks for an image in ``[0, 1]``."""
        return {name: self._transform(name, x) for name, x in self._raw_features(image).items()}

    def __call__(self, image: torch.Tensor) -> StyleLosses:
        content_weight, style_weight, tv_weight = self.weights
        features = self.features(image)
        zero = image.new_zeros(())
        content = sum((content_loss(features[n], self.content_targets[n]) for n in self.content_layers), zero) / max(len(self.content_layers), 1)
        style = sum((style_loss(gram_matrix(features[n]), self.style_targets[n]) for n in self.style_layers), zero) / max(len(self.style_layers), 1)
        tv = total_variation(image)
        content, style, tv = content_weight * content, style_weight * style, tv_weight * tv
        return StyleLosses(content, style, tv, content + style + tv)
