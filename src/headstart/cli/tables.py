"""The rich tables the commands print: per-class metrics, confusion matrix, layer-wise profile."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from headstart.metrics import describe, headline


def metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    """Per-class precision/recall/F1; a regression run's scores with their intervals; a multi-label run's per-label F1, AP, threshold and support."""
    from headstart.report.targets import SCORES, task_of

    task = task_of(metrics)
    if task != "classification":
        table = Table(title=title)
        if task == "regression":
            for col in ("score", "value", "95% interval"):
                table.add_column(col, justify="left" if col == "score" else "right")
            for key, label, _ in SCORES[task]:
                interval = (metrics.get("intervals") or {}).get(key)
                table.add_row(label, f"{metrics[key]:.4g}" if metrics.get(key) is not None else "-", f"{interval[0]:.4g} – {interval[1]:.4g}" if interval else "-")
        else:
            for col in ("label", "F1", "AP", "threshold", "support"):
                table.add_column(col, justify="right" if col != "label" else "left")
            for name, row in (metrics.get("per_label") or {}).items():
                table.add_row(name, f"{row['f1']:.3f}", "-" if row.get("ap") is None else f"{row['ap']:.3f}", f"{row['threshold']:.3f}", str(row["support"]))
        table.caption = headline(metrics)
        return table
    table = Table(title=title)
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for name, row in metrics["per_class"].items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    table.caption = f"{headline(metrics)} · balanced accuracy {describe(metrics, 'balanced_accuracy')}"
    return table


def confusion_table(metrics: dict[str, Any]) -> Table:
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for name in metrics["classes"]:
        table.add_column(name, justify="right")
    for name, row in zip(metrics["classes"], metrics["confusion_matrix"]):
        table.add_row(name, *map(str, row))
    return table


def profile_table(result: Any, *, folds: int | None = None) -> Table:
    """Per-block probe accuracy, LogME and shift from the source's statistics, the plateau marked (for `profile` and `advise`)."""
    table = Table(title=f"{result.backbone} on {result.data}: {result.n_examples} examples" + (f", {folds}-fold linear probe" if folds else ""))
    shifts = result.mean_shift is not None
    for col in ("#", "block", "dim", f"probe {result.metric}", "LogME", *(["shift"] if shifts else [])):
        table.add_column(col, justify="left" if col == "block" else "right")
    for r in result.rows:
        mark = " ← plateau" if r.block == result.plateau else ""
        cells = [str(r.index), r.block + mark, str(r.dim), f"{r.probe_accuracy:.3f} ± {r.probe_std:.3f}", f"{r.logme:.3f}"]
        table.add_row(*cells, *([f"{r.shift:.3f}" if r.shift is not None else ""] if shifts else []), style="bold" if mark else None)
    table.caption = f"plateau: {result.plateau} (first block within {result.tolerance * 100:g} points of the best, {result.best})"
    return table


def prediction_table(rows: list[dict[str, Any]], *, top_k: int, files: bool) -> Table:
    """One row per input (and rank when ``top_k`` > 1); files are shown relative to their common folder, named in the title,
    and long inputs wrap instead of being cut at the terminal's width."""
    import os

    names = [str(r["input"]) for r in rows]
    title = None
    if files and names:
        common = os.path.commonpath([os.path.dirname(n) or "." for n in names])
        if common not in ("", "."):
            title, names = f"files in {common}", [os.path.relpath(n, common) for n in names]
    table = Table(title=title)
    table.add_column("input", overflow="fold", ratio=1)
    if top_k > 1:
        table.add_column("rank", justify="right")
    table.add_column("label", overflow="fold")
    table.add_column("probability", justify="right", no_wrap=True)
    for name, row in zip(names, rows):
        first = row["rank"] == 1
        cells = [name if first else "", *([str(row["rank"])] if top_k > 1 else []), str(row["label"]), f"{row['probability']:.3f}"]
        table.add_row(*cells)
    return table
