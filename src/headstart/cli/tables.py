"""The rich tables the commands print: per-class (per-label, regression) metrics, confusion matrix, layer-wise profile."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from headstart.metrics import describe, headline, span


def metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    """Per-class precision/recall/F1; per-label F1, AP and threshold (multilabel); MAE, RMSE and R² (regression)."""
    table = Table(title=title)
    if metrics.get("task") == "regression":
        for col in ("metric", "value", "95% interval"):
            table.add_column(col, justify="right" if col != "metric" else "left")
        for key, name in (("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R²")):
            table.add_row(name, f"{metrics[key]:.4g}", span(metrics, key, percent=False) or "-")
        table.caption = headline(metrics)
        return table
    if metrics.get("task") == "multilabel":
        for col in ("label", "F1", "AP", "threshold", "support"):
            table.add_column(col, justify="right" if col != "label" else "left")
        for name, row in metrics["per_label"].items():
            table.add_row(name, f"{row['f1']:.3f}", "-" if row["ap"] is None else f"{row['ap']:.3f}", f"{row['threshold']:.3f}", str(row["support"]))
        table.caption = headline(metrics)
        return table
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
    title, names = _inputs(rows, files)
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


def value_table(rows: list[dict[str, Any]], columns: list[str], *, files: bool) -> Table:
    """Predictions of a regression or multi-label model: one row per input, files relative to their common folder (as :func:`prediction_table`)."""
    title, names = _inputs(rows, files)
    table = Table(title=title)
    table.add_column("input", overflow="fold", ratio=1)
    for column in columns[1:]:
        table.add_column(column, overflow="fold", justify="right" if len(columns) == 2 else "left")
    for name, row in zip(names, rows):
        table.add_row(name, *(str(row[c]) for c in columns[1:]))
    return table


def _inputs(rows: list[dict[str, Any]], files: bool) -> tuple[str | None, list[str]]:
    """The table's title and its inputs: files relative to their common folder, which the title names."""
    import os

    names = [str(r["input"]) for r in rows]
    if files and names:
        common = os.path.commonpath([os.path.dirname(n) or "." for n in names])
        if common not in ("", "."):
            return f"files in {common}", [os.path.relpath(n, common) for n in names]
    return None, names
