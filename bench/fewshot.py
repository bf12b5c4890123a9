"""Few-shot emotion (8 labelled tweets per class, 10 random draws) with minilm: frozen encoder +
logistic regression, and SetFit-style contrastive tuning (headstart.strategies.fewshot) + logistic regression.

Usage: python bench/fewshot.py [--draws 10] [--per-class 8] [--templates 8]
       python bench/fewshot.py --zero-shot     no labelled example: each test tweet gets the class whose
                                               "This sentence is {class}" embedding is nearest (cosine)
       python bench/fewshot.py --table         mean ± std per method over draws (the latest row per draw)
Appends one JSON line per draw and method to bench/results/fewshot.jsonl and prints mean ± std.
SetFit (Tunstall et al. 2022) reports 39.1 ± 4.7% with the same all-MiniLM-L6-v2 encoder.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from headstart.backbones import create_backbone
from headstart.strategies.fewshot import contrastive_tune, embed, templated_examples

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
RESULTS = Path(__file__).resolve().parent / "results" / "fewshot.jsonl"


def load(split: str) -> tuple[list[str], np.ndarray, list[str]]:
    with (SHARED / "emotion" / "data.csv").open(encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == split]
    classes = sorted({r["label"] for r in rows})
    return [r["text"] for r in rows], np.array([classes.index(r["label"]) for r in rows]), classes


def draw(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in np.unique(labels)])


def head_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    clf = LogisticRegression(max_iter=2000).fit(train_x, train_y)
    return float((clf.predict(test_x) == test_y).mean())


def table(rows: list[dict]) -> str:
    """Markdown: per method, mean ± population std of test accuracy over draws (a rerun of a draw replaces it)."""
    latest = {(r["method"], r["seed"]): r["test_accuracy"] for r in rows}
    lines = ["| method | draws | test accuracy, mean ± std | per draw |", "|---|---:|---:|---|"]
    for method in dict.fromkeys(m for m, _ in latest):
        draws = sorted(((s, a) for (m, s), a in latest.items() if m == method), key=lambda x: -1 if x[0] is None else x[0])
        acc = 100 * np.array([a for _, a in draws])
        lines.append(f"| {method} | {len(acc)} | {acc.mean():.1f} ± {acc.std():.1f}% | " + ", ".join(f"{a:.1f}" for a in acc) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--first-draw", type=int, default=0)
    parser.add_argument("--templates", type=int, default=0, help="add this many 'This sentence is {label}' examples per class (SetFit's templated dataset)")
    parser.add_argument("--zero-shot", action="store_true", help="the class-name-only baseline: nearest template embedding, no training")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--frozen-only", action="store_true", help="only the frozen-encoder baseline (minutes, not hours, on a shared CPU)")
    args = parser.parse_args()
    if args.table:
        print(table([json.loads(line) for line in RESULTS.read_text(encoding="utf-8").splitlines() if line.strip()]))
        return
    texts, labels, classes = load("train")
    test_texts, test_labels, test_classes = load("test")
    assert classes == test_classes
    base = create_backbone("minilm")
    started = time.perf_counter()
    test_base = embed(base, test_texts)
    print(f"test embeddings ({len(test_texts)}) in {time.perf_counter() - started:.0f}s", flush=True)
    if args.zero_shot:
        names = embed(base, templated_examples(classes, per_class=1)[0])
        accuracy = float(((test_base @ names.T).argmax(1) == test_labels).mean())
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"method": "zero-shot (class-name templates)", "seed": None, "per_class": 0, "test_accuracy": accuracy, "n_test": len(test_labels)}) + "\n")
        print(f"zero-shot by class name: {accuracy:.4f}")
        return
    suffix = f"+templates{args.templates}" if args.templates else ""
    results: dict[str, list[float]] = {f"frozen{suffix}+logreg": [], f"contrastive{suffix}+logreg": []}
    for seed in range(args.first_draw, args.first_draw + args.draws):
        chosen = draw(labels, args.per_class, seed)
        sample, sample_y = [texts[i] for i in chosen], labels[chosen]
        if args.templates:
            extra, extra_y = templated_examples(classes, per_class=args.templates)
            sample, sample_y = sample + extra, np.concatenate([sample_y, extra_y])
        frozen = head_accuracy(embed(base, sample), sample_y, test_base, test_labels)
        if args.frozen_only:
            results[f"frozen{suffix}+logreg"].append(frozen)
            with RESULTS.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"method": f"frozen{suffix}+logreg", "seed": seed, "per_class": args.per_class, "test_accuracy": frozen, "n_test": len(test_labels)}) + "\n")
            print(f"draw {seed}: frozen {frozen:.4f}", flush=True)
            continue
        started = time.perf_counter()
        tuned = copy.deepcopy(base)
        torch.manual_seed(seed)
        losses = contrastive_tune(tuned, sample, sample_y, iterations=args.iterations, seed=seed)
        tuned_acc = head_accuracy(embed(tuned, sample), sample_y, embed(tuned, test_texts), test_labels)
        seconds = time.perf_counter() - started
        for method, acc in ((f"frozen{suffix}+logreg", frozen), (f"contrastive{suffix}+logreg", tuned_acc)):
            results[method].append(acc)
            record = {"method": method, "seed": seed, "per_class": args.per_class, "iterations": args.iterations, "templates": args.templates, "test_accuracy": acc,
                      "n_test": len(test_labels), "seconds": seconds if method.startswith("contrastive") else None,
                      "first_loss": losses[0] if method.startswith("contrastive") else None, "last_loss": losses[-1] if method.startswith("contrastive") else None,
                      "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}}  # fmt: skip
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            with RESULTS.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        print(f"draw {seed}: frozen {frozen:.4f}, contrastive {tuned_acc:.4f} ({seconds:.0f}s)", flush=True)
    for method, accs in results.items():
        if accs:
            print(f"{method}: {100 * np.mean(accs):.1f} ± {100 * np.std(accs):.1f}% over {len(accs)} draws")


if __name__ == "__main__":
    main()
