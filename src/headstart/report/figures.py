"""The report's figures: matplotlib drawn under one style, handed to the page as PNG data URIs.

matplotlib is imported inside the functions: importing the report does not import it; drawing the first figure does.
"""

from __future__ import annotations

import base64
import functools
import io
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.metrics import interval_of
from headstart.outcome import epoch_label, overfitting
from headstart.outcome import phases as _phases

if TYPE_CHECKING:
    from headstart.rundir import SavedRun

TRAIN_COLOR, VAL_COLOR, KEPT_COLOR, ALERT_COLOR = "#2563eb", "#ea580c", "#16a34a", "#dc2626"


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


@_styled
def _curves_figure(history: dict[str, Any], score: str = "accuracy", percent: bool = True) -> Any:
    """Loss and accuracy per epoch; one column per phase, so a 4-epoch fine-tune is not squeezed beside a 100-epoch head fit.

    ``score``: what the records' ``*_accuracy`` hold for the run's task (:data:`headstart.report.targets.EPOCH_SCORE`).
    """
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
    flagged = set(overfitting(epochs, kept)["epochs"])  # the rule of today, also for runs saved before it
    for column, phase in enumerate(phases):
        rows = [r for r in epochs if phase["first"] <= r["epoch"] <= phase["last"]]
        x = [r["epoch"] - phase["first"] + 1 for r in rows]  # numbered within the phase, as the log and the progress bar number them
        markers = {"marker": "o", "markersize": 3 if len(x) > 3 else 5} if len(x) <= 30 else {}
        for row, key in enumerate(("loss", "accuracy")):
            ax = axes[row][column]
            if len(x) < 8:
                ax.set_xlim(0.5, len(x) + 0.5)
            ax.plot(x, [r[f"train_{key}"] for r in rows], color=TRAIN_COLOR, label="train", **markers)
            ax.plot(x, [r[f"val_{key}"] for r in rows], color=VAL_COLOR, label="validation", **markers)
            if kept is not None and phase["first"] <= kept <= phase["last"]:
                ax.axvline(kept - phase["first"] + 1, color=KEPT_COLOR, linestyle=":", linewidth=1.6, label=f"kept ({epoch_label(epochs, kept)})")
            bad = [(r["epoch"] - phase["first"] + 1, r["val_loss"]) for r in rows if r["epoch"] in flagged]
            if bad and key == "loss":
                ax.scatter(*zip(*bad), color=ALERT_COLOR, marker="x", s=36, zorder=5, label="overfitting")
            if len(x) < 8:
                ax.set_xticks(x)
            name = score if key == "accuracy" else key
            if len(phases) == 1:
                ax.set_title(name)
                ax.set_xlabel("epoch")
            elif row == 0:
                ax.set_title(f"{phase['name']} ({phase['epochs']} of at most {phase['planned']} epochs)")
            else:
                ax.set_xlabel(f"{phase['name']} epoch")
            if column == 0 and len(phases) > 1:
                ax.set_ylabel(name)
            if key == "accuracy" and percent:
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


def compare_labels(runs: Sequence[SavedRun]) -> list[str]:
    """Short, distinct names for runs side by side: the strategy, and where two share it, what tells them apart
    (the backbone, else the parts of the run names that differ, else a number), on a second line."""
    labels = [r.strategy for r in runs]
    for strategy in dict.fromkeys(labels):
        group = [i for i, label in enumerate(labels) if label == strategy]
        if len(group) < 2:
            continue
        backbones = [str(runs[i].training.get("backbone", "?")) for i in group]
        if len(set(backbones)) == len(group):
            suffixes = [_short(b, 18) for b in backbones]
        else:
            tokens = [re.split(r"[-_.\s]+", runs[i].directory.name) for i in group]
            common = set.intersection(*(set(t) for t in tokens))
            suffixes = [_short("-".join([t for t in parts if t not in common][-2:]), 18) for parts in tokens]
        for i, suffix in zip(group, suffixes):
            labels[i] = f"{strategy}\n{suffix}" if suffix else strategy
    counts: dict[str, int] = {}
    for i, label in enumerate(labels):  # still equal (same names in different folders): number them
        if labels.count(label) > 1:
            counts[label] = counts.get(label, 0) + 1
            labels[i] = f"{label} #{counts[label]}"
    return labels


@_styled
def _compare_figure(runs: Sequence[SavedRun], key: str = "accuracy", score: tuple[str, str] = ("accuracy", "accuracy")) -> Any:
    """Held-out ``key`` per run (with its 95% interval) and the validation score over every phase of each run,
    a diamond where a new phase (fine-tuning after the head warm-up) starts. ``score``: the names of the
    held-out score and of the records' per-epoch ``val_accuracy`` for the runs' task."""
    fig, (bars, curves) = _figure(10, 3.6, ncols=2)
    palette = ["#2563eb", "#16a34a", "#9333ea", "#0891b2", "#ca8a04"]
    names = compare_labels(runs)
    colors = ["#9ca3af" if r.strategy == "scratch" else palette[i % len(palette)] for i, r in enumerate(runs)]
    values = [(r.test or {}).get(key) or 0.0 for r in runs]
    spans = [interval_of(r.test, key) if r.test else None for r in runs]
    low = [max(0.0, v - s[0]) if s else 0.0 for v, s in zip(values, spans)]
    high = [max(0.0, s[1] - v) if s else 0.0 for v, s in zip(values, spans)]
    bars.bar(range(len(runs)), values, color=colors, yerr=[low, high], capsize=4, ecolor="#374151", error_kw={"linewidth": 1})
    for i, (v, s) in enumerate(zip(values, spans)):
        bars.annotate(f"{100 * v:.1f}%" if key == "accuracy" else f"{v:.3f}", (i, s[1] if s else v), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=9)
    crowded = len(runs) > 3
    bars.set_xticks(range(len(runs)), names, fontsize=8, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    bars.set_ylim(min(0.0, *[v - lo for v, lo in zip(values, low)]), 1.12)
    if key == "accuracy":
        bars.yaxis.set_major_formatter(_percent_formatter())
    bars.set_title(f"held-out {score[0]} (bars: 95% interval)")
    changed = False
    for r, color, name in zip(runs, colors, names):
        rows = r.history.get("epochs", [])
        if not rows:
            continue
        x = list(range(1, len(rows) + 1))
        marker = {"marker": "o", "markersize": 3} if len(rows) <= 30 else {}
        curves.plot(x, [row["val_accuracy"] for row in rows], color=color, label=name.replace("\n", " · "), linestyle="--" if r.strategy == "scratch" else "-", **marker)
        starts = [i for i in range(1, len(rows)) if rows[i]["phase"] != rows[i - 1]["phase"]]
        if starts:
            changed = True
            curves.scatter([x[i] for i in starts], [rows[i]["val_accuracy"] for i in starts], marker="D", s=40, color=color, edgecolors="#111827", zorder=5)
    if changed:
        curves.scatter([], [], marker="D", s=40, color="white", edgecolors="#111827", label="a new phase starts")
    from matplotlib.ticker import MaxNLocator

    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.set_xlabel("epoch, every phase (head warm-up, then fine-tuning)" if changed else "epoch")
    curves.set_title(f"validation {score[1]} per epoch")
    curves.yaxis.set_major_formatter(_percent_formatter())
    curves.legend(fontsize=8)
    fig.tight_layout()
    return fig


@_styled
def _scatter_figure(true: np.ndarray, predicted: np.ndarray, target: str) -> Any:
    """Predicted against true values of a regression run's held-out split, the diagonal (a perfect model) drawn."""
    fig, ax = _figure(4.8, 4.4)
    low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    pad = 0.04 * (high - low or 1.0)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="#9ca3af", linestyle="--", linewidth=1, label="predicted = true")
    jitter = len(np.unique(true)) <= 10  # few distinct targets (ELPV's four): spread the columns so their density shows
    x = true + (np.random.default_rng(0).uniform(-0.012, 0.012, len(true)) * (high - low or 1.0) if jitter else 0.0)
    ax.scatter(x, predicted, s=12 if len(true) <= 500 else 5, color=TRAIN_COLOR, alpha=0.55, linewidths=0)
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel(f"true {_short(target, 30)}" + (" (jittered)" if jitter else ""))
    ax.set_ylabel(f"predicted {_short(target, 30)}")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"
