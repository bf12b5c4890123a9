"""Images in and out of style transfer, and the parameterizations the optimiser moves (Fourier coefficients or pixels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from headstart.data import check_image, load_image

ImageSource = str | Path | Image.Image


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
