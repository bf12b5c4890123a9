"""What each way of fitting is expected to score and to cost, from what ``profile`` measured.

The advisor (:mod:`headstart.analysis.advisor`) compares a few candidates: feature extraction at the
block the probe chose, fine-tuning the top half of the blocks, the case rule's fine-tune (every
block but the first for small data, every block for large), and for text a bag-of-words model.

**Expected accuracy** (a model, not a promise; set on the 26 cells of the advisor grid, BENCHMARKS.md):

* feature extraction: the linear probe's cross-validated accuracy at its block (``± its fold spread``),
  trained on as many examples as the head will train on when the train split is smaller than a
  fold's training part of train + val (:class:`headstart.analysis.probes.BlockScore` ``probe_at_train``);
* fine-tuning every block: that plus a share of its headroom ``1 - probe``, growing with the
  examples per class ``n``: ``RECOVERED * n / (n + HALF_N)`` (a quarter of the headroom at 100 per
  class, at most half). On the grid, fine-tuning recovered 0-10% of the headroom below 40 examples
  per class and 20-65% from 60 up;
* fine-tuning the top half: half of that gain when the data sit near the source (or the backbone
  keeps no statistics), none when they sit far: a far domain needs the early blocks that the half
  keeps frozen (on the grid's far sets, digits and ELPV, the top half gained nothing over
  feature extraction);
* bag-of-words: its own cross-validated accuracy on the profiled examples (measured, seconds).

**Expected seconds** come from this machine: one batch is timed forward block by block and once
forward and backward (:func:`measure_step`); epochs x examples x (the forward pass + the
backward share of the trainable blocks) gives a fine-tune, one forward pass over every example a
feature extraction. The head's own training and data loading are left out, so it is a lower bound.

:func:`cheapest_within` picks the cheapest candidate whose expected accuracy is within
``TOLERANCE`` (1 point) of the best. The advisor calls it a *close call* when the pick's margin
(how far the decision is from flipping) is within the standard error of the probe's accuracy
(its fold spread / sqrt(5)), or the chance-corrected strength within its fold spread of the
"similar" threshold.

The probe cross-validates on train + val, so on a small training split with a larger validation split
it has seen more examples than the head will: on SMS spam at 25% it expected 0.980 of feature extraction,
0.960 at the train split's size, which is what is used now (BENCHMARKS.md, "Issue 26": the probe
at the head's size). The expected gain is still counted on train + val examples per class, as it was set.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from headstart.backbones import Backbone
from headstart.data import make_loader
from headstart.training.evaluation import to_device

TOLERANCE = 0.01  # expected accuracy within which a cheaper candidate counts as "as good"
RECOVERED = 0.5  # at most this share of the probe's headroom is expected back from fine-tuning every block
HALF_N = 100  # examples per class at which half of RECOVERED is expected
TIMED_BATCH = 16  # examples per timed batch


@dataclass
class Candidate:
    """One way to fit: what :func:`headstart.fit` gets, and what it is expected to score and cost."""

    name: str  # what the advice calls it: "feature-extraction", "fine-tune top 4", "full", "bag-of-words"
    strategy: str | None  # fit's strategy (None: not a fit strategy, a baseline shown for reference)
    fit_kwargs: dict[str, Any]
    accuracy: float  # expected
    spread: float  # the probe's (or the baseline's) fold standard deviation
    seconds: float  # expected on this machine; in block units when not measured (they only order the candidates)
    measured: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepCost:
    """Per-example seconds of one forward pass through each block, and the backward's cost relative to the forward."""

    forward: dict[str, float]
    backward_ratio: float

    def forward_total(self) -> float:
        return sum(self.forward.values())

    def trainable(self, blocks: list[str]) -> float:
        """Per-example seconds of forward + backward when ``blocks`` train and the rest only run forward."""
        return self.forward_total() + self.backward_ratio * sum(self.forward.get(b, 0.0) for b in blocks)


def measure_step(backbone: Backbone, items: list[Any], *, batch_size: int = TIMED_BATCH) -> StepCost:
    """Time one batch of ``items`` forward (per block, by hooks) and once forward and backward.

    A first untimed batch warms up (allocations, lazy initialisation); three batches in all.
    """
    batch = next(iter(make_loader(items[:batch_size], None, backbone.preprocessing, batch_size=batch_size)))[0]
    inputs = to_device(batch, backbone.device)
    n = len(items[:batch_size])
    started: dict[str, float] = {}
    spent: dict[str, float] = {}
    hooks = []
    for block in backbone.blocks:
        hooks.append(block.module.register_forward_pre_hook(lambda _m, _i, name=block.name: started.__setitem__(name, time.perf_counter())))
        hooks.append(block.module.register_forward_hook(lambda _m, _i, _o, name=block.name: spent.__setitem__(name, time.perf_counter() - started[name])))
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            backbone(inputs)  # warm-up
            begun = time.perf_counter()
            backbone(inputs)
            forward = time.perf_counter() - begun
    finally:
        for hook in hooks:
            hook.remove()
    flags = [p.requires_grad for p in backbone.parameters()]
    try:
        for p in backbone.parameters():
            p.requires_grad_(True)
        begun = time.perf_counter()
        backbone(inputs).float().sum().backward()
        both = time.perf_counter() - begun
    finally:
        for p, flag in zip(backbone.parameters(), flags, strict=True):
            p.requires_grad_(flag)
            p.grad = None
        backbone.train(was_training)
    per_block = {name: seconds / n for name, seconds in spent.items()}
    scale = forward / n / max(sum(per_block.values()), 1e-12)  # blocks' times, rescaled to the whole pass (pooling, embeddings)
    return StepCost({name: s * scale for name, s in per_block.items()}, max(both / max(forward, 1e-12) - 1.0, 0.0))


def expected_gain(headroom: float, per_class: float) -> float:
    """Accuracy fine-tuning every block is expected to add over the probe (see the module docstring)."""
    return max(headroom, 0.0) * RECOVERED * per_class / (per_class + HALF_N)


def fine_tune_seconds(cost: StepCost, blocks: list[str], *, train: int, val: int, epochs: int) -> float:
    """Seconds of ``epochs`` epochs training ``blocks`` on ``train`` examples and validating on ``val``."""
    return epochs * (train * cost.trainable(blocks) + val * cost.forward_total())


def cheapest_within(candidates: list[Candidate], tolerance: float = TOLERANCE) -> tuple[Candidate, Candidate | None, float]:
    """``(pick, rival, margin)``: the cheapest fit candidate expected within ``tolerance`` of the best one.

    ``rival`` is the candidate on the other side of the decision and ``margin`` how far the decision
    is from flipping to it. For a pick cheaper than the best, the rival is the best and the margin
    the tolerance left (``tolerance - (best - pick)``); when the best is picked, the rival is the
    cheaper candidate that came nearest and the margin how far it falls outside the tolerance
    (``best - rival - tolerance``; no rival and ``inf`` when nothing is cheaper). Candidates without
    a strategy (bag-of-words) are not picked.
    """
    fit = [c for c in candidates if c.strategy is not None]
    best = max(fit, key=lambda c: c.accuracy)
    ordered = sorted(fit, key=lambda c: (c.seconds, -c.accuracy))
    pick = next(c for c in ordered if c.accuracy >= best.accuracy - tolerance)
    if pick is not best:
        return pick, best, tolerance - (best.accuracy - pick.accuracy)
    cheaper = ordered[: ordered.index(pick)]
    if not cheaper:
        return pick, None, float("inf")
    rival = max(cheaper, key=lambda c: c.accuracy)
    return pick, rival, best.accuracy - rival.accuracy - tolerance


def bag_of_words_accuracy(texts: list[str], labels: np.ndarray, *, folds: int = 5, seed: int = 0) -> tuple[float, float, float]:
    """Cross-validated accuracy (mean, std) of TF-IDF + logistic regression, and the seconds of one fit."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from headstart.analysis.baseline import bag_of_words_model

    k = min(folds, int(np.bincount(labels).min()))
    started = time.perf_counter()
    scores = cross_val_score(bag_of_words_model(), [str(t) for t in texts], labels, cv=StratifiedKFold(k, shuffle=True, random_state=seed))
    return float(scores.mean()), float(scores.std()), (time.perf_counter() - started) / k
