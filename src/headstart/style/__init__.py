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


The package: :mod:`~headstart.style.losses` (the objective), :mod:`~headstart.style.images`
(parameterizations, images in and out), :mod:`~headstart.style.transfer` (:func:`stylize`,
:func:`optimize_pixels`) and :mod:`~headstart.style.defaults`. This package and its ``defaults``
import no torch themselves (``headstart --help`` prints the defaults); the other names load their
module on first use.

>>> image = stylize("china.jpg", "flower.jpg", size=256)
>>> image.save("china-flower.png")
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    **dict.fromkeys(("DEFAULT_CONTENT_LAYER", "DEFAULT_STYLE_LAYERS", "DEFAULT_STYLE_WEIGHT", "DEFAULT_TEMPERATURE", "DEFAULT_TV_WEIGHT",
                     "INITS", "OPTIMIZERS", "TRANSFORMS"), "defaults"),  # fmt: skip
    **dict.fromkeys(("PARAMETERIZATIONS", "FourierImage", "ImageSource", "PixelImage", "to_image", "to_tensor"), "images"),
    **dict.fromkeys(("StyleLosses", "StyleObjective", "content_loss", "default_layers", "gram_matrix", "softmax_features", "style_loss", "total_variation"), "losses"),
    **dict.fromkeys(("optimize_pixels", "stylize"), "transfer"),
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """PEP 562: import the submodule that defines ``name`` on first use, so the package itself stays torch-free."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
