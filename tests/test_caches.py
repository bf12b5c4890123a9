"""Cache shards are checked when written, and again only when their size or time changed."""

from __future__ import annotations

import os

import numpy as np

from headstart import io


def test_opening_a_store_does_not_re_read_its_shards(tmp_path, monkeypatch):
    io.ShardStore().write(tmp_path, ["a", "b"], np.arange(6, dtype=np.float32).reshape(2, 3))
    hashed = []
    real = io.sha256_file
    monkeypatch.setattr(io, "sha256_file", lambda path: hashed.append(path) or real(path))
    assert set(io.ShardStore().index(tmp_path)) == {"a", "b"} and hashed == []  # a new store, as a new run opens it

    [shard] = tmp_path.glob("part-*.npy")
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))  # touched (e.g. copied): checked once
    assert set(io.ShardStore().index(tmp_path)) == {"a", "b"} and len(hashed) == 1
    assert set(io.ShardStore().index(tmp_path)) == {"a", "b"} and len(hashed) == 1  # the new time was recorded

    shard.write_bytes(shard.read_bytes()[:-4] + b"\x00\x00\x80\x7f")  # same size, new content and time: caught
    assert io.ShardStore().index(tmp_path) == {} and not list(tmp_path.iterdir())
