"""Augmentation on the training device (issue 28), run here on the CPU: the same crops as the CPU path, its pixels within rounding, flips exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import photo

from headstart.caches.images import DecodedImageCache
from headstart.data import make_loader
from headstart.data.device_augment import CropBatch, DeviceBatches, augment_batch, resize_weights
from headstart.data.preprocessing import ImagePreprocessing
from headstart.errors import UserError

SIZE = 32


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """12 photos of assorted shapes (some smaller than the input size), in a decoded-image cache."""
    root = tmp_path_factory.mktemp("device-augment")
    paths = []
    for i, size in enumerate([(60, 45), (45, 70), (30, 28), (40, 40), (80, 50), (37, 52)] * 2):
        paths.append(root / f"{i}.png")
        photo(seed=i, size=size).save(paths[-1])
    return paths, [i % 2 for i in range(len(paths))], DecodedImageCache(root / "cache")


def _batches(cached, prep, augment, augment_on, seed=0):
    paths, labels, cache = cached
    items, _ = cache.prepare(paths, prep, augment=augment, workers=0)
    torch.manual_seed(seed)  # the draws come from torch's generator, as on the CPU path
    return list(make_loader(items, labels, prep, batch_size=5, train=True, augment=augment, seed=seed, workers=0, augment_on=augment_on))


# One uint8 step after normalisation: the CPU path resizes in 8 bits (an 8-bit intermediate image and an 8-bit result, each rounded,
# fixed-point weights); this path keeps floats. Colour jitter truncates to 8 bits after each of its three operations and its grayscale.
RESIZE_STEPS, JITTER_STEPS = 1.1, 5.0


@pytest.mark.parametrize(("augment", "interpolation"), [("light", "bicubic"), ("dihedral", "bilinear"), ("strong", "bicubic"), ("light", "nearest")])
def test_device_path_draws_the_cpu_paths_crops_and_matches_its_pixels(cached, augment, interpolation):
    prep = ImagePreprocessing(input_size=SIZE, interpolation=interpolation)
    cpu = _batches(cached, prep, augment, "cpu")
    device = _batches(cached, prep, augment, "device")
    step = 1 / (255 * min(prep.std))
    tolerance = (JITTER_STEPS if augment == "strong" else RESIZE_STEPS) * step
    assert len(cpu) == len(device) == 3
    for (x, y), (xd, yd) in zip(cpu, device, strict=True):
        assert torch.equal(y, yd)  # the same shuffle
        assert xd.shape == x.shape and xd.dtype == torch.float32 and xd.is_contiguous(memory_format=torch.channels_last)
        difference = (xd - x).abs()
        assert difference.max() <= tolerance, (difference.max() / step).item()
        assert difference.mean() <= (1.5 if augment == "strong" else 0.4) * step  # rounding, not a different crop
    again = _batches(cached, prep, augment, "device")
    assert all(torch.equal(a[0], b[0]) for a, b in zip(device, again))  # same seed, same batches
    other = _batches(cached, prep, augment, "device", seed=1)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(device, other))


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("length", [20, 32, 45, 77])
def test_resize_weights_are_interpolates_antialiased_filter(mode, length):
    line = torch.rand(1, 1, 3, length, dtype=torch.float64) * 255
    expected = F.interpolate(line, size=(3, SIZE), mode=mode, antialias=True)[0, 0, 0]
    weights = resize_weights(torch.tensor([length]), length + 5, SIZE, mode)[0].double()  # padded: the extra columns weigh nothing
    padded = torch.cat([line[0, 0, 0], torch.full((5,), 1e6, dtype=torch.float64)])
    assert torch.allclose(weights @ padded, expected, rtol=1e-5, atol=1e-3)
    nearest = resize_weights(torch.tensor([length]), length, SIZE, "nearest")[0].double()
    assert torch.equal(nearest @ line[0, 0, 0], F.interpolate(line, size=(3, SIZE), mode="nearest")[0, 0, 0])


def test_flips_and_quarter_turns_are_exact():
    """A crop of exactly the input size is not resampled: each of the 8 symmetries (and the horizontal flip) is exactly torch's flip/rot90."""
    prep = ImagePreprocessing(input_size=SIZE)
    image = torch.randint(0, 256, (SIZE, SIZE, 3), dtype=torch.uint8)
    flags = torch.tensor([[h, v, k] for h in (0, 1) for v in (0, 1) for k in range(4)])
    batch = CropBatch(image.expand(len(flags), -1, -1, -1).contiguous(), torch.full((len(flags), 2), SIZE), flags, None)
    out = augment_batch(batch, prep)
    for (h, v, k), x in zip(flags.tolist(), out):
        chw = image.permute(2, 0, 1)
        chw = chw.flip(-1) if h else chw
        chw = chw.flip(-2) if v else chw
        expected, _ = prep.collate([(torch.rot90(chw, k, dims=(-2, -1)), 0)])
        assert torch.equal(x, expected[0]), (h, v, k)


def test_device_batches_is_the_loader_to_the_training_loop_and_checkpoint(cached):
    prep = ImagePreprocessing(input_size=SIZE)
    paths, labels, cache = cached
    items, _ = cache.prepare(paths, prep, augment="light", workers=0)
    loader = make_loader(items, labels, prep, batch_size=5, train=True, augment="light", workers=0, augment_on="device")
    assert isinstance(loader, DeviceBatches) and len(loader) == len(loader.loader) == 3
    assert loader.generator is loader.loader.generator and loader.sampler is loader.loader.sampler  # the checkpoint saves the shuffle's state
    assert not isinstance(make_loader(items, labels, prep, batch_size=5, train=True, augment="light", workers=0), DeviceBatches)  # auto on a CPU: as before
    with pytest.raises(UserError, match="--augment-on device augments the decoded-image cache"):
        make_loader(paths, labels, prep, batch_size=5, train=True, augment="light", augment_on="device")


def test_loss_weights_travel_with_their_examples_on_the_device_path(cached):
    """sample_weight reaches every strategy (issue 25): through the device path too, each crop keeps its example's weight."""
    prep = ImagePreprocessing(input_size=SIZE)
    paths, labels, cache = cached
    items, _ = cache.prepare(paths, prep, augment="light", workers=0)
    weights = np.arange(len(items), dtype=np.float32)  # the weight names the example, whatever the shuffle did
    batches = list(make_loader(items, labels, prep, batch_size=5, train=True, augment="light", workers=0, augment_on="device", weights=weights))
    assert all(len(batch) == 3 for batch in batches)
    seen = torch.cat([w for _, _, w in batches]).long()
    assert sorted(seen.tolist()) == list(range(len(items)))
    assert torch.equal(torch.cat([y for _, y, _ in batches]), torch.as_tensor(labels)[seen])


def test_augment_on_is_checked():
    from headstart.config import FitConfig

    with pytest.raises(ValueError, match="augment_on='gpu'"):
        FitConfig(augment_on="gpu").validate()
