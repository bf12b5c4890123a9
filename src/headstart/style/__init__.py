"""Neural style transfer: the backbone stays frozen and the pixels are optimised.

Gatys, Ecker & Bethge (CVPR 2016) match a content image's deep features and a style image's feature
correlations (Gram matrices) by gradient descent on the image. It is the other face of transfer: a
pretrained network's frozen blocks used as a measuring instrument. Early blocks carry colour and
texture, deep blocks carry layout, and :func:`stylize`'s ``style_layers`` (block names, as
:func:`~headstart.freezing.freeze` takes them) shows which.

Classic style transfer assumes VGG. On networks with residual connections and normalisation (ResNet,
EfficientNet) a few large activations dominate the Gram matrices and results are poor; Wang, Li &
Vasconcelos (CVPR 2021, "Rethinking and Improving the Robustness of Image Style Transfer", SWAG)
pass every feature map through a softmax over all its activations before the losses. We do the same
(``transform="softmax"``), with one adaptation: EfficientNet-Lite's block outputs are linear
bottlenecks with signed values on very different scales, so each block's temperature is its
activations' standard deviation on the content image times ``temperature`` (SWAG's ResNets used
temperature 1 on post-ReLU maps).

The optimiser moves the image's decorrelated Fourier coefficients (:class:`FourierImage`), not its
raw pixels: on strided networks, raw-pixel descent mostly adds high-frequency noise.
docs/style-transfer.md shows both changes' effect.

>>> image = stylize("china.jpg", "flower.jpg", size=256)
>>> image.save("china-flower.png")
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from headstart.backbones import Backbone, TimmBackbone, create_backbone
from headstart.data import check_image, load_image
from headstart.freezing import select_blocks
from headstart.progress import Progress
from headstart.style.defaults import DEFAULT_CONTENT_LAYER, DEFAULT_STYLE_LAYERS, DEFAULT_STYLE_WEIGHT, DEFAULT_TEMPERATURE, DEFAULT_TV_WEIGHT
from headstart.training.loop import seed_everything

TRANSFORMS = ("softmax", "none")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")

ImageSource = str | Path | Image.Image


# ------------------------------------------------------------------------------------------------
# Loss pieces
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# The objective
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# Images in and out
# ------------------------------------------------------------------------------------------------


def _open(source: ImageSource, what: str) -> Image.Image:
    if isinstance(source, Image.Image):
        return load_image(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} image not found")
    problem = check_image(path)
    if problem:
        raise ValueError(f"{path}: cannot use as {what} image ({problem})")
    return load_image(path)


def _resized(image: Image.Image, long_side: int | None) -> Image.Image:
    if long_side is None or max(image.size) == long_side:
        return image
    scale = long_side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB to ``(1, 3, H, W)`` float in ``[0, 1]``."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_image(tensor: torch.Tensor) -> Image.Image:
    """``(1, 3, H, W)`` in ``[0, 1]`` to an 8-bit PIL RGB image."""
    array = tensor.detach().clamp(0, 1)[0].permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
    return Image.fromarray(array, "RGB")


# ------------------------------------------------------------------------------------------------
# The optimisation
# ------------------------------------------------------------------------------------------------


def stylize(
    content: ImageSource,
    style: ImageSource,
    *,
    backbone: str | Backbone = "efficientnet_lite0",
    weights: str | Path | None = None,
    size: int | None = 256,
    style_scale: float = 1.0,
    content_layer: str | None = None,
    style_layers: Sequence[str] | None = None,
    content_weight: float = 1.0,
    style_weight: float = DEFAULT_STYLE_WEIGHT,
    tv_weight: float = DEFAULT_TV_WEIGHT,
    transform: str = "softmax",
    temperature: float = DEFAULT_TEMPERATURE,
    steps: int = 300,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    parameterization: str = "fourier",
    init: str = "content",
    seed: int = 0,
    progress: bool = True,
) -> Image.Image:
    """Repaint ``content`` in the style of ``style`` by optimising pixels against a frozen backbone.

    Parameters
    ----------
    content, style : path or PIL image
        The image whose layout is kept, and the image whose colours and textures are taken.
    backbone : str or Backbone, default="efficientnet_lite0"
        Any convolutional image backbone (:func:`~headstart.backbones.create_backbone` names, e.g.
        ``timm:vgg19`` with ``weights``). It is never modified.
    size : int or None, default=256
        Longer side of the result in pixels (aspect ratio kept); None keeps the content's size.
    style_scale : float, default=1.0
        The style image is resized to the result's area times ``style_scale**2``: larger values give
        larger brush strokes.
    content_layer, style_layers : block names, optional
        Which blocks measure content and style; globs (``"stage[0-2]"``) as in ``freeze``. Default:
        :func:`default_layers` (``stage4`` and ``stem, stage1, stage2, stage3, stage5`` on EfficientNet).
    content_weight, style_weight, tv_weight : float, default=1, 30, 1
        Weights of the content, style and total-variation terms (see :class:`StyleObjective`).
    transform, temperature
        SWAG's softmax transformation of features (default) or ``"none"`` for Gatys' raw features.
    steps : int, default=300
        Optimiser iterations (L-BFGS iterations or Adam steps).
    optimizer : {"lbfgs", "adam"}, default="lbfgs"
    lr : float, optional
        Step size; default 1 for L-BFGS, 0.02 for Adam.
    parameterization : {"fourier", "pixels"}, default="fourier"
        Optimise decorrelated Fourier coefficients (:class:`FourierImage`) or raw pixels.
    init : {"content", "noise"}, default="content"
        Start from the content image or from seeded noise.
    seed : int, default=0
        Seeds the noise; CPU runs with the same seed give identical images.
    progress : bool, default=True
        Show a progress bar with the current loss.

    Returns
    -------
    PIL.Image.Image
        The stylised image, the size of the (resized) content image.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}; use one of {OPTIMIZERS}")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization={parameterization!r}; use one of {tuple(PARAMETERIZATIONS)}")
    if init not in INITS:
        raise ValueError(f"init={init!r}; use one of {INITS}")
    if steps < 1:
        raise ValueError(f"steps={steps} must be at least 1")
    if size is not None and size < 16:
        raise ValueError(f"size={size} is too small; use at least 16 pixels")
    if style_scale <= 0:
        raise ValueError(f"style_scale={style_scale} must be positive")
    seed_everything(seed)
    content_image = _resized(_open(content, "content"), size)
    style_image = _open(style, "style")
    area_scale = style_scale * math.sqrt(content_image.width * content_image.height / (style_image.width * style_image.height))
    style_image = _resized(style_image, max(16, round(max(style_image.size) * area_scale)))
    model = create_backbone(backbone, weights=weights) if isinstance(backbone, str) else backbone
    objective = StyleObjective(
        model,
        to_tensor(content_image),
        to_tensor(style_image),
        content_layer=content_layer or default_layers(model)[0],
        style_layers=default_layers(model)[1] if style_layers is None else style_layers,
        content_weight=content_weight,
        style_weight=style_weight,
        tv_weight=tv_weight,
        transform=transform,
        temperature=temperature,
    )
    start = to_tensor(content_image)
    if init == "noise":
        start = torch.rand(start.shape, generator=torch.Generator().manual_seed(seed))
    result = optimize_pixels(objective, start, steps=steps, optimizer=optimizer, lr=lr, parameterization=parameterization, progress=progress)
    return to_image(result)


# ImageNet's colour correlations (square root of the RGB covariance, as in Olah et al.'s Lucid):
# decorrelated channels are roughly luminance and two opponent colours.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


class FourierImage:
    """An image as a scaled spectrum of decorrelated colour channels, through a sigmoid.

    Gradient descent on raw pixels of a strided network (anything but VGG) fills the image with
    high-frequency, checkerboard noise that the loss barely sees. Optimising Fourier coefficients
    scaled by 1/frequency and decorrelated colours (Olah, Mordvintsev & Schubert, "Differentiable
    Image Parameterizations", Distill 2018) makes every frequency and colour direction equally easy
    to change: a preconditioner, not a prior. The sigmoid keeps pixels in ``[0, 1]``. The mapping is
    invertible, so optimisation can start exactly from the content image.
    """

    def __init__(self, image: torch.Tensor, decay: float = 1.0) -> None:
        height, width = image.shape[-2:]
        fy = torch.fft.fftfreq(height).view(-1, 1)
        fx = torch.fft.rfftfreq(width).view(1, -1)
        frequency = (fy.pow(2) + fx.pow(2)).sqrt()
        self.scale = frequency.clamp_min(1.0 / max(height, width)).pow(-decay)
        self.scale = self.scale / self.scale.max()
        self.size = (height, width)
        logits = torch.logit(image.clamp(1 / 255, 254 / 255))
        decorrelated = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_COLOR), logits)
        spectrum = torch.fft.rfft2(decorrelated, norm="ortho") / self.scale
        self.parameter = torch.view_as_real(spectrum).clone().requires_grad_(True)

    def image(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.parameter) * self.scale
        decorrelated = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        return torch.sigmoid(torch.einsum("ij,bjhw->bihw", _COLOR, decorrelated))


class PixelImage:
    """Plain pixels through a sigmoid (the classic parameterisation; ``parameterization="pixels"``)."""

    def __init__(self, image: torch.Tensor) -> None:
        self.parameter = torch.logit(image.clamp(1 / 255, 254 / 255)).clone().requires_grad_(True)

    def image(self) -> torch.Tensor:
        return torch.sigmoid(self.parameter)


PARAMETERIZATIONS = {"fourier": FourierImage, "pixels": PixelImage}


def optimize_pixels(
    objective: StyleObjective,
    start: torch.Tensor,
    *,
    steps: int = 300,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    parameterization: str = "fourier",
    progress: bool = True,
) -> torch.Tensor:
    """Minimise ``objective(image)`` starting from ``start`` (in ``[0, 1]``); returns the image.

    The optimiser moves the :class:`FourierImage` coefficients of the image (or, with
    ``parameterization="pixels"``, its pixels). L-BFGS runs in chunks of 10 iterations so the
    progress bar sees it move.
    """
    param = PARAMETERIZATIONS[parameterization](start)
    chunk = 10 if optimizer == "lbfgs" else 1
    if optimizer == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS([param.parameter], lr=lr or 1.0, max_iter=chunk, history_size=50, line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    else:
        opt = torch.optim.Adam([param.parameter], lr=lr or 0.05)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective(param.image()).total
        loss.backward(inputs=[param.parameter])  # gradients for the image only: the backbone's .grad stay untouched
        return loss

    done = 0
    with Progress(quiet=not progress) as bar:
        task = bar.task("stylize", total=steps)
        while done < steps:
            n = min(chunk, steps - done)
            if optimizer == "lbfgs":
                opt.param_groups[0]["max_iter"] = n
            loss = opt.step(closure)
            done += n
            task.advance(n)
            task.update(f"stylize (loss {float(loss.detach()):.4g})")
    with torch.no_grad():
        return param.image()
