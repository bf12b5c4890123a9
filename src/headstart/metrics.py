"""Held-out metrics for a classifier, and how sure they are: the numbers a run reports and ``evaluate`` prints.

Every interval headstart shows comes from here, so the CLI, the report, the web app and
``metrics.json`` agree:

* accuracy: the Wilson score interval (right at small n and near 0 or 1, where the normal
  approximation gives "100% ± 0");
* balanced accuracy, macro F1, MCC and per-class F1: a seeded percentile bootstrap over the test
  examples (deterministic: the same predictions give the same interval). Resampling examples is
  resampling the cells of the confusion matrix, so the interval needs only the matrix (and older
  runs' ``metrics.json`` get one too);
* below :data:`MIN_EXAMPLES` held-out examples the words are "too few examples to tell": the
  bootstrap is then not given at all (8 perfect predictions resample to "100-100%"), Wilson still is.

:func:`rise_exceeds_noise` is the overfitting flag's noise rule (see :func:`headstart.outcome.overfitting`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
Z = 1.959963984540054  # the two-sided 95% normal quantile
MIN_EXAMPLES = 30  # below this many held-out examples: "too few examples to tell", no bootstrap interval
BOOTSTRAP_ROUNDS = 2000
BOOTSTRAP_SEED = 0
NOISE_SE = 2.0  # a validation-loss rise counts as overfitting only above this many standard errors of the mean per-example loss
BOOTSTRAPPED = ("balanced_accuracy", "macro_f1", "mcc")


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, MCC, per-class precision/recall/F1, the confusion matrix and 95% intervals."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        matthews_corrcoef,
        precision_recall_fscore_support,
    )

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(set(y_true.tolist())) > 1 else float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)) if len(y_true) else 0.0,
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": matrix,
        "classes": list(classes),
        "intervals": intervals(matrix, classes),
    }


def wilson(successes: int, n: int, z: float = Z) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # contains p also where float rounding would leave it out (p = 0 or 1)


def _scores(tp: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
    """Balanced accuracy, macro F1 and MCC of confusion matrices given by their diagonals, row and column sums
    (one matrix per leading index), as scikit-learn computes them (zero_division=0; balanced accuracy over present classes)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        present = rows > 0
        recall = np.where(present, tp / np.where(present, rows, 1), 0.0)
        balanced = recall.sum(-1) / np.maximum(present.sum(-1), 1)
        denominator = rows + cols
        f1 = np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)
        correct = tp.sum(-1)
        cov_ty = correct * n - (rows * cols).sum(-1)
        cov_yy = n * n - (cols * cols).sum(-1)
        cov_tt = n * n - (rows * rows).sum(-1)
        product = cov_yy * cov_tt
        mcc = np.where(product > 0, cov_ty / np.sqrt(np.where(product > 0, product, 1)), 0.0)
    return {"balanced_accuracy": balanced, "macro_f1": f1.mean(-1), "mcc": mcc, "f1": f1}


def bootstrap(matrix: Sequence[Sequence[int]], *, rounds: int = BOOTSTRAP_ROUNDS, seed: int = BOOTSTRAP_SEED) -> dict[str, np.ndarray]:
    """``rounds`` bootstrap resamples of the examples behind a confusion matrix, as the scores of each resample.

    Drawing n examples with replacement is a multinomial draw over the matrix's non-empty cells, so
    the cost is rounds x cells, whatever n is. Seeded: the same matrix gives the same resamples.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    k, n = counts.shape[0], int(counts.sum())
    cells = np.flatnonzero(counts)
    true, pred = np.divmod(cells, k)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts.ravel()[cells] / n, size=rounds).astype(np.float64)  # rounds x cells
    tp, rows, cols = np.zeros((rounds, k)), np.zeros((rounds, k)), np.zeros((rounds, k))
    for column, (i, j) in enumerate(zip(true, pred)):  # one pass over the non-empty cells (at most min(n, k*k))
        rows[:, i] += draws[:, column]
        cols[:, j] += draws[:, column]
        if i == j:
            tp[:, i] += draws[:, column]
    return _scores(tp, rows, cols, np.full(rounds, float(n)))


def intervals(matrix: Sequence[Sequence[int]], classes: Sequence[str] = ()) -> dict[str, Any]:
    """95% intervals of the scores of a confusion matrix: Wilson for accuracy, the bootstrap for the rest.

    ``too_few`` is True below :data:`MIN_EXAMPLES` examples; the bootstrap intervals are then ``None``.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    n = int(counts.sum())
    result: dict[str, Any] = {"confidence": CONFIDENCE, "n": n, "too_few": n < MIN_EXAMPLES, "min_examples": MIN_EXAMPLES,
                              "accuracy": list(wilson(int(np.trace(counts)) if n else 0, n)), "method": {"accuracy": "wilson"}}  # fmt: skip
    if n < MIN_EXAMPLES:
        result.update({key: None for key in BOOTSTRAPPED}, per_class_f1=None)
        return result
    scores = bootstrap(counts)
    tail = 100 * (1 - CONFIDENCE) / 2
    for key in BOOTSTRAPPED:
        result[key] = [float(v) for v in np.percentile(scores[key], [tail, 100 - tail])]
        result["method"][key] = f"bootstrap ({BOOTSTRAP_ROUNDS} resamples, seed {BOOTSTRAP_SEED})"
    low, high = np.percentile(scores["f1"], [tail, 100 - tail], axis=0)
    result["per_class_f1"] = {str(name): [float(a), float(b)] for name, a, b in zip(classes, low, high)}
    return result


def interval_of(metrics: dict[str, Any], key: str) -> list[float] | None:
    """The saved 95% interval of ``metrics[key]``, computed from the confusion matrix for runs saved before intervals were."""
    saved = metrics.get("intervals")
    if saved is None and "confusion_matrix" in metrics:
        saved = metrics["intervals"] = intervals(metrics["confusion_matrix"], metrics.get("classes", ()))
    return (saved or {}).get(key)


def too_few(metrics: dict[str, Any]) -> bool:
    return int(metrics.get("n", 0)) < MIN_EXAMPLES


def describe(metrics: dict[str, Any], key: str, *, percent: bool = True) -> str:
    """``"87.5% (95% CI 52.9-97.8%)"``: one score with its interval; the score alone where there is none
    (a bootstrap score below :data:`MIN_EXAMPLES` examples: :func:`headline` then says "too few examples to tell")."""
    value = metrics[key]
    shown = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.3f}")
    interval = span(metrics, key, percent=percent)
    return f"{shown(value)} ({interval})" if interval else shown(value)


def span(metrics: dict[str, Any], key: str, *, percent: bool = True) -> str:
    """``"95% CI 82.5–88.6%"``: the interval alone (for a card's hint), or "" where there is none."""
    interval = interval_of(metrics, key)
    if interval is None:
        return ""
    low, high = interval
    return f"95% CI {100 * low:.1f}–{100 * high:.1f}%" if percent else f"95% CI {low:.3f}–{high:.3f}"


def headline(metrics: dict[str, Any]) -> str:
    """The one line a run's held-out result is told in: accuracy and macro F1 with their intervals, n, and the small-n warning."""
    split = metrics.get("split", "test")
    line = f"{split} accuracy {describe(metrics, 'accuracy')}, macro F1 {describe(metrics, 'macro_f1', percent=False)}, n={metrics['n']}"
    if too_few(metrics):
        line += f": too few examples to tell (fewer than {MIN_EXAMPLES})"
    return line


def rise_exceeds_noise(rise: float, standard_error: float | None) -> bool:
    """Whether a validation-loss rise is larger than the noise of the validation set: more than
    :data:`NOISE_SE` standard errors of the mean per-example loss. Without an estimate (runs saved before
    it was recorded) any rise counts, as it did then; a NaN estimate (one validation example) is noise without bound."""
    if standard_error is None:
        return rise > 0
    if not math.isfinite(standard_error):
        return False
    return rise > NOISE_SE * standard_error
