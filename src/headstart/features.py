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
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart.backbones import Backbone
from headstart.data import content_key, make_loader
from headstart.io import atomic_path, atomic_write_text
from headstart.progress import Progress
from headstart.training import to_device


def default_cache_dir() -> Path:
    return Path(os.environ.get("HEADSTART_CACHE", Path.home() / ".cache" / "headstart")) / "embeddings"


def _backbone_key(backbone: Backbone) -> str:
    prep = json.dumps(backbone.preprocessing.to_dict(), sort_keys=True)
    return f"{backbone.fingerprint()}-{hashlib.sha256(prep.encode()).hexdigest()[:8]}"


@torch.inference_mode()
def compute_embeddings(backbone: Backbone, items: Sequence[Any], *, batch_size: int = 64, progress: Progress | None = None) -> np.ndarray:
    """Pooled features of ``items`` (no cache), shape ``(len(items), feature_dim)``, float32."""
    backbone.eval()
    loader = make_loader(items, None, backbone.preprocessing, batch_size=batch_size)
    out = np.empty((len(items), backbone.feature_dim), dtype=np.float32)
    start = 0
    device = backbone.device
    task = progress.task("embedding", total=len(items)) if progress else None
    for inputs, _ in loader:
        features = backbone(to_device(inputs, device)).float().cpu().numpy()
        out[start : start + len(features)] = features
        start += len(features)
        if task is not None:
            task.advance(len(features))
    if task is not None:
        task.done()
    return out


class EmbeddingCache:
    """Content-addressed store of pooled features, one folder per backbone/preprocessing key."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self._verified: dict[Path, tuple[int, int]] = {}  # shard -> (size, mtime) checked by this instance

    def _index(self, folder: Path) -> dict[str, tuple[Path, int]]:
        index: dict[str, tuple[Path, int]] = {}
        for keys_file in sorted(folder.glob("part-*.json")):
            shard = keys_file.with_suffix(".npy")
            try:
                meta = json.loads(keys_file.read_text())
                array = np.load(shard, mmap_mode="r")
                stat = shard.stat()
                if self._verified.get(shard) != (stat.st_size, stat.st_mtime_ns):
                    if array.shape[0] != len(meta["keys"]) or meta.get("sha256") != _sha(shard):
                        raise ValueError("checksum mismatch")
                    self._verified[shard] = (stat.st_size, stat.st_mtime_ns)
            except (OSError, ValueError, KeyError):
                keys_file.unlink(missing_ok=True)  # damaged entry: rebuilt below, never trusted
                shard.unlink(missing_ok=True)
                continue
            index.update({key: (shard, row) for row, key in enumerate(meta["keys"])})
        return index

    def embed(
        self,
        backbone: Backbone,
        items: Sequence[Any],
        *,
        batch_size: int = 64,
        progress: Progress | None = None,
    ) -> tuple[np.ndarray, int]:
        """Features for ``items``; returns ``(features, number computed now)``."""
        folder = self.root / _backbone_key(backbone)
        folder.mkdir(parents=True, exist_ok=True)
        keys = [content_key(item) for item in items]
        index = self._index(folder)
        missing = sorted({k: i for i, k in enumerate(keys) if k not in index}.values())
        if missing:
            fresh = compute_embeddings(backbone, [items[i] for i in missing], batch_size=batch_size, progress=progress)
            name = f"part-{uuid.uuid4().hex[:12]}"
            shard = folder / f"{name}.npy"
            with atomic_path(shard) as tmp, open(tmp, "wb") as handle:
                np.save(handle, fresh)
            atomic_write_text(folder / f"{name}.json", json.dumps({"keys": [keys[i] for i in missing], "sha256": _sha(shard)}))
            index.update({keys[i]: (shard, row) for row, i in enumerate(missing)})
        shards: dict[Path, np.ndarray] = {}
        out = np.empty((len(items), backbone.feature_dim), dtype=np.float32)
        for i, key in enumerate(keys):
            shard, row = index[key]
            if shard not in shards:
                shards[shard] = np.load(shard, mmap_mode="r")
            out[i] = shards[shard][row]
        return out, len(missing)


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
