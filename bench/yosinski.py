"""Yosinski et al. (2014), "How transferable are features in deep neural networks?", at small scale.

Usage: nice -n 10 python bench/yosinski.py [--seeds 0,1,2] [--epochs 40]   (appends to bench/results/yosinski.jsonl, redraws the plot)
       python bench/yosinski.py --plot                                     (only redraw docs/yosinski-digits.png from the jsonl)

Data: scikit-learn's digits (1,797 grey 8x8 images of 10 digits). Per seed the ten digits are split
at random into task A (5 digits) and task B (the other 5). Each task trains on 40 images per digit
(``--per-class``) and validates on 20; the rest (~120 per digit) is its test split. In a first
trial with all ~145 training images per digit (5 epochs, n <= 2) every variant reached 98-100%, too
close to the ceiling to read anything; with 40 the base networks land near 95%. Network: timm's ``test_efficientnet`` from random weights at 16 x 16
px; headstart addresses it as 7 blocks (stem, stage0..stage4, head) plus the classifier, 8 layers
like Yosinski's AlexNet, so the cut runs over n = 1..7.

Every model is trained with headstart's own pieces: ``headstart.pretrain`` for the base models
(scratch, every block at one learning rate), and for each n a fresh random network whose first n
blocks are copied from a base model (``backbone.blocks[:n]``), then ``FineTune`` with the first n
blocks frozen (AnB, BnB) or every block trainable (AnB+, BnB+), head and body at the same rate, no
head warm-up, BatchNorm re-estimated in trainable blocks (frozen blocks keep theirs: headstart's
freezing keeps them in eval mode). The accuracy is on task B's test split, never used for training
or early stopping.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

import headstart
from headstart.backbones import Backbone, create_backbone
from headstart.data import Dataset, load_image, stratified_split, tensor_loader
from headstart.data.preprocessing import ImagePreprocessing
from headstart.freezing import freeze_bottom, set_batchnorm
from headstart.model import TransferModel
from headstart.training import TrainSettings, evaluate_loader, fit_model, seed_everything

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "yosinski.jsonl"
PLOT = ROOT / "docs" / "yosinski-digits.png"
ARCH = "timm:test_efficientnet"
KINDS = {"BnB": ("B", False), "BnB+": ("B", True), "AnB": ("A", False), "AnB+": ("A", True)}


def digit_tasks(seed: int, per_class: int) -> tuple[Dataset, Dataset]:
    """Tasks A and B: the ten digits split at random into two halves.

    Each task keeps ``per_class`` training and ``per_class // 2`` validation images per digit; the
    rest (about 120 per digit) is its test split.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [Image.fromarray((image * 255 / 16).astype(np.uint8)) for image in digits.images]
    order = np.random.default_rng(seed).permutation(10)
    tasks = []
    for name, chosen in (("A", sorted(order[:5])), ("B", sorted(order[5:]))):
        index = np.flatnonzero(np.isin(digits.target, chosen))
        labels = np.searchsorted(chosen, digits.target[index])
        test, kept = stratified_split(labels, (1.5 * per_class * 5) / len(labels), seed)
        train, val = stratified_split(labels[kept], 1 / 3, seed + 1)
        parts = {"train": kept[train], "val": kept[val], "test": test}
        splits = {split: ([images[index[i]] for i in part], labels[part].tolist()) for split, part in parts.items()}
        tasks.append(Dataset("image", [str(d) for d in chosen], splits, source=f"digits {name} {[int(d) for d in chosen]}"))
    return tasks[0], tasks[1]


def tensors(task: Dataset, preprocessing: ImagePreprocessing, split: str, *, batch_size: int, seed: int) -> DataLoader:
    """The split as preprocessed tensors, once: without augmentation every epoch would recompute the same pixels."""
    transform = preprocessing.eval_transform()
    inputs = torch.stack([transform(load_image(item)) for item in task.items(split)])
    return tensor_loader(inputs, task.labels(split), batch_size=batch_size, shuffle=split == "train", seed=seed)


def transferred(source: Backbone, n: int, seed: int) -> Backbone:
    """A fresh random network of the same architecture whose first ``n`` blocks are copies of ``source``'s."""
    seed_everything(seed)
    target = create_backbone(ARCH, pretrained=False)
    target.preprocessing = source.preprocessing
    for mine, theirs in zip(target.blocks[:n], source.blocks[:n]):
        mine.module.load_state_dict(theirs.module.state_dict())
    return target


def train_on_b(backbone: Backbone, task: Dataset, loaders: dict[str, DataLoader], *, frozen: int, settings: TrainSettings) -> dict[str, float]:
    """What ``FineTune(trainable_blocks=..., head_warmup=False, batchnorm="train")`` does, on tensors made once."""
    model = TransferModel.from_backbone(backbone, task.classes)
    freeze_bottom(model, len(model.blocks) - frozen)
    set_batchnorm(model, "train")  # trainable blocks re-estimate their statistics; frozen ones keep the source's
    history = fit_model(model, loaders["train"], loaders["val"], settings)
    _, probabilities, labels = evaluate_loader(model, loaders["test"])
    return {"test_accuracy": float((probabilities.argmax(1) == labels).mean()), "epochs_run": len(history.epochs)}


def run_seed(seed: int, args: argparse.Namespace, record: dict) -> None:
    task_a, task_b = digit_tasks(seed, args.per_class)
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, body_lr=args.lr, patience=args.patience)
    common = {**record, "seed": seed, "A": task_a.classes, "B": task_b.classes, "n_train": len(task_b.items("train")), "n_test": len(task_b.items("test"))}
    bases = {}
    for name, task in (("A", task_a), ("B", task_b)):
        started = time.perf_counter()
        run = headstart.pretrain(task, arch=ARCH, image_size=args.image_size, augment="none", epochs=args.epochs, lr=args.lr,
                                 patience=args.patience, batch_size=args.batch_size, seed=seed, save=False, quiet=True)  # fmt: skip
        bases[name] = run.model.backbone
        _write({**common, "kind": f"base{name}", "n": 0, "test_accuracy": run.metrics["test"]["accuracy"], "epochs_run": len(run.history.epochs),
                "seconds": time.perf_counter() - started}, args.results)  # fmt: skip
    preprocessing = bases["B"].preprocessing
    loaders = {split: tensors(task_b, preprocessing, split, batch_size=args.batch_size, seed=seed) for split in ("train", "val", "test")}
    for n in range(1, len(bases["A"].blocks) + 1):
        for kind, (source, fine_tuned) in KINDS.items():
            started = time.perf_counter()
            result = train_on_b(transferred(bases[source], n, seed), task_b, loaders, frozen=0 if fine_tuned else n, settings=settings)
            _write({**common, "kind": kind, "n": n, "block": bases[source].blocks[n - 1].name, **result, "seconds": time.perf_counter() - started}, args.results)


def _write(row: dict, results: Path) -> None:
    print(f"seed {row['seed']} {row['kind']:>5} n={row['n']}: {row['test_accuracy']:.4f} ({row['epochs_run']} epochs, {row['seconds']:.0f}s)", flush=True)
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as handle:
        handle.write(json.dumps(row) + "\n")


def plot(rows: list[dict], path: Path) -> Path:
    """Yosinski's Figure 2, from our rows: every seed as a dot, the mean per n as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"BnB": "tab:blue", "BnB+": "lightskyblue", "AnB": "tab:red", "AnB+": "lightcoral"}
    base_b = [r["test_accuracy"] for r in rows if r["kind"] == "baseB"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.scatter(np.zeros(len(base_b)), base_b, facecolors="white", edgecolors="black", zorder=3, label="baseB")
    ax.axhline(float(np.mean(base_b)), color="grey", linewidth=0.8, linestyle=":")
    for offset, (kind, colour) in zip((-0.15, -0.05, 0.05, 0.15), colours.items()):
        mine = [r for r in rows if r["kind"] == kind]
        ns = sorted({r["n"] for r in mine})
        ax.scatter([r["n"] + offset for r in mine], [r["test_accuracy"] for r in mine], color=colour, s=14, alpha=0.7)
        means = [np.mean([r["test_accuracy"] for r in mine if r["n"] == n]) for n in ns]
        ax.plot([0, *ns], [np.mean(base_b), *means], color=colour, marker="o", linestyle="--" if kind.endswith("+") else "-", label=kind)
    blocks = {r["n"]: r["block"] for r in rows if "block" in r}
    ax.set_xticks(range(len(blocks) + 1), ["0\n(base)", *(f"{n}\n{blocks[n]}" for n in sorted(blocks))], fontsize=8)
    ax.set_xlabel("n: blocks copied from the base network (frozen, or fine-tuned for +)")
    ax.set_ylabel("test accuracy on task B")
    seeds = sorted({r["seed"] for r in rows})
    ax.set_title(f"Transferability of blocks, {rows[0]['arch']} on digits 5 vs 5 ({len(seeds)} seeds)", fontsize=10)
    ax.legend(fontsize=8, ncol=5, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def table(rows: list[dict]) -> str:
    """Markdown: per n and kind, the mean test accuracy on B and its paired difference from baseB (same seed) ± standard error."""
    base = {r["seed"]: r["test_accuracy"] for r in rows if r["kind"] == "baseB"}
    blocks = {r["n"]: r["block"] for r in rows if "block" in r}
    lines = ["| n | last copied block | " + " | ".join(KINDS) + " |", "|---:|---|" + "---:|" * len(KINDS)]
    lines.append(f"| 0 | (baseB, {len(base)} seeds) | {np.mean(list(base.values())):.3f} (range {min(base.values()):.3f}–{max(base.values()):.3f}) |" + " |" * (len(KINDS) - 1))
    for n in sorted(blocks):
        cells = []
        for kind in KINDS:
            mine = [r for r in rows if r["kind"] == kind and r["n"] == n]
            delta = 100 * np.array([r["test_accuracy"] - base[r["seed"]] for r in mine])
            error = delta.std(ddof=1) / np.sqrt(len(delta)) if len(delta) > 1 else float("nan")
            cells.append(f"{np.mean([r['test_accuracy'] for r in mine]):.3f} ({delta.mean():+.1f} ± {error:.1f})")
        lines.append(f"| {n} | {blocks[n]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=40, help="training images per digit and task (half as many for validation)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines appended to and read back (default bench/results/yosinski.jsonl)")
    parser.add_argument("--png", type=Path, default=PLOT, help="the figure (default docs/yosinski-digits.png)")
    parser.add_argument("--plot", action="store_true", help="only redraw the plot and print the table from the jsonl")
    args = parser.parse_args()
    if not args.plot:
        torch.set_num_threads(1)  # tiny tensors: a second thread only adds synchronisation (and spins when the cores are shared)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        record = {"arch": ARCH, "image_size": args.image_size, "per_class": args.per_class, "epochs": args.epochs, "patience": args.patience, "lr": args.lr, "batch_size": args.batch_size,
                  "machine": f"{platform.machine()}, {os.cpu_count()} threads, torch {torch.__version__}", "commit": commit}  # fmt: skip
        for seed in (int(s) for s in args.seeds.split(",")):
            run_seed(seed, args, record)
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    print(table(rows))
    print(f"plot: {plot(rows, args.png)}")


if __name__ == "__main__":
    main()
