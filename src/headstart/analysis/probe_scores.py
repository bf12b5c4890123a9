"""The linear probe behind ``profile`` and the advisor, one per task, and how a subset is stratified.

A probe answers "how much of the target do these frozen features already solve, with a linear
model?". Its form follows the target (:func:`headstart.analysis.transferability.target_kind`):
accuracy of a logistic regression for classes, R² of ridge regression for a numeric target, and mAP
of per-label logistic regressions for multi-label targets.
"""

from __future__ import annotations

import warnings

import numpy as np

from headstart.analysis.transferability import target_kind

__all__ = ["probe_accuracy", "strata"]


def strata(labels: np.ndarray) -> np.ndarray:
    """Integer groups a subset of ``labels`` (a :class:`~headstart.data.Dataset`'s array) is stratified over, as the
    data splits are (:func:`headstart.data.targets.strata`): the class, a numeric target's quintile, an example's rarest label."""
    from headstart.data.targets import strata as split_strata

    kind = target_kind(labels)
    if kind == "classification":
        return labels
    values = [tuple(np.flatnonzero(row).tolist()) for row in labels] if kind == "multilabel" else labels
    _, codes = np.unique(np.asarray([str(v) for v in split_strata(kind, values)]), return_inverse=True)
    return codes.reshape(-1)


def probe_accuracy(features: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0, train_size: int | None = None) -> tuple[float, float]:
    """Mean and standard deviation over k folds of the task's linear probe on standardised features.

    ``train_size`` (classes only): each fold's probe trains on a stratified subset of this many of its
    training examples (the same held-out part scores it): the accuracy a head trained on that many reaches.

    * classes: stratified folds, logistic regression, accuracy;
    * a numeric target: ridge regression (its penalty chosen by efficient leave-one-out inside each
      training fold), R² on the held-out fold;
    * multi-label: one logistic regression per label, mean average precision (mAP) over the labels
      with a positive in the held-out fold: threshold-free, like LogME, and the report's headline
      ranking metric (a label constant in a training fold gets a constant score).
    """
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    kind = target_kind(labels)
    if kind == "classification":
        from sklearn.linear_model import LogisticRegression

        k = min(folds, int(np.bincount(labels).min()))
        if k < 2:
            raise ValueError("every class needs at least 2 examples for a cross-validated probe")
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        folded = StratifiedKFold(k, shuffle=True, random_state=seed).split(features, labels)
        if train_size is not None:
            from headstart.data import stratified_split

            folded = [(train[stratified_split(labels[train], train_size / len(train), seed)[1]] if train_size < len(train) else train, held_out)
                      for train, held_out in folded]  # fmt: skip
        scores = cross_val_score(probe, features, labels, cv=list(folded))
        return float(scores.mean()), float(scores.std())
    if len(labels) < 2 * folds:
        raise ValueError(f"a cross-validated probe needs at least {2 * folds} examples; got {len(labels)}")
    split = KFold(folds, shuffle=True, random_state=seed).split(features)
    if kind == "regression":
        from sklearn.linear_model import RidgeCV

        probe = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))
        scores = cross_val_score(probe, features, labels, cv=list(split), scoring="r2")
        return float(scores.mean()), float(scores.std())
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.multiclass import OneVsRestClassifier

    values = []
    for train, test in split:
        probe = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=2000)))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Label .*present in all training examples")
            scores = probe.fit(features[train], labels[train]).decision_function(features[test])
        present = labels[test].sum(0) > 0
        values.append(float(np.mean([average_precision_score(labels[test][:, j], scores[:, j]) for j in np.flatnonzero(present)])))
    return float(np.mean(values)), float(np.std(values))
