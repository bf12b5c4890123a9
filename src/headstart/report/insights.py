"""The report's interpretation sections: most-confused pairs, top losses, PR and ROC curves, the feature projection.

What fastai's ``ClassificationInterpretation`` shows, from the run's files alone: ``metrics.json``
(confusion matrix), ``predictions.json`` (each held-out example's true class, prediction and the
probability of its true class) and ``interpretation.json`` (what :func:`headstart.report.interpret.interpret`
computed with the model at the end of the fit: top-loss heat maps and the 2-D projection).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from headstart.report.figures import KEPT_COLOR, TRAIN_COLOR, _figure, _png, _short, _styled, drawable
from headstart.rundir import SavedRun

CONFUSED_ROWS = 15
LEGEND_CLASSES = 12  # beyond this many classes the projection's legend would cover the points
VIEW_SIZE = 176  # pixels of the top-loss image and its heat map
EDGE = "#111827"  # outline of the misclassified points: visible on every class colour


def confused_section(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The most frequent (true → predicted) mistakes, most frequent first: what a confusion matrix of many classes hides."""
    classes = metrics.get("classes") or []
    if len(classes) < 2 or "confusion_matrix" not in metrics:
        return None
    matrix = np.asarray(metrics["confusion_matrix"], dtype=int)
    support = matrix.sum(1)
    pairs = sorted(((int(matrix[i, j]), i, j) for i in range(len(classes)) for j in range(len(classes)) if i != j and matrix[i, j] > 0), key=lambda t: (-t[0], t[1], t[2]))
    rows = [{"true": classes[i], "predicted": classes[j], "count": count, "share": count / support[i]} for count, i, j in pairs[:CONFUSED_ROWS]]
    return {"rows": rows, "pairs": len(pairs), "wrong": int(matrix.sum() - np.trace(matrix)), "n": int(matrix.sum()), "split": metrics.get("split", "test")}


def top_losses_section(run: SavedRun) -> dict[str, Any] | None:
    """The held-out examples with the highest loss, with the Grad-CAM heat map over each image when the run has them."""
    found, examples = run.interpretation or {}, run.predictions.get("examples") or []
    if not found.get("top_losses") or len(examples) != found.get("n"):
        return None
    image = run.predictions.get("modality") == "image"
    cards = []
    for entry in found["top_losses"]:
        example = examples[entry["index"]]
        card = {**example, "loss": entry["loss"], "view": None, "overlay": None, "snippet": None, "name": None}
        if image:
            card["name"] = Path(example["item"]).name if example["item"] else "(in-memory image)"
            if example["item"]:
                card["view"], card["overlay"] = heat_map_views(example["item"], entry.get("heatmap"), run.config.get("preprocessing") or {})
        else:
            text = str(example["item"] or "")
            card["snippet"] = text if len(text) <= 280 else text[:277] + "..."
        cards.append(card)
    return {"cards": cards, "split": found.get("split", "test"), "n": found["n"], "heatmap": found.get("heatmap") if image else None, "modality": run.predictions.get("modality")}


def heat_map_views(path: str, heatmap: list[list[float]] | None, preprocessing: dict[str, Any]) -> tuple[str | None, str | None]:
    """JPEG data URIs of the image as the model saw it (resized, centre-cropped) and of the heat map over it; None where unreadable."""
    from headstart.data import load_image

    try:
        picture = load_image(Path(path)).convert("RGB")
    except (OSError, ValueError):
        return None, None
    if preprocessing.get("kind") == "image":  # the crop the heat map's grid covers
        from headstart.data.preprocessing import ImagePreprocessing

        for step in ImagePreprocessing.from_dict(preprocessing).eval_transform().transforms[:2]:  # Resize, CenterCrop: PIL in, PIL out
            picture = step(picture)
    picture.thumbnail((VIEW_SIZE, VIEW_SIZE))
    if not heatmap:
        return jpeg_uri(picture), None
    return jpeg_uri(picture), jpeg_uri(overlay(picture, np.asarray(heatmap, dtype=np.float32)))


def overlay(picture: Any, heatmap: np.ndarray, alpha: float = 0.5) -> Any:
    """``picture`` (PIL) with ``heatmap`` (values in [0, 1], any grid) stretched over it in the jet colour map."""
    import matplotlib
    from PIL import Image

    grid = Image.fromarray(np.clip(heatmap, 0, 1).astype(np.float32), mode="F").resize(picture.size, Image.Resampling.BILINEAR)
    colours = matplotlib.colormaps["jet"](np.asarray(grid))[..., :3]
    blended = (1 - alpha) * np.asarray(picture, dtype=np.float32) / 255 + alpha * colours
    return Image.fromarray((255 * np.clip(blended, 0, 1)).astype(np.uint8))


def jpeg_uri(picture: Any) -> str:
    """A PIL image as a JPEG ``data:`` URI (the report fetches nothing)."""
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def binary_scores(run: SavedRun) -> tuple[str, np.ndarray, np.ndarray, np.ndarray] | None:
    """For a two-class run: the positive class (the rarer one in the split, the second on a tie), is-positive, its probability, predicted-positive."""
    examples = run.predictions.get("examples") or []
    classes = (run.test or {}).get("classes") or run.config.get("classes") or []
    truths = {e["true"] for e in examples}
    if len(classes) != 2 or not truths >= set(classes):
        return None
    counts = {c: sum(e["true"] == c for e in examples) for c in classes}
    positive = min(reversed(classes), key=lambda c: counts[c])
    actual = np.array([e["true"] == positive for e in examples])
    score = np.array([e["p_true"] if e["true"] == positive else 1.0 - e["p_true"] for e in examples])  # two classes: p(other) = 1 - p(true)
    return positive, actual, score, np.array([e["predicted"] == positive for e in examples])


def pr_roc_section(run: SavedRun) -> dict[str, Any] | None:
    """Precision-recall and ROC curves of a binary task, with average precision and ROC AUC, and where the model's decisions lie on them."""
    scored = binary_scores(run)
    if scored is None:
        return None
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    positive, actual, score, decided = scored
    precision, recall, _ = precision_recall_curve(actual, score)
    fpr, tpr, _ = roc_curve(actual, score)
    tp, fp = int((decided & actual).sum()), int((decided & ~actual).sum())
    point = {"precision": tp / (tp + fp) if tp + fp else None, "recall": tp / int(actual.sum()), "fpr": fp / int((~actual).sum())}
    numbers = {"ap": float(average_precision_score(actual, score)), "auc": float(roc_auc_score(actual, score)), "prevalence": float(actual.mean())}
    image = _png(_pr_roc_figure(recall, precision, fpr, tpr, point, numbers))
    return {"positive": positive, "n": len(actual), "positives": int(actual.sum()), **numbers, "point": point, "image": image, "split": run.predictions.get("split", "test")}


@_styled
def _pr_roc_figure(recall: np.ndarray, precision: np.ndarray, fpr: np.ndarray, tpr: np.ndarray, point: dict[str, Any], numbers: dict[str, float]) -> Any:
    fig, (pr, roc) = _figure(10, 3.6, ncols=2)
    pr.step(recall, precision, where="post", color=TRAIN_COLOR, label=f"model (AP {numbers['ap']:.3f})")
    pr.axhline(numbers["prevalence"], color="#9ca3af", linestyle="--", linewidth=1, label=f"chance ({100 * numbers['prevalence']:.0f}% positive)")
    roc.plot(fpr, tpr, color=TRAIN_COLOR, label=f"model (AUC {numbers['auc']:.3f})", drawstyle="steps-post")
    roc.plot([0, 1], [0, 1], color="#9ca3af", linestyle="--", linewidth=1, label="chance")
    if point["precision"] is not None:
        pr.scatter([point["recall"]], [point["precision"]], color=KEPT_COLOR, zorder=5, s=30, label="the model's decisions")
    roc.scatter([point["fpr"]], [point["recall"]], color=KEPT_COLOR, zorder=5, s=30, label="the model's decisions")
    for ax, (x, y, title) in zip((pr, roc), (("recall", "precision", "precision-recall"), ("false positive rate", "true positive rate (recall)", "ROC"))):
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.04)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(title)
        ax.legend(fontsize=8, loc="lower left" if ax is pr else "lower right")
    fig.tight_layout()
    return fig


def embedding_section(run: SavedRun) -> dict[str, Any] | None:
    """The held-out split's pooled features in 2-D (PCA), coloured by true class, mistakes marked."""
    projection = (run.interpretation or {}).get("projection")
    examples = run.predictions.get("examples") or []
    if not projection or not examples or max(projection["index"], default=-1) >= len(examples):
        return None
    classes = (run.test or {}).get("classes") or run.config.get("classes") or sorted({e["true"] for e in examples})
    chosen = [examples[i] for i in projection["index"]]
    true = np.array([classes.index(e["true"]) for e in chosen])
    wrong = np.array([e["true"] != e["predicted"] for e in chosen])
    numbered = not drawable(classes)
    names = [str(i) for i in range(len(classes))] if numbered else classes
    image = _png(_embedding_figure(np.asarray(projection["points"], dtype=float), true, wrong, names, projection["explained"]))
    return {"image": image, "n": len(chosen), "of": len(examples), "wrong": int(wrong.sum()), "explained": projection["explained"], "numbered": numbered, "classes": classes,
            "split": run.predictions.get("split", "test")}  # fmt: skip


@_styled
def _embedding_figure(points: np.ndarray, true: np.ndarray, wrong: np.ndarray, names: list[str], explained: list[float]) -> Any:
    import matplotlib

    k = len(names)
    palette = matplotlib.colormaps["tab10" if k <= 10 else "tab20" if k <= 20 else "turbo"]
    colours = [palette(i if k <= 20 else i / max(k - 1, 1)) for i in range(k)]
    fig, ax = _figure(6.6, 4.3)
    size = 18 if len(points) <= 500 else 8
    for c in range(k):
        mine = (true == c) & ~wrong
        ax.scatter(points[mine, 0], points[mine, 1], s=size, color=colours[c], alpha=0.75, linewidths=0, label=_short(names[c]) if k <= LEGEND_CLASSES else None)
    if wrong.any():  # crosses filled with the true class's colour; the legend's is grey, standing for any class
        ax.scatter(points[wrong, 0], points[wrong, 1], s=3 * size, c=[colours[c] for c in true[wrong]], marker="X", edgecolors=EDGE, linewidths=0.8)
        ax.scatter([], [], s=3 * size, color="#9ca3af", marker="X", edgecolors=EDGE, linewidths=0.8, label="misclassified")
    ax.set_xlabel(f"PC1 ({100 * explained[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * explained[1]:.0f}% of variance)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=1.3)
    fig.tight_layout()
    return fig
