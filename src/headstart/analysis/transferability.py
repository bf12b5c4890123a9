"""Transferability scores: how well frozen features suit a labelled target, before any training.

Each score is a function of ``(features, labels[, source_probabilities])`` and higher means "more
transferable". They are computed in float64 (the evidence of LogME and the covariance inverse of
H-score lose digits in float32) and vectorised, so 10k examples x 2k features take seconds.

* :func:`logme` - You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning", ICML 2021: the log marginal likelihood (evidence) per example of a Bayesian linear model
  from features to each one-hot label column, maximised over its prior and noise precisions. The
  paper defines it for regression too: a numeric target is one column (standardised, so the score
  does not depend on its unit), a multi-label target one 0/1 column per label, evidence averaged.
* :func:`leep` - Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned
  Representations", ICML 2020: log-likelihood of the empirical predictor that maps the source
  model's class probabilities to target labels. Needs a backbone with its source head.
* :func:`nce` - Tran et al., "Transferability and Hardness of Supervised Classification Tasks",
  ICCV 2019: negative conditional entropy of target labels given the source model's hard labels.
* :func:`h_score` - Bao et al., "An Information-Theoretic Approach to Transferability in Task
  Transfer Learning", ICIP 2019: ``tr(cov(f)^-1 cov(E[f|y]))``. With ``shrinkage=True`` the
  covariance is the Ledoit-Wolf estimate (Ibrahim et al., "Newer is not always better: rethinking
  transferability metrics", 2022), which keeps the inverse stable when features outnumber examples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["SCORES", "h_score", "leep", "logme", "nce", "score", "target_kind"]


def target_kind(labels: Any) -> str:
    """``"classification"`` (integer class indices), ``"regression"`` (a float per example) or ``"multilabel"`` (a 0/1 row per example).

    The data contract of :class:`headstart.data.Dataset`: ``labels(split)`` is int64 ``(n,)``,
    float32 ``(n,)`` raw targets or float32 ``(n, K)`` 0/1 indicators, so the array says its task.
    """
    array = np.asarray(labels)
    if array.ndim == 2:
        return "multilabel"
    return "regression" if array.ndim == 1 and np.issubdtype(array.dtype, np.floating) else "classification"


def _target_columns(labels: Any, n: int) -> np.ndarray:
    """The columns LogME regresses on: one-hot classes, the standardised numeric target, or the label indicators."""
    kind = target_kind(labels)
    if kind == "classification":
        codes, k = _encode_labels(labels, n)
        return np.eye(k)[codes]
    y = np.asarray(labels, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if y.shape[0] != n:
        raise ValueError(f"labels must hold one target per example ({n}); got shape {np.asarray(labels).shape}")
    if not np.isfinite(y).all():
        raise ValueError("targets contain NaN or infinite values")
    if kind == "multilabel":
        return y
    spread = y.std(0)
    if (spread == 0).any():
        raise ValueError("the numeric target is constant; there is nothing to predict")
    return (y - y.mean(0)) / spread


def _encode_labels(labels: Any, n: int) -> tuple[np.ndarray, int]:
    labels = np.asarray(labels)
    if target_kind(labels) != "classification":
        raise ValueError(f"this score is defined for class labels; for {target_kind(labels)} targets use logme")
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"labels must be a 1-D array with one label per example ({n}); got shape {labels.shape}")
    _, codes = np.unique(labels, return_inverse=True)
    k = int(codes.max()) + 1 if n else 0
    if k < 2:
        raise ValueError(f"transferability needs at least 2 classes; the labels hold {k}")
    return codes.reshape(-1), k


def _check_features(features: Any) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"features must be a 2-D array (examples, dims) with at least 2 rows; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("features contain NaN or infinite values; check the backbone's output (e.g. float16 overflow)")
    return array


def _check_probabilities(probabilities: Any, n: int) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != n:
        raise ValueError(f"source probabilities must have shape ({n}, source classes); got {p.shape}")
    if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-3):
        raise ValueError("source probabilities must be non-negative rows summing to 1 (apply softmax to the source logits)")
    return p


# ------------------------------------------------------------------------------------------------
# LogME
# ------------------------------------------------------------------------------------------------


def logme_evidence(singular_values: np.ndarray, projected: np.ndarray, target_norms: np.ndarray, n: int, dim: int, *, tol: float = 1e-7, max_iter: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximised evidence per example for each target column, from the features' thin SVD.

    With ``F = U diag(s) V^T`` and ``z = U^T y`` every quantity of the fixed-point iteration of
    MacKay/You et al. is a sum over the ``r = min(n, dim)`` singular directions, so all classes are
    updated at once at ``O(r K)`` per iteration. Returns ``(evidence / n, alpha, beta)`` per column.
    """
    sigma = singular_values**2  # eigenvalues of F^T F; the other dim - r are zero
    z = projected  # (r, K)
    outside = np.maximum(target_norms - (z**2).sum(0), 0.0)  # ||y||^2 - ||U^T y||^2: residual no weight can fit
    # With more features than examples the labels can be fitted exactly: the residual goes to 0 and
    # beta to infinity while the evidence converges. Below 1e-12 ||y||^2 the residual is rounding
    # noise anyway, so it is floored there and beta stays finite.
    floor = 1e-12 * np.maximum(target_norms, 1e-300)
    k = z.shape[1]
    alpha, beta = np.ones(k), np.ones(k)
    for _ in range(max_iter):
        denominator = alpha + beta * sigma[:, None]  # (r, K)
        gamma = (beta * sigma[:, None] / denominator).sum(0)
        m_sq = ((beta * singular_values[:, None] * z / denominator) ** 2).sum(0)  # ||m||^2
        residual = ((alpha * z / denominator) ** 2).sum(0) + outside  # ||F m - y||^2
        new_alpha = gamma / np.maximum(m_sq, 1e-300)
        new_beta = (n - gamma) / np.maximum(residual, floor)
        done = np.all(np.abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta))
        alpha, beta = new_alpha, new_beta
        if done:
            break
    denominator = alpha + beta * sigma[:, None]
    m_sq = ((beta * singular_values[:, None] * z / denominator) ** 2).sum(0)
    residual = np.maximum(((alpha * z / denominator) ** 2).sum(0) + outside, floor)
    log_det = np.log(denominator).sum(0) + (dim - len(sigma)) * np.log(alpha)  # log|alpha I + beta F^T F|
    evidence = (
        dim / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
        - beta / 2 * residual - alpha / 2 * m_sq - log_det / 2
    )
    return evidence / n, alpha, beta


def _thin_svd(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(U, s)`` of ``features``, through the eigen-decomposition of the smaller Gram matrix.

    ``F^T F`` (or ``F F^T``) costs one BLAS product and its ``eigh`` is a square problem of the
    smaller side, several times faster than a full SVD of a tall 10k x 2k matrix, and exact to
    float64 precision for the singular directions that carry evidence (tiny ones are dropped).
    """
    n, d = features.shape
    if n >= d:
        eigenvalues, v = np.linalg.eigh(features.T @ features)
        keep = eigenvalues > eigenvalues.max() * 1e-12
        s = np.sqrt(eigenvalues[keep])
        u = (features @ v[:, keep]) / s
    else:
        eigenvalues, u = np.linalg.eigh(features @ features.T)
        keep = eigenvalues > eigenvalues.max() * 1e-12
        s, u = np.sqrt(eigenvalues[keep]), u[:, keep]
    return u, s


def logme(features: Any, labels: Any) -> float:
    """LogME: mean over target columns of the maximised log evidence per example (higher is better).

    Parameters
    ----------
    features : array of shape (n_examples, n_features)
        Frozen features of the target examples (any float dtype; computed in float64).
    labels : array of shape (n_examples,) or (n_examples, n_labels)
        Integer (or string) classes: one one-hot column per class (the paper's classification form).
        Floats: a numeric target, standardised to zero mean and unit variance, scored by the paper's
        regression form (one column; evidence per example shifts by ``-log(scale)`` with the unit,
        hence the standardisation). A 2-D 0/1 array: multi-label, one column per label, averaged.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300)
    >>> informative = np.eye(3)[y] + 0.1 * rng.normal(size=(300, 3))
    >>> logme(informative, y) > logme(rng.normal(size=(300, 3)), y)
    True
    """
    f = _check_features(features)
    y = _target_columns(labels, len(f))
    u, s = _thin_svd(f)
    evidence, _, _ = logme_evidence(s, u.T @ y, (y**2).sum(0), len(f), f.shape[1])
    return float(evidence.mean())


# ------------------------------------------------------------------------------------------------
# LEEP and NCE (need the source model's predictions)
# ------------------------------------------------------------------------------------------------


def leep(source_probabilities: Any, labels: Any) -> float:
    """LEEP: mean log-likelihood of the labels under the "expected empirical predictor".

    ``P(y | z)`` is estimated from the joint of target labels and source-class probabilities;
    each example's prediction is ``sum_z P(y | z) theta(z)``. Always <= 0; higher is better.
    """
    probabilities = np.asarray(source_probabilities)
    codes, k = _encode_labels(labels, probabilities.shape[0] if probabilities.ndim else -1)
    theta = _check_probabilities(probabilities, len(codes))
    joint = np.zeros((k, theta.shape[1]))
    np.add.at(joint, codes, theta)
    joint /= len(codes)
    conditional = joint / np.maximum(joint.sum(0, keepdims=True), 1e-300)  # P(y | z)
    likelihood = (theta * conditional[codes]).sum(1)
    return float(np.log(np.maximum(likelihood, 1e-300)).mean())


def nce(source_labels: Any, labels: Any) -> float:
    """NCE: ``-H(Y | Z)`` between target labels and the source model's hard labels (<= 0; higher is better)."""
    source = np.asarray(source_labels)
    if source.ndim == 2:  # probabilities or logits: take the hard label
        source = source.argmax(1)
    codes, k = _encode_labels(labels, len(source))
    _, z = np.unique(source, return_inverse=True)
    joint = np.zeros((k, int(z.max()) + 1))
    np.add.at(joint, (codes, z.reshape(-1)), 1.0)
    joint /= len(codes)
    conditional = joint / joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return float((joint[nonzero] * np.log(conditional[nonzero])).sum())


# ------------------------------------------------------------------------------------------------
# H-score
# ------------------------------------------------------------------------------------------------


def h_score(features: Any, labels: Any, *, shrinkage: bool = False) -> float:
    """H-score ``tr(cov(f)^+ cov(E[f | y]))`` (higher is better).

    Parameters
    ----------
    shrinkage : bool, default=False
        Use the Ledoit-Wolf shrunk covariance ``(1 - a) cov(f) + a mu I`` (scikit-learn's
        estimate of ``a``) and ``(1 - a) cov(E[f | y])``, as Ibrahim et al. (2022) do. Without it
        the pseudo-inverse of a rank-deficient covariance makes the score unstable when
        features outnumber examples.
    """
    f = _check_features(features)
    codes, k = _encode_labels(labels, len(f))
    n, d = f.shape
    f = f - f.mean(0)
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    means = np.zeros((k, d))
    np.add.at(means, codes, f)
    means /= counts[:, None]  # class means of centred features; cov(E[f|y]) = sum_k (n_k/n) mu_k mu_k^T
    covariance = f.T @ f / n
    weight = 1.0
    if shrinkage:
        from sklearn.covariance import ledoit_wolf_shrinkage

        a = float(ledoit_wolf_shrinkage(f, assume_centered=True))
        mu = np.trace(covariance) / d
        covariance = (1 - a) * covariance
        covariance[np.diag_indices(d)] += a * mu
        weight = 1 - a
    eigenvalues, vectors = np.linalg.eigh(covariance)
    keep = eigenvalues > eigenvalues.max() * 1e-12  # pseudo-inverse: drop directions with no variance
    projected = means @ vectors[:, keep]  # (K, r)
    return float(weight * ((counts / n)[:, None] * projected**2 / eigenvalues[keep]).sum())


def h_score_shrinkage(features: Any, labels: Any) -> float:
    """:func:`h_score` with the Ledoit-Wolf shrunk covariance (Ibrahim et al., 2022)."""
    return h_score(features, labels, shrinkage=True)


# ------------------------------------------------------------------------------------------------
# By name
# ------------------------------------------------------------------------------------------------

# name -> (function, what it reads: "features" or "source")
SCORES: dict[str, tuple[Callable[[Any, Any], float], str]] = {
    "logme": (logme, "features"),
    "hscore": (h_score, "features"),
    "hscore-shrinkage": (h_score_shrinkage, "features"),
    "leep": (leep, "source"),
    "nce": (nce, "source"),
}


def score(name: str, labels: Any, *, features: Any = None, source_probabilities: Any = None) -> float:
    """The score ``name`` (a key of :data:`SCORES`) of target ``labels``.

    LogME and H-score read ``features``; LEEP and NCE read ``source_probabilities`` (the softmax of
    the backbone's own source-task head).
    """
    if name not in SCORES:
        raise ValueError(f"Unknown transferability score {name!r}; choose one of {sorted(SCORES)}")
    function, reads = SCORES[name]
    if reads == "source":
        if source_probabilities is None:
            raise ValueError(f"{name} needs the source model's class probabilities; this backbone has no source head (use logme or hscore)")
        return function(source_probabilities, labels)
    if features is None:
        raise ValueError(f"{name} needs features")
    return function(features, labels)
