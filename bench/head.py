"""The head on cached features against the embedding pass, the old mini-batch loop and scikit-learn.

Usage: python bench/head.py [sms_spam|hymenoptera ...]   (appends to bench/results/head.jsonl)

For each dataset, in one process: the embedding pass of train, val and test with an empty cache
(what the head's time is a share of); then, on the same features, (a) the head as headstart trains
it now (:func:`headstart.training.head.fit_head`, full-batch L-BFGS rounds), (b) the loop it
replaced (mini-batches of 32 through a DataLoader, AdamW, 100 epochs, patience 15: ``fit_model``
with ``tensor_loader``, as before), (c) scikit-learn's ``LogisticRegression`` (lbfgs, C=1,
max_iter=1000). Test accuracy of each, wall seconds, seconds per epoch.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SETS = {"sms_spam": (SHARED / "sms_spam" / "data.csv", "minilm"), "hymenoptera": (SHARED / "hymenoptera", "efficientnet_lite0")}


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HEADSTART_CACHE"] = tempfile.mkdtemp(prefix="headstart-bench-head-")  # an empty cache: the embedding pass is timed cold
    import torch
    from sklearn.linear_model import LogisticRegression

    from headstart.backbones import create_backbone, match_data
    from headstart.caches.embeddings import EmbeddingCache
    from headstart.data import load_dataset, tensor_loader
    from headstart.heads import ClassifierHead
    from headstart.strategies.base import head_settings
    from headstart.training import TrainSettings, fit_model, seed_everything
    from headstart.training.head import fit_head

    out = Path(__file__).parent / "results" / "head.jsonl"
    for name in sys.argv[1:] or list(SETS):
        path, backbone_name = SETS[name]
        dataset = load_dataset(path, seed=0)
        backbone = create_backbone(backbone_name)
        match_data(backbone, dataset)
        cache = EmbeddingCache(None)
        start = time.perf_counter()
        features = {s: cache.embed(backbone, dataset.items(s), batch_size=32)[0] for s in ("train", "val", "test")}
        embed_s = time.perf_counter() - start
        labels = {s: np.asarray(dataset.labels(s)) for s in features}
        k, dim = len(dataset.classes), features["train"].shape[1]

        def accuracy(head: torch.nn.Module, x: np.ndarray = features["test"], y: np.ndarray = labels["test"]) -> float:
            head.eval()
            with torch.no_grad():
                return float((head(torch.from_numpy(x)).argmax(1).numpy() == y).mean())

        rows = {}
        seed_everything(0)
        head = ClassifierHead(dim, k)
        start = time.perf_counter()
        history = fit_head(head, *((torch.from_numpy(features[s]), torch.from_numpy(labels[s])) for s in ("train", "val")), head_settings())
        rows["headstart (L-BFGS rounds)"] = (time.perf_counter() - start, len(history.epochs), accuracy(head))
        seed_everything(0)
        head = ClassifierHead(dim, k)
        start = time.perf_counter()
        history = fit_model(head, tensor_loader(features["train"], labels["train"], batch_size=32, shuffle=True, seed=0),
                            tensor_loader(features["val"], labels["val"], batch_size=1024), TrainSettings(epochs=100, lr=1e-3, patience=15, warmup=0.05))  # fmt: skip
        rows["before (mini-batches of 32, AdamW)"] = (time.perf_counter() - start, len(history.epochs), accuracy(head))
        start = time.perf_counter()
        model = LogisticRegression(max_iter=1000).fit(features["train"], labels["train"])
        rows["scikit-learn LogisticRegression"] = (time.perf_counter() - start, None, float((model.predict(features["test"]) == labels["test"]).mean()))
        print(f"{name}: {len(features['train'])} x {dim} train features; embedding pass (train+val+test, cold cache) {embed_s:.1f} s")
        for what, (seconds, epochs, acc) in rows.items():
            per_epoch = f", {seconds / epochs:.3f} s/epoch over {epochs} epochs" if epochs else ""
            print(f"  {what}: {seconds:.2f} s ({seconds / embed_s:.1%} of the embedding pass){per_epoch}; test accuracy {acc:.4f}")
        record = {"dataset": name, "backbone": backbone_name, "n_train": len(features["train"]), "dim": dim, "embed_s": round(embed_s, 2),
                  "rows": {w: {"seconds": round(s, 3), "epochs": e, "test_accuracy": round(a, 4)} for w, (s, e, a) in rows.items()},
                  "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"}  # fmt: skip
        with out.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
