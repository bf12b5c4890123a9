"""``torchrun`` with two CPU processes (Gloo) on real data, against one process.

The runs go through the real launcher (``python -m torch.distributed.run --standalone``) and the
real CLI; two launches, about 10 and 25 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from headstart.cli import main

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="this torch has no Gloo backend")

HERE = Path(__file__).parent


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, procs: int = 2) -> str:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def cache_keys(folder: Path) -> list[str]:
    """Every key of every shard under ``folder``: an example embedded (or decoded) twice would appear twice."""
    return [key for part in folder.glob("part-*.json") for key in json.loads(part.read_text())["keys"]]


def test_ddp_gradient_equals_one_process_gradient_skips_frozen_and_unshared_caches_stop(elpv_folder, tmp_path):
    from ddp_worker import gradients

    images = sorted(map(str, elpv_folder.rglob("*.png")))[:6]
    out = torchrun(str(HERE / "ddp_worker.py"), str(tmp_path / "two.pt"), str(tmp_path / "unshared"), *images)
    saved = torch.load(tmp_path / "two.pt")
    for task in ("classification", "regression"):  # a regression head's MSE averages over ranks as the cross-entropy does
        one, two = gradients(task), saved[task]
        frozen = [name for name, grad in one.items() if grad is None]
        assert frozen and all(two[name] is None for name in frozen)  # frozen blocks: no gradient, nothing all-reduced
        for name, grad in one.items():
            if grad is not None:
                torch.testing.assert_close(two[name], grad, rtol=1e-4, atol=1e-6)
    # Caches on unshared filesystems: every rank raises; a rank still reading the last collective when the
    # other has left may see Gloo's "connection closed" instead, so at least one rank prints the explanation.
    assert "ranks see different cache contents" in out and "filesystem every node mounts" in out


def test_two_process_fine_tune_embeds_and_decodes_once_and_matches_one_process(elpv_folder, tmp_path, capsys):
    """Batch 8 on each of 2 ranks against batch 16 alone: the same global batch, another order. The head
    warm-up's embeddings are sharded between the ranks, merged, and reused by the one-process run."""
    cache = tmp_path / "cache"
    common = ["fit", str(elpv_folder), "--strategy", "fine-tune", "--trainable-blocks", "3", "--epochs", "3", "--patience", "3", "--image-size", "64",
              "--cache-dir", str(cache), "--json"]  # fmt: skip
    two = json.loads(torchrun("-m", "headstart", *common, "--batch-size", "8", "--out", str(tmp_path / "two")))  # one JSON document: only rank 0 prints
    log = (tmp_path / "two" / "log.txt").read_text()
    assert "DistributedDataParallel on 2 ranks (gloo)" in log and "frozen left out" in log
    assert "freeze audit (fine-tune): ok" in log
    assert "train: 32 embeddings (32 computed" in log
    (embeddings,) = [f for f in cache.iterdir() if f.name != "images"]
    keys = cache_keys(embeddings)
    assert len(keys) == len(set(keys)) == 32 + 6  # train and val embedded exactly once, across both ranks
    images = cache_keys(next((cache / "images").iterdir()))
    assert len(images) == len(set(images)) == 32 + 6 + 10  # and their images decoded once (test too: the final scoring reads the cache)
    files = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert "checkpoint" not in files and "report.html" in files  # rank 0 wrote the run and removed its finished checkpoint
    assert main([*common, "--batch-size", "16", "--out", str(tmp_path / "one")]) == 0  # one process: this one (the launch is what the two-rank run tests)
    one = json.loads(capsys.readouterr().out)
    assert "(0 computed, 32 from cache)" in (tmp_path / "one" / "log.txt").read_text()  # the merged cache, reused by one process
    assert cache_keys(embeddings) == keys
    assert abs(one["metrics"]["test"]["accuracy"] - two["metrics"]["test"]["accuracy"]) <= 0.2 + 1e-9  # 10 test images: within 2
