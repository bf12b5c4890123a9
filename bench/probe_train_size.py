"""Issue 26, SMS spam: does the probe overstate feature extraction because it trains on train + val while the head trains on train?

Usage (from the repository root, PYTHONPATH=src:bench):
  python bench/probe_train_size.py bias DATA            text sets: minilm's last-block features of the grid's capped
                                                        splits (advise_grid.load, 25% and 100%): the probe on train + val
                                                        (as profile runs it), the probe with each fold's training part cut
                                                        to the train split's size, and a logistic regression trained on
                                                        train scored on test
  python bench/probe_train_size.py advise DATA:FRACTION ...   the advisor on grid cells: its feature-extraction block, the
                                                        probe on train + val and at the train split's size, its pick
Prints one JSON line per cell; nothing is written to bench/results.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

import numpy as np
from advise_grid import load


def bias(name: str) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from headstart.analysis.probes import probe_accuracy
    from headstart.backbones import create_backbone
    from headstart.caches.embeddings import EmbeddingCache

    backbone = create_backbone("minilm")
    with tempfile.TemporaryDirectory() as folder:
        cache = EmbeddingCache(folder)
        for fraction in (0.25, 1.0):
            data = load(name, 400, fraction, 0)
            x = {s: cache.embed(backbone, data.items(s), batch_size=32)[0] for s in ("train", "val", "test")}
            y = {s: data.labels(s) for s in x}
            probed, labels = np.concatenate([x["train"], x["val"]]), np.concatenate([y["train"], y["val"]])
            n = len(y["train"])
            head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x["train"], y["train"])
            at_train = probe_accuracy(probed, labels, train_size=n)
            print(json.dumps({"data": name, "fraction": fraction, "n_train": n, "n_val": len(y["val"]), "n_test": len(y["test"]),
                              "probe_train_val": round(probe_accuracy(probed, labels)[0], 4), "probe_at_train": round(at_train[0], 4),
                              "probe_at_train_std": round(at_train[1], 4), "logistic_on_train_test": round(head.score(x["test"], y["test"]), 4)}), flush=True)  # fmt: skip


def advise_cells(cells: list[str]) -> None:
    from headstart.analysis.advisor import advise

    for cell in cells:
        name, fraction = cell.split(":")
        data = load(name, 400, float(fraction), 0)
        started = time.perf_counter()
        advice = advise(data, backbone="minilm" if data.modality == "text" else "efficientnet_lite0", seed=0)
        fe = advice.candidates[0]
        block = fe.fit_kwargs.get("cut", advice.profile.rows[-1].block)
        row = next(r for r in advice.profile.rows if r.block == block)
        print(json.dumps({"data": name, "fraction": float(fraction), "n_train": len(data.items("train")), "n_val": len(data.items("val")),
                          "fe_block": block, "probe_train_val": round(row.probe_accuracy, 4), "probe_at_train": row.probe_at_train and round(row.probe_at_train, 4),
                          "pick": advice.measurements["pick"], "fit_kwargs": advice.fit_kwargs, "close_call": advice.close_call,
                          "candidates": {c.name: round(c.accuracy, 4) for c in advice.candidates}, "seconds": round(time.perf_counter() - started, 1)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "bias":
        bias(sys.argv[2])
    else:
        advise_cells(sys.argv[2:])
