"""What only the trained model can say about the held-out split, computed once at the end of a fit.

fastai's ``ClassificationInterpretation`` and TensorBoard's projector answer "where did the network
look?" and "how do the classes lie in feature space?". Both need the model, the report must not
(``headstart report RUN`` rebuilds a page from files), so :func:`interpret` runs while the model
is still in memory and keeps small data: a Grad-CAM heat map for each of the few highest-loss
examples of an image run, and a 2-D PCA projection of the pooled features. The report draws them
(:mod:`headstart.report.insights`); TensorBoard also gets the full features for its projector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from headstart.caches.embeddings import EmbeddingCache, iter_block_embeddings
from headstart.data.loaders import make_loader
from headstart.data.preprocessing import ImagePreprocessing
from headstart.model import TransferModel
from headstart.training import distributed
from headstart.training.evaluation import to_device

TOP_LOSSES = 8  # heat maps cost one forward and backward pass each: a bounded number
MAX_POINTS = 2000  # examples in the projection (evenly spread over the split when it has more): a trained body embeds them once more


@dataclass
class Interpretation:
    """``data`` is saved in the run (``interpretation.json``); the arrays go to trackers only."""

    data: dict[str, Any]
    labels: np.ndarray
    probs: np.ndarray
    classes: list[str]
    features: np.ndarray | None = None  # pooled features of the examples in data["projection"]["index"]
    index: list[int] = field(default_factory=list)


def interpret(
    model: TransferModel, items: Sequence[Any], labels: np.ndarray, probs: np.ndarray, *, split: str,
    cache: EmbeddingCache | None, batch_size: int, top: int = TOP_LOSSES,
) -> Interpretation:  # fmt: skip
    """Top losses (with heat maps for image runs) and the 2-D projection of ``items`` (one held-out split)."""
    n = len(items)
    losses = -np.log(np.clip(probs[np.arange(n), labels], 1e-12, None)) if n else np.empty(0)
    order = [int(i) for i in np.argsort(-losses, kind="stable")[:top]]
    maps = heat_maps(model, [items[i] for i in order], [int(probs[i].argmax()) for i in order], batch_size=batch_size) if order else None
    top_losses = [{"index": i, "loss": round(float(losses[i]), 6), "heatmap": None if maps is None else np.round(maps[j], 3).tolist()} for j, i in enumerate(order)]
    index = np.linspace(0, n - 1, MAX_POINTS).round().astype(int).tolist() if n > MAX_POINTS else list(range(n))
    features = pooled_features(model, [items[i] for i in index], cache=cache, batch_size=batch_size) if index else None
    data: dict[str, Any] = {"split": split, "n": n, "top_losses": top_losses, "heatmap": _heatmap_note(model) if maps is not None else None, "projection": None}
    if features is not None and min(features.shape) >= 2:
        points, explained = project(features)
        data["projection"] = {"method": "pca", "explained": [round(float(v), 6) for v in explained], "index": index, "points": np.round(points, 4).tolist()}
    return Interpretation(data, labels, probs, list(model.classes), features, index)


def pooled_features(model: TransferModel, items: Sequence[Any], *, cache: EmbeddingCache | None, batch_size: int) -> np.ndarray:
    """The backbone's pooled features of ``items``: from the cache when the body is frozen (feature extraction scored from there)."""
    frozen = not any(p.requires_grad for p in model.backbone.parameters())
    if cache is not None and frozen and not distributed.active():
        return cache.embed(model.backbone, items, batch_size=batch_size)[0]
    last = model.backbone.blocks[-1].name  # a trained body: computed, never cached (its weights are this run's alone)
    return np.concatenate([chunk[last] for _, chunk in iter_block_embeddings(model.backbone, items, [last], batch_size=batch_size)])


def project(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA of ``features``: the points and the share of variance each axis explains."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, svd_solver="full").fit(features.astype(np.float64))
    return pca.transform(features.astype(np.float64)), pca.explained_variance_ratio_


def can_heat_map(model: TransferModel) -> bool:
    """Whether Grad-CAM applies: an image backbone run as a sequence of stages (timm's families) whose outputs are spatial."""
    return model.modality == "image" and isinstance(model.preprocessing, ImagePreprocessing) and hasattr(model.backbone, "stages")


def heat_maps(model: TransferModel, items: Sequence[Any], targets: Sequence[int], *, batch_size: int = 16) -> np.ndarray | None:
    """Grad-CAM maps of ``items`` for the classes ``targets`` (``(n, h, w)`` in [0, 1]), or None when the model has no spatial maps."""
    if not can_heat_map(model):
        return None
    loader = make_loader(list(items), None, model.preprocessing, batch_size=batch_size)
    out, start = [], 0
    for inputs, _ in loader:
        maps = grad_cam(model, to_device(inputs, model.backbone.device), targets[start : start + len(inputs)])
        if maps is None:
            return None
        out.append(maps)
        start += len(inputs)
    return np.concatenate(out)


def grad_cam(model: TransferModel, inputs: torch.Tensor, targets: Sequence[int]) -> np.ndarray | None:
    """Grad-CAM (Selvaraju et al., 2017) at the backbone's last spatial block, each map scaled to a maximum of 1.

    The gradient of each target logit with respect to the block's output, averaged over positions,
    weighs its channels; the ReLU of the weighted sum is where evidence for that class lies. Token
    outputs (ViTs) are read as a square grid after the class/register tokens; a ViT pooled by its class
    token is read at the input of its last transformer block (after it, only the class token reaches
    the head). None when the maps are neither ``(B, C, H, W)`` nor a square token grid.
    """
    backbone = model.backbone
    stages = list(backbone.stages.values())
    split = _cam_block(backbone) + 1
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            maps = inputs
            for stage in stages[:split]:
                maps = stage(maps)
        with torch.enable_grad():
            maps = maps.detach().requires_grad_(True)  # the body may be frozen: the gradient starts here
            out = maps
            for stage in stages[split:]:
                out = stage(out)
            logits = model.head(backbone.pool(out))
            chosen = logits[torch.arange(len(targets)), torch.as_tensor(list(targets), device=logits.device)].sum()
            (grads,) = torch.autograd.grad(chosen, maps)
    finally:
        model.train(was_training)
    maps, grads = maps.detach(), grads.detach()
    if maps.ndim == 3:  # tokens (B, N, C): drop the prefix tokens, fold the rest into a square grid
        prefix = int(getattr(backbone, "_num_prefix_tokens", 1))
        side = int(round((maps.shape[1] - prefix) ** 0.5))
        if side < 1 or side * side != maps.shape[1] - prefix:
            return None
        maps, grads = (t[:, prefix:].transpose(1, 2).reshape(len(t), -1, side, side) for t in (maps, grads))
    if maps.ndim != 4:
        return None
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * maps).sum(1))
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).float().cpu().numpy()


def _cam_block(backbone: Any) -> int:
    """Index of the block whose output Grad-CAM reads: the last, or for a class-token ViT the one before its last transformer block."""
    last = len(backbone.stages) - 1
    if getattr(backbone, "pooling", None) == "token" and last >= 2:
        return last - 2  # skip the final norm and the last block: their class token alone is pooled
    return last


def _heatmap_note(model: TransferModel) -> dict[str, str]:
    """What the saved maps are: the report words it."""
    return {"method": "grad-cam", "target": "predicted class", "block": model.backbone.blocks[_cam_block(model.backbone)].name}


def interpret_held_out(
    model: TransferModel, dataset: Any, scored: tuple[str, Any, Any] | None, progress: Any, *, cache: EmbeddingCache | None, batch_size: int
) -> Interpretation | None:
    """:func:`interpret` for the split a fit scored last (``scored`` is its (split, labels, probabilities)); a failure is a warning in the log, not a failed fit."""
    if scored is None:
        return None
    split, labels, probs = scored
    try:
        return interpret(model, dataset.items(split), labels, probs, split=split, cache=cache, batch_size=batch_size)
    except Exception as error:  # noqa: BLE001 - the trained model is fine; the report then lacks these sections
        progress.log(f"warning: no heat maps or projection for the report ({type(error).__name__}: {error})")
        return None
