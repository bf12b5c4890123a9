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


def test_texts_embed_in_batches_of_similar_length_and_come_back_in_order(minilm, monkeypatch):
    from headstart.caches import embeddings

    texts = ["a much longer message than the others, " * 6, "hi", "ok then", "see you at the station at five", "no"]
    batches: list[list[int]] = []
    real = embeddings.make_loader

    def recording(items, *args, **kwargs):
        batches.append([len(t) for t in items])
        return real(items, *args, **kwargs)

    monkeypatch.setattr(embeddings, "make_loader", recording)
    monkeypatch.setenv("HEADSTART_WORKERS", "0")  # six tiny passes: no worker processes to start
    together = embeddings.compute_embeddings(minilm, texts, batch_size=2)
    assert batches == [sorted(len(t) for t in texts)]  # the loader saw them shortest first
    alone = np.concatenate([embeddings.compute_embeddings(minilm, [t]) for t in texts])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)
