"""``TransferClassifier``: a scikit-learn estimator over image paths, PIL images or texts.

The constructor only stores parameters; ``fit`` validates them and learns (attributes ending in
``_``), so ``clone``, ``get_params``/``set_params``, pipelines and ``cross_val_score`` work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from headstart import api
from headstart.config import DEFAULTS, FitConfig
from headstart.data import as_items, from_examples
from headstart.inference import predict_proba
from headstart.strategies import STRATEGIES


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
        self.seed = seed
        self.cache_dir = cache_dir

    def _validate(self) -> None:
        if self.strategy not in (*STRATEGIES, "auto"):
            raise ValueError(f"strategy={self.strategy!r}; choose one of {[*STRATEGIES, 'auto']}")
        if not isinstance(self.backbone, str):
            raise TypeError(f"backbone must be a name (str), got {type(self.backbone).__name__}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={self.val_fraction} must be between 0 and 1")
        self._config().validate()

    def _config(self) -> FitConfig:
        """fit's options: the parameters that are FitConfig fields (all but val_fraction), never saved, never printing."""
        return replace(FitConfig.from_arguments(self.get_params(deep=False)), save=False, quiet=True)

    def fit(self, X: Sequence[Any], y: Sequence[Any]) -> TransferClassifier:
        """Train on examples ``X`` (image paths, PIL images or texts) with labels ``y``."""
        self._validate()
        X, y = list(X), np.asarray(y)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} examples but y has {len(y)} labels")
        self.classes_ = np.unique(y)
        data = from_examples(X, [str(v) for v in y], val_fraction=self.val_fraction, seed=self.seed)
        run = api.fit_config(data, self._config())
        self.model_ = run.model
        self.history_ = run.history
        self._columns = np.array([self.model_.classes.index(str(c)) for c in self.classes_])
        return self

    def predict_proba(self, X: Sequence[Any]) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self, "model_")
        return predict_proba(self.model_, as_items(list(X), self.model_.modality))[:, self._columns]

    def predict(self, X: Sequence[Any]) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]
