"""Augmentation of cached pixels as batched tensor operations on the training device (issue 28).

On a GPU the CPU side of the input pipeline could not keep up with the step (BENCHMARKS.md, P5:
fit's loader alone delivered under half of what a bare AMP step consumes). Here the loader only
slices each example's random crop box out of the decoded-image cache (a view of a memory-mapped
shard) and packs the crops, uint8, into one batch array; that batch goes to the device (pinned
memory, a non-blocking copy on a side CUDA stream) and everything else runs there, for the whole
batch at once: the resize of every crop to the input size, flips, colour jitter, quarter turns
and normalisation, written channels-last. :class:`DeviceBatches` prepares the next batch while
the current one trains.

The random parameters are those of the CPU path (:meth:`PresizedAugment.draw`, the same draws in
the same order), so the same seed gives the same crop boxes on either path. The resize is the
antialiased one of ``F.interpolate(..., antialias=True)`` (PIL's filters) written as two batched
matrix products, one per axis, with each example's weights built for its own box: the flips are
the weight rows reversed. Outputs match the CPU path within rounding: the CPU path resizes and
jitters in 8 bits, rounding each step; this one stays in float (tests/test_device_augment.py
states the tolerances). The same code runs on the CPU (``--augment-on device``), which is how the
test suite checks it without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from headstart.data.preprocessing import AugmentDraw, ImagePreprocessing, PresizedAugment

_TAPS = {"bilinear": 2, "bicubic": 4}  # the filters' support in input pixels at scale 1 (torch's interp_size)


@dataclass(frozen=True)
class PresizedCrop:
    """Loader-side half of the device path: cached array -> (crop box's pixels, its draw). Picklable for workers."""

    augment: PresizedAugment

    def __call__(self, array: np.ndarray) -> tuple[np.ndarray, AugmentDraw]:
        return self.augment.crop(array)


@dataclass
class CropBatch:
    """A batch of uint8 crops, top-left aligned in one ``(B, H, W, 3)`` array, and their draws as tensors."""

    pixels: torch.Tensor  # (B, H, W, 3) uint8; example b fills pixels[b, :sizes[b, 0], :sizes[b, 1]]
    sizes: torch.Tensor  # (B, 2) int64: each crop's height and width
    flags: torch.Tensor  # (B, 3) int64: horizontal flip, vertical flip, quarter turns
    jitter: torch.Tensor | None  # (B, 7) float64: ColorJitter's order (4) and brightness, contrast, saturation factors

    def pin_memory(self) -> CropBatch:
        """Called by the DataLoader's pinning thread (pin_memory=True on a GPU): page-locked, so the copy is asynchronous."""
        return CropBatch(self.pixels.pin_memory(), self.sizes.pin_memory(), self.flags.pin_memory(), None if self.jitter is None else self.jitter.pin_memory())

    def to(self, device: torch.device) -> CropBatch:
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return CropBatch(move(self.pixels), move(self.sizes), move(self.flags), None if self.jitter is None else move(self.jitter))


def collate_crops(batch: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    """Pack the crops of one batch into a zero-padded uint8 array (what travels to the device) and their draws.

    Items are ``((pixels, draw), label)``, or with a loss weight ``((pixels, draw), label, weight)``:
    the weights then follow as a third tensor, as :func:`headstart.data.loaders.make_loader` documents.
    """
    crops, labels, *weights = zip(*batch)
    height = max(pixels.shape[0] for pixels, _ in crops)
    width = max(pixels.shape[1] for pixels, _ in crops)
    out = np.zeros((len(crops), height, width, 3), dtype=np.uint8)
    for b, (pixels, _) in enumerate(crops):
        out[b, : pixels.shape[0], : pixels.shape[1]] = pixels
    draws = [draw for _, draw in crops]
    sizes = torch.tensor([[d.box[2], d.box[3]] for d in draws], dtype=torch.int64)
    flags = torch.tensor([[d.hflip, d.vflip, d.turns] for d in draws], dtype=torch.int64)
    jitter = None
    if draws[0].jitter is not None:
        jitter = torch.tensor([[*d.jitter[0], *d.jitter[1:]] for d in draws], dtype=torch.float64)  # type: ignore[index]
    return (CropBatch(torch.from_numpy(out), sizes, flags, jitter), torch.as_tensor(np.asarray(labels)), *(torch.as_tensor(np.asarray(w)) for w in weights))


def resize_weights(lengths: torch.Tensor, padded: int, size: int, mode: str, flip: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, size, padded)`` matrices that resize each example's first ``lengths[b]`` pixels along one axis to ``size``
    (and, where ``flip[b]``, reverse them: output pixel i takes the weights of ``size - 1 - i``).

    The weights of ``F.interpolate(mode, antialias=True)`` (``nearest``: without antialias), as
    aten/src/ATen/native/UpSample.h computes them: a filter stretched by the downscaling factor,
    each output pixel's taps cut to ``[center - support + 0.5, center + support + 0.5)`` and
    normalised to sum 1. Zero beyond ``lengths[b]`` (the padding of :class:`CropBatch`).
    """
    device = lengths.device
    n = lengths.to(torch.float64)[:, None, None]  # (B, 1, 1)
    i = torch.arange(size, device=device, dtype=torch.float64)[None, :, None].expand(len(lengths), -1, -1)  # output pixel
    if flip is not None:
        i = torch.where(flip.bool()[:, None, None], size - 1 - i, i)
    j = torch.arange(padded, device=device, dtype=torch.float64)[None, None, :]  # input pixel
    scale = n / size
    if mode == "nearest":
        source = torch.minimum(torch.floor(i * scale), n - 1)
        return (j == source).to(torch.float32)
    taps = _TAPS[mode]
    support = torch.where(scale >= 1, taps / 2 * scale, torch.full_like(scale, taps / 2))
    invscale = torch.where(scale >= 1, 1 / scale, torch.ones_like(scale))
    center = scale * (i + 0.5)
    low = torch.clamp(torch.trunc(center - support + 0.5), min=0)
    high = torch.minimum(torch.trunc(center + support + 0.5), n)
    x = ((j - center + 0.5) * invscale).abs()
    if mode == "bilinear":
        w = torch.clamp(1 - x, min=0)
    else:  # bicubic with a = -0.5, torch's (and PIL's) antialiasing filter
        a = -0.5
        w = torch.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1, torch.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, torch.zeros_like(x)))
    w = torch.where((j >= low) & (j < high), w, torch.zeros_like(w))
    total = w.sum(-1, keepdim=True)
    return (w / torch.where(total == 0, torch.ones_like(total), total)).to(torch.float32)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 1) luma of channels-last RGB, with torchvision's coefficients."""
    return (x * x.new_tensor([0.2989, 0.587, 0.114])).sum(-1, keepdim=True)


def _jitter(x: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
    """ColorJitter's brightness, contrast and saturation on (B, H, W, 3) floats in [0, 255], each example in its own drawn order."""
    order, factors = jitter[:, :4].long(), jitter[:, 4:].to(x.dtype)
    for slot in range(4):
        for op in range(3):  # hue (3) is not jittered
            chosen = order[:, slot] == op
            if not bool(chosen.any()):
                continue
            part, factor = x[chosen], factors[chosen, op].view(-1, 1, 1, 1)
            if op == 0:
                toward = torch.zeros_like(part)
            elif op == 1:
                toward = _grayscale(part).mean(dim=(1, 2, 3), keepdim=True)
            else:
                toward = _grayscale(part)
            x[chosen] = (factor * part + (1 - factor) * toward).clamp_(0, 255)
    return x


def augment_batch(batch: CropBatch, preprocessing: ImagePreprocessing) -> torch.Tensor:
    """The float, normalised ``(B, 3, size, size)`` channels-last batch from a :class:`CropBatch` on its device.

    Resize (both flips folded into the weights), colour jitter, quarter turns, normalisation: the
    steps of :meth:`PresizedAugment.__call__` and :meth:`ImagePreprocessing.collate`, batched.
    """
    size, mode = preprocessing.input_size, preprocessing.interpolation
    pixels = batch.pixels.to(torch.float32)  # (B, H, W, 3)
    hflip, vflip, turns = batch.flags.unbind(1)
    rows = resize_weights(batch.sizes[:, 0], pixels.shape[1], size, mode, flip=vflip)  # (B, size, H)
    cols = resize_weights(batch.sizes[:, 1], pixels.shape[2], size, mode, flip=hflip)  # (B, size, W)
    b, h, w, _ = pixels.shape
    # Horizontal pass first, clamped to the 8-bit range, then the vertical one: the order and saturation of torch's uint8 resize
    # (its intermediate image is 8-bit), without its rounding. In the other order bicubic results on noisy crops differ by up to 11 levels.
    x = torch.bmm(cols, pixels.transpose(1, 2).reshape(b, w, h * 3)).view(b, size, h, 3).clamp_(0, 255)  # (B, size columns, H, 3)
    x = torch.bmm(rows, x.transpose(1, 2).reshape(b, h, size * 3)).view(b, size, size, 3).clamp_(0, 255)  # (B, size rows, size columns, 3)
    if batch.jitter is not None:
        x = _jitter(x, batch.jitter)
    for k in (1, 2, 3):
        turned = turns == k
        if bool(turned.any()):
            x[turned] = torch.rot90(x[turned], k, dims=(1, 2))  # (H, W) of channels-last: dims -2, -1 of (3, H, W)
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32, device=x.device) * 255
    std = torch.tensor(preprocessing.std, dtype=torch.float32, device=x.device) * 255
    x.sub_(mean).div_(std)
    return x.permute(0, 3, 1, 2)  # (B, 3, size, size) with channels-last strides


class DeviceBatches:
    """Training batches augmented on ``device``, the next one prepared while the current one trains.

    Wraps the DataLoader of crops: ``len``, ``sampler`` and ``generator`` are its own, so the
    training loop, DistributedDataParallel's epoch seeding and the checkpoint treat it as they
    treat that loader. On CUDA the copy and augmentation of batch k+1 are queued on a side stream
    before batch k is handed to the step; on the CPU the same operations run in turn.
    """

    def __init__(self, loader: Any, preprocessing: ImagePreprocessing, device: torch.device) -> None:
        self.loader, self.preprocessing, self.device = loader, preprocessing, device

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def sampler(self) -> Any:
        return self.loader.sampler

    @property
    def generator(self) -> Any:
        return self.loader.generator

    @property
    def dataset(self) -> Any:
        return self.loader.dataset

    def _prepare(self, batch: tuple[Any, ...] | None, stream: Any) -> tuple[torch.Tensor, ...] | None:
        if batch is None:
            return None
        crops, *rest = batch  # labels, and the loss weights when given
        if stream is None:
            return (augment_batch(crops.to(self.device), self.preprocessing), *(t.to(self.device) for t in rest))
        with torch.cuda.stream(stream):
            return (augment_batch(crops.to(self.device), self.preprocessing), *(t.to(self.device, non_blocking=True) for t in rest))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        batches = iter(self.loader)
        ready = self._prepare(next(batches, None), stream)
        while ready is not None:
            if stream is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_stream(stream)  # the prepared batch is complete before the step reads it
                for tensor in ready:
                    tensor.record_stream(current)
            upcoming = self._prepare(next(batches, None), stream)  # queued before the step on `ready`: the two overlap
            yield ready
            ready = upcoming
