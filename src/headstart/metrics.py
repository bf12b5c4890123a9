"""Held-out metrics for a classifier (and regression and multi-label targets, at the end), and how sure they are: the numbers a run reports and ``evaluate`` prints.

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
    if metrics.get("task") == "regression":
        return regression_headline(metrics)
    if metrics.get("task") == "multilabel":
        return multilabel_headline(metrics)
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


# Regression and multi-label targets (headstart.tasks): their scores, each with a seeded bootstrap interval over the examples.
REGRESSION_KEYS = ("mae", "rmse", "r2")
MULTILABEL_KEYS = ("micro_f1", "macro_f1", "map", "subset_accuracy")
_CHUNK = 250  # bootstrap resamples drawn at once (rounds x examples counts in memory)


def _resample_counts(n: int, rounds: int = BOOTSTRAP_ROUNDS, seed: int = BOOTSTRAP_SEED) -> Any:
    """Chunks of ``(rounds, n)`` multinomial counts: how often each example is drawn in each bootstrap resample (seeded)."""
    rng = np.random.default_rng(seed)
    for start in range(0, rounds, _CHUNK):
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=min(_CHUNK, rounds - start)).astype(np.float64)


def _interval_block(n: int, samples: dict[str, np.ndarray] | None, keys: Sequence[str]) -> dict[str, Any]:
    """The ``intervals`` entry in the shape classification metrics carry: ``key -> [low, high]`` or None below :data:`MIN_EXAMPLES`."""
    result: dict[str, Any] = {"confidence": CONFIDENCE, "n": n, "too_few": n < MIN_EXAMPLES, "min_examples": MIN_EXAMPLES, "method": {}}
    tail = 100 * (1 - CONFIDENCE) / 2
    for key in keys:
        if samples is None:
            result[key] = None
            continue
        values = samples[key][np.isfinite(samples[key])]
        result[key] = [float(v) for v in np.percentile(values, [tail, 100 - tail])] if len(values) else None
        result["method"][key] = f"bootstrap ({BOOTSTRAP_ROUNDS} resamples, seed {BOOTSTRAP_SEED})"
    return result


def _regression_scores(w: np.ndarray, y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """MAE, RMSE and R² of examples weighted by ``w`` (one row of counts per resample; rows sum to n)."""
    n = w.sum(-1)
    error = p - y
    sse = w @ (error * error)
    sst = w @ (y * y) - (w @ y) ** 2 / n
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1 - sse / np.where(sst > 0, sst, 1), np.nan)
    return {"mae": w @ np.abs(error) / n, "rmse": np.sqrt(sse / n), "r2": r2}


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, Any]:
    """MAE, RMSE and R² (in target units) with 95% bootstrap intervals; R² is NaN when the targets do not vary."""
    y, p = np.asarray(y_true, dtype=np.float64).reshape(-1), np.asarray(y_pred, dtype=np.float64).reshape(-1)
    n = len(y)
    point = {k: float(v[0]) for k, v in _regression_scores(np.ones((1, n)), y, p).items()} if n else dict.fromkeys(REGRESSION_KEYS, float("nan"))
    samples = None
    if n >= MIN_EXAMPLES:
        parts = [_regression_scores(w, y, p) for w in _resample_counts(n)]
        samples = {k: np.concatenate([part[k] for part in parts]) for k in REGRESSION_KEYS}
    return {"task": "regression", "n": n, **point, "intervals": _interval_block(n, samples, REGRESSION_KEYS)}


def _average_precision(w: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Average precision of one label (scikit-learn's definition, ties grouped) for each row of example weights ``w``."""
    order = np.argsort(-s, kind="stable")
    s, y, w = s[order], y[order], w[:, order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # the last position of each group of tied scores
    tp = np.cumsum(w * y, axis=-1)[:, ends]
    seen = np.cumsum(w, axis=-1)[:, ends]
    positives = tp[:, -1]
    gained = np.diff(np.concatenate([np.zeros((len(w), 1)), tp], axis=1), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(seen > 0, tp / np.where(seen > 0, seen, 1), 0.0)
        return np.where(positives > 0, (gained * precision).sum(-1) / np.where(positives > 0, positives, 1), np.nan)


def _multilabel_scores(w: np.ndarray, y: np.ndarray, pred: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Micro/macro F1, mAP, subset accuracy and per-label F1/AP for each row of example weights ``w``."""
    tp, fp, fn = w @ (y * pred), w @ ((1 - y) * pred), w @ (y * (1 - pred))
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.where(2 * tp + fp + fn > 0, 2 * tp + fp + fn, 1), 0.0)
        micro = np.where(2 * tp.sum(-1) + fp.sum(-1) + fn.sum(-1) > 0, 2 * tp.sum(-1) / np.maximum(2 * tp.sum(-1) + fp.sum(-1) + fn.sum(-1), 1e-300), 0.0)
    ap = np.stack([_average_precision(w, y[:, k], scores[:, k]) for k in range(y.shape[1])], axis=-1)
    present = ~np.isnan(ap)
    mean_ap = np.where(present.any(-1), np.where(present, ap, 0).sum(-1) / np.maximum(present.sum(-1), 1), np.nan)
    exact = (pred == y).all(1).astype(np.float64)
    return {"micro_f1": micro, "macro_f1": f1.mean(-1), "map": mean_ap, "subset_accuracy": w @ exact / w.sum(-1), "f1": f1, "ap": ap}


def multilabel_metrics(y_true: np.ndarray, scores: np.ndarray, thresholds: Sequence[float], names: Sequence[str]) -> dict[str, Any]:
    """Micro and macro F1, mean average precision (over labels with a positive example), subset accuracy (every label
    right) and per-label F1/AP/threshold/support, with 95% bootstrap intervals; predictions are ``scores >= thresholds``."""
    y, s = np.asarray(y_true, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    n, k = y.shape
    pred = (s >= np.asarray(thresholds, dtype=np.float64)[None, :]).astype(np.float64)
    point = _multilabel_scores(np.ones((1, n)), y, pred, s) if n else None
    samples = None
    if n >= MIN_EXAMPLES:
        parts = [_multilabel_scores(w, y, pred, s) for w in _resample_counts(n)]
        samples = {key: np.concatenate([part[key] for part in parts]) for key in MULTILABEL_KEYS}
    per_label = {
        str(name): {"f1": float(point["f1"][0, j]) if point else 0.0, "ap": None if point is None or np.isnan(point["ap"][0, j]) else float(point["ap"][0, j]),
                    "threshold": float(thresholds[j]), "support": int(y[:, j].sum())}
        for j, name in enumerate(names)
    }  # fmt: skip
    headline_scores = {key: (float(point[key][0]) if point is not None and np.isfinite(point[key][0]) else None) for key in MULTILABEL_KEYS}
    return {"task": "multilabel", "n": n, **headline_scores, "per_label": per_label, "labels": [str(x) for x in names],
            "intervals": _interval_block(n, samples, MULTILABEL_KEYS)}  # fmt: skip


def choose_thresholds(y_val: np.ndarray, scores_val: np.ndarray) -> list[float]:
    """Per label, the threshold on validation scores that maximises that label's F1 (halfway to the next lower score,
    so that a slightly lower test score still counts); 0.5 for a label without a positive validation example."""
    y, s = np.asarray(y_val, dtype=np.float64), np.asarray(scores_val, dtype=np.float64)
    chosen = []
    for k in range(y.shape[1]):
        positives = y[:, k].sum()
        if positives == 0:
            chosen.append(0.5)
            continue
        order = np.argsort(-s[:, k], kind="stable")
        ranked, truth = s[order, k], y[order, k]
        ends = np.r_[np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1]
        tp = np.cumsum(truth)[ends]
        f1 = 2 * tp / (positives + ends + 1)
        best = int(np.argmax(f1))
        lower = ranked[ends[best] + 1] if ends[best] + 1 < len(ranked) else 0.0
        chosen.append(float((ranked[ends[best]] + lower) / 2))
    return chosen


def regression_headline(metrics: dict[str, Any]) -> str:
    """``test MAE 0.12 (95% CI ...), RMSE ..., R² ..., n=...``: a regression run's held-out result in one line."""
    line = f"{metrics.get('split', 'test')} MAE {describe(metrics, 'mae', percent=False)}, RMSE {describe(metrics, 'rmse', percent=False)}, R² {describe(metrics, 'r2', percent=False)}, n={metrics['n']}"
    return line + (f": too few examples to tell (fewer than {MIN_EXAMPLES})" if too_few(metrics) else "")


def multilabel_headline(metrics: dict[str, Any]) -> str:
    """A multi-label run's held-out result in one line: micro F1, mAP and subset accuracy."""
    parts = [f"{label} {describe(metrics, key, percent=False) if metrics.get(key) is not None else 'n/a'}" for key, label in
             (("micro_f1", "micro F1"), ("macro_f1", "macro F1"), ("map", "mAP"), ("subset_accuracy", "subset accuracy"))]  # fmt: skip
    line = f"{metrics.get('split', 'test')} {', '.join(parts)}, n={metrics['n']}"
    return line + (f": too few examples to tell (fewer than {MIN_EXAMPLES})" if too_few(metrics) else "")
