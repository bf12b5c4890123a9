"""``TransferClassifier`` and ``TransferRegressor``: scikit-learn estimators over image paths, PIL images or texts.

``TransferClassifier`` also takes a 2-D 0/1 ``y`` (scikit-learn's multi-label indicator matrix, as
``MLPClassifier`` and ``KNeighborsClassifier`` do): it then trains a multi-label model (:mod:`headstart.tasks`),
``predict`` returns a 0/1 matrix and ``predict_proba`` the per-label probabilities. One class, as in
scikit-learn, because the kind of ``y`` says which: a user's pipeline need not change estimator.

The constructor only stores parameters; ``fit`` validates them and learns (attributes ending in
``_``), so ``clone``, ``get_params``/``set_params``, pipelines and ``cross_val_score`` work.
Its input is a 1-D sequence of examples (texts, or paths of image or audio files), which its
scikit-learn tags say (``one_d_array``, ``string``; not ``two_d_array``): there are no numeric
features, so ``n_features_in_`` and ``feature_names_in_`` are not set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d

from headstart import api
from headstart.config import DEFAULTS, FitConfig
from headstart.data import as_items, from_examples
from headstart.errors import WrongType
from headstart.inference import predict_proba
from headstart.strategies import STRATEGIES
from headstart.tasks import get_task


def check_examples(X: Any) -> list[Any]:
    """``X`` as a list of examples: texts, paths (or PIL images); a numeric table is refused in one line.

    A single column of a 2-D array or DataFrame (what a ColumnTransformer passes) counts as 1-D.
    """
    if hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse"):
        raise WrongType("TransferClassifier takes texts or image paths, got a sparse matrix: sparse input is not supported")
    if hasattr(X, "__array__") and not hasattr(X, "__len__"):  # an array-like without len()
        X = np.asarray(X)
    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__"):
        raise WrongType(f"TransferClassifier takes a sequence of texts or image paths, got {type(X).__name__}; wrap a single example in a list")
    if hasattr(X, "to_numpy"):  # pandas Series or DataFrame
        X = X.to_numpy()
    if isinstance(X, np.ndarray):
        items, shape = list(X[:, 0] if X.ndim == 2 and X.shape[1] == 1 else X), X.shape
        flat = X.ndim == 1 or (X.ndim == 2 and X.shape[1] == 1)
    else:
        items, shape = list(X), (len(X),)
        flat = not any(isinstance(x, (list, tuple, np.ndarray)) for x in items[:100])
        if not flat:  # rows of values: their array says the shape and whether they are numbers
            try:
                X = np.asarray(items)
                shape = X.shape
            except ValueError:  # ragged rows
                pass
    numeric = (isinstance(X, np.ndarray) and X.dtype.kind in "biufc") or (bool(items) and all(_is_number(x) for x in items[:100]))
    if numeric or not flat:
        raise WrongType(f"TransferClassifier takes texts or image paths, got {'a numeric array' if numeric else 'rows of several values'} of shape {shape}; "
                        "for numeric features use a scikit-learn estimator on them (e.g. LogisticRegression), or pass one text or path per example")  # fmt: skip
    return items


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, complex, np.number, bool, np.bool_))


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """Classifier built on a pretrained backbone by transfer learning.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        Backbone name (``efficientnet_lite0``, ``minilm``, ``timm:ARCH``, ``hf:ID_OR_DIR`` or a run dir).
    strategy : {"feature-extraction", "fine-tune", "full", "scratch", "auto", ...}, default="feature-extraction"
        ``"auto"``: measure the data and take the advisor's cost-aware pick (:func:`headstart.advise`).
    budget : str, float or None, default=None
        With ``strategy="auto"``: a time budget ("10m", "90s" or seconds) for short trials of the
        leading candidates on a validation split; the winner trains with the time left.
    epochs, lr : int, float or None, default=None
        ``None`` keeps the strategy's default.
    trainable_blocks, freeze : int, float or None, default=None
        Fine-tuning depth (see :class:`headstart.strategies.FineTune`).
    hidden : int or None, default=None
        Hidden layer of the new head.
    dropout : float, default=0.0
    batch_size : int, default=32
    val_fraction : float, default=0.15
        Part of the training examples held out for early stopping.
    class_weight : "balanced", dict or None, default=None
        Weights of the classes in the training loss, as in scikit-learn (``"balanced"``: inversely
        proportional to class frequencies); multiplied with ``fit``'s ``sample_weight``. Weights are
        used where the head trains on cached features (``strategy="feature-extraction"``).
    seed : int, default=0
    cache_dir : str or None, default=None
        Embedding cache folder (default ``~/.cache/headstart``).

    Attributes
    ----------
    classes_ : ndarray
        Class labels, sorted.
    model_ : TransferModel
        The trained ``torch.nn.Module``.
    history_ : History
        Per-epoch training and validation curves.

    ``n_features_in_`` and ``feature_names_in_`` are not set: the input is one text or path per
    example, not a table of features.

    Notes
    -----
    ``GridSearchCV(..., n_jobs=2)`` is slower than ``n_jobs=1`` on a CPU (bench/estimator_jobs.py,
    BENCHMARKS.md): torch already uses every core in one process (joblib's workers get one thread
    each), and each worker process pays for importing torch and loading the backbone, and, with an
    empty embedding cache, embeds the same texts its sibling embeds. Leave ``n_jobs`` at 1.

    Examples
    --------
    >>> clf = TransferClassifier("minilm").fit(texts, labels)   # doctest: +SKIP
    >>> clf.predict(["free entry to win a prize"])              # doctest: +SKIP
    """

    def __init__(
        self,
        backbone: str = DEFAULTS.backbone,
        *,
        strategy: str = DEFAULTS.strategy,
        budget: str | float | None = DEFAULTS.budget,
        epochs: int | None = DEFAULTS.epochs,
        lr: float | None = DEFAULTS.lr,
        trainable_blocks: int | None = DEFAULTS.trainable_blocks,
        freeze: float | None = DEFAULTS.freeze,
        hidden: int | None = DEFAULTS.hidden,
        dropout: float = DEFAULTS.dropout,
        batch_size: int = DEFAULTS.batch_size,
        val_fraction: float = 0.15,
        class_weight: str | dict[Any, float] | None = None,
        seed: int = DEFAULTS.seed,
        cache_dir: str | None = DEFAULTS.cache_dir,
    ) -> None:
        self.backbone = backbone
        self.strategy = strategy
        self.budget = budget
        self.epochs = epochs
        self.lr = lr
        self.trainable_blocks = trainable_blocks
        self.freeze = freeze
        self.hidden = hidden
        self.dropout = dropout
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.class_weight = class_weight
        self.seed = seed
        self.cache_dir = cache_dir

    def _validate(self) -> None:
        _validate_common(self)
        if not (self.class_weight is None or self.class_weight == "balanced" or isinstance(self.class_weight, dict)):
            raise ValueError(f"class_weight={self.class_weight!r}; use None, 'balanced' or a dict class -> weight")

    def __sklearn_tags__(self) -> Any:
        """What the input is: a 1-D sequence of texts or paths, never a numeric 2-D table."""
        return _input_tags(super().__sklearn_tags__())

    def _config(self) -> FitConfig:
        return _config(self)

    def fit(self, X: Sequence[Any], y: Sequence[Any], sample_weight: Sequence[float] | None = None) -> TransferClassifier:
        """Train on examples ``X`` (image paths, PIL images or texts) with labels ``y``; ``sample_weight`` weights each example's loss."""
        self._validate()
        if y is None:
            raise ValueError("TransferClassifier requires y to be passed, but the target y is None")
        if np.ndim(y) == 2 and np.shape(y)[1] > 1 and type_of_target(y) == "multilabel-indicator":
            return self._fit_multilabel(check_examples(X), np.asarray(y), sample_weight)
        X, y = check_examples(X), column_or_1d(y, warn=True)  # a column vector y is accepted with scikit-learn's warning
        if not len(X):
            raise ValueError("TransferClassifier needs training examples: X has 0 samples")
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} examples but y has {len(y)} labels; pass one label per example")
        if y.dtype.kind in "fc" and not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity; give every example a label")
        check_classification_targets(y)  # a continuous y: "Unknown label type", as scikit-learn's classifiers say
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"y has only one class ({self.classes_[0]!r}); a classifier needs at least 2")
        weights = self._weights(X, y, sample_weight)
        data = from_examples(X, [str(v) for v in y], val_fraction=self.val_fraction, seed=self.seed, weights=weights)
        run = api.fit_config(data, self._config())
        self.model_ = run.model
        self.history_ = run.history
        self._columns = np.array([self.model_.classes.index(str(c)) for c in self.classes_])
        return self

    def _fit_multilabel(self, X: list[Any], y: np.ndarray, sample_weight: Sequence[float] | None) -> TransferClassifier:
        """A 0/1 indicator matrix ``y`` (n, labels): a multi-label model; ``classes_`` numbers the columns."""
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} examples but y has {len(y)} rows; pass one row of labels per example")
        if self.class_weight is not None:
            raise ValueError("class_weight weights classes of a single-label y; for a multi-label y pass sample_weight")
        weights = None if sample_weight is None else _check_sample_weight(sample_weight, np.empty((len(X), 0)), dtype=np.float64, ensure_non_negative=True)
        self.classes_ = np.arange(y.shape[1])
        data = from_examples(X, y, val_fraction=self.val_fraction, seed=self.seed, weights=weights, task="multilabel", names=[str(c) for c in self.classes_])
        run = api.fit_config(data, self._config())
        self.model_, self.history_ = run.model, run.history
        self._columns = np.arange(y.shape[1])
        return self

    def _weights(self, X: list[Any], y: np.ndarray, sample_weight: Sequence[float] | None) -> np.ndarray | None:
        """Per-example loss weights from ``sample_weight`` and ``class_weight`` (None when both are unset)."""
        if sample_weight is None and self.class_weight is None:
            return None
        weights = _check_sample_weight(sample_weight, np.empty((len(X), 0)), dtype=np.float64, ensure_non_negative=True)
        if self.class_weight is not None:
            weights = weights * compute_sample_weight(self.class_weight, y)
        if not weights.sum() > 0:
            raise ValueError("sample_weight: the weights sum to zero; at least one example must have a positive weight")
        if len(np.unique(y[weights > 0])) < 2:
            raise ValueError("sample_weight: only one class has examples of positive weight; a classifier needs at least 2")
        if self.strategy != "feature-extraction" and not np.all(weights == weights[0]):
            raise ValueError(f"sample_weight/class_weight weight the head trained on cached features (strategy='feature-extraction'); "
                             f"strategy={self.strategy!r} trains backbone batches without weights")  # fmt: skip
        return weights

    def predict_proba(self, X: Sequence[Any]) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self, "model_")
        return predict_proba(self.model_, as_items(check_examples(X), self.model_.modality))[:, self._columns]

    def predict(self, X: Sequence[Any]) -> np.ndarray:
        """Class labels; for a multi-label fit, the 0/1 matrix of labels at or above their validation-chosen thresholds."""
        proba = self.predict_proba(X)
        if self.model_.task.name == "multilabel":
            return (proba >= np.asarray(self.model_.thresholds if self.model_.thresholds is not None else 0.5)).astype(np.int64)
        return self.classes_[proba.argmax(axis=1)]


def _validate_common(estimator: BaseEstimator) -> None:
    if estimator.strategy not in (*STRATEGIES, "auto"):
        raise ValueError(f"strategy={estimator.strategy!r}; choose one of {[*STRATEGIES, 'auto']}")
    if not isinstance(estimator.backbone, str):
        raise TypeError(f"backbone must be a name (str), got {type(estimator.backbone).__name__}")
    if not 0.0 < estimator.val_fraction < 1.0:
        raise ValueError(f"val_fraction={estimator.val_fraction} must be between 0 and 1")
    _config(estimator).validate()


def _input_tags(tags: Any) -> Any:
    tags.input_tags.one_d_array, tags.input_tags.two_d_array, tags.input_tags.string = True, False, True
    return tags


def _config(estimator: BaseEstimator) -> FitConfig:
    """fit's options: the parameters that are FitConfig fields (all but val_fraction), never saved, never printing."""
    return replace(FitConfig.from_arguments(estimator.get_params(deep=False)), save=False, quiet=True)


class TransferRegressor(RegressorMixin, BaseEstimator):
    """Regressor built on a pretrained backbone by transfer learning: one number per text, image path or PIL image.

    The parameters are :class:`TransferClassifier`'s (without ``class_weight``), plus ``loss``
    (``"mse"`` or ``"huber"``). Targets are standardised with the training mean and standard
    deviation (``model_.target``) and predictions de-standardised; ``score`` is R² (``RegressorMixin``).
    ``sample_weight`` weights each example's loss where the head trains on cached features
    (``strategy="feature-extraction"``).

    Examples
    --------
    >>> reg = TransferRegressor("minilm").fit(texts, scores)   # doctest: +SKIP
    >>> reg.predict(["a fine film"])                           # doctest: +SKIP
    """

    def __init__(
        self,
        backbone: str = DEFAULTS.backbone,
        *,
        strategy: str = DEFAULTS.strategy,
        budget: str | float | None = DEFAULTS.budget,
        epochs: int | None = DEFAULTS.epochs,
        lr: float | None = DEFAULTS.lr,
        trainable_blocks: int | None = DEFAULTS.trainable_blocks,
        freeze: float | None = DEFAULTS.freeze,
        hidden: int | None = DEFAULTS.hidden,
        dropout: float = DEFAULTS.dropout,
        loss: str | None = DEFAULTS.loss,
        batch_size: int = DEFAULTS.batch_size,
        val_fraction: float = 0.15,
        seed: int = DEFAULTS.seed,
        cache_dir: str | None = DEFAULTS.cache_dir,
    ) -> None:
        self.backbone = backbone
        self.strategy = strategy
        self.budget = budget
        self.epochs = epochs
        self.lr = lr
        self.trainable_blocks = trainable_blocks
        self.freeze = freeze
        self.hidden = hidden
        self.dropout = dropout
        self.loss = loss
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.cache_dir = cache_dir

    def __sklearn_tags__(self) -> Any:
        """What the input is: a 1-D sequence of texts or paths, never a numeric 2-D table."""
        return _input_tags(super().__sklearn_tags__())

    def fit(self, X: Sequence[Any], y: Sequence[float], sample_weight: Sequence[float] | None = None) -> TransferRegressor:
        """Train on examples ``X`` with numeric targets ``y``; ``sample_weight`` weights each example's loss."""
        _validate_common(self)
        get_task("regression", loss=self.loss)  # refuses an unknown loss
        if y is None:
            raise ValueError("TransferRegressor requires y to be passed, but the target y is None")
        X = check_examples(X)
        y = column_or_1d(y, warn=True)
        if not len(X):
            raise ValueError("TransferRegressor needs training examples: X has 0 samples")
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} examples but y has {len(y)} targets; pass one number per example")
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError("TransferRegressor needs numeric targets y; for class labels use TransferClassifier") from None
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity; give every example a finite target")
        weights = None
        if sample_weight is not None:
            weights = _check_sample_weight(sample_weight, np.empty((len(X), 0)), dtype=np.float64, ensure_non_negative=True)
            if not weights.sum() > 0:
                raise ValueError("sample_weight: the weights sum to zero; at least one example must have a positive weight")
            if self.strategy != "feature-extraction" and not np.all(weights == weights[0]):
                raise ValueError(f"sample_weight weights the head trained on cached features (strategy='feature-extraction'); strategy={self.strategy!r} trains backbone batches without weights")
        data = from_examples(X, y, val_fraction=self.val_fraction, seed=self.seed, weights=weights, task="regression", names=["target"])
        run = api.fit_config(data, _config(self))
        self.model_, self.history_ = run.model, run.history
        return self

    def predict(self, X: Sequence[Any]) -> np.ndarray:
        """Predicted values, in the units of the training targets."""
        check_is_fitted(self, "model_")
        return predict_proba(self.model_, as_items(check_examples(X), self.model_.modality))
