"""Decoded-image cache: each image is decoded and resized once, not once per epoch.

Training for E epochs decodes every JPEG E times in the textbook loop, and resizes a photo of
millions of pixels down to a few hundred each time. Here the first fit decodes each image once,
resizes it so its short side is what the transforms start from, and stores the 8-bit pixels in
memory-mapped shards keyed by the file's content; every epoch (and every later fit at the same
resolution) reads them back. fastai calls the idea *presizing*.

Exactness: the evaluation transform (resize the short side to ``resize_size``, centre crop) gives
bit-identical tensors from the cached pixels, because the cached image already has that short side
and resizing it again is the identity. Random crops start from the cached ``resize_size`` image
instead of the original; for ``light`` (crops of >= 75% of the area) that never upsamples more than
1.07x. ``strong`` crops down to 8% of the area, so its cache keeps twice the input size.
Images smaller than the target are stored as they are (never upscaled).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from headstart.caches.paths import default_cache_dir
from headstart.data.dataset import content_key
from headstart.data.images import CachedImage, load_image
from headstart.data.loaders import loader_workers
from headstart.data.preprocessing import ImagePreprocessing, interpolation_mode
from headstart.io import ShardStore
from headstart.progress import Progress
from headstart.training import distributed

SHARD_IMAGES = 1024  # images per shard: bounds the memory used while writing


def cache_side(preprocessing: ImagePreprocessing, augment: str) -> int:
    """Short side the cached pixels keep for this preprocessing and augmentation preset."""
    return 2 * preprocessing.input_size if augment == "strong" else preprocessing.resize_size


def presize(image: Image.Image, side: int, interpolation: str) -> Image.Image:
    """Shrink so that the short side is ``side``, exactly as torchvision's ``Resize(side)`` does."""
    from torchvision.transforms import functional as F

    if min(image.size) <= side:
        return image
    return F.resize(image, side, interpolation=interpolation_mode(interpolation))


class _Decode:
    """Picklable worker function: path -> presized uint8 array."""

    def __init__(self, items: Sequence[Any], side: int, interpolation: str) -> None:
        self.items, self.side, self.interpolation = items, side, interpolation

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> np.ndarray:
        return np.array(presize(load_image(self.items[index]), self.side, self.interpolation), dtype=np.uint8)  # a writable copy


class DecodedImageCache:
    """Presized 8-bit images in memory-mapped shards, one folder per (side, interpolation)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._store = ShardStore()

    def prepare(
        self, items: Sequence[Any], preprocessing: ImagePreprocessing, *, augment: str = "none", progress: Progress | None = None, workers: int | None = None
    ) -> tuple[list[Any], str]:
        """``items`` with every file replaced by its :class:`CachedImage`, and a line for the run log.

        Items that are not files (PIL images in memory) pass through. When the disk lacks room
        for the new shards (more than half the free space), the items are returned unchanged and
        the line says so.
        """
        side = cache_side(preprocessing, augment)
        folder = self.root / f"images-{side}-{preprocessing.interpolation}"
        paths = [i for i, item in enumerate(items) if isinstance(item, (str, Path))]
        if not paths:
            return list(items), "decoded-image cache: not used (no image files)"
        folder.mkdir(parents=True, exist_ok=True)
        keys = {i: content_key(items[i]) for i in paths}
        distributed.barrier()  # every rank sees the same cache, hence the same missing images and the same shares
        index = self._store.index(folder)
        missing = [i for i in paths if keys[i] not in index]
        distributed.check_shared(self.root, len(missing))
        if missing:
            needed = len(missing) * side * side * 3 * 4 // 3  # a 4:3 photo at the cached side
            free = shutil.disk_usage(folder).free
            if needed > free // 2:
                return list(items), f"decoded-image cache: not used (about {needed / 2**20:.0f} MiB needed, {free / 2**20:.0f} MiB free in {folder})"
            mine = distributed.share(missing)  # under torchrun each rank decodes its share
            self._decode(folder, [items[i] for i in mine], [keys[i] for i in mine], side, preprocessing.interpolation, progress, workers)
            distributed.barrier()
            index = self._store.index(folder)
            distributed.check_shared(self.root, sum(keys[i] not in index for i in paths), expect=0)
        out = list(items)
        for i in paths:
            shard, row, meta = index[keys[i]]
            out[i] = CachedImage(str(shard), int(meta["offsets"][row]), tuple(meta["shapes"][row]))
        return out, f"decoded-image cache: {len(paths)} images at short side {side} ({len(missing)} decoded now, {len(paths) - len(missing)} from {folder})"

    def _decode(self, folder: Path, items: list[Any], keys: list[str], side: int, interpolation: str, progress: Progress | None, workers: int | None) -> None:
        import torch
        from torch.utils.data import DataLoader

        if workers is None:
            workers = loader_workers(len(items), 32) if len(items) > 64 else 0  # images counted as batches of 32: a few don't start many workers
        # Its own generator: a DataLoader draws a seed for its workers from the global RNG otherwise, and a
        # run that decodes (a cold cache) would then augment differently from one that does not.
        loader = DataLoader(_Decode(items, side, interpolation), batch_size=None, num_workers=workers, prefetch_factor=8 if workers else None,
                            generator=torch.Generator())  # fmt: skip
        task = progress.task("decoding images", total=len(items)) if progress else None
        chunk: list[np.ndarray] = []
        start = 0
        for array in loader:
            chunk.append(np.asarray(array))
            if task is not None:
                task.advance()
            if len(chunk) == SHARD_IMAGES:
                self._write(folder, keys[start : start + len(chunk)], chunk)
                start, chunk = start + len(chunk), []
        if chunk:
            self._write(folder, keys[start : start + len(chunk)], chunk)
        if task is not None:
            task.done()

    def _write(self, folder: Path, keys: list[str], arrays: list[np.ndarray]) -> None:
        sizes = [a.size for a in arrays]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
        flat = np.concatenate([a.reshape(-1) for a in arrays])
        self._store.write(folder, keys, flat, rows=int(flat.shape[0]), offsets=offsets, shapes=[list(a.shape) for a in arrays])


def image_cache(cache_dir: str | Path | None = None) -> DecodedImageCache | None:
    """The cache a fit uses: under ``cache_dir/images`` or the default, or None if ``HEADSTART_IMAGE_CACHE=0``."""
    if os.environ.get("HEADSTART_IMAGE_CACHE", "1") == "0":
        return None
    return DecodedImageCache(Path(cache_dir) / "images" if cache_dir is not None else default_cache_dir("images"))
