"""The report page: a finished run's files (:class:`SavedRun`) turned into plain data for the template, then HTML.

The figures are drawn in :mod:`headstart.report.figures`; this module decides which sections a run has and what they say.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from headstart import __version__
from headstart.freezing import human_count
from headstart.io import atomic_write_text
from headstart.metrics import MIN_EXAMPLES, describe, interval_of, span, too_few
from headstart.outcome import kept_weights, overfitting, phase_counts
from headstart.report.figures import (
    KEPT_COLOR,
    TRAIN_COLOR,
    VAL_COLOR,
    _compare_figure,
    _confusion_figure,
    _curves_figure,
    _figure,
    _phases,
    _png,
    _styled,
    drawable,
)
from headstart.report.insights import confused_section, embedding_section, jpeg_uri, pr_roc_section, top_losses_section
from headstart.report.targets import COMPARED, EPOCH_SCORE, GALLERY_SIZE, SCORES, headline_cards, results_section, task_of, worst_examples
from headstart.rundir import METRICS_NAME, REPORT_NAME, SavedRun


def write_report(directory: str | Path, *, compare: Sequence[str | Path] = (), out: str | Path | None = None) -> Path:
    """Build ``report.html`` for the run in ``directory`` and return its path.

    Parameters
    ----------
    directory : path
        A run directory written by :func:`headstart.fit`.
    compare : sequence of paths, default=()
        Other runs on the same data to show side by side (transfer vs scratch). Sibling
        directories fitted on the same data are found without being named.
    out : path, optional
        Where to write the page; default ``directory/report.html``.
    """
    run = SavedRun.load(directory)
    others = _comparisons(run, [Path(c) for c in compare])
    target = Path(out) if out is not None else run.directory / REPORT_NAME
    atomic_write_text(target, render_report(run, others))
    return target


def render_report(run: SavedRun, others: Sequence[SavedRun] = ()) -> str:
    """The report page as a string (see :func:`write_report`)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("headstart", "templates"), autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * float(v):.1f}%"
    env.filters["num"] = lambda v: f"{int(v):,}"
    env.filters["human"] = human_count
    sections = _sections(run, others)
    return env.get_template("report.html.j2").render(
        run=run,
        title=_title(run),
        s=sections,
        nav=[(key, sections["compare_title"] if key == "compare" else label) for key, label in NAV if sections.get(key)],
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        colors={"train": TRAIN_COLOR, "val": VAL_COLOR},
    )


NAV = (
    ("data", "Data"),
    ("strategy", "Strategy"),
    ("lr_find", "LR finder"),
    ("curves", "Training"),
    ("results", "Results"),
    ("mistakes", "Mistakes"),
    ("confused", "Most confused"),
    ("top_losses", "Top losses"),
    ("pr_roc", "PR / ROC"),
    ("embedding", "Embedding"),
    ("profile", "Layer profile"),
    ("compare", "Transfer vs scratch"),
    ("costs", "Cost & baselines"),
    ("log", "Log"),
)


def _title(run: SavedRun) -> str:
    source = Path(str(run.dataset.get("source") or run.directory.name))
    name = f"{source.parent.name}/{source.name}" if source.name in ("data", "dataset", "images", "train") else source.name
    return f"{name or source} · {run.strategy} · {run.training.get('backbone', '?')}"


def _sections(run: SavedRun, others: Sequence[SavedRun]) -> dict[str, Any]:
    epochs = run.history.get("epochs", [])
    test = run.test
    kept = kept_weights(epochs, run.history.get("kept_epoch"))  # from the records: runs saved before "kept" existed get it too
    task = task_of(test or run.dataset)
    classes = task == "classification"  # the sections built on a confusion matrix and class probabilities
    return {
        "task": task,
        "headline": _headline(run, kept),
        "kept": kept,
        "data": _data_section(run.dataset),
        "strategy": _strategy_section(run),
        "lr_find": _lr_find_section(run.lr_find) if run.lr_find else None,
        "curves": {"image": _png(_curves_figure(run.history, EPOCH_SCORE[task], percent=task != "regression")), "overfitting": overfitting(epochs, run.history.get("kept_epoch")), "kept": kept,
                   "phases": _phases(epochs), "score": EPOCH_SCORE[task]} if epochs else None,  # fmt: skip
        "results": (_results_section(test) if classes else results_section(test, run.predictions)) if test else None,
        "mistakes": _mistakes_section(run.predictions, task) if run.predictions.get("examples") else None,
        "confused": confused_section(test) if test and classes else None,
        "top_losses": top_losses_section(run) if classes else None,
        "pr_roc": pr_roc_section(run) if classes else None,
        "embedding": embedding_section(run) if classes else None,
        "profile": _profile_section(run.profile or (run.training.get("advice") or {}).get("profile")),
        "compare": _compare_section(run, others) if others and test else None,
        "compare_title": "Transfer vs scratch" if _scratch_and_transfer([run, *others]) else "Runs compared",
        "costs": _costs_section(run, others) if test else None,
        "log": run.log.strip() or None,
    }


def _headline(run: SavedRun, kept: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(label, value, hint) cards at the top of the page; each score's hint gives its 95% interval (:mod:`headstart.metrics`)."""
    test = run.test or {}
    cards = []
    if test and task_of(test) != "classification":
        cards += headline_cards(test)
    elif test:
        split = test.get("split", "test")
        few = f"n = {test['n']}: too few examples to tell" if too_few(test) else f"n = {test['n']}"
        cards += [
            (f"{split} accuracy", f"{100 * test['accuracy']:.1f}%", f"{span(test, 'accuracy')} · {few}"),
            ("balanced accuracy", f"{100 * test['balanced_accuracy']:.1f}%", span(test, "balanced_accuracy") or "mean recall over classes"),
            ("macro F1", f"{test['macro_f1']:.3f}", " · ".join(t for t in (span(test, "macro_f1", percent=False), f"MCC {test['mcc']:.3f}") if t)),
        ]
    epochs = run.history.get("epochs", [])
    seconds = run.metrics.get("seconds") or run.training.get("seconds")
    cards.append(("epochs", str(len(epochs)), phase_counts(epochs) if len(_phases(epochs)) > 1 else ""))
    if kept is not None:
        beaten = "" if kept["later_phase_won"] else f"; {kept['last_phase']} did not beat it"
        cards.append(("weights kept", f"epoch {kept['phase_epoch']}/{kept['phase_epochs']}", f"of {kept['phase']}{beaten}"))
    if seconds is not None:
        cards.append(("time", _duration(float(seconds)), str(run.training.get("machine", {}).get("device", ""))))
    return cards


def _scratch_and_transfer(runs: Sequence[SavedRun]) -> bool:
    """Whether the runs include one from scratch and one by transfer: only then is there a gain to state."""
    return any(r.strategy == "scratch" for r in runs) and any(r.strategy != "scratch" for r in runs)


def _data_section(summary: dict[str, Any]) -> dict[str, Any]:
    """Examples per class and split; per label for multi-label data (an example counts under each of its labels); a numeric target's spread per split."""
    counts: dict[str, dict[str, int]] = summary.get("counts", {})
    splits = [s for s in ("train", "val", "test") if s in counts] + [s for s in counts if s not in ("train", "val", "test")]
    classes = summary.get("classes") or sorted({c for split in counts.values() for c in split})
    rows = [(name, [counts[s].get(name, 0) for s in splits], sum(counts[s].get(name, 0) for s in splits)) for name in classes]
    examples = summary.get("examples") or {}  # multi-label: examples per split (the label counts add up to more)
    totals = [int(examples[s]) if s in examples else sum(counts[s].values()) for s in splits]
    target = summary.get("target") or {}
    largest = max((r[2] for r in rows), default=1) or 1
    return {
        "source": summary.get("source", ""),
        "modality": summary.get("modality", ""),
        "task": task_of(summary),
        "target": [(s, target[s]) for s in splits if s in target],
        "splits": splits,
        "rows": [(name, cells, total, 100 * total / largest) for name, cells, total in rows],
        "totals": totals,
        "total": sum(totals),
        "notes": summary.get("notes", []),
        "warnings": summary.get("warnings", []),
        "skipped": summary.get("skipped", 0),
        "skipped_reasons": sorted(summary.get("skipped_reasons", {}).items(), key=lambda kv: -kv[1]),
        "skipped_files": summary.get("skipped_files", [])[:200],
    }


def _strategy_section(run: SavedRun) -> dict[str, Any]:
    strategy = dict(run.training.get("strategy", {}))
    settings = strategy.pop("settings", {})
    name = strategy.pop("name", "?")
    extra = {k: v for k, v in strategy.items() if v is not None}
    blocks = run.training.get("blocks") or []
    total = sum(int(b["parameters"]) for b in blocks) or 1
    advice = run.training.get("advice")
    return {
        "name": name,
        "description": STRATEGY_TEXT.get(name, ""),
        "settings": [(k, _fmt(v)) for k, v in {**settings, **extra}.items()],
        "run": [(k, _fmt(run.training[k])) for k in ("backbone", "seed", "batch_size", "finished") if k in run.training],
        "blocks": [{**b, "share": 100 * int(b["parameters"]) / total} for b in blocks],
        "trainable": sum(int(b["parameters"]) for b in blocks if b["trainable"]),
        "frozen": sum(int(b["parameters"]) for b in blocks if not b["trainable"]),
        "advice": advice,
    }


STRATEGY_TEXT = {
    "feature-extraction": "The pretrained body is frozen; each example is embedded once and only the new head trains.",
    "fine-tune": "The head is fitted on frozen features first; then the top blocks train with a smaller learning rate than the head.",
    "full": "The head is fitted on frozen features first; then every block trains, the body with a smaller learning rate.",
    "scratch": "The same architecture from random weights, everything trained: the baseline that shows what transfer bought.",
}


@_styled
def _lr_find_section(data: dict[str, Any]) -> dict[str, Any] | None:
    lrs, losses = data.get("lrs") or [], data.get("losses") or []
    if not lrs or len(lrs) != len(losses):
        return None
    import matplotlib.pyplot as plt

    fig, ax = _figure(6.4, 3.2)
    ax.plot(lrs, losses, color=TRAIN_COLOR)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    suggestion = data.get("suggestion")
    if suggestion:
        ax.axvline(float(suggestion), color=KEPT_COLOR, linestyle="--", linewidth=1.2)
        ax.annotate(f"suggested {float(suggestion):.2g}", (float(suggestion), max(losses)), xytext=(4, -12), textcoords="offset points", fontsize=8, color=KEPT_COLOR)
    finite = [v for v in losses if np.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) - 0.05 * abs(min(finite)), min(max(finite), 4 * np.median(finite)))
    image = _png(fig)
    plt.close(fig)
    from headstart.analysis.lr_finder import LRFinderResult

    fields = {k: data.get(k) for k in ("flat", "ceiling")}
    line = LRFinderResult(lrs, losses, float(suggestion or 0), float(lrs[int(np.argmin(losses))]), bool(fields["flat"]), fields["ceiling"]).describe() if suggestion else None
    return {"image": image, "suggestion": suggestion, "line": line}


def _results_section(metrics: dict[str, Any]) -> dict[str, Any]:
    numbered = not drawable(metrics["classes"])
    f1_spans = interval_of(metrics, "per_class_f1") or {}
    return {
        "task": "classification",
        "split": metrics.get("split", "test"),
        "n": metrics["n"],
        "shown": {key: describe(metrics, key, percent=key != "macro_f1") for key in ("accuracy", "balanced_accuracy", "macro_f1")},
        "too_few": too_few(metrics),
        "min_examples": MIN_EXAMPLES,
        "f1_spans": {name: f"{low:.2f}–{high:.2f}" for name, (low, high) in f1_spans.items()},
        "numbered": numbered,
        "image": _png(_confusion_figure(metrics["confusion_matrix"], [str(i) for i in range(len(metrics["classes"]))] if numbered else metrics["classes"])),
        "per_class": [(name, metrics["per_class"][name]) for name in metrics["classes"] if name in metrics["per_class"]],  # the matrix's order
        "summary": {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "mcc", "loss") if k in metrics},
    }


def _mistakes_section(predictions: dict[str, Any], task: str = "classification") -> dict[str, Any]:
    """The gallery of the worst held-out examples (:func:`headstart.report.targets.worst_examples`), with thumbnails or text."""
    examples = predictions["examples"]
    wrong, count = worst_examples(predictions, task)
    cards = []
    for e in wrong[:GALLERY_SIZE]:
        card = {**e, "thumbnail": None, "snippet": None, "name": None}
        if predictions.get("modality") == "image":
            card["name"] = Path(e["item"]).name if e["item"] else "(in-memory image)"
            card["thumbnail"] = _thumbnail(e["item"]) if e["item"] else None
        else:
            text = str(e["item"] or "")
            card["snippet"] = text if len(text) <= 280 else text[:277] + "..."
        cards.append(card)
    return {"split": predictions.get("split", "test"), "n": len(examples), "wrong": count, "cards": cards, "modality": predictions.get("modality"), "task": task}


def _profile_section(profile: dict[str, Any] | None) -> dict[str, Any] | None:
    if not profile:
        return None
    import matplotlib.pyplot as plt

    from headstart.analysis.probes import Profile

    result = Profile.from_dict(profile)
    fig = result.figure()
    image = _png(fig)
    plt.close(fig)
    return {"image": image, "plateau": result.plateau, "best": result.best, "rows": result.rows, "n": result.n_examples, "metric": result.metric}


def _compare_section(run: SavedRun, others: Sequence[SavedRun]) -> dict[str, Any]:
    runs = sorted([run, *others], key=lambda r: (r.strategy == "scratch", r.directory.name))
    task = task_of(run.test)
    key, label = COMPARED[task]
    rows = []
    for r in runs:
        test = r.test or {}
        rows.append({
            "name": r.directory.name,
            "strategy": r.strategy,
            "backbone": r.training.get("backbone", "?"),
            "accuracy": test.get(key),
            "macro_f1": test.get("macro_f1"),
            "scores": [test.get(k) if task_of(test) == task else None for k, _, _ in SCORES[task]],
            "epochs": " + ".join(str(p["last"] - p["first"] + 1) for p in _phases(r.history.get("epochs", []))) or "0",
            "seconds": _duration(float(r.metrics.get("seconds", 0.0))),
            "current": r is run,
        })  # fmt: skip
    scratch = [r for r in rows if r["strategy"] == "scratch" and r["accuracy"] is not None]
    transfer = [r for r in rows if r["strategy"] != "scratch" and r["accuracy"] is not None]
    gain = None
    if scratch and transfer:
        best = max(transfer, key=lambda r: r["accuracy"])
        gain = {"best": best["strategy"], "points": 100 * (best["accuracy"] - scratch[0]["accuracy"]), "f1": (best["macro_f1"], scratch[0]["macro_f1"]),
                "difference": best["accuracy"] - scratch[0]["accuracy"]}  # fmt: skip
    return {"rows": rows, "gain": gain, "task": task, "score": label, "columns": [(name, percent) for _, name, percent in SCORES[task]],
            "image": _png(_compare_figure(runs, key, (label, EPOCH_SCORE[task])))}  # fmt: skip


def _costs_section(run: SavedRun, others: Sequence[SavedRun]) -> dict[str, Any] | None:
    """What the advisor expected of each candidate, the ``--budget`` trials, and the cheap baselines beside the result."""
    advice = run.training.get("advice") or {}
    baseline = run.metrics.get("bag_of_words")
    scratch = run.strategy != "scratch" and any(o.strategy == "scratch" for o in others)
    if not (advice.get("candidates") or advice.get("trials") or baseline or scratch):
        return None
    split = "test" if baseline and "test" in baseline else "val"
    return {
        "candidates": [{**c, "picked": c["name"] == (advice.get("measurements") or {}).get("pick")} for c in advice.get("candidates") or []],
        "close_call": advice.get("close_call", False),
        "trials": advice.get("trials"),
        "baseline": {"split": split, "accuracy": baseline[split]["accuracy"], "transfer": run.metrics[split]["accuracy"], "points": 100 * baseline["gain"],
                     "seconds": baseline["seconds"], "model": baseline["model"]} if baseline and split in baseline and split in run.metrics else None,  # fmt: skip
        "scratch": scratch,
    }


def _comparisons(run: SavedRun, named: list[Path]) -> list[SavedRun]:
    """Runs named in ``compare`` plus siblings on the same data where one side is scratch and the other transfer."""
    found = {p.resolve(): SavedRun.load(p) for p in named}
    source = run.dataset.get("source")
    parent = run.directory.resolve().parent
    if source:
        for sibling in sorted(parent.iterdir()):
            if sibling.resolve() == run.directory.resolve() or sibling.resolve() in found or not (sibling / METRICS_NAME).is_file():
                continue
            try:
                other = SavedRun.load(sibling)
            except (OSError, ValueError):
                continue
            if other.dataset.get("source") == source and (other.strategy == "scratch") != (run.strategy == "scratch"):
                found[sibling.resolve()] = other
    return list(found.values())


def _thumbnail(path: str, size: int = 176) -> str | None:
    """A JPEG data URI of the image at ``path``, or None when it can no longer be read."""
    from headstart.data import load_image

    try:
        image = load_image(Path(path))
    except (OSError, ValueError):
        return None
    image.thumbnail((size, size))
    return jpeg_uri(image)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "–"
    return str(value)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
