"""One self-contained HTML page per run: the questions a person wants to *see* answered.

Did it overfit, which classes are confused, which examples failed, what was frozen, what did
transfer buy over scratch, where do the features stop being general. :func:`write_report` reads
only what :func:`headstart.fit` saved in the run directory (so ``headstart report RUN`` rebuilds
the same page later) and writes ``report.html`` beside it: plots are PNGs embedded as data URIs,
the CSS is inline, nothing is fetched, so the file opens offline and can be mailed as is.

Sections appear when the run holds their data:

* dataset summary, strategy and settings, frozen/trainable blocks, training curves with phase
  boundaries and the overfitting flag, confusion matrix and per-class precision/recall/F1, the
  worst mistakes (``predictions.json``) - every run written by ``fit``;
* the advisor's rationale - runs fitted with ``strategy="auto"``;
* the layer-wise profile - those runs, or any run given ``headstart profile DATA --run RUN``
  (``profile.json``);
* the learning-rate finder plot - when the run directory holds ``lr_find.json``
  (``{"lrs": [...], "losses": [...], "suggestion": lr}``);
* transfer vs scratch - when a run in ``compare`` (or a sibling directory fitted on the same
  data, as ``headstart demo --out DIR`` writes them) was trained from scratch and this one by
  transfer, or the other way round.
"""

from __future__ import annotations

import base64
import functools
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from headstart import __version__
from headstart.freezing import human_count
from headstart.io import atomic_write_text

REPORT_NAME = "report.html"
LR_FIND_NAME = "lr_find.json"
PROFILE_NAME = "profile.json"
GALLERY_SIZE = 12
TRAIN_COLOR, VAL_COLOR, KEPT_COLOR, ALERT_COLOR = "#2563eb", "#ea580c", "#16a34a", "#dc2626"


@dataclass
class SavedRun:
    """The files of one run directory, parsed (missing optional files are empty)."""

    directory: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: dict[str, Any]
    dataset: dict[str, Any]
    predictions: dict[str, Any] = field(default_factory=dict)
    lr_find: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    log: str = ""

    @property
    def training(self) -> dict[str, Any]:
        return self.config.get("training", {})

    @property
    def strategy(self) -> str:
        return str(self.training.get("strategy", {}).get("name", "?"))

    @property
    def test(self) -> dict[str, Any] | None:
        return self.metrics.get("test") or self.metrics.get("val")

    @classmethod
    def load(cls, directory: str | Path) -> SavedRun:
        from headstart.api import DATASET_NAME, HISTORY_NAME, LOG_NAME, METRICS_NAME, PREDICTIONS_NAME
        from headstart.model import CONFIG_NAME

        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file() or not (directory / METRICS_NAME).is_file():
            raise FileNotFoundError(f"{directory}: not a finished headstart run (needs {CONFIG_NAME} and {METRICS_NAME}); pass a directory `headstart fit` wrote")

        def read(name: str) -> Any:
            path = directory / name
            if not path.is_file():
                return None
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except ValueError as error:
                raise ValueError(f"{path}: not valid JSON ({error}); the run is damaged, fit it again") from None

        config = read(CONFIG_NAME)
        log = directory / LOG_NAME
        return cls(
            directory=directory,
            config=config,
            metrics=read(METRICS_NAME),
            history=read(HISTORY_NAME) or {"epochs": []},
            dataset=read(DATASET_NAME) or config.get("dataset", {}),
            predictions=read(PREDICTIONS_NAME) or {},
            lr_find=read(LR_FIND_NAME),
            profile=read(PROFILE_NAME),
            log=log.read_text(encoding="utf-8", errors="replace") if log.is_file() else "",
        )


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
        nav=[(key, label) for key, label in NAV if sections.get(key)],
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
    ("profile", "Layer profile"),
    ("compare", "Transfer vs scratch"),
    ("log", "Log"),
)


def _title(run: SavedRun) -> str:
    source = Path(str(run.dataset.get("source") or run.directory.name))
    name = f"{source.parent.name}/{source.name}" if source.name in ("data", "dataset", "images", "train") else source.name
    return f"{name or source} · {run.strategy} · {run.training.get('backbone', '?')}"


def _sections(run: SavedRun, others: Sequence[SavedRun]) -> dict[str, Any]:
    epochs = run.history.get("epochs", [])
    test = run.test
    return {
        "headline": _headline(run),
        "data": _data_section(run.dataset),
        "strategy": _strategy_section(run),
        "lr_find": _lr_find_section(run.lr_find) if run.lr_find else None,
        "curves": {"image": _png(_curves_figure(run.history)), "overfitting": run.history.get("overfitting", {}), "kept": run.history.get("kept_epoch"), "phases": _phases(epochs)}
        if epochs
        else None,
        "results": _results_section(test) if test else None,
        "mistakes": _mistakes_section(run.predictions) if run.predictions.get("examples") else None,
        "profile": _profile_section(run.profile or (run.training.get("advice") or {}).get("profile")),
        "compare": _compare_section(run, others) if others else None,
        "log": run.log.strip() or None,
    }


# --------------------------------------------------------------------------------------------
# Figure helpers
# --------------------------------------------------------------------------------------------


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height), dpi=130)


def _styled(draw: Callable[..., Any]) -> Callable[..., Any]:
    """Run a figure-drawing function under the report's matplotlib style (the user's rcParams stay untouched)."""

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with plt.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


STYLE = {
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.8,
    "axes.edgecolor": "#9ca3af",
    "axes.labelcolor": "#374151",
    "xtick.color": "#4b5563",
    "ytick.color": "#4b5563",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "legend.frameon": False,
    "axes.axisbelow": True,
}


def _png(fig: Any) -> str:
    """The figure as a ``data:`` URI (PNG), and the figure closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------------------------
# Sections: plain data for the template
# --------------------------------------------------------------------------------------------


def _headline(run: SavedRun) -> list[tuple[str, str, str]]:
    """(label, value, hint) cards at the top of the page."""
    test = run.test or {}
    cards = []
    if test:
        split = test.get("split", "test")
        cards += [
            (f"{split} accuracy", f"{100 * test['accuracy']:.1f}%", f"n = {test['n']}"),
            ("balanced accuracy", f"{100 * test['balanced_accuracy']:.1f}%", "mean recall over classes"),
            ("macro F1", f"{test['macro_f1']:.3f}", f"MCC {test['mcc']:.3f}"),
        ]
    epochs = run.history.get("epochs", [])
    seconds = run.metrics.get("seconds") or run.training.get("seconds")
    phases = " + ".join(f"{p['last'] - p['first'] + 1} {p['name']}" for p in _phases(epochs)) if len(_phases(epochs)) > 1 else ""
    kept = f"kept epoch {run.history['kept_epoch']}" if run.history.get("kept_epoch") else ""
    cards.append(("epochs", str(len(epochs)), " · ".join(t for t in (phases, kept) if t)))
    if seconds is not None:
        cards.append(("time", _duration(float(seconds)), str(run.training.get("machine", {}).get("device", ""))))
    return cards


def _data_section(summary: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = summary.get("counts", {})
    splits = [s for s in ("train", "val", "test") if s in counts] + [s for s in counts if s not in ("train", "val", "test")]
    classes = summary.get("classes") or sorted({c for split in counts.values() for c in split})
    rows = [(name, [counts[s].get(name, 0) for s in splits], sum(counts[s].get(name, 0) for s in splits)) for name in classes]
    totals = [sum(counts[s].values()) for s in splits]
    largest = max((r[2] for r in rows), default=1) or 1
    return {
        "source": summary.get("source", ""),
        "modality": summary.get("modality", ""),
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


def _phases(epochs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive runs of epochs with the same phase: name, first and last epoch, best validation accuracy."""
    phases: list[dict[str, Any]] = []
    for row in epochs:
        if not phases or phases[-1]["phase"] != row["phase"]:
            # A feature-extraction phase before another one is that strategy's head warm-up on cached features.
            name = "head warm-up" if row["phase"] == "feature-extraction" and any(r["phase"] != row["phase"] for r in epochs) else row["phase"]
            phases.append({"phase": row["phase"], "name": name, "first": row["epoch"], "last": row["epoch"], "best_val_accuracy": row["val_accuracy"], "best_val_loss": row["val_loss"]})
        phase = phases[-1]
        phase["last"] = row["epoch"]
        phase["best_val_accuracy"] = max(phase["best_val_accuracy"], row["val_accuracy"])
        phase["best_val_loss"] = min(phase["best_val_loss"], row["val_loss"])
    return phases


def _results_section(metrics: dict[str, Any]) -> dict[str, Any]:
    numbered = not drawable(metrics["classes"])
    return {
        "split": metrics.get("split", "test"),
        "n": metrics["n"],
        "numbered": numbered,
        "image": _png(_confusion_figure(metrics["confusion_matrix"], [str(i) for i in range(len(metrics["classes"]))] if numbered else metrics["classes"])),
        "per_class": [(name, metrics["per_class"][name]) for name in metrics["classes"] if name in metrics["per_class"]],  # the matrix's order
        "summary": {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "mcc", "loss") if k in metrics},
    }


def _mistakes_section(predictions: dict[str, Any]) -> dict[str, Any]:
    examples = predictions["examples"]
    wrong = sorted((e for e in examples if e["true"] != e["predicted"]), key=lambda e: -e["confidence"])
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
    return {"split": predictions.get("split", "test"), "n": len(examples), "wrong": len(wrong), "cards": cards, "modality": predictions.get("modality")}


def _profile_section(profile: dict[str, Any] | None) -> dict[str, Any] | None:
    if not profile:
        return None
    import matplotlib.pyplot as plt

    from headstart.analysis.probes import Profile

    result = Profile.from_dict(profile)
    fig = result.figure()
    image = _png(fig)
    plt.close(fig)
    return {"image": image, "plateau": result.plateau, "best": result.best, "rows": result.rows, "n": result.n_examples}


def _compare_section(run: SavedRun, others: Sequence[SavedRun]) -> dict[str, Any]:
    runs = sorted([run, *others], key=lambda r: (r.strategy == "scratch", r.directory.name))
    rows = []
    for r in runs:
        test = r.test or {}
        rows.append({
            "name": r.directory.name,
            "strategy": r.strategy,
            "backbone": r.training.get("backbone", "?"),
            "accuracy": test.get("accuracy"),
            "macro_f1": test.get("macro_f1"),
            "epochs": " + ".join(str(p["last"] - p["first"] + 1) for p in _phases(r.history.get("epochs", []))) or "0",
            "seconds": _duration(float(r.metrics.get("seconds", 0.0))),
            "current": r is run,
        })  # fmt: skip
    scratch = [r for r in rows if r["strategy"] == "scratch" and r["accuracy"] is not None]
    transfer = [r for r in rows if r["strategy"] != "scratch" and r["accuracy"] is not None]
    gain = None
    if scratch and transfer:
        best = max(transfer, key=lambda r: r["accuracy"])
        gain = {"best": best["strategy"], "points": 100 * (best["accuracy"] - scratch[0]["accuracy"]), "f1": (best["macro_f1"], scratch[0]["macro_f1"])}
    return {"rows": rows, "gain": gain, "image": _png(_compare_figure(runs))}


def _comparisons(run: SavedRun, named: list[Path]) -> list[SavedRun]:
    """Runs named in ``compare`` plus siblings on the same data where one side is scratch and the other transfer."""
    found = {p.resolve(): SavedRun.load(p) for p in named}
    source = run.dataset.get("source")
    parent = run.directory.resolve().parent
    if source:
        for sibling in sorted(parent.iterdir()):
            if sibling.resolve() == run.directory.resolve() or sibling.resolve() in found or not (sibling / "metrics.json").is_file():
                continue
            try:
                other = SavedRun.load(sibling)
            except (OSError, ValueError):
                continue
            if other.dataset.get("source") == source and (other.strategy == "scratch") != (run.strategy == "scratch"):
                found[sibling.resolve()] = other
    return list(found.values())


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


@_styled
def _curves_figure(history: dict[str, Any]) -> Any:
    """Loss and accuracy per epoch; one column per phase, so a 4-epoch fine-tune is not squeezed beside a 100-epoch head fit."""
    import matplotlib.pyplot as plt

    epochs = history["epochs"]
    phases = _phases(epochs)
    total = len(epochs)
    widths = [max(p["last"] - p["first"] + 1, 0.35 * total) for p in phases]
    if len(phases) == 1:  # loss | accuracy side by side
        fig, pair = plt.subplots(1, 2, figsize=(10, 3.4), dpi=130, squeeze=False)
        axes = pair.reshape(2, 1)
    else:  # rows loss, accuracy; one column per phase
        fig, axes = plt.subplots(2, len(phases), figsize=(10, 5.4), dpi=130, sharey="row", squeeze=False, gridspec_kw={"width_ratios": widths})
    kept = history.get("kept_epoch")
    flagged = set(history.get("overfitting", {}).get("epochs", []))
    for column, phase in enumerate(phases):
        rows = [r for r in epochs if phase["first"] <= r["epoch"] <= phase["last"]]
        x = [r["epoch"] for r in rows]
        markers = {"marker": "o", "markersize": 3 if len(x) > 3 else 5} if len(x) <= 30 else {}
        for row, key in enumerate(("loss", "accuracy")):
            ax = axes[row][column]
            if len(x) < 8:
                ax.set_xlim(phase["first"] - 0.5, phase["last"] + 0.5)
            ax.plot(x, [r[f"train_{key}"] for r in rows], color=TRAIN_COLOR, label="train", **markers)
            ax.plot(x, [r[f"val_{key}"] for r in rows], color=VAL_COLOR, label="validation", **markers)
            if kept is not None and phase["first"] <= kept <= phase["last"]:
                ax.axvline(kept, color=KEPT_COLOR, linestyle=":", linewidth=1.6, label=f"kept (epoch {kept})")
            bad = [(r["epoch"], r["val_loss"]) for r in rows if r["epoch"] in flagged]
            if bad and key == "loss":
                ax.scatter(*zip(*bad), color=ALERT_COLOR, marker="x", s=36, zorder=5, label="overfitting")
            if len(x) < 8:
                ax.set_xticks(x)
            if len(phases) == 1:
                ax.set_title(key)
                ax.set_xlabel("epoch")
            elif row == 0:
                span = f"epoch {phase['first']}" if phase["first"] == phase["last"] else f"epochs {phase['first']}–{phase['last']}"
                ax.set_title(f"{phase['name']} ({span})")
            else:
                ax.set_xlabel("epoch")
            if column == 0 and len(phases) > 1:
                ax.set_ylabel(key)
            if key == "accuracy":
                ax.yaxis.set_major_formatter(_percent_formatter())
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=8, bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.07 if len(phases) == 1 else 0.05, 1, 1))
    return fig


def _percent_formatter() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0)


def drawable(labels: Sequence[str]) -> bool:
    """Whether the figures' font has a glyph for every character of ``labels``.

    Class names in scripts the installed fonts lack (CJK on a bare Debian) would be drawn as
    empty boxes; the confusion matrix then numbers the classes and the page (whose text the
    browser renders with its own fonts) gives the numbers beside the names.
    """
    wanted = {ord(ch) for label in labels for ch in label if not ch.isspace()}
    if all(code < 0x250 for code in wanted):  # Latin: every sans-serif font has it
        return True
    import matplotlib
    from matplotlib import font_manager, ft2font

    covered: set[int] = set()
    for family in matplotlib.rcParams["font.sans-serif"]:  # matplotlib falls back glyph by glyph along this list
        try:
            path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
        except ValueError:
            continue
        covered |= set(ft2font.FT2Font(path).get_charmap())
    return wanted <= covered


@_styled
def _confusion_figure(matrix: list[list[int]], classes: list[str]) -> Any:
    counts = np.asarray(matrix, dtype=float)
    k = len(classes)
    rates = counts / np.clip(counts.sum(1, keepdims=True), 1, None)
    side = min(9.0, 2.2 + 0.45 * k)
    fig, ax = _figure(side + 1.2, side)
    ax.grid(False)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), [_short(c) for c in classes], rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), [_short(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                text = f"{int(counts[i, j])}\n{100 * rates[i, j]:.0f}%" if k <= 8 else f"{int(counts[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=9 if k <= 8 else 7, color="white" if rates[i, j] > 0.55 else "#111827")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the true class")
    bar.ax.yaxis.set_major_formatter(_percent_formatter())
    fig.tight_layout()
    return fig


@_styled
def _compare_figure(runs: Sequence[SavedRun]) -> Any:
    fig, (bars, curves) = _figure(10, 3.4, ncols=2)
    palette = ["#2563eb", "#16a34a", "#9333ea", "#0891b2", "#ca8a04"]
    names = [f"{r.strategy}\n{r.directory.name}" if r.directory.name != r.strategy else r.strategy for r in runs]
    colors = ["#9ca3af" if r.strategy == "scratch" else palette[i % len(palette)] for i, r in enumerate(runs)]
    values = [(r.test or {}).get("accuracy", 0.0) for r in runs]
    bars.bar(range(len(runs)), values, color=colors)
    for i, v in enumerate(values):
        bars.annotate(f"{100 * v:.1f}%", (i, v), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=9)
    bars.set_xticks(range(len(runs)), names, fontsize=8)
    bars.set_ylim(0, 1.08)
    bars.yaxis.set_major_formatter(_percent_formatter())
    bars.set_title("held-out accuracy")
    for r, color in zip(runs, colors):
        rows = r.history.get("epochs", [])
        rows = [row for row in rows if row["phase"] == rows[-1]["phase"]] if rows else []  # a head warm-up would dwarf the rest
        if rows:
            marker = {"marker": "o", "markersize": 3} if len(rows) <= 30 else {}
            curves.plot(range(1, len(rows) + 1), [row["val_accuracy"] for row in rows], color=color, label=r.strategy, linestyle="--" if r.strategy == "scratch" else "-", **marker)
    from matplotlib.ticker import MaxNLocator

    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.set_xlabel("epoch of the last training phase")
    curves.set_title("validation accuracy per epoch")
    curves.yaxis.set_major_formatter(_percent_formatter())
    curves.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _thumbnail(path: str, size: int = 176) -> str | None:
    """A JPEG data URI of the image at ``path``, or None when it can no longer be read."""
    from headstart.data import load_image

    try:
        image = load_image(Path(path))
    except (OSError, ValueError):
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


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
