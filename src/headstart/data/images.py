"""Image decoding: any file Pillow opens becomes 8-bit RGB, or a one-line reason why it cannot."""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
LARGEST_DECODE = 4096
MAX_ASPECT_RATIO = 100  # a 1 x 8,000,000 strip decodes, but resizing its short side to 256 needs 2 billion pixels
MAX_PIXELS = 64_000_000  # decoded pixels per image; Pillow's own limit (~179 M, ~1.5 GB at peak) is far above what a model needs
MAX_PIXELS_VARIABLE = "HEADSTART_MAX_PIXELS"

Item = Union[Path, str, Image.Image]


def load_image(source: Item) -> Image.Image:
    """Decode an image to 8-bit RGB: EXIF rotation applied; palette, RGBA, CMYK, 16-bit and grey converted.

    Animated images give their first frame. JPEGs wider or taller than ``2 * LARGEST_DECODE`` are
    decoded at reduced scale (never below ``LARGEST_DECODE`` a side): the model sees a few hundred
    pixels, and a 10,000 x 10,000 photo then costs 75 MB instead of 300 MB.
    """
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    if hasattr(source, "to_pil"):  # a CachedImage: decoded and presized earlier
        return source.to_pil()
    limit = max_pixels()
    with _quiet_pillow(), Image.open(source) as image:  # closed here: a long run must not leak one file handle per image
        problem = _too_large(image, limit)
        if problem:
            raise ValueError(f"{source}: {problem}")
        if image.format == "JPEG" and max(image.size) > 2 * LARGEST_DECODE:
            image.draft("RGB", (LARGEST_DECODE, LARGEST_DECODE))  # decode a huge photo at 1/2, 1/4 or 1/8 scale
        return _to_rgb(image)


def max_pixels() -> int:
    """The most pixels one image may decode to: :data:`MAX_PIXELS`, or ``HEADSTART_MAX_PIXELS`` when set."""
    value = os.environ.get(MAX_PIXELS_VARIABLE, "").strip().replace("_", "")
    if not value:
        return MAX_PIXELS
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{MAX_PIXELS_VARIABLE}={value!r}: not a positive whole number of pixels; e.g. {MAX_PIXELS_VARIABLE}=100000000, or unset it")
    return int(value)


def decoded_size(image: Image.Image) -> tuple[int, int]:
    """The size :func:`load_image` decodes ``image`` at, read from its header (JPEG's reduced-scale decoding included)."""
    width, height = image.size
    if image.format == "JPEG" and max(width, height) > 2 * LARGEST_DECODE and len(getattr(image, "tile", ())) == 1:
        ratio = min(width // LARGEST_DECODE, height // LARGEST_DECODE)  # as JpegImageFile.draft chooses its scale
        scale = next(s for s in (8, 4, 2, 1) if ratio >= s)
        return (width + scale - 1) // scale, (height + scale - 1) // scale
    return width, height


def _too_large(image: Image.Image, limit: int) -> str | None:
    """Why ``image`` must not be decoded (more pixels than ``limit``), from its header alone; None if it may."""
    width, height = decoded_size(image)
    if width * height <= limit:
        return None
    return f"too large: {_megapixels(width * height)} megapixels (limit {_megapixels(limit)}; {MAX_PIXELS_VARIABLE})"


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f}" if pixels >= 1e6 else f"{pixels / 1e6:.2g}"


@contextlib.contextmanager
def _quiet_pillow() -> Iterator[None]:
    """Silence Pillow's warnings about damaged metadata ("Corrupt EXIF data", "Truncated File Read").

    The pixels decode (or the file is skipped with a reason); a scraped folder must not flood the
    terminal with one warning per file. Bombs beyond Pillow's hard limit still raise.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def _to_rgb(image: Image.Image) -> Image.Image:
    with _quiet_pillow():
        if image.tell() != 0:  # an animation is used by its first frame (never count frames: a damaged one raises)
            image.seek(0)
        image = ImageOps.exif_transpose(image) or image
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            with np.errstate(invalid="ignore", over="ignore"):
                array = np.nan_to_num(np.asarray(image).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)  # float images may hold NaN/inf
            high = array.max(initial=0.0)
            scale = 255.0 if image.mode == "F" and high <= 1.0 else 255.0 / (65535.0 if high > 255 else 255.0)
            image = Image.fromarray((array * scale).clip(0, 255).astype(np.uint8))
        if image.mode in ("P", "PA", "LA", "RGBA", "La"):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        return image.convert("RGB")


def check_image(path: Path) -> str | None:
    """Fully decode ``path`` (at reduced scale for JPEG); return why it is unusable, or None.

    An image that would decode to more than :func:`max_pixels` pixels is refused from its header,
    before any pixel is decoded.
    """
    limit = max_pixels()
    if not path.exists():
        return "no such file (or a broken or looping symbolic link)"
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with _quiet_pillow(), Image.open(path) as image:
            width, height = image.size
            if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
                return f"extreme aspect ratio ({width} x {height}, over {MAX_ASPECT_RATIO}:1); crop it or remove it"
            problem = _too_large(image, limit)
            if problem:
                return problem
            image.draft("RGB", (64, 64))
            _to_rgb(image)  # the same conversion training will do, at reduced scale for JPEG
        return None
    except Image.DecompressionBombError:
        return "decompression bomb (too many pixels)"
    except (OSError, SyntaxError, ValueError) as error:
        text = str(error).split("\n")[0]
        if "cannot identify image file" in text:
            return "not an image (cannot identify format)"
        return f"cannot decode image ({text[:80]})"
    except Exception as error:  # noqa: BLE001 - Pillow raises TypeError, KeyError, struct.error... for damaged files
        return f"cannot decode image ({type(error).__name__}: {str(error).splitlines()[0][:80] if str(error) else ''})"


@dataclass(frozen=True)
class CachedImage:
    """A decoded, presized image inside a shard of :mod:`headstart.caches.images`; :func:`load_image` reads it back.

    It lives here, not beside the cache, so that the loaders recognise it without importing the cache.
    """

    shard: str
    offset: int
    shape: tuple[int, int, int]

    def array(self) -> np.ndarray:
        h, w, c = self.shape
        return _open_shard(self.shard)[self.offset : self.offset + h * w * c].reshape(h, w, c)

    def to_pil(self) -> Image.Image:
        return Image.fromarray(np.array(self.array()))


@functools.lru_cache(maxsize=32)
def _open_shard(path: str) -> np.ndarray:
    return np.load(path, mmap_mode="r")  # each DataLoader worker opens its own map; pages are shared
