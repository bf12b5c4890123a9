"""LoRA (--strategy lora) against full fine-tuning (--strategy full) with minilm on text sets.

Usage: python bench/lora.py [--limit 1000] [--epochs 2] DATASET [DATASET ...]   (sms_spam, trec, sst2, subj)
A stratified subset of ``limit`` rows (the shared CPU is too slow for full runs) is written to a
temporary CSV; headstart splits it as usual (80/20 train/test, 15% of train for validation).
Appends one JSON line per run to bench/results/lora.jsonl.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from headstart.api import fit

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
RESULTS = Path(__file__).resolve().parent / "results" / "lora.jsonl"


def subset(name: str, limit: int, seed: int, folder: Path) -> Path:
    with (SHARED / name / "data.csv").open(encoding="utf-8") as handle:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(handle) if r.get("split", "train") == "train"]
    rng = np.random.default_rng(seed)
    labels = np.array([label for _, label in rows])
    chosen: list[int] = []
    for label in np.unique(labels):  # stratified: each class keeps its share
        members = np.flatnonzero(labels == label)
        chosen += list(rng.choice(members, max(2, round(limit * len(members) / len(rows))), replace=False))
    path = folder / f"{name}-{limit}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows[i] for i in sorted(chosen))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            data = subset(name, args.limit, args.seed, Path(tmp))
            for strategy in ("lora", "full"):
                started = time.perf_counter()
                run = fit(data, backbone="minilm", strategy=strategy, epochs=args.epochs, seed=args.seed, out=Path(tmp) / f"{name}-{strategy}", quiet=True)
                seconds = time.perf_counter() - started
                trainable = sum(p.numel() for n, p in run.model.named_parameters() if (strategy == "full" or "lora_" in n or n.startswith("head.")))
                record = {"data": name, "limit": args.limit, "strategy": strategy, "epochs": args.epochs, "seed": args.seed,
                          "trainable_parameters": trainable, "test_accuracy": run.metrics["test"]["accuracy"], "test_macro_f1": run.metrics["test"]["macro_f1"],
                          "n_test": run.metrics["test"]["n"], "seconds": seconds,
                          "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}}  # fmt: skip
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                with RESULTS.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
