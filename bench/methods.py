"""Issue 4's TLlib-style table: fine-tuning methods x fraction of the training data x seeds.

Usage:
  python bench/methods.py DATA [--fractions 0.1,0.25,0.5,1] [--seeds 0,1,2] [--methods plain,lp-ft,...]
  python bench/methods.py --table            mean +- std per (data, method, fraction) from the rows

DATA is ``elpv`` (binary) or a folder name under ../shared/datasets. Only the training split is
subsampled (stratified, per seed); validation and test stay whole, so every cell is scored on the
same test images. Every method trains the whole network for the same number of epochs from the same
ImageNet weights; they differ only in the one thing TLlib's table varies. Rows are appended to
bench/results/methods.jsonl with the settings, the machine and the commit.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _rows import append, context

from headstart.api import fit
from headstart.data import Dataset, load_dataset, load_elpv, stratified_split

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
OUT = Path(__file__).parent / "results" / "methods.jsonl"

# plain fine-tuning is TLlib's baseline: the whole network from the start, a 10x smaller rate for the body
METHODS: dict[str, dict[str, Any]] = {
    "plain": dict(strategy="full", head_warmup=False),
    "lp-ft": dict(strategy="full", head_warmup=True),  # Kumar et al.: the head fitted on frozen features first
    "l2sp": dict(strategy="full", head_warmup=False, l2sp=0.01),
    "bss": dict(strategy="full", head_warmup=False, bss=0.001),
    "llrd": dict(strategy="full", head_warmup=False, layer_decay=0.7),
    # the same epoch budget spread over stages: top block, then one more block per stage
    "gradual": dict(strategy="gradual", head_warmup=True),  # ULMFiT: the head first, then blocks from the top
}


def load(name: str, fraction: float, seed: int) -> Dataset:
    """``name`` with ``fraction`` of each training class kept (seed-dependent); val and test untouched."""
    data = load_elpv(task="binary", seed=0) if name == "elpv" else load_dataset(SHARED / name, seed=0)
    if fraction >= 1:
        return data
    items, labels = data.splits["train"]
    _, kept = stratified_split(labels, fraction, seed)
    splits = {**data.splits, "train": ([items[i] for i in kept], [labels[i] for i in kept])}
    return replace(data, splits=splits, notes=[*data.notes, f"train subsampled to {fraction:.0%} per class, seed {seed}"])


def run(name: str, method: str, fraction: float, seed: int, epochs: int, image_size: int, cache: Path) -> dict[str, Any]:
    data = load(name, fraction, seed)
    settings = dict(METHODS[method], epochs=epochs, image_size=image_size, seed=seed, augment="light")
    if method == "gradual":
        settings.update(epochs=max(1, epochs // 3), unfreeze_blocks=3)  # three stages of epochs/3: the same budget
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(data, backbone="efficientnet_lite0", out=Path(tmp) / "run", quiet=True, cache_dir=cache, **settings)
    test = result.metrics["test"]
    return {
        "data": name, "method": method, "fraction": fraction, "seed": seed, "n_train": len(data.items("train")),
        "settings": settings, "test_accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "n_test": test["n"],
        "epochs_run": {p: sum(r["phase"] == p for r in result.history.epochs) for p in dict.fromkeys(r["phase"] for r in result.history.epochs)},
        "seconds": time.perf_counter() - started, **context(),
    }  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per (data, method), one column per fraction, mean +- population std over seeds."""
    cells: dict[tuple[str, str, float], list[float]] = {}
    for r in rows:
        cells.setdefault((r["data"], r["method"], r["fraction"]), []).append(r["test_accuracy"])
    fractions = sorted({k[2] for k in cells})
    lines = ["| data | method | " + " | ".join(f"{f:.0%}" for f in fractions) + " |", "|---|---|" + "---:|" * len(fractions)]
    for data in dict.fromkeys(k[0] for k in cells):
        for method in [m for m in METHODS if any(k[:2] == (data, m) for k in cells)]:
            out = []
            for f in fractions:
                acc = 100 * np.asarray(cells.get((data, method, f), []))
                out.append(f"{acc.mean():.1f} ± {acc.std():.1f} ({len(acc)})" if len(acc) else "")
            lines.append(f"| {data} | {method} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?")
    parser.add_argument("--fractions", default="0.1,0.25,0.5,1")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "headstart-bench-methods")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.table:
        print(table([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]))
        return
    if args.data is None:
        parser.error("name a dataset (elpv or a folder under ../shared/datasets), or pass --table")
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {sorted(METHODS)}")
    for fraction in (float(f) for f in args.fractions.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            for method in methods:
                append(args.out, run(args.data, method, fraction, seed, args.epochs, args.image_size, args.cache_dir))


if __name__ == "__main__":
    main()
