"""Layer-wise profile: how useful is each block's output for *this* dataset?

``profile(data, backbone=...)`` pools the output of every block (every k-th for deep models) in one
forward pass, caches it, and scores each block with a cross-validated linear probe and LogME. The
curve answers "how many layers do I freeze?": where it flattens, later blocks stop adding
information for the target; where it falls, they carry source-specific features (Yosinski et al.
2014) that fine-tuning would have to rewrite.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from headstart.analysis.probe_scores import probe_accuracy, strata
from headstart.analysis.transferability import leep, logme, target_kind
from headstart.backbones import Backbone, create_backbone, match_data, source_probabilities
from headstart.caches.embeddings import EmbeddingCache
from headstart.data import Dataset, load_dataset, make_loader, stratified_split
from headstart.io import atomic_write_text
from headstart.progress import Progress
from headstart.rundir import read_run_config
from headstart.training.evaluation import to_device

MAX_PROFILED_BLOCKS = 24
SHIFT_EXAMPLES = 128  # examples whose activation statistics are compared with the source's (enough for per-channel moments)


def labelled_examples(
    data: str | Path | Dataset, *, limit: int | None = None, seed: int = 0, text_column: str | None = None, label_column: str | None = None
) -> tuple[Dataset, list[Any], np.ndarray]:
    """``(dataset, items, labels)`` of the train and val splits, optionally a stratified subset of ``limit``.

    The labels keep the dataset's contract (int64 classes, float32 numeric targets, float32 0/1 rows
    for multi-label); a numeric target's subset is stratified over its deciles. The test split is
    left out: measuring on it would leak into whatever is chosen from the measurement.
    """
    dataset = data if isinstance(data, Dataset) else load_dataset(data, text_column=text_column, label_column=label_column, seed=seed)
    items: list[Any] = []
    parts = []
    for split in ("train", "val"):
        if split in dataset.splits:
            items += list(dataset.items(split))
            parts.append(dataset.labels(split))
    y = np.concatenate(parts)
    if limit is not None:
        groups = strata(y)
        needed = 2 * len(np.unique(groups)) if target_kind(y) == "classification" else 10
        if limit < needed:
            raise ValueError(f"limit={limit} is too small for {len(dataset.classes)} classes; use at least {needed}" if target_kind(y) == "classification"
                             else f"limit={limit} is too small for a cross-validated probe; use at least {needed}")  # fmt: skip
        if limit < len(items):
            _, taken = stratified_split(groups, limit / len(items), seed)
            items, y = [items[i] for i in taken], y[taken]
    return dataset, items, y


def profiled_blocks(backbone: Backbone, every: int | None = None) -> list[str]:
    """Names of the blocks to profile: all of them, or every ``every``-th (always with the last).

    By default deep models are thinned to at most ``MAX_PROFILED_BLOCKS`` points.
    """
    names = backbone.blocks.names()
    step = every if every is not None else max(1, math.ceil(len(names) / MAX_PROFILED_BLOCKS))
    if step < 1:
        raise ValueError(f"every={every} must be a positive integer")
    chosen = names[step - 1 :: step] if step > 1 else names
    return chosen if chosen and chosen[-1] == names[-1] else [*chosen, names[-1]]


def source_shift(backbone: Backbone, items: list[Any], *, batch_size: int = 32) -> dict[str, float] | None:
    """How far the target's activations drift from the source's, per block; ``None`` without BatchNorm.

    A BatchNorm layer stores the mean and variance of its input over the source data (ImageNet for
    the embedded CNNs): the source's feature statistics, shipped with the weights. For each such
    layer the target's per-channel mean and variance are measured on ``items`` and compared as the
    KL divergence ``KL(N(target) || N(source))``, averaged over channels, then over the layers of a
    block. Near 0 the block sees inputs like the source's; natural photos stay low through the
    network, far domains (X-rays, spectrograms, electroluminescence) rise with depth. Transformers
    (LayerNorm keeps no statistics) return ``None``.
    """
    owners = {}
    for block in backbone.blocks:
        for module in block.module.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None and module.running_var is not None:
                owners[module] = block.name
    if not owners or not items:
        return None
    moments: dict[nn.Module, list[Any]] = {}  # module -> [count, per-channel mean, sum of squared deviations]

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        # Each batch's per-channel mean and variance in the activations' own precision and layout (no float64
        # copy of every map: that was half of this function's time), merged across batches in float64 (Chan et al.).
        x = inputs[0].detach()
        var, mean = torch.var_mean(x, dim=[d for d in range(x.ndim) if d != 1], correction=0)
        n, mean, var = x.numel() // x.shape[1], mean.double().cpu(), var.double().cpu()
        if module not in moments:
            moments[module] = [n, mean, var * n]
            return
        count, running_mean, m2 = moments[module]
        delta = mean - running_mean
        moments[module] = [count + n, running_mean + delta * (n / (count + n)), m2 + var * n + delta**2 * (count * n / (count + n))]

    hooks = [module.register_forward_hook(record) for module in owners]
    backbone.eval()
    try:
        with torch.inference_mode():
            for inputs, _ in make_loader(items, None, backbone.preprocessing, batch_size=batch_size):
                backbone(to_device(inputs, backbone.device))
    finally:
        for hook in hooks:
            hook.remove()
    per_block: dict[str, list[float]] = {}
    for module, (count, mean, m2) in moments.items():
        var = m2 / count + module.eps
        source_mean, source_var = module.running_mean.double().cpu(), module.running_var.double().cpu() + module.eps
        ratio = var / source_var
        kl = 0.5 * (ratio + (mean - source_mean) ** 2 / source_var - 1 - ratio.log())
        per_block.setdefault(owners[module], []).append(float(kl.mean()))
    return {block.name: float(np.mean(per_block[block.name])) for block in backbone.blocks if block.name in per_block}


@dataclass
class BlockScore:
    index: int
    block: str
    dim: int
    probe_accuracy: float
    probe_std: float
    logme: float
    shift: float | None = None  # source_shift of the block (None: no BatchNorm statistics to compare with)
    # The probe trained on as many examples as the head will (the train split), when that is fewer than a fold's
    # training part (train + val): what feature extraction is expected to reach (see profile). None: not fewer.
    probe_at_train: float | None = None
    probe_at_train_std: float | None = None

    def head_accuracy(self) -> tuple[float, float]:
        """(mean, std) of the probe at the head's training size when measured, else of the cross-validated probe."""
        if self.probe_at_train is None or self.probe_at_train_std is None:
            return self.probe_accuracy, self.probe_std
        return self.probe_at_train, self.probe_at_train_std


@dataclass
class Profile:
    """Per-block scores of one backbone on one dataset, and where the features stop helping.

    Attributes
    ----------
    plateau : str
        The first block whose probe accuracy is within ``tolerance`` of the best block's: the
        shallowest cut that loses (almost) nothing. Blocks after it add at most ``tolerance``.
    best : str
        The block with the highest probe accuracy.
    """

    backbone: str
    data: str
    n_examples: int
    classes: list[str]
    tolerance: float
    rows: list[BlockScore]
    seconds: dict[str, float] = field(default_factory=dict)
    class_counts: list[int] = field(default_factory=list)  # profiled examples per class (multi-label: positives per label; regression: none)
    source_leep: float | None = None  # LEEP of the backbone's own source head, when it has one (classes only)
    task: str = "classification"  # "regression": probe_accuracy holds R²; "multilabel": mAP (see probe_accuracy())

    @property
    def metric(self) -> str:
        """What the probe's score is: ``"accuracy"``, ``"R²"`` or ``"mAP"``."""
        return {"regression": "R²", "multilabel": "mAP"}.get(self.task, "accuracy")

    @property
    def chance(self) -> float:
        """The probe's score without information, the floor every probe is read against: the majority
        class's share (classes), 0 (R² of predicting the mean), or the mean share of positives per
        label (the average precision of a random ranking is the label's prevalence)."""
        if self.task == "regression":
            return 0.0
        if self.task == "multilabel":
            return float(np.mean(self.class_counts)) / self.n_examples if self.class_counts and self.n_examples else 0.0
        return max(self.class_counts) / sum(self.class_counts) if self.class_counts else 1 / len(self.classes)

    @property
    def strength(self) -> float:
        """Chance-corrected best probe score, ``(best - chance) / (1 - chance)``: the share of the
        task the frozen features already solve (1: every example right; 0: no better than the chance
        floor; for a numeric target this is the best R² itself)."""
        top = max(r.probe_accuracy for r in self.rows)
        return (top - self.chance) / (1 - self.chance) if self.chance < 1 else 1.0

    @property
    def mean_shift(self) -> float | None:
        """Mean :func:`source_shift` over the profiled blocks (``None`` without BatchNorm statistics)."""
        shifts = [r.shift for r in self.rows if r.shift is not None]
        return float(np.mean(shifts)) if shifts else None

    @property
    def leep_gain(self) -> float | None:
        """Share of the label entropy the source classes explain: ``1 + LEEP / H(Y)`` (0: the source
        predictions say nothing about the target labels, 1: they determine them)."""
        if self.source_leep is None or len(self.class_counts) < 2:
            return None
        p = np.asarray(self.class_counts, dtype=np.float64) / sum(self.class_counts)
        entropy = float(-(p[p > 0] * np.log(p[p > 0])).sum())
        return 1 + self.source_leep / entropy if entropy > 0 else None

    @property
    def best(self) -> str:
        return max(self.rows, key=lambda r: r.probe_accuracy).block

    @property
    def plateau(self) -> str:
        top = max(r.probe_accuracy for r in self.rows)
        return next(r.block for r in self.rows if r.probe_accuracy >= top - self.tolerance)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "data": self.data,
            "n_examples": self.n_examples,
            "classes": self.classes,
            "tolerance": self.tolerance,
            "best": self.best,
            "plateau": self.plateau,
            "blocks": [r.__dict__ for r in self.rows],
            "seconds": self.seconds,
            "class_counts": self.class_counts,
            "source_leep": self.source_leep,
            "task": self.task,
        }

    def to_markdown(self) -> str:
        lines = [f"| # | block | dim | probe {self.metric} | LogME | shift from source |", "|---:|---|---:|---:|---:|---:|"]
        for r in self.rows:
            mark = " (plateau)" if r.block == self.plateau else ""
            mark += " (best)" if r.block == self.best else ""
            shift = "" if r.shift is None else f"{r.shift:.3f}"
            lines.append(f"| {r.index} | {r.block}{mark} | {r.dim} | {r.probe_accuracy:.3f} ± {r.probe_std:.3f} | {r.logme:.3f} | {shift} |")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """Inverse of :meth:`to_dict` (the derived ``best`` and ``plateau`` are recomputed)."""
        rows = [BlockScore(**row) for row in data["blocks"]]
        return cls(data["backbone"], data["data"], data["n_examples"], list(data["classes"]), data["tolerance"], rows, dict(data.get("seconds", {})),
                   list(data.get("class_counts", [])), data.get("source_leep"), data.get("task", "classification"))  # fmt: skip

    def plot(self, path: str | Path) -> Path:
        """Write a PNG of probe accuracy and LogME against depth, the plateau block marked."""
        import matplotlib.pyplot as plt

        fig = self.figure()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path

    def figure(self) -> Any:
        """The matplotlib figure :meth:`plot` saves (the run report embeds it)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        x = [r.index for r in self.rows]
        fig, left = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        left.errorbar(x, [r.probe_accuracy for r in self.rows], yerr=[r.probe_std for r in self.rows], marker="o", color="tab:blue", capsize=2)
        left.set_ylabel(f"linear probe {self.metric} (CV)", color="tab:blue")
        left.set_xticks(x, [r.block for r in self.rows], rotation=45, ha="right", fontsize=8)
        right = left.twinx()
        right.plot(x, [r.logme for r in self.rows], marker="s", color="tab:orange")
        right.set_ylabel("LogME", color="tab:orange")
        plateau = next(r for r in self.rows if r.block == self.plateau)
        left.axvline(plateau.index, color="grey", linestyle="--")
        left.text(plateau.index, 0.03, f" plateau: {plateau.block} ", transform=left.get_xaxis_transform(), fontsize=8,
                  ha="right" if plateau.index > (x[0] + x[-1]) / 2 else "left", va="bottom", color="dimgrey")  # fmt: skip
        left.set_title(f"{self.backbone} on {Path(self.data).name} (n={self.n_examples})", fontsize=10)
        fig.tight_layout()
        return fig


def profile(
    data: str | Path | Dataset,
    *,
    backbone: str | Backbone | None = None,
    blocks: list[str | int] | None = None,
    every: int | None = None,
    limit: int | None = None,
    folds: int = 5,
    tolerance: float = 0.01,
    batch_size: int = 32,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    quiet: bool = True,
    text_column: str | None = None,
    label_column: str | None = None,
    run: str | Path | None = None,
) -> Profile:
    """Score every block of ``backbone`` on ``data`` (train + val splits) with a linear probe and LogME.

    The probe and LogME follow the data's task (:func:`probe_accuracy`: accuracy, ridge R², or
    per-label logistic mAP; LogME's classification, regression or per-label form).

    Parameters
    ----------
    backbone : str or Backbone, optional
        Default: the source backbone of ``run`` (at the run's input size), else ``efficientnet_lite0``.
    run : path, optional
        A saved run; the result is also written to ``run/profile.json``, which the run's report
        shows (``headstart report RUN``).
    blocks : list of block names or indices, optional
        Default: every block, or every ``every``-th (see :func:`profiled_blocks`).
    limit : int, optional
        Use a stratified subset of this many examples (CPU budgets).
    folds : int, default=5
        Stratified folds of the cross-validated probe.
    tolerance : float, default=0.01
        Accuracy within which a block counts as "as good as the best" (defines ``plateau``).

    Examples
    --------
    >>> result = headstart.profile("data/pets", backbone="efficientnet_lite0", limit=400)  # doctest: +SKIP
    >>> result.plateau, result.best  # doctest: +SKIP
    """
    dataset, items, labels = labelled_examples(data, limit=limit, seed=seed, text_column=text_column, label_column=label_column)
    image_size = None
    if run is not None and backbone is None:
        config = read_run_config(run)
        if "training" not in config:
            raise ValueError(f"{run}: saved without its training record (save_pretrained); name its backbone (--backbone)")
        backbone, image_size = config["training"]["backbone"], config["preprocessing"].get("input_size")
    backbone = backbone or "efficientnet_lite0"
    model = match_data(backbone if isinstance(backbone, Backbone) else create_backbone(backbone), dataset, image_size=image_size)
    names = profiled_blocks(model, every) if blocks is None else [model.blocks[model.blocks.index_of(b)].name for b in blocks]
    started = time.perf_counter()
    with Progress(quiet=quiet) as progress:
        features, _ = EmbeddingCache(cache_dir).embed_blocks(model, items, names, batch_size=batch_size, progress=progress)
    embedded = time.perf_counter() - started
    shifted = items if len(items) <= SHIFT_EXAMPLES else [items[i] for i in stratified_split(strata(labels), SHIFT_EXAMPLES / len(items), seed)[1]]
    shifts = source_shift(model, shifted, batch_size=batch_size) or {}
    measured = time.perf_counter() - started
    rows = []
    for name in names:
        mean, std = probe_accuracy(features[name], labels, folds=folds, seed=seed)
        rows.append(BlockScore(model.blocks.index_of(name), name, features[name].shape[1], mean, std, logme(features[name], labels), shifts.get(name)))
    # The probe cross-validates on train + val, the head trains on train alone: on a small train split with a larger
    # val split the probe saw more examples than the head will, and overstated feature extraction (SMS spam at 25%:
    # 0.980 on train + val, 0.960 at the train split's size; BENCHMARKS.md "Issue 26"). The best and the last block
    # (feature extraction's candidates) are probed again at the train split's size.
    train_size = len(dataset.items("train")) if "train" in dataset.splits else None
    k = min(folds, int(np.bincount(labels).min())) if target_kind(labels) == "classification" else folds
    if train_size is not None and target_kind(labels) == "classification" and 2 * len(dataset.classes) <= train_size < len(items) * (k - 1) // k:
        best = max(rows, key=lambda r: r.probe_accuracy)
        for row in [best] if best is rows[-1] else [best, rows[-1]]:
            row.probe_at_train, row.probe_at_train_std = probe_accuracy(features[row.block], labels, folds=folds, seed=seed, train_size=train_size)
    last = model.blocks[-1].name
    task = target_kind(labels)
    probabilities = source_probabilities(model, features[last]) if last in features and task == "classification" else None
    source_leep = leep(probabilities, labels) if probabilities is not None else None
    seconds = {"features": embedded, "shift": measured - embedded, "scores": time.perf_counter() - started - measured}
    counts = {"classification": lambda: np.bincount(labels, minlength=len(dataset.classes)).tolist(), "regression": list,
              "multilabel": lambda: labels.sum(0).astype(int).tolist()}[task]()  # fmt: skip
    result = Profile(model.spec.name, str(dataset.source), len(items), dataset.classes, tolerance, rows, seconds, counts, source_leep, task)
    if run is not None:  # the run's report.html shows the plot (headstart report RUN)
        from headstart.rundir import PROFILE_NAME

        atomic_write_text(Path(run) / PROFILE_NAME, json.dumps(result.to_dict()))
    return result
