"""What the report, the compare view, the CLI and the web app show for each task: which scores, how they are named.

A classification run reads as before (accuracy, balanced accuracy, macro F1). A regression run
(:mod:`headstart.tasks`) is told by MAE, RMSE and R² with their intervals, a predicted-against-true
scatter and its largest errors; a multi-label run by micro and macro F1, mAP, subset accuracy and
a per-label table (F1, AP, the threshold chosen on validation, support). Every view asks this
module instead of branching on the task itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from headstart.metrics import MIN_EXAMPLES, describe, span, too_few

# key, label, shown as a percentage: the held-out scores of each task, headline first
SCORES: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "classification": (("accuracy", "accuracy", True), ("balanced_accuracy", "balanced accuracy", True), ("macro_f1", "macro F1", False)),
    "regression": (("mae", "MAE", False), ("rmse", "RMSE", False), ("r2", "R²", False)),
    "multilabel": (("micro_f1", "micro F1", False), ("macro_f1", "macro F1", False), ("map", "mAP", False), ("subset_accuracy", "subset accuracy", True)),
}
# the score runs are compared on (higher is better; R² rather than MAE, which is in the target's unit)
COMPARED = {"classification": ("accuracy", "accuracy"), "regression": ("r2", "R²"), "multilabel": ("micro_f1", "micro F1")}
# what the per-epoch records' train_accuracy/val_accuracy hold for each task (headstart.tasks)
EPOCH_SCORE = {"classification": "accuracy", "regression": "1 − MSE (standardised)", "multilabel": "per-label accuracy"}
GALLERY_SIZE = 12


def task_of(metrics: dict[str, Any] | None) -> str:
    """The task a ``metrics.json`` entry (or a run's config) was written for; runs before issue 27 are classification."""
    return str((metrics or {}).get("task") or "classification")


def shown(metrics: dict[str, Any], key: str, percent: bool) -> str:
    """A score as a card shows it: ``87.5%`` or ``0.123``; ``–`` where it is missing."""
    value = metrics.get(key)
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"


def headline_cards(test: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(label, value, hint) cards of a regression or multi-label run's held-out scores, each hint its 95% interval."""
    task = task_of(test)
    split = test.get("split", "test")
    few = f"n = {test['n']}: too few examples to tell" if too_few(test) else f"n = {test['n']}"
    cards = []
    for i, (key, label, percent) in enumerate(SCORES[task]):
        hint = span(test, key, percent=percent) if test.get(key) is not None else ""
        cards.append((f"{split} {label}" if i == 0 else label, shown(test, key, percent), " · ".join(t for t in (hint, few if i == 0 else "") if t)))
    return cards


def regression_errors(predictions: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted values of the held-out examples a regression run saved."""
    examples = predictions.get("examples") or []
    return np.array([float(e["true"]) for e in examples]), np.array([float(e["predicted"]) for e in examples])


def worst_examples(predictions: dict[str, Any], task: str) -> tuple[list[dict[str, Any]], int]:
    """The held-out examples the report shows as mistakes, worst first, and how many are wrong.

    Classification: misclassified, most confident first. Regression: every example, largest absolute
    error first (each is "wrong" by some amount; the count is of all of them). Multi-label: examples
    whose predicted label set differs from the true one, most wrong labels first, then the
    largest score given to a wrong decision.
    """
    examples = predictions.get("examples") or []
    if task == "regression":
        ranked = sorted(examples, key=lambda e: -abs(float(e["predicted"]) - float(e["true"])))
        return [{**e, "error": float(e["predicted"]) - float(e["true"])} for e in ranked], len(examples)
    if task == "multilabel":
        cards = []
        for e in examples:
            true, predicted = set(e["true"]), set(e["predicted"])
            if true != predicted:
                scores = e.get("scores") or {}
                sure = max([scores.get(n, 0.5) for n in predicted - true] + [1 - scores.get(n, 0.5) for n in true - predicted])  # the surest wrong decision
                cards.append({**e, "missed": sorted(true - predicted), "extra": sorted(predicted - true), "wrong_labels": len(true ^ predicted), "sure": sure})
        return sorted(cards, key=lambda c: (-c["wrong_labels"], -c["sure"])), len(cards)
    wrong = sorted((e for e in examples if e["true"] != e["predicted"]), key=lambda e: -e["confidence"])
    return wrong, len(wrong)


def results_section(metrics: dict[str, Any], predictions: dict[str, Any]) -> dict[str, Any]:
    """The results section of a regression run (scores, scatter) or a multi-label run (scores, per-label table)."""
    from headstart.report.figures import _png, _scatter_figure

    task = task_of(metrics)
    section: dict[str, Any] = {
        "task": task, "split": metrics.get("split", "test"), "n": metrics["n"], "too_few": too_few(metrics), "min_examples": MIN_EXAMPLES,
        "scores": [(label, describe(metrics, key, percent=percent) if metrics.get(key) is not None else "–") for key, label, percent in SCORES[task]],
    }  # fmt: skip
    if task == "regression":
        true, predicted = regression_errors(predictions)
        target = metrics.get("target") if isinstance(metrics.get("target"), str) else "target"  # the target column's name
        section["target"] = target
        section["image"] = _png(_scatter_figure(true, predicted, target)) if len(true) else None
        section["bias"] = float((predicted - true).mean()) if len(true) else None
    else:
        per_label = metrics.get("per_label") or {}
        section["per_label"] = [(name, per_label[name]) for name in metrics.get("labels") or per_label if name in per_label]
    return section
