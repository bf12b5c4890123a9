"""Does the transferability score rank backbones like the accuracy they reach? Kendall tau per dataset.

Usage: python bench/rank.py [--limit N] [--datasets a,b,c]   (appends one JSON line per dataset to bench/results/rank.jsonl)
       python bench/rank.py --finetune [--limit N] [--datasets a,b,c] [--epochs E]
                                                             (fine-tunes every candidate on the same subset: rank_finetune.jsonl)
       python bench/rank.py --finetune --whole-split [--datasets a,b,c]
                                                             (fine-tunes on the whole train/val split at fit's defaults,
                                                              ranking still reads --limit examples: rank_finetune_whole.jsonl)
       python bench/rank.py --table                          (markdown tables from both files)
       python bench/rank.py --make-source DIR                (pretrain the headstart source candidate, then pass --source DIR/source)

Candidates (5): EfficientNet-Lite0/1/2 (ImageNet), Lite0 cut after stage4 (a shallower real feature
extractor, no source head), and Lite0 from random initialisation; with ``--source`` a sixth, a
headstart-pretrained run (``--make-source``: resnet10t trained from scratch on brain MRI). On a stratified subset of each
dataset's train+val examples the script computes every score of headstart.analysis.transferability from
the cached frozen features, and the accuracy of a linear probe (5-fold cross-validated logistic
regression on the same features). Kendall's tau (and scipy's weighted tau, as the LogME paper
reports) is taken between each score and the probe accuracy. With ``--finetune`` every candidate is
also fine-tuned (``fit --strategy full``, LP-FT; the random-init one is ``--strategy scratch``) on the
same subset, 15% of it held out for validation, and tested on the dataset's whole test split; tau
is then taken against that accuracy too, and the fine-tuning time is set against the ranking time.
``--whole-split`` is the cost a user faces: ``headstart rank --limit 200`` against ``headstart fit
--strategy full`` on all of the training data with its default epochs and early stopping.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _rows import append, context
from scipy.stats import kendalltau, weightedtau

from headstart.analysis.probes import labelled_examples, probe_accuracy
from headstart.analysis.ranking import source_probabilities
from headstart.analysis.transferability import SCORES, score
from headstart.api import fit
from headstart.backbones import Backbone, create_backbone
from headstart.caches.embeddings import EmbeddingCache
from headstart.data import load_elpv, stratified_split

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
RESULTS = Path(__file__).parent / "results" / "rank.jsonl"
FINETUNED = Path(__file__).parent / "results" / "rank_finetune.jsonl"
FINETUNED_WHOLE = Path(__file__).parent / "results" / "rank_finetune_whole.jsonl"  # --whole-split: fit's defaults on every training example
DATASETS = ("hymenoptera", "oxford_flowers17", "brain_tumor_mri", "elpv")


SOURCE_NAME = "resnet10t pretrained by headstart on brain_tumor_mri"


def candidates(source: Path | None = None) -> dict[str, Backbone]:
    torch.manual_seed(0)
    lite0 = create_backbone("efficientnet_lite0")
    models = {
        "efficientnet_lite0": lite0,
        "efficientnet_lite1": create_backbone("efficientnet_lite1"),
        "efficientnet_lite2": create_backbone("efficientnet_lite2"),
        "efficientnet_lite0@stage4": lite0.cut("stage4"),
        "efficientnet_lite0 (random init)": create_backbone("efficientnet_lite0", pretrained=False),
    }
    if source is not None:  # a run directory is a backbone (with its source head, for LEEP and NCE)
        models[SOURCE_NAME] = create_backbone(str(source))
    return models


SOURCE_DATA, SOURCE_PER_CLASS = "brain_tumor_mri", 300


def make_source(out: Path) -> Path:
    """A headstart-pretrained source candidate: ``headstart pretrain`` of resnet10t (random init) on
    300 training images per class of brain_tumor_mri (a listing of them in ``out/listing.csv``),
    128 px, 10 epochs. A far domain for every target here: it should rank below ImageNet."""
    import csv

    from headstart.pretraining import pretrain

    with (SHARED / SOURCE_DATA / "index.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "train"]
    rng = np.random.default_rng(0)
    chosen = []
    for label in sorted({r["label"] for r in rows}):
        members = [r for r in rows if r["label"] == label]
        chosen += [members[i] for i in sorted(rng.choice(len(members), SOURCE_PER_CLASS, replace=False))]
    out.mkdir(parents=True, exist_ok=True)
    listing = out / "listing.csv"
    with listing.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows((str(SHARED / SOURCE_DATA / r["path"]), r["label"]) for r in chosen)
    run = pretrain(listing, arch="resnet10t", out=out / "source", image_size=128, epochs=10, quiet=True)
    print(f"source: {out / 'source'}: test accuracy {run.metrics['test']['accuracy']:.3f} on {SOURCE_DATA}", flush=True)
    return out / "source"


def train_step_seconds(backbone: Backbone, batch: int = 16, steps: int = 2) -> float:
    """Seconds per training image (forward + backward + SGD step, whole body trainable), measured on a copy."""
    backbone = copy.deepcopy(backbone)  # the step changes weights and BatchNorm statistics
    size = backbone.preprocessing.input_size
    head = torch.nn.Linear(backbone.feature_dim, 4)
    params = [p for p in backbone.parameters()] + list(head.parameters())
    optimiser = torch.optim.SGD(params, lr=1e-4)
    backbone.train()
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 4, (batch,))
    torch.nn.functional.cross_entropy(head(backbone(x)), y).backward()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(head(backbone(x)), y).backward()
        optimiser.step()
    seconds = (time.perf_counter() - start) / (steps * batch)
    return seconds


def rank_one(model: Backbone, items: list, labels: np.ndarray, cache: EmbeddingCache) -> dict:
    """One forward pass over ``items`` (cached), every score, and the linear-probe accuracy, each timed."""
    started = time.perf_counter()
    features, _ = cache.embed(model, items, batch_size=32)
    embed_seconds = time.perf_counter() - started
    probabilities = source_probabilities(model, features)
    scores, score_seconds = {}, {}
    for score_name, (_, reads) in SCORES.items():
        t = time.perf_counter()
        scores[score_name] = math.nan if reads == "source" and probabilities is None else score(score_name, labels, features=features, source_probabilities=probabilities)
        score_seconds[score_name] = time.perf_counter() - t
    accuracy, std = probe_accuracy(features, labels)
    return {"scores": scores, "probe_accuracy": accuracy, "probe_std": std, "embed_seconds": embed_seconds, "score_seconds": score_seconds}


def finetune(
    dataset_name: str, limit: int, epochs: int | None, cache_dir: str, source: Path | None = None, only: list[str] | None = None, *, whole: bool = False
) -> dict:
    """Rank (from an empty cache) and then fine-tune every candidate, in one process.

    Ranking always reads the ``limit``-example subset; fine-tuning trains on the same subset, or with
    ``whole`` on the dataset's whole train/val split (what a user fine-tunes on). ``epochs=None``
    keeps fit's default budget. Fine-tuned: test accuracy on the full test split, and seconds;
    ranked: :func:`rank_one`'s row.
    """
    data, items, labels = labelled_examples(load_elpv(task="binary") if dataset_name == "elpv" else SHARED / dataset_name, limit=limit, seed=0)
    train, val = stratified_split(labels, 0.15, 0)
    subset = replace(data, splits={"train": ([items[i] for i in train], labels[train].tolist()), "val": ([items[i] for i in val], labels[val].tolist()), "test": data.splits["test"]})
    subset = data if whole else subset
    budget = {} if epochs is None else {"epochs": epochs}
    runs = {"efficientnet_lite0": {}, "efficientnet_lite1": {"backbone": "efficientnet_lite1"}, "efficientnet_lite2": {"backbone": "efficientnet_lite2"},
            "efficientnet_lite0@stage4": {"cut": "stage4"}, "efficientnet_lite0 (random init)": {"strategy": "scratch"}}  # fmt: skip
    if source is not None:
        runs[SOURCE_NAME] = {"backbone": str(source)}
    models = candidates(source)
    rows = {}
    for name, settings in runs.items():
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory() as empty:
            ranked = rank_one(models[name], items, labels, EmbeddingCache(empty))
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            run = fit(subset, **{"backbone": "efficientnet_lite0", "strategy": "full", **settings}, **budget, out=Path(tmp) / "run", quiet=True, cache_dir=cache_dir, seed=0)
        rows[name] = {**ranked, "test_accuracy": run.metrics["test"]["accuracy"], "n_test": run.metrics["test"]["n"], "seconds": time.perf_counter() - started,
                      "epochs_run": len([e for e in run.history.epochs if e["phase"] == "full"])}  # fmt: skip
        print(dataset_name, name, json.dumps(rows[name]), flush=True)
    n_train = len(subset.items("train")) + len(subset.items("val"))
    return {"dataset": dataset_name, "n_examples": len(items), "n_finetuned": n_train, "epochs": epochs if epochs is not None else "default", "candidates": rows, **context()}


def tables(records: list[dict], finetuned: list[dict] | None = None) -> str:
    """Markdown: tau of each score against probe accuracy per dataset (+ mean), then timing (the latest run per dataset)."""
    records = list({r["dataset"]: r for r in records}.values())
    names = list(SCORES)
    lines = ["| dataset | n | " + " | ".join(f"{s} tau (weighted)" for s in names) + " |", "|---|---:|" + "---:|" * len(names)]
    for r in records:
        cells = [f"{r['tau_vs_probe'][s]['kendall']:.2f} ({r['tau_vs_probe'][s]['weighted']:.2f})" if s in r["tau_vs_probe"] else "-" for s in names]
        lines.append(f"| {r['dataset']} | {r['n_examples']} | " + " | ".join(cells) + " |")
    means = []
    for s in names:
        values = [(r["tau_vs_probe"][s]["kendall"], r["tau_vs_probe"][s]["weighted"]) for r in records if s in r["tau_vs_probe"]]
        means.append(f"{np.mean([v[0] for v in values]):.2f} ({np.mean([v[1] for v in values]):.2f})" if values else "-")
    lines.append("| **mean** | | " + " | ".join(means) + " |")
    lines += ["", "| dataset | candidate | probe accuracy | LogME | LEEP | embed s | LogME s | est. fine-tune epoch s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        for name, c in r["candidates"].items():
            lines.append(
                f"| {r['dataset']} | {name} | {c['probe_accuracy']:.3f} ± {c['probe_std']:.3f} | {c['scores']['logme']:.3f} | {c['scores']['leep']:.3f} | "
                f"{c['embed_seconds']:.1f} | {c['score_seconds']['logme']:.2f} | {c['finetune_epoch_seconds_estimate']:.0f} |"
            )
    rank_seconds = sum(c["embed_seconds"] + c["score_seconds"]["logme"] for r in records for c in r["candidates"].values())
    epoch_seconds = sum(c["finetune_epoch_seconds_estimate"] for r in records for c in r["candidates"].values())
    lines += ["", f"Ranking all candidates on all datasets: {rank_seconds:.0f} s; one fine-tuning epoch of every candidate (estimate): {epoch_seconds:.0f} s "
              f"(ratio {epoch_seconds / rank_seconds:.1f} per epoch)."]
    if finetuned:
        lines += ["", finetune_table(finetuned)]
    return "\n".join(lines)


def merged(rows: list[dict], *keys: str) -> list[dict]:
    """One row per ``keys`` (e.g. dataset): candidates of later rows (``--candidates`` runs) join or replace earlier ones."""
    out: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(row[k] for k in keys)
        out[key] = {**row, "candidates": {**out.get(key, {}).get("candidates", {}), **row["candidates"]}}
    return list(out.values())


def finetune_table(finetuned: list[dict]) -> str:
    """Kendall tau of each score against fine-tuned accuracy, per dataset and mean; then the costs side by side."""
    finetuned = merged(finetuned, "dataset", "n_examples", "epochs")
    names = list(SCORES)
    lines = ["| dataset | " + " | ".join(f"{s} tau (weighted)" for s in names) + " | probe-accuracy tau |", "|---|" + "---:|" * (len(names) + 1)]
    taus: dict[str, list[tuple[float, float]]] = {s: [] for s in [*names, "probe"]}
    ranked, tuned = 0.0, 0.0
    for f in finetuned:  # each row ranked and fine-tuned its candidates in the same run
        common = list(f["candidates"])
        accuracy = np.array([f["candidates"][c]["test_accuracy"] for c in common])
        cells = []
        for s in [*names, "probe"]:
            values = np.array([f["candidates"][c]["probe_accuracy"] if s == "probe" else f["candidates"][c]["scores"][s] for c in common])
            ok = ~np.isnan(values)
            if ok.sum() >= 3:
                pair = (float(kendalltau(values[ok], accuracy[ok]).statistic), float(weightedtau(values[ok], accuracy[ok]).statistic))
                taus[s].append(pair)
                cells.append(f"{pair[0]:.2f} ({pair[1]:.2f})")
            else:
                cells.append("-")
        lines.append(f"| {f['dataset']} | " + " | ".join(cells) + " |")
        ranked += sum(f["candidates"][c]["embed_seconds"] + f["candidates"][c]["score_seconds"]["logme"] for c in common)
        tuned += sum(f["candidates"][c]["seconds"] for c in common)
    lines.append("| **mean** | " + " | ".join(f"{np.mean([t[0] for t in taus[s]]):.2f} ({np.mean([t[1] for t in taus[s]]):.2f})" if taus[s] else "-" for s in [*names, "probe"]) + " |")
    lines += ["", "| dataset | candidate | fine-tuned test accuracy | epochs | fine-tune s | LogME |", "|---|---|---:|---:|---:|---:|"]
    for f in finetuned:
        for c, row in f["candidates"].items():
            lines.append(f"| {f['dataset']} | {c} | {row['test_accuracy']:.3f} (n={row['n_test']}) | {row['epochs_run']} | {row['seconds']:.0f} | {row['scores']['logme']:.3f} |")
    lines += ["", f"In the same runs, ranking (one forward pass from an empty cache + LogME) all candidates took {ranked:.0f} s; fine-tuning them {tuned:.0f} s ({tuned / ranked:.1f}x)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--cache-dir", default="/tmp/headstart-bench-cache")
    parser.add_argument("--table", action="store_true", help="print the tables of the recorded results and exit")
    parser.add_argument("--finetune", action="store_true", help="fine-tune every candidate on the same subset (the reference the scores should predict)")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (default 6; with --whole-split, fit's own default)")
    parser.add_argument("--whole-split", action="store_true", help="with --finetune: fine-tune on the whole train/val split at fit's defaults (ranking still reads --limit examples)")
    parser.add_argument("--source", type=Path, help="a headstart-pretrained source (run directory) as one more candidate; see --make-source")
    parser.add_argument("--make-source", type=Path, metavar="DIR", help="pretrain the source candidate into DIR/source and exit")
    parser.add_argument("--candidates", help="with --finetune: only these candidates (comma-separated); the table merges them into the dataset's row")
    args = parser.parse_args()
    if args.make_source:
        make_source(args.make_source)
        return
    if args.table:
        read = lambda path: [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []  # noqa: E731
        print(tables(read(RESULTS), read(FINETUNED)))
        if FINETUNED_WHOLE.is_file():
            print("\n### Fine-tuned on the whole training split at fit's defaults (--whole-split)\n")
            print(finetune_table(read(FINETUNED_WHOLE)))
        return
    if args.finetune:
        for dataset_name in args.datasets.split(","):
            only = args.candidates.split(",") if args.candidates else None
            epochs = args.epochs if args.epochs is not None or args.whole_split else 6
            record = finetune(dataset_name, args.limit, epochs, args.cache_dir, args.source, only, whole=args.whole_split)
            append(FINETUNED_WHOLE if args.whole_split else FINETUNED, record)
        return
    models = candidates(args.source)
    cache = EmbeddingCache(args.cache_dir)
    step_cost = {name: train_step_seconds(model) for name, model in models.items()}
    out = RESULTS
    for dataset_name in args.datasets.split(","):
        data = load_elpv(task="binary") if dataset_name == "elpv" else SHARED / dataset_name
        _, items, labels = labelled_examples(data, limit=args.limit, seed=0)
        rows = {}
        for name, model in models.items():
            rows[name] = {**rank_one(model, items, labels, cache), "finetune_epoch_seconds_estimate": step_cost[name] * len(items)}
            print(dataset_name, name, json.dumps(rows[name]), flush=True)
        accuracy = np.array([r["probe_accuracy"] for r in rows.values()])
        taus = {}
        for score_name in SCORES:
            values = np.array([r["scores"][score_name] for r in rows.values()])
            ok = ~np.isnan(values)
            if ok.sum() >= 3:
                taus[score_name] = {"kendall": float(kendalltau(values[ok], accuracy[ok]).statistic), "weighted": float(weightedtau(values[ok], accuracy[ok]).statistic), "n": int(ok.sum())}
        record = {"dataset": dataset_name, "n_examples": len(items), "candidates": rows, "tau_vs_probe": taus, **context()}
        print(json.dumps({"dataset": dataset_name, "tau_vs_probe": taus}), flush=True)
        with out.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
