"""Torch DataLoaders: decoding, transforms, seeded shuffling and sharding across torchrun ranks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from headstart.data.images import CachedImage, load_image


class ExampleDataset:
    """A torch-style dataset of (input, label); files are decoded (``decode``) and transformed per access."""

    def __init__(self, items: Sequence[Any], labels: Sequence[int] | None, transform: Any = None, decode: Any = None) -> None:
        self.items, self.labels, self.transform, self.decode = list(items), labels, transform, decode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        item = self.items[index]
        if self.decode is not None:
            item = self.decode(item)
        if self.transform is not None:
            item = self.transform(item)
        if self.labels is None:
            return item, -1
        label = self.labels[index]
        return item, (label if isinstance(label, (np.ndarray, np.floating, float)) else int(label))  # a number (regression) or a 0/1 row (multilabel) as it is


def loader_workers(examples: int, batch_size: int, *, in_process: bool = False) -> int:
    """How many DataLoader worker processes decode and augment ``examples`` in batches of ``batch_size``.

    On a CPU the training step needs the cores: at most 2 workers, and none when the work is cheap
    enough to run between steps in the training process (``in_process``: augmenting cached pixels,
    BENCHMARKS.md P2). On a GPU the step runs on the device and the cores are free to feed it: one
    worker per core but one, up to 8 (P5). Never more than there are batches.
    ``HEADSTART_WORKERS`` overrides the choice.
    """
    from headstart.training import distributed

    batches = max(1, examples // max(1, batch_size))
    if (chosen := os.environ.get("HEADSTART_WORKERS")) is not None:
        if not chosen.strip().isdigit():
            raise ValueError(f"HEADSTART_WORKERS={chosen!r}: set it to a whole number of loader worker processes (0 for none), or unset it")
        return min(int(chosen), batches)
    if distributed.device().type == "cpu":
        return 0 if in_process else min(2, batches)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(max(1, cores - 1), 8, batches)


def make_loader(
    items: Sequence[Any],
    labels: Sequence[int] | None,
    preprocessing: Any,
    *,
    batch_size: int,
    train: bool = False,
    augment: str = "none",
    seed: int = 0,
    workers: int | None = None,
    shard: bool = False,
) -> Any:
    """A DataLoader yielding ``(inputs, labels)`` batches ready for a backbone.

    ``shard``: under torchrun, this rank's share of the examples (see :func:`_loader`).
    """
    from headstart.data.preprocessing import AudioPreprocessing, ImagePreprocessing, SpectrogramPreprocessing

    if isinstance(preprocessing, ImagePreprocessing) and train and augment != "none" and _all_presized(items):
        # Augmenting cached pixels with torch ops costs ~1 ms an image: on a CPU the training process does it
        # between steps, since loader workers would take cores from the step (BENCHMARKS.md, P2).
        if workers is None:
            workers = loader_workers(len(items), batch_size, in_process=True)
        dataset = ExampleDataset(items, labels, preprocessing.presized_train_transform(augment), decode=CachedImage.array)
        return _loader(dataset, batch_size=batch_size, shuffle=True, seed=seed, shard=shard, num_workers=workers, collate_fn=preprocessing.collate,
                       prefetch_factor=4 if workers else None)  # fmt: skip
    if isinstance(preprocessing, (ImagePreprocessing, SpectrogramPreprocessing)):
        transform = preprocessing.train_transform(augment) if train else preprocessing.eval_transform()
        if workers is None:
            workers = loader_workers(len(items), batch_size) if len(items) > batch_size else 0
        dataset = ExampleDataset(items, labels, transform, decode=load_image if isinstance(preprocessing, ImagePreprocessing) else None)
        return _loader(dataset, batch_size=batch_size, shuffle=train, seed=seed, shard=shard, num_workers=workers, persistent_workers=False,
                       prefetch_factor=4 if workers else None)  # fmt: skip

    import torch

    def collate(batch: list[tuple[Any, int]]) -> tuple[dict[str, Any], Any]:
        inputs, ys = zip(*batch)
        return preprocessing(list(inputs)), torch.as_tensor(np.asarray(ys))

    transform = preprocessing.waveform_transform(augment if train else "none") if isinstance(preprocessing, AudioPreprocessing) else None
    return _loader(ExampleDataset(items, labels, transform), batch_size=batch_size, shuffle=train, seed=seed, shard=shard, collate_fn=collate)


def _all_presized(items: Sequence[Any]) -> bool:
    return bool(items) and all(isinstance(item, CachedImage) for item in items)


def tensor_loader(inputs: Any, labels: Sequence[int], *, batch_size: int, shuffle: bool = False, seed: int = 0, shard: bool = False,
                  weights: Any = None) -> Any:  # fmt: skip
    """Batches of precomputed tensors (cached features or activations), shuffled as :func:`make_loader` shuffles;
    with ``weights``, each batch is ``(inputs, labels, weights)`` and the training loop weights its loss."""
    import torch
    from torch.utils.data import TensorDataset

    tensors = [torch.as_tensor(inputs), torch.as_tensor(np.asarray(labels))]
    dataset = TensorDataset(*tensors, *([torch.as_tensor(np.asarray(weights, dtype=np.float32))] if weights is not None else []))
    return _loader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed, shard=shard)


def _loader(dataset: Any, *, batch_size: int, shuffle: bool, seed: int, shard: bool, **options: Any) -> Any:
    """The one DataLoader recipe: seeded shuffling; with ``shard`` under torchrun, a ``DistributedSampler``
    for training (same number of steps on every rank) or an unpadded share for evaluation; batches
    in pinned memory when training runs on a GPU, so the copy to it overlaps compute."""
    import torch
    from torch.utils.data import DataLoader

    from headstart.training import distributed

    sampler = distributed.train_sampler(dataset, seed=seed) if shard and shuffle else None
    if shard and not shuffle:
        dataset = distributed.eval_subset(dataset)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler, pin_memory=distributed.device().type == "cuda",
                      generator=torch.Generator().manual_seed(seed), **options)  # fmt: skip
