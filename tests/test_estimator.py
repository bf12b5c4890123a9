"""TransferClassifier and TransferRegressor honour the scikit-learn contract on real data."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from headstart import TransferClassifier, TransferRegressor


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


# scikit-learn's checks, each accounted for (ported ones: test_contract_on_texts[CASE], test_sample_weight_changes_the_fit,
# test_class_weight_balanced). Its data checks feed numeric arrays (it skips them all when the tags
# say the input is not a 2-D table): those that test a classifier's contract are ported to texts below; the rest
# test numeric handling a model of texts and image paths does not have.
API_CHECKS = ("check_estimator_cloneable", "check_estimator_repr", "check_estimator_tags_renamed", "check_valid_tag_types", "check_no_attributes_set_in_init",
              "check_do_not_raise_errors_in_init_or_set_params", "check_mixin_order", "check_parameters_default_constructible", "check_get_params_invariance",
              "check_set_params", "check_estimators_unfitted", "check_non_transformer_estimators_n_iter", "check_n_features_in_after_fitting")  # fmt: skip
"""Checks that feed no data to ``fit`` (or stop before reading it): run as scikit-learn wrote them."""
SKIPPED = {
    "check_array_api_input": "numeric arrays of array-API namespaces (array_api_strict)",
    "check_complex_data": "complex numbers as features",
    "check_dtype_object": "numbers stored in an object array",
    "check_estimators_dtypes": "float32/int32/int64 feature tables",
    "check_estimators_nan_inf": "NaN or infinity among numeric features",
    "check_estimator_sparse_tag": "sparse numeric matrices (a sparse X is refused in one line: test_numeric_or_sparse_x_is_one_clear_error)",
    "check_estimator_sparse_array": "sparse numeric arrays (refused, as above)",
    "check_estimator_sparse_matrix": "sparse numeric matrices (refused, as above)",
    "check_f_contiguous_array_estimator": "the memory order of a 2-D feature table",
    "check_fit1d": "a 1-D numeric X must be refused; texts are 1-D (numeric X is refused: test_numeric_or_sparse_x_is_one_clear_error)",
    "check_fit2d_1feature": "a feature table of one column",
    "check_fit2d_1sample": "a feature table of one row",
    "check_fit2d_predict1d": "a 1-D row given to predict after a 2-D fit",
    "check_readonly_memmap_input": "read-only memory-mapped feature tables",
    "check_positive_only_tag_during_fit": "negative feature values",
    "check_n_features_in": "n_features_in_: there are no features (one text or path per example)",
    "check_estimators_partial_fit_n_features": "partial_fit, which TransferClassifier does not have",
    "check_decision_proba_consistency": "decision_function, which TransferClassifier does not have",
    "check_classifiers_one_label_sample_weights": "one label left after zero weights, on a numeric table (ported: test_contract_on_texts[one_label])",
    "check_sample_weight_equivalence_on_dense_data": "not exact here: repeating examples changes the held-out validation split early stopping reads "
                                                     "(weights of 1 equal no weights, larger ones move the fit: test_sample_weight_changes_the_fit)",
}
PORTED = {  # scikit-learn check -> the text version below
    "check_classifiers_train": "train", "check_fit_score_takes_y": "train", "check_estimators_fit_returns_self": "train",
    "check_classifiers_classes": "classes", "check_classifiers_one_label": "one_label", "check_classifiers_regression_target": "bad_y",
    "check_supervised_y_2d": "bad_y", "check_requires_y_none": "bad_y", "check_supervised_y_no_nan": "bad_y",
    "check_estimators_empty_data_messages": "bad_y", "check_estimators_overwrite_params": "params_and_state",
    "check_dont_overwrite_parameters": "params_and_state", "check_dict_unchanged": "params_and_state", "check_fit_check_is_fitted": "params_and_state",
    "check_fit_idempotent": "idempotent_and_pickle", "check_estimators_pickle": "idempotent_and_pickle",
    "check_methods_sample_order_invariance": "invariance", "check_methods_subset_invariance": "invariance",
    "check_classifier_data_not_an_array": "invariance", "check_pipeline_consistency": "invariance",
    "check_sample_weights_list": "sample_weight", "check_sample_weights_not_an_array": "sample_weight", "check_sample_weights_pandas_series": "sample_weight",
    "check_sample_weights_not_overwritten": "sample_weight", "check_sample_weights_shape": "sample_weight", "check_all_zero_sample_weights_error": "sample_weight",
    "check_class_weight_classifiers": "class_weight",
}  # fmt: skip


@parametrize_with_checks([TransferClassifier("minilm", epochs=3)])
def test_check_estimator(estimator, check):
    """What ``check_estimator`` runs for the estimator's truthful tags (it skips the data checks, accounted for above)."""
    check(estimator)


@pytest.mark.parametrize("check", API_CHECKS)
def test_sklearn_api_checks(check):
    """scikit-learn's own checks of the parameter contract, as written."""
    import sklearn.utils.estimator_checks as checks

    getattr(checks, check)("TransferClassifier", TransferClassifier())


def test_every_sklearn_check_is_run_ported_or_skipped_with_a_reason():
    """The checks scikit-learn would run if the tags claimed a numeric table: none is left unaccounted for."""
    from sklearn.utils.estimator_checks import estimator_checks_generator

    class ClaimsATable(TransferClassifier):
        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.input_tags.one_d_array, tags.input_tags.two_d_array, tags.input_tags.string = False, True, False
            return tags

    yielded = {getattr(check, "func", check).__name__ for _, check in estimator_checks_generator(ClaimsATable(), legacy=True)}
    accounted = set(API_CHECKS) | set(SKIPPED) | set(PORTED)
    assert yielded - accounted == set() and not set(API_CHECKS) & set(SKIPPED)


@pytest.fixture(scope="module")
def small(topics, tiny_text_backbone):
    """18 texts of 3 topics, a fast random-weight text backbone, and a classifier fitted on them."""
    texts, labels = topics
    keep = np.concatenate([np.flatnonzero(labels == c)[:6] for c in np.unique(labels)])
    texts, labels = [texts[i] for i in keep], labels[keep]
    make = lambda **kw: TransferClassifier(tiny_text_backbone, epochs=5, **kw)  # noqa: E731
    return make, texts, labels, make().fit(texts, labels)


def _train(make, texts, labels, fitted):
    proba = fitted.predict_proba(texts)
    assert proba.shape == (len(texts), 3) and np.allclose(proba.sum(1), 1)
    assert (fitted.predict(texts) == fitted.classes_[proba.argmax(1)]).all()
    assert 0 <= fitted.score(texts, labels) <= 1
    assert not hasattr(fitted, "n_features_in_") and not hasattr(fitted, "feature_names_in_")  # no features: one text per example


def _classes(make, texts, labels, fitted):
    assert list(fitted.classes_) == sorted(set(labels))
    numbers = np.array([{"computers": 10, "food": 2, "sports": 7}[x] for x in labels])
    clf = make().fit(texts, numbers)
    assert list(clf.classes_) == [2, 7, 10] and set(clf.predict(texts)) <= {2, 7, 10}


def _one_label(make, texts, labels, fitted):
    with pytest.raises(ValueError, match="class"):
        make().fit(texts[:4], ["a"] * 4)
    with pytest.raises(ValueError, match="class"):  # zero weights leave one class with weight
        make().fit(texts[:4], ["a", "a", "b", "b"], sample_weight=[1, 1, 0, 0])


def _bad_y(make, texts, labels, fitted):
    import warnings

    from sklearn.exceptions import DataConversionWarning

    with pytest.raises(ValueError, match="Unknown label type"):
        make().fit(texts, np.linspace(0, 1, len(texts)))
    with pytest.raises(ValueError, match="requires y to be passed"):
        make().fit(texts, None)
    with pytest.raises(ValueError, match="NaN"):
        make().fit(texts, np.where(np.arange(len(texts)) % 2, 1.0, np.nan))
    with pytest.raises(ValueError, match="0 samples"):
        make().fit([], [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = make().fit(texts, labels.reshape(-1, 1))
    assert any(issubclass(w.category, DataConversionWarning) for w in caught) and clf.predict(texts).shape == (len(texts),)


def _params_and_state(make, texts, labels, fitted):
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    clf = make(class_weight={"food": 2.0})
    before = clf.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)
    clf.fit(texts, labels)
    check_is_fitted(clf)
    assert clf.get_params() == before
    public = {k for k in vars(clf) if not k.startswith("_")}
    assert public - set(before) == {k for k in public - set(before) if k.endswith("_")}
    state = dict(vars(clf))
    clf.predict(texts[:3]), clf.predict_proba(texts[:3])
    assert vars(clf).keys() == state.keys() and all(vars(clf)[k] is v for k, v in state.items())


def _idempotent_and_pickle(make, texts, labels, fitted):
    import pickle

    again = make()
    assert again.fit(texts, labels) is again
    np.testing.assert_array_equal(again.predict_proba(texts), fitted.predict_proba(texts))  # seeded: the same weights
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).predict_proba(texts), fitted.predict_proba(texts))


def _invariance(make, texts, labels, fitted):
    from sklearn.pipeline import make_pipeline
    from sklearn.utils.estimator_checks import _NotAnArray

    proba = fitted.predict_proba(texts)
    order = np.random.default_rng(0).permutation(len(texts))
    np.testing.assert_allclose(fitted.predict_proba([texts[i] for i in order]), proba[order], atol=1e-6)
    np.testing.assert_allclose(np.concatenate([fitted.predict_proba(texts[:7]), fitted.predict_proba(texts[7:])]), proba, atol=1e-6)
    for form in (_NotAnArray(np.array(texts, dtype=object)), np.array(texts).reshape(-1, 1)):
        np.testing.assert_allclose(fitted.predict_proba(form), proba, atol=1e-6)
    assert make_pipeline(make()).fit(texts, labels).score(texts, labels) == fitted.score(texts, labels)


@pytest.mark.parametrize("case", ["train", "classes", "one_label", "bad_y", "params_and_state", "idempotent_and_pickle", "invariance"])
def test_contract_on_texts(case, small):
    """scikit-learn's classifier checks (see PORTED), on texts instead of numeric tables."""
    globals()[f"_{case}"](*small)


def test_numeric_or_sparse_x_is_one_clear_error():
    from scipy import sparse

    from headstart.errors import is_user_error

    for X, what in ((np.random.default_rng(0).normal(size=(6, 3)), r"a numeric array of shape \(6, 3\)"), ([1, 2, 3, 4], "a numeric array"),
                    (sparse.csr_matrix(np.eye(4)), "a sparse matrix: sparse input is not supported")):  # fmt: skip
        with pytest.raises(TypeError, match=f"TransferClassifier takes texts or image paths, got {what}") as info:
            TransferClassifier("minilm").fit(X, [0, 1] * 2 if len(np.shape(X)) and np.shape(X)[0] == 4 else [0, 1] * 3)
        assert is_user_error(info.value) and "\n" not in str(info.value)


def test_sample_weight_changes_the_fit(small):
    from sklearn.utils.estimator_checks import _NotAnArray

    make, texts, labels, fitted = small
    ones = make().fit(texts, labels, sample_weight=_NotAnArray(np.ones(len(texts))))
    np.testing.assert_allclose(ones.predict_proba(texts), fitted.predict_proba(texts), atol=1e-5)  # weights of 1: the unweighted fit
    weights = np.where(labels == "food", 20.0, 1.0)
    food = list(fitted.classes_).index("food")
    heavy = make().fit(texts, labels, sample_weight=list(weights))  # a list, as any array-like
    assert heavy.predict_proba(texts)[:, food].mean() > fitted.predict_proba(texts)[:, food].mean()
    with pytest.raises(ValueError, match="non-zero"):
        make().fit(texts, labels, sample_weight=np.zeros(len(texts)))
    with pytest.raises(ValueError):
        make().fit(texts, labels, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="strategy='contrastive'"):  # the end-to-end strategies weight their loss (tests/test_sample_weights.py); pairs are not weighted
        make(strategy="contrastive").fit(texts, labels, sample_weight=weights)
    assert weights[0] in (1.0, 20.0) and weights.sum() == 20 * (labels == "food").sum() + (labels != "food").sum()  # not overwritten


def test_class_weight_balanced(small):
    from sklearn.utils.class_weight import compute_sample_weight

    make, texts, labels, _ = small
    keep = np.flatnonzero((labels != "sports") | (np.arange(len(labels)) % 3 == 0))  # sports: a minority of 2
    texts, labels = [texts[i] for i in keep], labels[keep]
    balanced = make(class_weight="balanced").fit(texts, labels)
    same = make().fit(texts, labels, sample_weight=compute_sample_weight("balanced", labels))
    np.testing.assert_array_equal(balanced.predict_proba(texts), same.predict_proba(texts))
    assert not np.allclose(balanced.predict_proba(texts), make().fit(texts, labels).predict_proba(texts), atol=1e-4)  # it weighs in
    with pytest.raises(ValueError, match="class_weight="):
        make(class_weight="heavy").fit(texts, labels)


# ------------------------------------------------------------------ TransferRegressor and multi-label y (issue 27)
@parametrize_with_checks([TransferRegressor("minilm", epochs=3)])
def test_regressor_check_estimator(estimator, check):
    """What ``check_estimator`` runs for the regressor's truthful tags (the numeric-table checks are skipped, as for the classifier)."""
    check(estimator)


@pytest.mark.parametrize("check", API_CHECKS)
def test_regressor_sklearn_api_checks(check):
    import sklearn.utils.estimator_checks as checks

    getattr(checks, check)("TransferRegressor", TransferRegressor())


def test_regressor_contract_on_texts(small):
    """scikit-learn's regressor checks ported to texts: predictions shape, R² score, bad targets, clone and pickle."""
    import pickle

    from sklearn.metrics import r2_score

    make, texts, labels, _ = small
    y = np.array([{"computers": 3.0, "food": -1.0, "sports": 0.5}[x] for x in labels]) + np.linspace(0, 0.3, len(labels))
    reg = TransferRegressor(make().backbone, epochs=5)
    assert reg.get_params()["loss"] is None and not hasattr(reg, "model_")
    fitted = clone(reg).fit(texts, y)
    predictions = fitted.predict(texts)
    assert predictions.shape == (len(texts),) and predictions.dtype == np.float64
    assert fitted.score(texts, y) == pytest.approx(r2_score(y, predictions))
    assert fitted.__sklearn_tags__().estimator_type == "regressor" and fitted.__sklearn_tags__().input_tags.string
    np.testing.assert_allclose(pickle.loads(pickle.dumps(fitted)).predict(texts), predictions)
    np.testing.assert_allclose(clone(reg).fit(texts, y * 100 + 7).predict(texts), predictions * 100 + 7, rtol=1e-2, atol=1.0)  # standardised targets (to float32 rounding)
    with pytest.raises(ValueError, match="numeric targets"):
        clone(reg).fit(texts, labels)
    with pytest.raises(ValueError, match="NaN"):
        clone(reg).fit(texts, np.where(np.arange(len(y)) % 2, y, np.nan))
    with pytest.raises(ValueError, match="requires y"):
        clone(reg).fit(texts, None)
    with pytest.raises(ValueError, match="loss='l1'"):
        TransferRegressor(loss="l1").fit(texts, y)


def test_multilabel_indicator_y(small):
    """A 0/1 matrix y trains a multi-label model, as scikit-learn's multi-label classifiers: predict is a 0/1 matrix."""
    make, texts, labels, _ = small
    y = np.stack([labels == "food", labels != "sports", np.arange(len(labels)) % 2 == 0], axis=1).astype(int)
    clf = make().fit(texts, y)
    proba, predicted = clf.predict_proba(texts), clf.predict(texts)
    assert proba.shape == predicted.shape == y.shape and set(np.unique(predicted)) <= {0, 1} and list(clf.classes_) == [0, 1, 2]
    assert clf.model_.task.name == "multilabel" and 0 <= clf.score(texts, y) <= 1  # subset accuracy
    with pytest.raises(ValueError, match="class_weight"):
        make(class_weight="balanced").fit(texts, y)
