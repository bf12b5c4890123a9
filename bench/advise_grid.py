"""Issue 3: validate the advisor against a grid of freeze depths, per dataset and data fraction.

Usage:
  python bench/advise_grid.py DATA [DATA ...] [--fractions 1,0.25] [--cap 400] [--epochs 6] [--seed 0]
  python bench/advise_grid.py --table        the grid, the best cell and the advisor's pick per (data, fraction) for --seed,
                                             then every config run with several seeds

DATA is ``elpv`` (binary), a folder under ../shared/datasets (images, audio) or a text set there
(its data.csv), or one of the sets the advisor's thresholds were not set on: ``digits``
(scikit-learn), ``chatterbot`` (chatterbot-corpus topics), ``elpv-4class``. For every (data, fraction) it runs, with the same data, seed and epoch budget:

  feature-extraction | fine-tune last 1 block | last 2 | last half | full | scratch | auto

``auto`` is what ``fit --strategy auto`` does: the advisor measures the subset it is given (size,
layer-wise profile) and picks; the epoch budget and image size are the grid's, everything else
(strategy, freeze depth, rates, BatchNorm mode) is its choice. Its time includes the measurement.
"epochs" is the budget of body training; feature extraction keeps its default head schedule on
cached features (milliseconds per epoch), and the fine-tune configs' head warm-up too.

Budget (2-core CPU): the training split is capped at ``cap`` examples (stratified, fixed), "100%"
means that capped set and 0.25 a quarter of it (per class, seed-dependent); validation is capped at
200 and test at 500 examples (stratified, fixed), the same for every cell of a dataset. Each cell
starts from an empty embedding cache. Images and spectrograms at ``--image-size``. Rows are appended
to bench/results/advise_grid.jsonl.
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

from headstart.analysis.advisor import advise
from headstart.api import fit
from headstart.backbones import create_backbone
from headstart.data import Dataset, load_dataset, load_elpv, stratified_split

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
OUT = Path(__file__).parent / "results" / "advise_grid.jsonl"
CONFIGS = ("feature-extraction", "last-1", "last-2", "half", "full", "scratch", "auto")
EVAL_CAPS = {"val": 200, "test": 500}


def subsample(data: Dataset, split: str, size: int, seed: int) -> Dataset:
    """``data`` with ``split`` cut to about ``size`` examples, each class keeping its share."""
    items, labels = data.splits[split]
    if len(items) <= size:
        return data
    _, kept = stratified_split(labels, size / len(items), seed)
    splits = {**data.splits, split: ([items[i] for i in kept], [labels[i] for i in kept])}
    return replace(data, splits=splits, notes=[*data.notes, f"{split} subsampled to {len(kept)} (stratified, seed {seed})"])


def digits() -> Dataset:
    """scikit-learn's 1,797 real 8x8 scans of handwritten digits, 60/15/25 stratified (seed 0): far from ImageNet."""
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = [Image.fromarray((image * 255 / 16).astype(np.uint8)) for image in bunch.images]
    rest, test = stratified_split(bunch.target, 0.25, 0)
    train, val = stratified_split(bunch.target[rest], 0.2, 1)
    parts = {"train": rest[train], "val": rest[val], "test": test}
    splits = {split: ([images[i] for i in part], bunch.target[part].tolist()) for split, part in parts.items()}
    return Dataset("image", [str(d) for d in range(10)], splits, source="sklearn digits")


def chatterbot_topics(min_texts: int = 45) -> Dataset:
    """chatterbot-corpus's English utterances labelled by topic file, topics with >= ``min_texts`` distinct texts (weak labels)."""
    import chatterbot_corpus
    import yaml

    root = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    texts, labels, classes = [], [], []
    for path in sorted(root.glob("*.yml")):
        conversations = yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []
        topic = sorted({str(t).strip() for conversation in conversations for t in conversation if str(t).strip()})
        if len(topic) >= min_texts:
            texts += topic
            labels += [len(classes)] * len(topic)
            classes.append(path.stem)
    y = np.asarray(labels)
    rest, test = stratified_split(y, 0.25, 0)
    train, val = stratified_split(y[rest], 0.2, 1)
    parts = {"train": rest[train], "val": rest[val], "test": test}
    return Dataset("text", classes, {s: ([texts[i] for i in part], y[part].tolist()) for s, part in parts.items()}, source="chatterbot-corpus topics")


HELD_OUT = {"digits": digits, "chatterbot": chatterbot_topics, "elpv-4class": lambda: load_elpv(task="4class", seed=0)}


def load(name: str, cap: int, fraction: float, seed: int) -> Dataset:
    """The capped benchmark set, then ``fraction`` of its training split (seed-dependent)."""
    if name == "elpv":
        data = load_elpv(task="binary", seed=0)
    elif name in HELD_OUT:
        data = HELD_OUT[name]()
    else:
        folder = SHARED / name
        data = load_dataset(folder / "data.csv" if (folder / "data.csv").exists() else folder, seed=0)
    data = subsample(data, "train", cap, 0)
    for split, size in EVAL_CAPS.items():
        data = subsample(data, split, size, 0) if split in data.splits else data
    return data if fraction >= 1 else subsample(data, "train", round(fraction * len(data.items("train"))), seed)


def settings_for(config: str, n_blocks: int) -> dict[str, Any]:
    if config in ("feature-extraction", "full", "scratch", "auto"):
        return {"strategy": config}
    trainable = {"last-1": 1, "last-2": 2, "half": n_blocks // 2}[config]
    return {"strategy": "fine-tune", "trainable_blocks": trainable}


def run(name: str, config: str, fraction: float, args: argparse.Namespace) -> dict[str, Any]:
    data = load(name, args.cap, fraction, args.seed)
    backbone = "minilm" if data.modality == "text" else "efficientnet_lite0"
    started = time.perf_counter()
    advice = None
    with tempfile.TemporaryDirectory() as tmp:  # an empty embedding cache per cell: every cell pays its own way
        cache = Path(tmp) / "cache"
        if config == "auto":  # what `fit --strategy auto` does, with the grid's epoch budget for the body
            advice = advise(data, backbone=backbone, seed=args.seed, cache_dir=cache)
            settings = {"strategy": advice.strategy, **advice.fit_kwargs}
        else:
            settings = settings_for(config, len(create_backbone(backbone).blocks))
        if settings["strategy"] != "feature-extraction":  # its epochs are the head's, on cached features: left at the default
            settings["epochs"] = args.epochs
        settings["seed"] = args.seed
        if data.modality != "text":
            settings["image_size"] = args.image_size
        result = fit(data, backbone=backbone, out=Path(tmp) / "run", quiet=True, report=False, cache_dir=cache, **settings)
    seconds = time.perf_counter() - started
    test = result.metrics["test"]
    counts = np.bincount(np.concatenate([data.labels(s) for s in ("train", "val")]), minlength=len(data.classes))
    return {
        "data": name, "config": config, "fraction": fraction, "cap": args.cap, "seed": args.seed, "backbone": backbone,
        "n_train": len(data.items("train")), "median_per_class": float(np.median(counts)), "settings": settings,
        "advice": advice.to_dict() if advice is not None else None,
        "test_accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "n_test": test["n"],
        "epochs_run": {p: sum(r["phase"] == p for r in result.history.epochs) for p in dict.fromkeys(r["phase"] for r in result.history.epochs)},
        "seconds": round(seconds, 1), **context(),
    }  # fmt: skip


DESIGN = ("brain_tumor_mri", "elpv", "emotion", "fsdd", "hymenoptera", "oxford_flowers17", "sms_spam", "subj", "trec")  # the advisor's thresholds were set on these


def describe(row: dict[str, Any]) -> str:
    advice = row["advice"] or {}
    return f"{advice.get('case', '?')}: {advice.get('strategy', '?')} {advice.get('fit_kwargs', {})}"


def verdict(best: float, pick: dict[str, Any], se: float) -> str:
    gap = 100 * (best - pick["test_accuracy"])
    return f"{'within' if gap <= 1 else 'misses by'} {gap:.1f} pt (SE {se:.1f})"


def table(rows: list[dict[str, Any]], seed: int = 0) -> str:
    """One line per (data, fraction): every config's accuracy (seconds), the best, the pick and the verdict.

    The pick is the latest ``auto`` row of the cell; an earlier pick made by other advisor code (another
    commit, other advice) is shown beside it. Datasets outside ``DESIGN`` are marked "held out".
    Only rows of ``seed`` count (other seeds: :func:`seed_table`).
    """
    cells: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}
    picks: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in (r for r in rows if r["seed"] == seed):
        cells.setdefault((r["data"], r["fraction"]), {})[r["config"]] = r  # the latest row of a cell wins
        if r["config"] == "auto":
            picks.setdefault((r["data"], r["fraction"]), []).append(r)
    grid = CONFIGS[:-1]
    lines = [
        "| data | fraction (train n, per class) | " + " | ".join(grid) + " | best | advisor's pick | pick | verdict | earlier pick |",
        "|---|---|" + "---:|" * len(grid) + "---|---|---:|---|---|",
    ]
    tally: dict[str, list[int]] = {}
    for (data, fraction), by_config in sorted(cells.items(), key=lambda kv: (kv[0][0] not in DESIGN, kv[0][0], -kv[0][1])):
        done = {c: r for c, r in by_config.items() if c in grid}
        if not done:
            continue
        any_row = next(iter(by_config.values()))
        best = max(done, key=lambda c: (done[c]["test_accuracy"], -done[c]["seconds"]))
        out = [f"{100 * done[c]['test_accuracy']:.1f} ({done[c]['seconds']:.0f} s)" if c in done else "" for c in grid]
        acc, n = done[best]["test_accuracy"], done[best]["n_test"]
        se = 100 * (acc * (1 - acc) / n) ** 0.5  # binomial standard error of one cell's test accuracy
        complete = len(done) == len(grid)
        note = "" if complete else f" ({len(done)}/{len(grid)} configs)"

        pick = by_config.get("auto")
        described = describe(pick) if pick else ""
        earlier = [p for p in picks.get((data, fraction), [])[:-1] if p["commit"] != pick["commit"] and describe(p) != described] if pick else []
        earlier_cell = f"{describe(earlier[-1])}: {100 * earlier[-1]['test_accuracy']:.1f}, {verdict(acc, earlier[-1], se)}{note}" if earlier else ""
        if pick and complete:
            group = "design" if data in DESIGN else "held out"
            tally.setdefault(group, [0, 0])
            tally[group][0] += 100 * (acc - pick["test_accuracy"]) <= 1
            tally[group][1] += 1
        size = f"{fraction:.0%} ({any_row['n_train']}, {any_row['median_per_class']:.0f})"
        pick_cell = f"{100 * pick['test_accuracy']:.1f} ({pick['seconds']:.0f} s)" if pick else ""
        name = data if data in DESIGN else f"{data} (held out)"
        lines.append(f"| {name} | {size} | " + " | ".join(out) + f" | {best} | {described} | {pick_cell} | {verdict(acc, pick, se) + note if pick else ''} | {earlier_cell} |")
    lines.append("")
    lines += [f"Latest picks within 1 point of the grid's best: {k} of {n} {group} cells." for group, (k, n) in tally.items()]
    return "\n".join(lines)


def seed_table(rows: list[dict[str, Any]]) -> str:
    """Configs run with more than one seed: test accuracy per seed and the mean, per (data, fraction).

    Seeds change the training order and, below 100%, which quarter of the training split is kept; the
    spread is what one cell's difference must beat. An ``auto`` row counts when it made the same pick
    as the latest ``auto`` row of its (data, fraction, seed), whichever commit ran it.
    """
    latest = {(r["data"], r["fraction"], r["seed"]): describe(r) for r in rows if r["config"] == "auto"}
    runs: dict[tuple[str, float, str], dict[int, float]] = {}
    for r in rows:
        if r["config"] != "auto" or describe(r) == latest[(r["data"], r["fraction"], r["seed"])]:
            runs.setdefault((r["data"], r["fraction"], r["config"]), {})[r["seed"]] = 100 * r["test_accuracy"]
    lines = ["| data | fraction | config | accuracy per seed | mean |", "|---|---|---|---|---:|"]
    for (data, fraction, config), by_seed in sorted(runs.items()):
        if len(by_seed) > 1:
            per_seed = ", ".join(f"{by_seed[s]:.1f} (seed {s})" for s in sorted(by_seed))
            lines.append(f"| {data} | {fraction:.0%} | {config} | {per_seed} | {np.mean(list(by_seed.values())):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="*")
    parser.add_argument("--fractions", default="1,0.25")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--cap", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.table:
        rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
        print(table(rows, args.seed) + "\n\n" + seed_table(rows))
        return
    if not args.data:
        parser.error("name datasets (elpv or names under ../shared/datasets), or pass --table")
    configs = args.configs.split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {list(CONFIGS)}")
    for name in args.data:
        for fraction in (float(f) for f in args.fractions.split(",")):
            for config in configs:
                append(args.out, run(name, config, fraction, args))


if __name__ == "__main__":
    main()
