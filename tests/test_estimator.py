"""TransferClassifier honours the scikit-learn contract on real data."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

from headstart import TransferClassifier


@pytest.fixture(scope="module")
def topics(topics_csv):
    with topics_csv.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], np.array([r["label"] for r in rows])


def test_params_and_clone():
    clf = TransferClassifier("minilm", strategy="feature-extraction", epochs=7)
    assert clf.get_params()["epochs"] == 7 and clf.get_params()["backbone"] == "minilm"
    clf.set_params(epochs=3)
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and not hasattr(twin, "model_")


def test_fit_predict_score_on_texts(topics):
    texts, labels = topics
    clf = TransferClassifier("minilm", epochs=40).fit(texts, labels)
    assert list(clf.classes_) == ["computers", "food", "sports"]
    proba = clf.predict_proba(texts[:5])
    assert proba.shape == (5, 3) and np.allclose(proba.sum(1), 1)
    assert set(clf.predict(texts)) <= set(clf.classes_)
    assert clf.score(texts, labels) > 0.8


def test_integer_labels_keep_their_order(topics):
    texts, labels = topics
    numbers = np.array([{"computers": 10, "food": 2, "sports": 7}[x] for x in labels])
    clf = TransferClassifier("minilm", epochs=30).fit(texts, numbers)
    assert list(clf.classes_) == [2, 7, 10]
    assert (clf.predict(texts) == numbers).mean() > 0.8


def test_cross_val_score(topics):
    texts, labels = topics
    scores = cross_val_score(TransferClassifier("minilm", epochs=30), texts, labels, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.6


def test_images_as_paths(elpv_folder):
    paths = sorted(str(p) for p in elpv_folder.rglob("*.png"))
    labels = [p.split("/")[-2] for p in paths]
    clf = TransferClassifier(epochs=10).fit(paths, labels)
    assert clf.predict(paths[:3]).shape == (3,)


def test_validation_happens_at_fit():
    clf = TransferClassifier(strategy="magic")  # constructing never fails
    with pytest.raises(ValueError, match="strategy='magic'"):
        clf.fit(["a", "b"], [0, 1])
    with pytest.raises(Exception, match="not fitted"):
        TransferClassifier().predict(["x"])


@pytest.mark.parametrize(
    "check",
    ["check_no_attributes_set_in_init", "check_get_params_invariance", "check_set_params", "check_parameters_default_constructible",
     "check_estimator_cloneable", "check_estimator_repr", "check_do_not_raise_errors_in_init_or_set_params"],
)
def test_sklearn_api_checks(check):
    """scikit-learn's own checks of the parameter contract. Its fitting checks feed numeric tables,
    which a classifier over images and texts rejects by design, so they are not run."""
    import sklearn.utils.estimator_checks as checks

    getattr(checks, check)("TransferClassifier", TransferClassifier())
