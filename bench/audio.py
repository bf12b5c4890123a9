"""Issue 9 figures: FSDD spoken digits with EfficientNet-Lite0 on log-mel spectrograms, transfer vs scratch.

Usage:
  python bench/audio.py official CONFIG [CONFIG ...]    official split (takes 0-4 are test); configs in CONFIGS
  python bench/audio.py speakers CONFIG [CONFIG ...] [--folds george,...]   train on 5 speakers, test on the 6th, every fold
  python bench/audio.py profile [--image-size N] [--limit N]   layer-wise profile of lite0 on FSDD spectrograms
  python bench/audio.py table     markdown tables (the latest row per config and fold) from bench/results/audio.jsonl
  python bench/audio.py develop [--shots 5] [--folds ...]   the develop-model approach: a source pretrained on
      5 speakers (the saved scratch-64-e8 fold run, i.e. `headstart pretrain` of lite0), transferred to
      the 6th speaker from a few clips per digit, against ImageNet transfer and scratch on the same clips

Rows are appended to bench/results/audio.jsonl with the exact settings, the machine and the commit.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _rows import append, context

from headstart.analysis.probes import profile
from headstart.api import fit
from headstart.backbones import create_backbone, match_data
from headstart.data import load_dataset

FSDD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fsdd"
OUT = Path(__file__).parent / "results" / "audio.jsonl"
SOURCE_CONFIG = "scratch-64-e8"  # its fold runs are kept: lite0 trained from random weights on 5 speakers = `pretrain`

CONFIGS: dict[str, dict[str, Any]] = {
    "fe-128": dict(strategy="feature-extraction", image_size=128),
    "fe-224": dict(strategy="feature-extraction", image_size=224),
    "ft-128": dict(strategy="fine-tune", image_size=128),
    "full-128": dict(strategy="full", image_size=128),
    "scratch-128": dict(strategy="scratch", image_size=128),
    "scratch-128-e30": dict(strategy="scratch", image_size=128, epochs=30),
    # 64 px: the spectrogram itself is 64 mel bands x 76 frames, so 64 px loses almost nothing and costs
    # a quarter of 128 px; the same number of epochs for transfer and scratch (an equal budget on 2 shared CPU cores)
    "fe-128-stage4": dict(strategy="feature-extraction", image_size=128, cut="stage4"),  # the profile's best block
    "fe-64": dict(strategy="feature-extraction", image_size=64),
    "ft-64-e6": dict(strategy="fine-tune", image_size=64, epochs=6),
    "scratch-64-e6": dict(strategy="scratch", image_size=64, epochs=6),
    "ft-64-e4": dict(strategy="fine-tune", image_size=64, epochs=4),
    "scratch-64-e4": dict(strategy="scratch", image_size=64, epochs=4),
    # converged budgets, run on a quiet machine: spectrograms are a far domain with ~255 clips per class,
    # the "large + different" case, so the whole network trains; 128 px leaves lite0 a 4x4 final map
    "full-128-e15": dict(strategy="full", image_size=128, epochs=15),
    "scratch-128-e15": dict(strategy="scratch", image_size=128, epochs=15),
    "full-64-e10": dict(strategy="full", image_size=64, epochs=10),
    "scratch-64-e10": dict(strategy="scratch", image_size=64, epochs=10),
    "full-64-e8": dict(strategy="full", image_size=64, epochs=8),  # speaker folds: 12 runs, so the cheaper size
    "scratch-64-e8": dict(strategy="scratch", image_size=64, epochs=8),
}


def _write(row: dict[str, Any]) -> None:
    append(OUT, row)


def _listing(directory: Path, test_speaker: str | None, *, only: str | None = None, shots: int = 0, seed: int = 0) -> Path:
    """FSDD's index as a path,label,split listing: the official split, or one speaker held out as test.

    With ``only``: that speaker's clips alone, ``shots`` per digit (drawn with ``seed``) to train on, the rest test.
    """
    with open(FSDD / "index.csv") as handle:
        rows = list(csv.DictReader(handle))
    if only is not None:
        rows = [r for r in rows if r["speaker"] == only]
        rng = np.random.default_rng(seed)
        train = {p for digit in sorted({r["label"] for r in rows}) for p in rng.choice(sorted(r["path"] for r in rows if r["label"] == digit), shots, replace=False)}
    path = directory / f"fsdd-{only or test_speaker or 'official'}{f'-{shots}shot-{seed}' if only else ''}.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for r in rows:
            if only is not None:
                split = "train" if r["path"] in train else "test"
            else:
                split = r["split"] if test_speaker is None else ("test" if r["speaker"] == test_speaker else "train")
            writer.writerow([str(FSDD / r["path"]), r["label"], split])
    return path


def _fit(listing: Path, name: str, task: str, fold: str | None, cache: Path, keep: Path | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """One fit of lite0 (or ``settings["backbone"]``) with config ``name``'s settings; the run is kept in ``keep`` if given."""
    settings = {"backbone": "efficientnet_lite0", **(CONFIGS[name] if settings is None else settings)}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = fit(listing, out=keep or Path(tmp) / "run", overwrite=keep is not None, quiet=True, cache_dir=cache, **settings)
    test = run.metrics["test"]
    prep = run.model.preprocessing.to_dict()
    return {
        "task": task, "config": name, "fold": fold, **settings,
        "spectrogram": {k: v for k, v in prep.items() if k not in ("kind", "image")},
        "test_accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "n_test": test["n"],
        "val_accuracy": run.metrics["val"]["accuracy"],
        "epochs_run": {p: sum(r["phase"] == p for r in run.history.epochs) for p in dict.fromkeys(r["phase"] for r in run.history.epochs)},
        "seconds": time.perf_counter() - started, **context(),
    }  # fmt: skip


def official(names: list[str], cache: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        listing = _listing(Path(tmp), None)
        for name in names:
            _write(_fit(listing, name, "official", None, cache))


def speakers(names: list[str], cache: Path, only: list[str] | None = None) -> None:
    with open(FSDD / "index.csv") as handle:
        folds = sorted({r["speaker"] for r in csv.DictReader(handle)})
    folds = [f for f in folds if only is None or f in only]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            accuracies = []
            for speaker in folds:
                keep = cache / "sources" / f"{speaker}-{name}" if name == SOURCE_CONFIG else None
                row = _fit(_listing(Path(tmp), speaker), name, "speakers", speaker, cache, keep=keep)
                accuracies.append(row["test_accuracy"])
                _write(row)
            _write({"task": "speakers-mean", "config": name, **CONFIGS[name], "folds": folds, "accuracies": accuracies,
                    "mean_accuracy": float(np.mean(accuracies)), "std_accuracy": float(np.std(accuracies)), **context()})  # fmt: skip


def develop(cache: Path, shots: int, seed: int, only: list[str] | None = None) -> None:
    """Per fold: the 6th speaker's few clips, fitted from the 5-speaker source, from ImageNet, and from scratch."""
    with open(FSDD / "index.csv") as handle:
        folds = sorted({r["speaker"] for r in csv.DictReader(handle)})
    folds = [f for f in folds if only is None or f in only]
    transfer = {"source-fe": ("feature-extraction", None), "source-ft": ("fine-tune", None), "source-full": ("full", None),
                "imagenet-fe": ("feature-extraction", 64), "imagenet-full": ("full", 64), "scratch": ("scratch", 64)}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for speaker in folds:
            source = cache / "sources" / f"{speaker}-{SOURCE_CONFIG}"
            if not (source / "config.json").is_file():
                raise SystemExit(f"{source} is missing: run `python bench/audio.py speakers {SOURCE_CONFIG}` first (its fold runs are the sources)")
            listing = _listing(Path(tmp), None, only=speaker, shots=shots, seed=seed)
            for name, (strategy, size) in transfer.items():
                backbone = str(source) if name.startswith("source") else "efficientnet_lite0"  # the source keeps its 64 px spectrograms
                settings = {"backbone": backbone, "strategy": strategy, **({"image_size": size} if size else {}), **({"epochs": 30} if strategy == "scratch" else {})}
                _write({**_fit(listing, name, "develop", speaker, cache, settings=settings), "shots": shots, "seed": seed, "source": source.name})


def tables() -> str:
    """Speaker folds and develop-model rows as markdown: one column per config, one row per held-out speaker."""
    import json

    rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    out = []
    for task in ("speakers", "develop"):
        latest = {(r["config"], r["fold"]): r for r in rows if r["task"] == task}  # a rerun replaces the earlier row
        if not latest:
            continue
        configs = list(dict.fromkeys(c for c, _ in latest))
        folds = sorted({f for _, f in latest})
        out += [f"### {task}", "", "| held-out speaker | " + " | ".join(configs) + " |", "|---|" + "---:|" * len(configs)]
        for fold in folds:
            out.append(f"| {fold} | " + " | ".join(f"{latest[c, fold]['test_accuracy']:.3f}" if (c, fold) in latest else "" for c in configs) + " |")
        means = [[latest[c, f]["test_accuracy"] for f in folds if (c, f) in latest] for c in configs]
        out.append("| **mean ± std** | " + " | ".join(f"**{np.mean(m):.3f} ± {np.std(m):.3f}** ({len(m)})" for m in means) + " |")
        seconds = [np.mean([latest[c, f]["seconds"] for f in folds if (c, f) in latest]) for c in configs]
        out += ["| seconds per fold | " + " | ".join(f"{s:.0f}" for s in seconds) + " |", ""]
    return "\n".join(out)


def layer_profile(image_size: int, limit: int | None, cache: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dataset = load_dataset(_listing(Path(tmp), None))
        backbone = match_data(create_backbone("efficientnet_lite0"), dataset, image_size=image_size)
        result = profile(dataset, backbone=backbone, limit=limit, cache_dir=cache, quiet=True)
    rows = [{"block": r.block, "dim": r.dim, "probe_accuracy": r.probe_accuracy, "probe_std": r.probe_std, "logme": r.logme} for r in result.rows]
    _write({"task": "profile", "backbone": "efficientnet_lite0", "image_size": image_size, "n": result.n_examples, "plateau": result.plateau,
            "best": result.best, "rows": rows, "seconds": result.seconds, **context()})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["official", "speakers", "profile", "develop", "table"])
    parser.add_argument("--shots", type=int, default=5, help="develop: clips per digit of the held-out speaker to train on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("configs", nargs="*", help=f"one or more of {sorted(CONFIGS)}")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--folds", default=None, help="comma-separated speakers to hold out (default: every one); the mean row is then over these only")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "headstart-bench-audio")
    args = parser.parse_args()
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {sorted(CONFIGS)}")
    if args.task == "official":
        official(args.configs, args.cache_dir)
    elif args.task == "speakers":
        speakers(args.configs, args.cache_dir, args.folds.split(",") if args.folds else None)
    elif args.task == "table":
        print(tables())
    elif args.task == "develop":
        develop(args.cache_dir, args.shots, args.seed, args.folds.split(",") if args.folds else None)
    else:
        layer_profile(args.image_size, args.limit, args.cache_dir)


if __name__ == "__main__":
    main()
