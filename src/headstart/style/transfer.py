"""The optimisation: :func:`stylize` prepares the images and the objective, :func:`optimize_pixels` descends."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from headstart.backbones import Backbone, create_backbone
from headstart.progress import Progress
from headstart.style.defaults import DEFAULT_STYLE_WEIGHT, DEFAULT_TEMPERATURE, DEFAULT_TV_WEIGHT, INITS, OPTIMIZERS
from headstart.style.images import PARAMETERIZATIONS, ImageSource, _open, _resized, to_image, to_tensor
from headstart.style.losses import StyleObjective, default_layers
from headstart.training.loop import seed_everything


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
