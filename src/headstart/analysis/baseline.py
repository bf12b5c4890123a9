"""The cheap baseline every text run is read against: TF-IDF + logistic regression (seconds, scikit-learn).

A pretrained encoder earns its cost only by beating what surface words already give; on sentence
sets such as SMS spam a bag-of-words model comes within a point of a frozen sentence encoder
(BENCHMARKS.md, "Issue 26"). ``fit`` records this baseline in metrics.json beside the transfer
result and the report says what the encoder bought over it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from headstart.data import Dataset


def bag_of_words_model() -> Any:
    """Word uni- and bigrams, sublinear TF-IDF, then a logistic regression (scikit-learn defaults otherwise)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1), LogisticRegression(max_iter=2000, C=10.0))


def bag_of_words(dataset: Dataset) -> dict[str, Any] | None:
    """Fit the baseline on the train split and score it on val and test; ``None`` for non-text data."""
    if dataset.modality != "text" or not dataset.items("train"):
        return None
    from sklearn.metrics import accuracy_score, f1_score

    started = time.perf_counter()
    model = bag_of_words_model().fit([str(t) for t in dataset.items("train")], np.asarray(dataset.labels("train")))
    result: dict[str, Any] = {"model": "TF-IDF (word 1-2 grams) + logistic regression, trained on train"}
    for split in ("val", "test"):
        if dataset.items(split):
            truth = np.asarray(dataset.labels(split))
            predicted = model.predict([str(t) for t in dataset.items(split)])
            result[split] = {"accuracy": float(accuracy_score(truth, predicted)), "macro_f1": float(f1_score(truth, predicted, average="macro")), "n": len(truth)}
    result["seconds"] = time.perf_counter() - started
    return result


def compare_with_bag_of_words(dataset: Dataset, metrics: dict[str, Any], progress: Any) -> None:
    """Add ``metrics["bag_of_words"]`` (the baseline's scores and the transfer model's gain over it) and say it in the log."""
    baseline = bag_of_words(dataset)
    last = "test" if "test" in metrics else "val" if "val" in metrics else None
    if baseline is None or last is None or last not in baseline:
        return
    baseline["gain"] = metrics[last]["accuracy"] - baseline[last]["accuracy"]
    metrics["bag_of_words"] = baseline
    progress.log(f"bag-of-words baseline ({baseline['model']}): {last} accuracy {baseline[last]['accuracy']:.4f} in {baseline['seconds']:.1f}s; "
                 f"the transfer model is {100 * baseline['gain']:+.1f} points from it")  # fmt: skip
