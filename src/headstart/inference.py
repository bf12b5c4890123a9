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
from headstart.metrics import classification_metrics
from headstart.model import TransferModel
from headstart.rundir import run_seed
from headstart.training.evaluation import evaluate_loader


@dataclass
class Prediction:
    item: str
    label: str
    probability: float
    probabilities: dict[str, float]



def from_pretrained(directory: str | Path) -> TransferModel:
    """Reload a saved run's model with its preprocessing (inverse of ``TransferModel.save_pretrained``)."""
    return TransferModel.from_pretrained(directory)


def _as_model(model: TransferModel | str | Path) -> TransferModel:
    return model if isinstance(model, TransferModel) else TransferModel.from_pretrained(model)


def predict_proba(
    model: TransferModel | str | Path, items: list[Any], *, batch_size: int = 64, cache: EmbeddingCache | None = None, images: DecodedImageCache | None = None
) -> np.ndarray:
    """Class probabilities ``(len(items), n_classes)`` for image paths, PIL images or texts.

    With a ``cache`` and a fully frozen backbone, embeddings come from (and go to) the cache and
    only the head runs: feature extraction never pays for the body twice. Otherwise, with
    ``images``, image files are read from the decoded-image cache (decoded there once if missing):
    the evaluation transform gives the same tensors from the cached pixels, and a fit's final
    scoring does not decode the JPEGs its training already decoded.
    """
    model = _as_model(model)
    views = model.preprocessing.views() if isinstance(model.preprocessing, ImagePreprocessing) else None
    if cache is not None and not any(p.requires_grad for p in model.backbone.parameters()) and not (views and len(views) > 1):
        features, _ = cache.embed(model.backbone, items, batch_size=batch_size)
        model.eval()
        with torch.inference_mode():
            logits = model.head(torch.from_numpy(features).to(model.backbone.device))
        return logits.float().softmax(-1).cpu().numpy()
    if images is not None and model.modality == "image":
        items, _ = images.prepare(items, model.preprocessing)
    loader = make_loader(items, None, model.preprocessing, batch_size=batch_size)
    _, probs, _ = evaluate_loader(model, loader, views=views)
    return probs


def predict(model: TransferModel | str | Path, items: list[Any], *, batch_size: int = 64) -> list[Prediction]:
    """Label and probability for each item (paths are read with the run's own preprocessing)."""
    model = _as_model(model)
    items = as_items(items, model.modality)
    check_items(items, model.modality)
    probs = predict_proba(model, items, batch_size=batch_size)
    out = []
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
    dataset = data if isinstance(data, Dataset) else load_dataset(data, seed=seed, text_column=text_column, label_column=label_column)
    if not dataset.items(split):
        split = next(s for s in ("test", "val", "train") if dataset.items(s))
    return score_split(model, dataset, split, batch_size=batch_size, cache=cache)[0]


def score_split(
    model: TransferModel, dataset: Dataset, split: str, *, batch_size: int, cache: EmbeddingCache | None, images: DecodedImageCache | None = None
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics of ``model`` on one split, with the labels (in the model's class order) and probabilities behind them.

    ``cache`` and ``images``: where embeddings and decoded images are read from (see :func:`predict_proba`).
    """
    unknown = sorted(set(dataset.classes) - set(model.classes))
    if unknown:
        raise ValueError(f"{dataset.source}: classes {unknown[:5]} are unknown to the model (it knows {model.classes})")
    remap = np.array([model.classes.index(c) for c in dataset.classes])
    labels = remap[dataset.labels(split)]
    probs = predict_proba(model, dataset.items(split), batch_size=batch_size, cache=cache, images=images)
    result = classification_metrics(labels, probs.argmax(1), model.classes)
    result["split"] = split
    result["loss"] = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean()) if len(labels) else float("nan")
    return result, labels, probs


def prediction_records(items: Sequence[Any], labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], *, split: str, modality: str) -> dict[str, Any]:
    """Per-example true and predicted class with confidence: what the report's gallery of mistakes reads.

    Image items are stored as absolute paths (the report makes thumbnails from them), texts as the
    first 1000 characters; in-memory images have no name and are stored as ``None``.
    """
    examples = []
    for item, y, row in zip(items, labels, probs):
        k = int(row.argmax())
        name = str(Path(item).resolve()) if isinstance(item, Path) else item[:1000] if isinstance(item, str) else None
        examples.append({"item": name, "true": classes[int(y)], "predicted": classes[k], "confidence": round(float(row[k]), 6), "p_true": round(float(row[int(y)]), 6)})
    return {"split": split, "modality": modality, "examples": examples}
