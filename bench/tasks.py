"""Issue 27: regression, transfer across task types, and multi-label, measured on real data.

Usage: python bench/tasks.py CONFIG [CONFIG ...]   (configs in CONFIGS below; default: all, in order)

* ``reg-*``: 800 of ELPV's cells (a stratified subset, for time), their defect probability {0, 1/3, 2/3, 1} as a regression target (``load_elpv(task="probability")``),
  efficientnet_lite0 from ImageNet weights (feature extraction, fine-tuning) and from random weights.
  ``reg-scratch`` is ``pretrain`` (scratch training saved as a source backbone), so it is also (b)'s source.
  Each regression run is also read as the 4-class problem: the prediction rounded to the nearest of
  0, 1/3, 2/3, 1, scored against the 4-class labels of the same test images.
* ``c4-*``: the direct 4-class classifier (``load_elpv(task="4class")``), same split (asserted: the same
  test files), same image size, epochs and seed. ``c4-from-reg`` fine-tunes from ``reg-scratch``'s run
  directory (``fit --backbone RUN_DIR``): a source trained on a number, transferred to classes.
* ``ml-*``: TREC questions paired into a multi-label set (see :func:`trec_pairs`), all-MiniLM-L6-v2.

Runs are kept under ``$HEADSTART_BENCH_RUNS`` (default /tmp/headstart-bench-tasks): ELPV is CC BY-NC-SA,
its runs hold file paths and predictions only, never images, and are not committed. Each result is
one JSON line in bench/results/tasks.jsonl with the exact settings.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _rows import append, context

from headstart.api import fit
from headstart.data import load_dataset, load_elpv

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
RUNS = Path(os.environ.get("HEADSTART_BENCH_RUNS", "/tmp/headstart-bench-tasks"))
IMAGE = dict(backbone="efficientnet_lite0", image_size=64, seed=0)  # 64 px, 3 epochs, 800 cells: minutes per run on two cores shared with other helpers
EPOCHS = 3
LIMIT = 800  # a stratified subset of ELPV's 2,624 cells (load_elpv's limit: the same cells and split for every config)

CONFIGS: dict[str, dict[str, Any]] = {
    "reg-fe": dict(data="elpv-probability", strategy="feature-extraction", task="regression", **IMAGE),
    "reg-ft": dict(data="elpv-probability", strategy="fine-tune", epochs=EPOCHS, task="regression", **IMAGE),
    "reg-scratch": dict(data="elpv-probability", pretrain="efficientnet_lite0", epochs=EPOCHS, task="regression", image_size=64, seed=0),
    "c4-fe": dict(data="elpv-4class", strategy="feature-extraction", **IMAGE),
    "c4-ft": dict(data="elpv-4class", strategy="fine-tune", epochs=EPOCHS, **IMAGE),
    "c4-scratch": dict(data="elpv-4class", strategy="scratch", epochs=EPOCHS, **IMAGE),
    "c4-from-reg": dict(data="elpv-4class", strategy="fine-tune", epochs=EPOCHS, source="reg-scratch", image_size=64, seed=0),
    "ml-fe": dict(data="trec-pairs", strategy="feature-extraction", task="multilabel", backbone="minilm", seed=0),
    "ml-ft": dict(data="trec-pairs", strategy="fine-tune", epochs=2, task="multilabel", backbone="minilm", seed=0),
}
LEVELS = np.array([0.0, 1 / 3, 2 / 3, 1.0])


def trec_pairs(out: Path, seed: int = 0) -> Path:
    """A multi-label CSV from TREC: each row joins two questions of the same TREC split, its labels the union of their coarse classes.

    Within each split the questions are shuffled (seed 0) and taken two by two (an odd one out is
    dropped), so every question is used once and test pairs hold test questions only. A pair of two
    questions of one class has one label; otherwise two, ``|``-separated.
    """
    rng = np.random.default_rng(seed)
    with (SHARED / "trec" / "data.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "split"])
        for split in ("train", "test"):
            part = [r for r in rows if r["split"] == split]
            order = rng.permutation(len(part))
            for a, b in zip(order[0::2], order[1::2], strict=False):
                first, second = part[a], part[b]
                labels = sorted({first["label"], second["label"]})
                writer.writerow([f"{first['text']} {second['text']}", "|".join(labels), split])
    return out


def dataset(name: str):
    if name.startswith("elpv-"):
        return load_elpv(task=name.split("-", 1)[1], seed=0, limit=LIMIT)
    if name == "trec-pairs":
        return load_dataset(trec_pairs(RUNS / "trec_pairs.csv"), task="multilabel", seed=0)
    raise ValueError(name)


def read_off_four_classes(values: np.ndarray, data4) -> dict[str, float]:
    """Accuracy and balanced accuracy of predicted probabilities rounded to the nearest of 0, 1/3, 2/3, 1, against the 4-class labels."""
    from sklearn.metrics import balanced_accuracy_score

    level = np.abs(np.asarray(values, dtype=np.float64)[:, None] - LEVELS[None, :]).argmin(1)
    names = [f"p={k}/3" for k in range(4)]
    truth = np.array([names.index(data4.classes[k]) for k in data4.labels("test")])
    return {"accuracy": float((level == truth).mean()), "balanced_accuracy": float(balanced_accuracy_score(truth, level))}


def main(names: list[str]) -> None:
    out = Path(__file__).parent / "results" / "tasks.jsonl"
    four = load_elpv(task="4class", seed=0, limit=LIMIT)
    for name in names:
        settings = dict(CONFIGS[name])
        data = dataset(settings.pop("data"))
        if name.startswith(("reg", "c4")):
            assert [str(p) for p in data.items("test")] == [str(p) for p in four.items("test")], "the regression and 4-class test splits differ"
        directory = RUNS / name
        started = time.perf_counter()
        if "pretrain" in settings:
            from headstart.pretraining import pretrain

            run = pretrain(data, arch=settings.pop("pretrain"), out=directory, overwrite=True, quiet=True, **settings)
        else:
            if "source" in settings:
                settings["backbone"] = str(RUNS / settings.pop("source"))
            run = fit(data, out=directory, overwrite=True, quiet=True, **settings)
        seconds = time.perf_counter() - started
        test = run.metrics["test"]
        keys = {"regression": ("mae", "rmse", "r2"), "multilabel": ("micro_f1", "macro_f1", "map", "subset_accuracy")}.get(test.get("task"), ("accuracy", "balanced_accuracy", "macro_f1"))
        row: dict[str, Any] = {"config": name, **CONFIGS[name], **{k: test[k] for k in keys}, "intervals": {k: test["intervals"].get(k) for k in keys}, "n_test": test["n"]}
        if test.get("task") == "regression":
            saved = run.predictions  # the test split's values in target units, in the split's order
            assert saved["split"] == "test" and len(saved["examples"]) == len(four.items("test"))
            row["four_class_read_off"] = read_off_four_classes(np.array([e["predicted"] for e in saved["examples"]]), four)
        if test.get("task") == "multilabel":
            row["per_label"] = test["per_label"]
        row["epochs_run"] = {phase: sum(r["phase"] == phase for r in run.history.epochs) for phase in dict.fromkeys(r["phase"] for r in run.history.epochs)}
        append(out, {**row, "seconds": seconds, "load_average": os.getloadavg()[0], **context()})


def table(path: Path) -> str:
    """The BENCHMARKS.md table of the latest row of each config (95% intervals in brackets)."""
    import json

    rows = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        rows[row["config"]] = row
    def cell(row: dict[str, Any], key: str, percent: bool = False) -> str:
        value, interval = row.get(key), (row.get("intervals") or {}).get(key)
        if value is None:
            return ""
        shown = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.3f}")
        return shown(value) + (f" [{shown(interval[0])}, {shown(interval[1])}]" if interval else "")
    lines = ["| config | what | MAE | R² | accuracy | balanced accuracy | 4-class read off the regression (acc / balanced) | epochs | load |", "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for name in CONFIGS:
        if name not in rows or name.startswith("ml"):
            continue
        r = rows[name]
        read = r.get("four_class_read_off")
        off = f"{100 * read['accuracy']:.1f}% / {100 * read['balanced_accuracy']:.1f}%" if read else ""
        what = r.get("strategy") or f"pretrain {r.get('pretrain')}"
        lines.append(f"| {name} | {what}{' from ' + r['source'] if r.get('source') else ''} | {cell(r, 'mae')} | {cell(r, 'r2')} | {cell(r, 'accuracy', True)} | {cell(r, 'balanced_accuracy', True)} | "
                     f"{off} | {r['epochs_run']} | {r['load_average']:.1f} |")
    for name in ("ml-fe", "ml-ft"):
        if name in rows:
            r = rows[name]
            lines += ["", f"{name}: micro F1 {cell(r, 'micro_f1')}, macro F1 {cell(r, 'macro_f1')}, mAP {cell(r, 'map')}, subset accuracy {cell(r, 'subset_accuracy', True)}, n={r['n_test']}",
                      "", "| label | F1 | AP | threshold | support |", "|---|---:|---:|---:|---:|"]
            lines += [f"| {k} | {v['f1']:.3f} | {v['ap']:.3f} | {v['threshold']:.3f} | {v['support']} |" for k, v in r["per_label"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--table"]:
        print(table(Path(__file__).parent / "results" / "tasks.jsonl"))
    else:
        main(sys.argv[1:] or list(CONFIGS))
