"""Embeddings computed once and cached on disk.

Feature extraction pays for the frozen body once: pooled features of every example are stored
under a key made of the backbone's fingerprint (architecture, cut and weights), its preprocessing
and each example's content hash. A second run with another head, seed or strategy reads them back;
a new example costs one forward pass. Entries are ``.npy`` shards written atomically and read with
memory mapping, so a cache larger than memory still works.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart.backbones import Backbone
from headstart.caches.paths import default_cache_dir
from headstart.data.dataset import content_key
from headstart.data.loaders import make_loader
from headstart.freezing import fold_batchnorm
from headstart.io import ShardStore
from headstart.progress import Progress
from headstart.training import distributed
from headstart.training.evaluation import to_device

SHARD_ROWS = 4096  # examples per cache shard: what memory holds while embedding


def _backbone_key(backbone: Backbone) -> str:
    prep = json.dumps(backbone.preprocessing.to_dict(), sort_keys=True)
    return f"{backbone.fingerprint()}-{hashlib.sha256(prep.encode()).hexdigest()[:8]}"


def compute_embeddings(backbone: Backbone, items: Sequence[Any], *, batch_size: int = 64, progress: Progress | None = None) -> np.ndarray:
    """Pooled features of ``items`` (no cache), shape ``(len(items), feature_dim)``, float32."""
    if not len(items):
        return np.empty((0, backbone.feature_dim), dtype=np.float32)
    name = backbone.blocks[-1].name
    return compute_block_embeddings(backbone, items, [name], batch_size=batch_size, progress=progress)[name]


def compute_block_embeddings(
    backbone: Backbone, items: Sequence[Any], names: Sequence[str], *, batch_size: int = 64, progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Pooled features after each named block (no cache), one forward pass; float32 arrays by name."""
    parts = [chunk for _, chunk in iter_block_embeddings(backbone, items, names, batch_size=batch_size, progress=progress)]
    return {name: np.concatenate([p[name] for p in parts]) if parts else np.empty((0, 0), np.float32) for name in names}


def iter_block_embeddings(
    backbone: Backbone, items: Sequence[Any], names: Sequence[str], *, batch_size: int = 64, progress: Progress | None = None, chunk: int | None = None
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(start, {block: features})`` for consecutive runs of about ``chunk`` items, one forward pass in all.

    Streaming: memory holds one chunk, so the cache can write each chunk as it is done and an
    interrupted run keeps what it computed. Image passes run a copy with BatchNorm folded into the
    convolutions (:func:`headstart.freezing.fold_batchnorm`), however many items: a cached feature
    must not depend on the batch it was computed in (a seeded run repeats whatever the cache holds).
    Texts run in batches of similar lengths within each chunk (:func:`_length_sorted`).
    """
    chunk = chunk or SHARD_ROWS
    if len(items) > 1 and all(isinstance(item, str) for item in items):
        return _length_sorted(backbone, items, names, batch_size=batch_size, progress=progress, chunk=chunk)
    return _in_order(backbone, items, names, batch_size=batch_size, progress=progress, chunk=chunk)


def _in_order(
    backbone: Backbone, items: Sequence[Any], names: Sequence[str], *, batch_size: int, progress: Progress | None, chunk: int
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """:func:`iter_block_embeddings` over ``items`` in the order given."""
    backbone.eval()
    loader = make_loader(items, None, backbone.preprocessing, batch_size=batch_size)
    last = backbone.blocks[-1].name
    pending: dict[str, list[np.ndarray]] = {name: [] for name in names}
    device = backbone.device
    task = progress.task("embedding", total=len(items)) if progress else None
    start = held = 0
    runner = None
    for inputs, _ in loader:
        inputs = to_device(inputs, device)
        if runner is None:  # folded outside inference mode: its weights are ordinary tensors
            runner = fold_batchnorm(backbone, inputs[:2])[0] if isinstance(inputs, torch.Tensor) else backbone
        with torch.inference_mode():  # per batch: the caller's code between chunks runs in its own mode
            pooled = {last: runner(inputs)} if list(names) == [last] else runner.forward_blocks(inputs, list(names))
            for name in names:
                pending[name].append(pooled[name].float().cpu().numpy())
        held += len(pending[names[0]][-1])
        if task is not None:
            task.advance(len(pending[names[0]][-1]))
        if held >= chunk:
            yield start, {name: np.concatenate(arrays) for name, arrays in pending.items()}
            start, held, pending = start + held, 0, {name: [] for name in names}
    if held:
        yield start, {name: np.concatenate(arrays) for name, arrays in pending.items()}
    if task is not None:
        task.done()


def _length_sorted(
    backbone: Backbone, texts: Sequence[str], names: Sequence[str], *, batch_size: int, progress: Progress | None, chunk: int
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """:func:`iter_block_embeddings` for texts: each chunk runs in batches of similar lengths, its rows back in their order.

    A batch is padded to its longest text; in the order given, a few long messages make most batches
    long (SMS spam: 5,574 texts of 2 to 910 characters). Sorted, as sentence-transformers' ``encode``
    does, the padding nearly vanishes. The attention mask keeps padding out of every result, so a
    text's features do not depend on its batch beyond float rounding.
    """
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        order = sorted(range(len(part)), key=lambda i: len(part[i]))
        inverse = np.argsort(order)
        for _, pooled in _in_order(backbone, [part[i] for i in order], names, batch_size=batch_size, progress=progress, chunk=len(part)):
            yield start, {name: features[inverse] for name, features in pooled.items()}


class EmbeddingCache:
    """Content-addressed store of pooled features, one folder per backbone/preprocessing key."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self._store = ShardStore()

    def _index(self, folder: Path) -> dict[str, tuple[Path, int]]:
        return {key: (shard, row) for key, (shard, row, _) in self._store.index(folder).items()}

    def embed(
        self,
        backbone: Backbone,
        items: Sequence[Any],
        *,
        batch_size: int = 64,
        progress: Progress | None = None,
    ) -> tuple[np.ndarray, int]:
        """Features for ``items``; returns ``(features, number computed now)``."""
        name = backbone.blocks[-1].name
        features, computed = self.embed_blocks(backbone, items, [name], batch_size=batch_size, progress=progress)
        return features[name], computed

    def embed_blocks(
        self,
        backbone: Backbone,
        items: Sequence[Any],
        blocks: Sequence[int | str],
        *,
        batch_size: int = 64,
        progress: Progress | None = None,
    ) -> tuple[dict[str, np.ndarray], int]:
        """Pooled features after each of ``blocks``, from one forward pass over the missing items.

        Block ``b``'s features are stored under the key of ``backbone.cut(b)``, so they are exactly
        what a feature-extraction run with ``cut=b`` reads back. Returns ``({block name: features},
        number of items computed now)``.
        """
        names = list(dict.fromkeys(backbone.blocks[backbone.blocks.index_of(b)].name for b in blocks))
        last = backbone.blocks[-1].name
        cuts = {name: backbone if name == last else backbone.cut(name) for name in names}
        folders = {name: self.root / _backbone_key(cut) for name, cut in cuts.items()}
        keys = [content_key(item) for item in items]
        distributed.barrier()  # every rank sees the same cache, hence the same missing items and the same shares
        indexes = {}
        for name, folder in folders.items():
            folder.mkdir(parents=True, exist_ok=True)
            indexes[name] = self._index(folder)
        missing = sorted({k: i for i, k in enumerate(keys) if any(k not in index for index in indexes.values())}.values())
        distributed.check_shared(self.root, len(missing))
        mine = distributed.share(missing)  # under torchrun each rank embeds its share; alone, all of it
        for start, fresh in iter_block_embeddings(backbone, [items[i] for i in mine], names, batch_size=batch_size, progress=progress):
            done = mine[start : start + len(fresh[names[0]])]
            for name, folder in folders.items():  # each chunk is stored as soon as it is computed
                shard = self._write(folder, [keys[i] for i in done], fresh[name])
                indexes[name].update({keys[i]: (shard, row) for row, i in enumerate(done)})
        if distributed.active():  # the other ranks' shards complete the cache
            distributed.barrier()
            indexes = {name: self._index(folder) for name, folder in folders.items()}
            distributed.check_shared(self.root, sum(k not in index for index in indexes.values() for k in keys), expect=0)
        return {name: self._gather(indexes[name], keys, cuts[name].feature_dim) for name in names}, len(missing)

    def _write(self, folder: Path, keys: list[str], features: np.ndarray) -> Path:
        return self._store.write(folder, keys, features)

    @staticmethod
    def _gather(index: dict[str, tuple[Path, int]], keys: list[str], dim: int) -> np.ndarray:
        shards: dict[Path, np.ndarray] = {}
        out = np.empty((len(keys), dim), dtype=np.float32)
        for i, key in enumerate(keys):
            shard, row = index[key]
            if shard not in shards:
                shards[shard] = np.load(shard, mmap_mode="r")
            out[i] = shards[shard][row]
        return out
