"""Using a trained model: predictions, held-out metrics and reloading a saved run.

>>> model = headstart.from_pretrained("runs/pets")          # doctest: +SKIP
>>> headstart.predict(model, ["cat.jpg"])                   # doctest: +SKIP
>>> headstart.evaluate("runs/pets", "data/other_pets")      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart.caches.embeddings import EmbeddingCache
from headstart.caches.images import DecodedImageCache
from headstart.data import Dataset, as_items, check_items, load_dataset, make_loader
from headstart.data.preprocessing import ImagePreprocessing
from headstart.metrics import choose_thresholds, classification_metrics, multilabel_metrics, regression_metrics
from headstart.model import TransferModel
from headstart.rundir import run_seed
from headstart.training.evaluation import evaluate_loader


@dataclass
class Prediction:
    """One example's prediction: its class and probabilities; for regression its ``value`` (``label`` is the value written out,
    ``probability`` None); for multilabel its predicted ``labels`` (``label``: them joined by ``|``) and every label's probability."""

    item: str
    label: str
    probability: float | None
    probabilities: dict[str, float]
    value: float | None = None
    labels: list[str] | None = None



def from_pretrained(directory: str | Path) -> TransferModel:
    """Reload a saved run's model with its preprocessing (inverse of ``TransferModel.save_pretrained``)."""
    return TransferModel.from_pretrained(directory)


def _as_model(model: TransferModel | str | Path) -> TransferModel:
    return model if isinstance(model, TransferModel) else TransferModel.from_pretrained(model)


def predict_proba(
    model: TransferModel | str | Path, items: list[Any], *, batch_size: int = 64, cache: EmbeddingCache | None = None, images: DecodedImageCache | None = None
) -> np.ndarray:
    """Class probabilities ``(len(items), n_classes)`` for image paths, PIL images or texts; for a regression model the
    values in target units ``(len(items),)``, for a multi-label one each label's probability ``(len(items), n_labels)``.
    """
    model = _as_model(model)
    return model.task.decode(_outputs(model, items, batch_size=batch_size, cache=cache, images=images), model.target)


def _outputs(model: TransferModel, items: list[Any], *, batch_size: int, cache: EmbeddingCache | None, images: DecodedImageCache | None) -> np.ndarray:
    """The task's outputs (:meth:`~headstart.tasks.Task.outputs`: probabilities, or standardised values) for ``items``.

    With a ``cache`` and a fully frozen backbone, embeddings come from (and go to) the cache and
    only the head runs: feature extraction never pays for the body twice. Otherwise, with
    ``images``, image files are read from the decoded-image cache (decoded there once if missing):
    the evaluation transform gives the same tensors from the cached pixels, and a fit's final
    scoring does not decode the JPEGs its training already decoded.
    """
    views = model.preprocessing.views() if isinstance(model.preprocessing, ImagePreprocessing) else None
    if cache is not None and not any(p.requires_grad for p in model.backbone.parameters()) and not (views and len(views) > 1):
        features, _ = cache.embed(model.backbone, items, batch_size=batch_size)
        model.eval()
        with torch.inference_mode():
            logits = model.head(torch.from_numpy(features).to(model.backbone.device))
        return model.task.outputs(logits.float()).cpu().numpy()
    if images is not None and model.modality == "image":
        items, _ = images.prepare(items, model.preprocessing)
    loader = make_loader(items, None, model.preprocessing, batch_size=batch_size)
    _, probs, _ = evaluate_loader(model, loader, views=views, task=model.task)
    return probs


def predict(model: TransferModel | str | Path, items: list[Any], *, batch_size: int = 64) -> list[Prediction]:
    """Label and probability for each item (paths are read with the run's own preprocessing)."""
    model = _as_model(model)
    items = as_items(items, model.modality)
    check_items(items, model.modality)
    probs = predict_proba(model, items, batch_size=batch_size)
    out = []
    if model.task.name == "regression":
        return [Prediction(str(item)[:200], f"{v:.6g}", None, {}, value=float(v)) for item, v in zip(items, probs)]
    if model.task.name == "multilabel":
        thresholds = np.asarray(model.thresholds if model.thresholds is not None else [0.5] * len(model.classes))
        for item, row in zip(items, probs):
            chosen = [c for c, p, t in zip(model.classes, row, thresholds) if p >= t]
            out.append(Prediction(str(item)[:200], "|".join(chosen), None, {c: float(p) for c, p in zip(model.classes, row)}, labels=chosen))
        return out
    for item, row in zip(items, probs):
        k = int(row.argmax())
        out.append(Prediction(str(item)[:200], model.classes[k], float(row[k]), {c: float(p) for c, p in zip(model.classes, row)}))
    return out


def evaluate(
    model: TransferModel | str | Path,
    data: str | Path | Dataset,
    *,
    split: str = "test",
    batch_size: int = 64,
    text_column: str | None = None,
    label_column: str | None = None,
    cache: EmbeddingCache | None = None,
) -> dict[str, Any]:
    """Held-out metrics of a model (or run directory) on a split of ``data``.

    A run directory's own seed is used to split ``data``, so the run's training examples never
    land in its test split. Class names are matched by name, in any order.
    """
    seed = 0 if isinstance(model, TransferModel) else run_seed(model)
    model = _as_model(model)
    dataset = data if isinstance(data, Dataset) else load_dataset(data, seed=seed, text_column=text_column, label_column=label_column, task=model.task.name)
    if not dataset.items(split):
        split = next(s for s in ("test", "val", "train") if dataset.items(s))
    return score_split(model, dataset, split, batch_size=batch_size, cache=cache)[0]


def score_split(
    model: TransferModel, dataset: Dataset, split: str, *, batch_size: int, cache: EmbeddingCache | None, images: DecodedImageCache | None = None,
    choose: bool = False,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics of ``model`` on one split, with the labels (in the model's class order) and the predictions behind them
    (class probabilities; values in target units for regression; per-label probabilities for multilabel).

    ``cache`` and ``images``: where embeddings and decoded images are read from (see :func:`predict_proba`).
    ``choose``: a multi-label model first takes the per-label thresholds that maximise F1 on this split (validation).
    """
    if dataset.task != model.task.name:
        raise ValueError(f"{dataset.source}: a {dataset.task} dataset, but the model predicts {model.task.name} targets; read the data with --task {model.task.name}")
    if model.task.name == "regression":
        outputs = _outputs(model, dataset.items(split), batch_size=batch_size, cache=cache, images=images)
        labels, values = dataset.labels(split), model.task.decode(outputs, model.target)
        result = regression_metrics(labels, values)
        result["loss"] = float(model.task.output_losses(outputs, model.encoded_labels(labels)).mean()) if len(labels) else float("nan")
        return {**result, "split": split, "target": model.classes[0]}, labels, values
    unknown = sorted(set(dataset.classes) - set(model.classes))
    if unknown:
        raise ValueError(f"{dataset.source}: classes {unknown[:5]} are unknown to the model (it knows {model.classes})")
    remap = np.array([model.classes.index(c) for c in dataset.classes], dtype=np.int64)
    probs = predict_proba(model, dataset.items(split), batch_size=batch_size, cache=cache, images=images)
    if model.task.name == "multilabel":
        labels = np.zeros((len(probs), len(model.classes)), dtype=np.float32)
        labels[:, remap] = dataset.labels(split)
        if choose:
            model.thresholds = choose_thresholds(labels, probs)
        thresholds = model.thresholds if model.thresholds is not None else [0.5] * len(model.classes)
        result = multilabel_metrics(labels, probs, thresholds, model.classes)
        result["loss"] = float(model.task.output_losses(probs, labels).mean()) if len(labels) else float("nan")
        return {**result, "split": split}, labels, probs
    labels = remap[dataset.labels(split)]
    result = classification_metrics(labels, probs.argmax(1), model.classes)
    result["split"] = split
    result["loss"] = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean()) if len(labels) else float("nan")
    return result, labels, probs


def prediction_records(items: Sequence[Any], labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], *, split: str, modality: str,
                       task: str = "classification", thresholds: Sequence[float] | None = None) -> dict[str, Any]:  # fmt: skip
    """Per-example true and predicted targets: what the report's gallery of mistakes (or largest errors) reads.

    Classification: true and predicted class with confidence. Regression: ``true``, ``predicted`` (target units) and
    ``error`` (predicted - true). Multilabel: ``true`` and ``predicted`` label lists and every label's ``scores``.
    Image items are stored as absolute paths (the report makes thumbnails from them), texts as the
    first 1000 characters; in-memory images have no name and are stored as ``None``.
    """
    examples = []
    for item, y, row in zip(items, labels, probs):
        name = str(Path(item).resolve()) if isinstance(item, Path) else item[:1000] if isinstance(item, str) else None
        if task == "regression":
            examples.append({"item": name, "true": float(y), "predicted": round(float(row), 6), "error": round(float(row) - float(y), 6)})
        elif task == "multilabel":
            limits = thresholds if thresholds is not None else [0.5] * len(classes)
            examples.append({"item": name, "true": [c for c, t in zip(classes, y) if t > 0.5], "predicted": [c for c, p, t in zip(classes, row, limits) if p >= t],
                             "scores": {c: round(float(p), 6) for c, p in zip(classes, row)}})  # fmt: skip
        else:
            k = int(row.argmax())
            examples.append({"item": name, "true": classes[int(y)], "predicted": classes[k], "confidence": round(float(row[k]), 6), "p_true": round(float(row[int(y)]), 6)})
    return {"split": split, "modality": modality, "task": task, "examples": examples}
