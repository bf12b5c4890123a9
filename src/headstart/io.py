"""Atomic file writes: a crash or Ctrl-C leaves either the old file or the new one, never half of one.

:class:`ShardStore` builds the on-disk caches (embeddings, decoded images) on them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (``/proc``), else set back at once under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # for that instant the umask is 077: a file created meanwhile is private, never too open
        old = os.umask(0o077)
        os.umask(old)
    return old


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed over ``target``.

    The file gets the mode any new file gets (``0666`` less the umask, e.g. ``0644``), not the
    ``0600`` of :func:`tempfile.mkstemp`, so that a report or exported model can be served or shared.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # after writing: a writer may have replaced the file
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


class ShardStore:
    """Content-keyed arrays in ``.npy`` shards with a JSON index each, written atomically.

    A shard holds the rows of one write; its JSON names the key of each row, a checksum of the
    ``.npy`` and any extra fields the caller needs (offsets, shapes). A damaged or half-written
    entry is deleted and reported missing, never trusted: the caller computes it again. Shards are
    read with memory mapping, so a store larger than memory still works.
    """

    def __init__(self) -> None:
        self._verified: dict[Path, tuple[int, int]] = {}  # shard -> (size, mtime) checked by this instance

    def index(self, folder: Path) -> dict[str, tuple[Path, int, dict[str, Any]]]:
        """``{key: (shard, row, shard's JSON)}`` over every sound shard in ``folder``.

        A shard's checksum is computed when it is written and again only when its size or
        modification time differ from those its JSON records (a copied or touched folder): opening
        a store no longer re-reads every shard (the decoded-image cache holds ~268 MB per 1,024
        images). The re-checked stat is written back, so the next run trusts it again.
        """
        import numpy as np

        index: dict[str, tuple[Path, int, dict[str, Any]]] = {}
        for keys_file in sorted(folder.glob("part-*.json")):
            shard = keys_file.with_suffix(".npy")
            try:
                meta = json.loads(keys_file.read_text())
                array = np.load(shard, mmap_mode="r")
                stat = shard.stat()
                seen = [stat.st_size, stat.st_mtime_ns]
                if array.shape[0] != meta.get("rows", len(meta["keys"])):
                    raise ValueError("row count mismatch")
                if self._verified.get(shard) != tuple(seen) and meta.get("stat") != seen:
                    if meta.get("sha256") != sha256_file(shard):
                        raise ValueError("checksum mismatch")
                    meta["stat"] = seen
                    with contextlib.suppress(OSError):  # a read-only cache still works, it re-checks next time
                        atomic_write_text(keys_file, json.dumps(meta))
                self._verified[shard] = (stat.st_size, stat.st_mtime_ns)
            except (OSError, ValueError, KeyError):
                keys_file.unlink(missing_ok=True)  # damaged entry: rebuilt by the caller, never trusted
                shard.unlink(missing_ok=True)
                continue
            index.update({key: (shard, row, meta) for row, key in enumerate(meta["keys"])})
        return index

    def write(self, folder: Path, keys: list[str], array: Any, **extra: Any) -> Path:
        """Store ``array`` (one row per key unless ``extra`` says ``rows``) as a new shard; return its path."""
        import numpy as np

        name = f"part-{uuid.uuid4().hex[:12]}"
        shard = folder / f"{name}.npy"
        with atomic_path(shard) as tmp, open(tmp, "wb") as handle:
            np.save(handle, array)
        stat = shard.stat()
        atomic_write_text(folder / f"{name}.json", json.dumps({"keys": keys, "sha256": sha256_file(shard), "stat": [stat.st_size, stat.st_mtime_ns], **extra}))
        return shard


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
