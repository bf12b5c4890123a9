"""Transferability scores against independent computations and their expected behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from headstart.analysis.transferability import _thin_svd, h_score, leep, logme, logme_evidence, nce, score


def _synthetic(n: int, d: int, k: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian class clusters in ``d`` dims; ``noise`` is the fraction of labels replaced at random."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.normal(size=(k, d)) * 1.5
    x = centres[y] + rng.normal(size=(n, d))
    flip = rng.random(n) < noise
    y = y.copy()
    y[flip] = rng.integers(0, k, flip.sum())
    return x, y


@pytest.mark.parametrize(("n", "d"), [(60, 8), (25, 40)])
def test_logme_matches_direct_evidence_maximisation(n: int, d: int) -> None:
    # The evidence of Bayesian linear regression is log N(t | 0, I/beta + F F^T/alpha); maximise it
    # directly over (log alpha, log beta) and compare with LogME's SVD fixed point.
    x, y = _synthetic(n, d, 2, 0.1, seed=n)
    t = (y == 1).astype(np.float64)

    def negative_evidence(log_params: np.ndarray) -> float:
        alpha, beta = np.exp(log_params)
        covariance = np.eye(n) / beta + x @ x.T / alpha
        return -multivariate_normal(np.zeros(n), covariance).logpdf(t) / n

    direct = minimize(negative_evidence, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 10000})
    u, s = _thin_svd(x)
    evidence, alpha, beta = logme_evidence(s, u.T @ t[:, None], np.array([t @ t]), n, d)
    assert evidence[0] == pytest.approx(-direct.fun, abs=1e-7)
    assert alpha[0] == pytest.approx(np.exp(direct.x[0]), rel=1e-3)
    assert beta[0] == pytest.approx(np.exp(direct.x[1]), rel=1e-3)


def test_logme_averages_one_vs_rest_evidence_over_classes() -> None:
    x, y = _synthetic(90, 6, 3, 0.0)
    u, s = _thin_svd(x)
    per_class = [logme_evidence(s, u.T @ (y == c).astype(float)[:, None], np.array([(y == c).sum()], float), 90, 6)[0][0] for c in range(3)]
    assert logme(x, y) == pytest.approx(np.mean(per_class))


def _naive_h_score(x: np.ndarray, y: np.ndarray) -> float:
    f = x - x.mean(0)
    g = np.empty_like(f)
    for i in range(len(f)):
        g[i] = f[y == y[i]].mean(0)
    cov_f = np.cov(f, rowvar=False, bias=True)
    cov_g = np.cov(g, rowvar=False, bias=True)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-12) @ cov_g))


def test_h_score_matches_closed_form() -> None:
    x, y = _synthetic(120, 10, 4, 0.2)
    assert h_score(x, y) == pytest.approx(_naive_h_score(x, y), rel=1e-8)


def test_shrunk_h_score_matches_ledoit_wolf_estimate() -> None:
    from sklearn.covariance import LedoitWolf

    x, y = _synthetic(40, 60, 3, 0.1)  # more features than examples: the plain inverse is degenerate
    estimate = LedoitWolf().fit(x)
    f = x - x.mean(0)
    g = np.stack([f[y == label].mean(0) for label in y])
    expected = np.trace(np.linalg.inv(estimate.covariance_) @ ((1 - estimate.shrinkage_) * np.cov(g, rowvar=False, bias=True)))
    assert h_score(x, y, shrinkage=True) == pytest.approx(expected, rel=1e-8)
    # the unregularised score saturates at K - 1 when features outnumber examples; shrinkage does not
    assert h_score(x, y) == pytest.approx(2.0, rel=1e-6)
    assert h_score(x, y, shrinkage=True) < 2.0


def test_leep_matches_hand_computation() -> None:
    theta = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    y = np.array([0, 1, 0])
    # joint P(y, z) = 1/3 * [[0.9 + 0.6, 0.1 + 0.4], [0.2, 0.8]]; P(z) = 1/3 * [1.7, 1.3]
    p_y_given_z = np.array([[1.5 / 1.7, 0.5 / 1.3], [0.2 / 1.7, 0.8 / 1.3]])
    expected = np.mean([np.log(theta[i] @ p_y_given_z[y[i]]) for i in range(3)])
    assert leep(theta, y) == pytest.approx(expected, rel=1e-12)


def test_nce_matches_hand_computation() -> None:
    z = np.array([0, 0, 0, 1, 1, 2])
    y = np.array(["a", "a", "b", "b", "b", "a"])
    # P(y|z): z=0 -> a 2/3, b 1/3; z=1 -> b 1; z=2 -> a 1
    expected = (2 / 6) * np.log(2 / 3) + (1 / 6) * np.log(1 / 3)
    assert nce(z, y) == pytest.approx(expected, rel=1e-12)
    assert nce(np.eye(3)[z], y) == pytest.approx(expected, rel=1e-12)  # probabilities: hard label taken


def _source_probabilities(x: np.ndarray, seed: int = 0) -> np.ndarray:
    logits = x @ np.random.default_rng(seed).normal(size=(x.shape[1], 7))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("name", ["logme", "hscore", "hscore-shrinkage", "leep", "nce"])
def test_scores_fall_as_label_noise_rises(name: str) -> None:
    values = []
    for noise in (0.0, 0.3, 0.6, 1.0):
        x, y = _synthetic(400, 12, 4, noise, seed=1)
        values.append(score(name, y, features=x, source_probabilities=_source_probabilities(x)))
    assert values == sorted(values, reverse=True), values


@pytest.mark.parametrize("name", ["logme", "hscore", "hscore-shrinkage", "leep", "nce"])
def test_scores_ignore_label_names_and_order(name: str) -> None:
    x, y = _synthetic(200, 10, 5, 0.2)
    permuted = np.array([3, 0, 4, 1, 2])[y]
    names = np.array(["e", "d", "c", "b", "a"])[y]
    p = _source_probabilities(x)
    reference = score(name, y, features=x, source_probabilities=p)
    assert score(name, permuted, features=x, source_probabilities=p) == pytest.approx(reference, rel=1e-9)
    assert score(name, names, features=x, source_probabilities=p) == pytest.approx(reference, rel=1e-9)


def test_float32_features_give_the_float64_score() -> None:
    x, y = _synthetic(300, 16, 3, 0.1)
    assert logme(x.astype(np.float32), y) == pytest.approx(logme(x.astype(np.float32).astype(np.float64), y), rel=1e-12)


def test_bad_inputs_raise_clear_errors() -> None:
    x, y = _synthetic(50, 4, 2, 0.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        logme(x, np.zeros(50, dtype=np.int64))
    with pytest.raises(ValueError, match="constant"):  # floats are a numeric target (the data contract), and a constant one says nothing
        logme(x, np.zeros(50))
    with pytest.raises(ValueError, match="for regression targets use logme"):
        score("hscore", np.linspace(0, 1, 50), features=x)
    with pytest.raises(ValueError, match="one label per example"):
        logme(x, y[:10])
    with pytest.raises(ValueError, match="NaN"):
        logme(np.full((50, 4), np.nan), y)
    with pytest.raises(ValueError, match="no source head"):
        score("leep", y, features=x)
    with pytest.raises(ValueError, match="Unknown transferability score"):
        score("logmee", y, features=x)
    with pytest.raises(ValueError, match="summing to 1"):
        leep(np.ones((50, 3)), y)


def test_logme_stays_finite_when_features_interpolate_the_labels() -> None:
    # 17 classes, 200 examples, 1280 non-negative features (like pooled CNN features): every label
    # column is fitted exactly, beta diverges in exact arithmetic while the evidence converges.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 17, 200)
    x = np.abs(rng.normal(size=(200, 1280))) + np.eye(17)[y] @ rng.normal(size=(17, 1280))
    assert np.isfinite(logme(x, y))
    assert logme(x, y) > logme(x, rng.permutation(y))


def test_logme_regression_ranks_features_that_predict_the_target_above_noise() -> None:
    rng = np.random.default_rng(0)
    signal, noise = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    y = (signal @ rng.normal(size=8) + 0.3 * rng.normal(size=200)).astype(np.float32)  # float32: the contract's numeric target
    assert logme(signal, y) > logme(noise, y) + 0.5
    assert logme(signal, 1000 * y + 7) == pytest.approx(logme(signal, y), rel=1e-6)  # the target's unit and offset do not matter
    partial = y[:, None] + 1.5 * y.std() * rng.normal(size=(200, 1))  # R^2 about 0.3
    assert logme(signal, y) > logme(np.hstack([partial, noise]), y) > logme(noise, y)  # partial information scores in between


def test_logme_regression_is_the_evidence_of_the_standardised_target() -> None:
    x, labels = _synthetic(80, 5, 2, 0.0)
    y = x[:, 0] * 2 + labels
    t = (y - y.mean()) / y.std()
    u, s = _thin_svd(x)
    assert logme(x, y.astype(np.float32)) == pytest.approx(logme_evidence(s, u.T @ t[:, None], np.array([t @ t]), 80, 5)[0][0], rel=1e-5)


def test_logme_multilabel_averages_the_label_columns() -> None:
    x, y = _synthetic(120, 6, 3, 0.0)
    indicators = np.stack([y == 0, y != 2], axis=1).astype(np.float32)  # two overlapping labels
    u, s = _thin_svd(x)
    columns = [logme_evidence(s, u.T @ c[:, None].astype(float), np.array([c.sum()], float), 120, 6)[0][0] for c in indicators.T]
    assert logme(x, indicators) == pytest.approx(np.mean(columns), rel=1e-6)
    assert logme(x, indicators) > logme(np.random.default_rng(1).normal(size=x.shape), indicators)
