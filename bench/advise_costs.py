"""Issue 26: the cost-aware advisor against the saved grid, the bag-of-words baseline, and ``--budget``.

Usage:
  python bench/advise_costs.py picks DATA [DATA ...] [--fractions 1,0.25]   advise each grid cell again (same capped data,
                                                                            seed 0); train the pick only when the saved
                                                                            grid (bench/results/advise_grid.jsonl) has no
                                                                            row for that exact configuration
  python bench/advise_costs.py bow                                          TF-IDF + logistic regression on every shared text set,
                                                                            the grid's capped splits
  python bench/advise_costs.py budget DATA --fraction F --budgets 120,300   fit --strategy auto --budget B, wall time and test accuracy
  python bench/advise_costs.py --table                                      the tables of BENCHMARKS.md, "Issue 26"

The pick's time is the advisor's own time measured here plus the saved grid time of the configuration
it picked (both on the shared 2-core machine, other sessions' load for the grid rows): compare ratios
loosely. Rows are appended to bench/results/advise_costs.jsonl.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _rows import append, context
from advise_grid import OUT as GRID
from advise_grid import load, settings_for

from headstart.analysis.advisor import advise
from headstart.analysis.baseline import bag_of_words
from headstart.api import fit
from headstart.backbones import create_backbone

OUT = Path(__file__).parent / "results" / "advise_costs.jsonl"
TEXT = ("sms_spam", "sst2", "subj", "trec", "emotion")
GRID_CONFIGS = ("feature-extraction", "last-1", "last-2", "half", "full")


def grid_rows(seed: int = 0) -> dict[tuple[str, float], dict[str, dict[str, Any]]]:
    cells: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}
    for line in GRID.read_text().splitlines():
        r = json.loads(line)
        if r["seed"] == seed:
            cells.setdefault((r["data"], r["fraction"]), {})[r["config"]] = r
    return cells


def matching_row(cell: dict[str, dict[str, Any]], strategy: str, kwargs: dict[str, Any], n_blocks: int) -> str | None:
    """The saved grid configuration that trained exactly this strategy and these settings (epochs aside)."""
    plain = {k: v for k, v in kwargs.items() if k not in ("epochs", "lr", "body_lr")}
    for config in GRID_CONFIGS:
        settings = settings_for(config, n_blocks)
        if settings["strategy"] == strategy and {k: v for k, v in settings.items() if k != "strategy"} == plain:
            return config
    old = cell.get("auto")
    if old and old["advice"]["strategy"] == strategy and old["advice"]["fit_kwargs"] == kwargs:
        return "auto"
    return None


def picks(args: argparse.Namespace) -> None:
    cells = grid_rows()
    for name in args.data:
        for fraction in (float(f) for f in args.fractions.split(",")):
            data = load(name, 400, fraction, 0)
            backbone = "minilm" if data.modality == "text" else "efficientnet_lite0"
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                advice = advise(data, backbone=backbone, seed=0, cache_dir=Path(tmp) / "cache")
                advise_seconds = time.perf_counter() - started
                cell = cells.get((name, fraction), {})
                config = matching_row(cell, advice.strategy, advice.fit_kwargs, len(create_backbone(backbone).blocks))
                trained = None
                if config is None:  # not in the saved grid: train it with the grid's budget
                    settings = {"strategy": advice.strategy, **advice.fit_kwargs, "seed": 0}
                    if advice.strategy != "feature-extraction":
                        settings["epochs"] = 6
                    if data.modality != "text":
                        settings["image_size"] = 128
                    began = time.perf_counter()
                    run = fit(data, backbone=backbone, out=Path(tmp) / "run", quiet=True, report=False, cache_dir=Path(tmp) / "cache", **settings)
                    trained = {"test_accuracy": run.metrics["test"]["accuracy"], "seconds": round(time.perf_counter() - began, 1)}
            append(OUT, {"kind": "pick", "data": name, "fraction": fraction, "advice": advice.to_dict(), "advise_seconds": round(advise_seconds, 1),
                         "grid_config": config, "trained": trained, **context()})  # fmt: skip


def bow(_args: argparse.Namespace) -> None:
    for name in TEXT:
        data = load(name, 400, 1.0, 0)
        result = bag_of_words(data)
        append(OUT, {"kind": "bow", "data": name, "fraction": 1.0, "result": result, **context()})


def encoders(args: argparse.Namespace) -> None:
    """Feature extraction with each named text encoder (``--encoders``) on the grid's capped text sets."""
    for name in args.data or TEXT:
        data = load(name, 400, 1.0, 0)
        for encoder in args.encoders.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                run = fit(data, backbone=encoder, strategy="feature-extraction", out=Path(tmp) / "run", quiet=True, report=False, cache_dir=Path(tmp) / "cache")
                wall = time.perf_counter() - started
            append(OUT, {"kind": "encoder", "data": name, "encoder": encoder, "test_accuracy": run.metrics["test"]["accuracy"], "seconds": round(wall, 1),
                         "bag_of_words": run.metrics.get("bag_of_words"), **context()})  # fmt: skip


def budget(args: argparse.Namespace) -> None:
    for name in args.data:
        data = load(name, 400, args.fraction, 0)
        backbone = "minilm" if data.modality == "text" else "efficientnet_lite0"
        for seconds in args.budgets.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                extra = {} if data.modality == "text" else {"image_size": 128}
                started = time.perf_counter()
                run = fit(data, backbone=backbone, strategy="auto", budget=float(seconds), out=Path(tmp) / "run", quiet=True, report=False, cache_dir=Path(tmp) / "cache", **extra)
                wall = time.perf_counter() - started
            append(OUT, {"kind": "budget", "data": name, "fraction": args.fraction, "budget": float(seconds), "wall": round(wall, 1), "test_accuracy": run.metrics["test"]["accuracy"],
                         "trials": run.advice["trials"], "strategy": run.advice["strategy"], **context()})  # fmt: skip


def tables() -> str:
    rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    cells = grid_rows()
    out = ["| data | fraction | pick (close call?) | expected: candidate acc, s | pick acc | best config acc | pick s (advise + train) | cheapest within 1 pt | time ratio (training only) | earlier pick: acc (s) |",
           "|---|---|---|---|---:|---:|---:|---|---:|---:|"]  # fmt: skip
    within, ratios, train_ratios, total_pick, total_cheap, total_old, old_within = 0, [], [], 0.0, 0.0, 0.0, 0
    latest = {(r["data"], r["fraction"]): r for r in rows if r["kind"] == "pick"}
    for (name, fraction), r in sorted(latest.items()):
        cell = cells.get((name, fraction), {})
        grid = {c: cell[c] for c in (*GRID_CONFIGS, "auto") if c in cell}
        best = max(v["test_accuracy"] for v in grid.values())
        if r["grid_config"]:
            acc, train_s = grid[r["grid_config"]]["test_accuracy"], grid[r["grid_config"]]["seconds"]
        else:
            acc, train_s = r["trained"]["test_accuracy"], r["trained"]["seconds"]
        best = max(best, acc)
        good = {c: v for c, v in grid.items() if c != "auto" and v["test_accuracy"] >= best - 0.01}
        cheapest = min(good.items(), key=lambda kv: kv[1]["seconds"]) if good else None
        same_as_before = r["grid_config"] == "auto"  # the earlier advisor trained this very pick: its row's time (advice + training) is the pick's
        pick_s = train_s if same_as_before else r["advise_seconds"] + train_s
        ratio = pick_s / cheapest[1]["seconds"] if cheapest else float("nan")
        within += 100 * (best - acc) <= 1
        old = cell.get("auto")
        if old:
            total_old += old["seconds"]
            old_within += 100 * (best - old["test_accuracy"]) <= 1
        if cheapest and not same_as_before:
            train_ratios.append(train_s / cheapest[1]["seconds"])
        if cheapest:
            ratios.append(ratio)
            total_pick += pick_s
            total_cheap += cheapest[1]["seconds"]
        cheap_text = f"{cheapest[0]} ({cheapest[1]['seconds']:.0f} s)" if cheapest else "–"
        advice = r["advice"]
        expected = "; ".join(f"{c['name']} {c['accuracy']:.3f}, {c['seconds']:.0f}" for c in advice["candidates"])
        m = advice["measurements"]  # the close call as the current rule reads it: strength within its spread of 0.85, or the margin within the probe's standard error
        close = abs(m["strength"] - 0.85) <= m["strength_spread"] or (m["margin"] is not None and abs(m["margin"]) <= m["best_std"] / 5**0.5)
        when = f"{pick_s:.0f} (as before)" if same_as_before else f"{r['advise_seconds']:.0f} + {train_s:.0f}"
        training = f" ({train_s / cheapest[1]['seconds']:.1f}×)" if cheapest and not same_as_before else ""
        earlier = f"{100 * old['test_accuracy']:.1f} ({old['seconds']:.0f} s)" if old else "–"
        out.append(f"| {name} | {fraction:.0%} | {m['pick']}{' (close call)' if close else ''} | {expected} | {100 * acc:.1f} | {100 * best:.1f} | "
                   f"{when} | {cheap_text} | {ratio:.1f}×{training} | {earlier} |")  # fmt: skip
    out.append("")
    out.append(f"Picks within 1 point of the best: {within} of {len(latest)}; time ratio ≤ 1.5×: {sum(x <= 1.5 for x in ratios)} of {len(ratios)} "
               f"(median {np.median(ratios) if ratios else float('nan'):.1f}×; training alone ≤ 1.5×: {sum(x <= 1.5 for x in train_ratios)}, median {np.median(train_ratios) if train_ratios else float('nan'):.1f}×); "
               f"total {total_pick:.0f} s against {total_cheap:.0f} s for the cheapest within 1 point. The earlier advisor on the same cells: "
               f"{old_within} of {len(latest)} within 1 point, {total_old:.0f} s in total")  # fmt: skip
    bows = {r["data"]: r for r in rows if r["kind"] == "bow"}
    if bows:
        out += ["", "| text set | bag-of-words (s) | minilm feature extraction (s) | minilm best fine-tune (s) | encoder bought (FE / best) |", "|---|---:|---:|---:|---:|"]
        for name, r in sorted(bows.items()):
            cell = cells.get((name, 1.0), {})
            fe = cell.get("feature-extraction")
            tuned = max((cell[c] for c in ("last-1", "last-2", "half", "full", "auto") if c in cell), key=lambda v: v["test_accuracy"], default=None)
            b = r["result"]["test"]["accuracy"]
            fe_text = f"{100 * fe['test_accuracy']:.1f} ({fe['seconds']:.0f})" if fe else "–"
            tuned_text = f"{100 * tuned['test_accuracy']:.1f} ({tuned['seconds']:.0f}, {tuned['config']})" if tuned else "–"
            bought = f"{100 * (fe['test_accuracy'] - b):+.1f} / {100 * (tuned['test_accuracy'] - b):+.1f}" if fe and tuned else "–"
            out.append(f"| {name} | {100 * b:.1f} ({r['result']['seconds']:.1f}) | {fe_text} | {tuned_text} | {bought} |")
    encoded = [r for r in rows if r["kind"] == "encoder"]
    if encoded:
        out += ["", "| text set | encoder | feature extraction test acc (s) | bag-of-words test acc | encoder bought |", "|---|---|---:|---:|---:|"]
        for r in encoded:
            b = r["bag_of_words"]["test"]["accuracy"]
            out.append(f"| {r['data']} | {r['encoder']} | {100 * r['test_accuracy']:.1f} ({r['seconds']:.0f}) | {100 * b:.1f} | {100 * (r['test_accuracy'] - b):+.1f} |")
    budgets = [r for r in rows if r["kind"] == "budget"]
    if budgets:
        out += ["", "| data | fraction | budget | wall | test acc | winner (trials) |", "|---|---|---:|---:|---:|---|"]
        for r in budgets:
            trials = ", ".join(f"{t['candidate']}{'/' + str(t['epochs']) + 'ep' if t['epochs'] else ''} {t['val_accuracy']:.3f} ({t['seconds']:.0f} s)" for t in r["trials"]["trials"])
            out.append(f"| {r['data']} | {r['fraction']:.0%} | {r['budget']:.0f} s | {r['wall']:.0f} s | {100 * r['test_accuracy']:.1f} | {r['trials']['winner']} ({trials}) |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=("picks", "bow", "budget", "encoders"))
    parser.add_argument("data", nargs="*")
    parser.add_argument("--fractions", default="1,0.25")
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--budgets", default="120,300")
    parser.add_argument("--encoders", default="mpnet")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.table:
        print(tables())
        return
    {"picks": picks, "bow": bow, "budget": budget, "encoders": encoders}[args.what](args)


if __name__ == "__main__":
    main()
