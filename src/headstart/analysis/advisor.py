"""The four cases of transfer learning, measured: small/large target x similar/different to the source.

``advise(data, backbone=...)`` measures the two axes of the textbook table and turns them into
settings for :func:`headstart.fit`, with the numbers behind the choice:

* **size** - the median number of labelled examples per class (train + val). Below
  ``SMALL_PER_CLASS`` (100) training many pretrained parameters overfits more than it adapts;
  the threshold is a rule of thumb (Yosinski et al. 2014 and the CS231n notes use "small" for a few
  hundred images per class or less), not a measured boundary.
* **similarity** - read from the layer-wise :func:`headstart.analysis.probes.profile`, two ways, and
  *similar* needs both:

  - *the source's features already solve the target*: the best block's linear-probe accuracy,
    corrected for chance (``Profile.strength``), is at least ``STRONG_FEATURES`` (0.85);
  - *the target looks like the source to the network*: the target's activations stay close to the
    statistics the source left in the BatchNorm layers (``Profile.mean_shift`` below ``FAR_SHIFT``;
    natural photos measure 0.06-0.10 on EfficientNet-Lite0, solar cells 0.50, brain MRI 0.25).
    Backbones without BatchNorm statistics (transformers) are judged on the first test alone.

  LEEP of the source head and the depth of the probe's plateau are reported as well. An earlier
  version called a target *similar* when the plateau lay in the top quarter of the depth; on the
  benchmark grid (BENCHMARKS.md) that sent trec, emotion and spoken digits, whose frozen features
  are weak at every depth, to feature extraction, 9 to 24 points below fine-tuning.

What follows, per case (textbook advice; each choice validated on the grid in BENCHMARKS.md):

================  ===========================================================================================
small, similar    feature extraction: a new head on frozen features of the last block (of an earlier block
                  when the last one probes clearly worse: by more than 2 points and more than the folds vary)
small, different  keep the first block (stem / token embeddings: the most general features) frozen, fine-tune the rest
large, similar    fine-tune every block (LP-FT: head first), body LR = head LR / 10
large, different  train the whole network from the pretrained weights (LP-FT), body LR = head LR / 10
================  ===========================================================================================

Thresholds are rules of thumb set on the benchmark grid's first 18 cells and then checked on
datasets that played no part in setting them (BENCHMARKS.md, "The advisor against the grid"). The
cut margin was added after the grid: cutting at the probe's best block whatever the margin cost
7 points on a quarter of hymenoptera, where the best block beat the last by less than a fold's spread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.analysis.probes import Profile, profile
from headstart.backbones import Backbone, create_backbone
from headstart.data import Dataset, load_dataset

SMALL_PER_CLASS = 100  # median examples per class below which the target counts as "small"
STRONG_FEATURES = 0.85  # chance-corrected best probe accuracy from which frozen features "already solve" the target
FAR_SHIFT = 0.2  # mean BatchNorm-statistics shift (KL) from which the target is "far" from the source
CUT_MARGIN = 0.02  # feature extraction cuts below the last block only when that block's probe is this much (or a fold std) worse
FINE_TUNE = {"lr": 1e-3, "body_lr": 1e-4, "epochs": 15}


@dataclass
class Advice:
    """A recommended strategy with the keyword arguments for :func:`headstart.fit` and why."""

    case: str
    strategy: str
    fit_kwargs: dict[str, Any]
    rationale: list[str]
    measurements: dict[str, Any] = field(default_factory=dict)
    profile: Profile | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "strategy": self.strategy, "fit_kwargs": self.fit_kwargs, "rationale": self.rationale, "measurements": self.measurements}

    def __str__(self) -> str:
        return "\n".join([f"case: {self.case} -> {self.strategy} {self.fit_kwargs}", *(f"  - {line}" for line in self.rationale)])


def decide(per_class: float, result: Profile) -> Advice:
    """The four-case rule applied to measured size and profile (pure: no data or model needed)."""
    depth = max(r.index for r in result.rows)
    rows = {r.block: r for r in result.rows}
    best, plateau, first = rows[result.best], rows[result.plateau], result.rows[0]
    small = per_class < SMALL_PER_CLASS
    strong = result.strength >= STRONG_FEATURES
    shift = result.mean_shift
    near = shift is None or shift < FAR_SHIFT
    similar = strong and near
    case = f"{'small' if small else 'large'}, {'similar' if similar else 'different'}"
    rationale = [
        f"size: median {per_class:.0f} examples per class ({'<' if small else '>='} {SMALL_PER_CLASS}: {'small' if small else 'large'})",
        f"frozen features: best probe accuracy {best.probe_accuracy:.3f} at {best.block} against {result.chance:.3f} for the majority class, "
        f"{result.strength:.2f} of the way to perfect ({'>=' if strong else '<'} {STRONG_FEATURES}: "
        f"{'they already separate the classes' if strong else 'weak, fine-tuning has room to help'})",
    ]
    if shift is None:
        rationale.append("source statistics: this backbone keeps none (no BatchNorm), so similarity rests on the features alone")
    else:
        rationale.append(
            f"source statistics: the target's activations drift {shift:.2f} on average from the source's BatchNorm statistics "
            f"(KL; {first.block} {first.shift:.2f}, {result.rows[-1].block} {result.rows[-1].shift:.2f}; "
            f"{'<' if near else '>='} {FAR_SHIFT}: {'near' if near else 'far from'} the source domain)"
        )
    evidence = f"depth: probe accuracy {first.probe_accuracy:.3f} at {first.block} -> {result.rows[-1].probe_accuracy:.3f} at {result.rows[-1].block}, "
    evidence += f"within {result.tolerance * 100:g} points of the best from {plateau.block} ({plateau.index / depth if depth else 1.0:.0%} of the depth)"
    if result.leep_gain is not None:
        evidence += f"; the source head's classes explain {result.leep_gain:.0%} of the label entropy (LEEP {result.source_leep:.3f})"
    rationale.append(evidence)
    if small and similar:
        last = result.rows[-1]
        margin = max(CUT_MARGIN, best.probe_std)
        cut = best.index != depth and best.probe_accuracy - last.probe_accuracy > margin
        strategy, kwargs = "feature-extraction", ({"cut": best.block} if cut else {})
        where = (
            f"{best.block}: the last block scores {best.probe_accuracy - last.probe_accuracy:.3f} lower, more than the folds vary ({margin:.3f})" if cut
            else "the last block" + (f" ({best.block} scores within {margin:.3f}, the folds' spread)" if best.index != depth else "")
        )  # fmt: skip
        rationale.append(f"small and similar: a new head on frozen features from {where}; moving pretrained weights has little to add and much to overfit")
    elif small:
        strategy, kwargs = "fine-tune", {"trainable_blocks": depth, **FINE_TUNE}
        why = (
            "frozen features alone leave too much of the task unsolved" if not strong
            else "the features separate these few examples, but the data sit far from the source domain, where frozen features generalise least"
        )  # fmt: skip
        rationale.append(
            f"small and different: keep {first.block}, the most general features, frozen and fine-tune the {depth} blocks above it "
            f"(head first, body LR 1e-4); {why}"
        )
    else:
        strategy, kwargs = "full", dict(FINE_TUNE)
        why = "the features are close already, and enough examples adapt every block" if similar else "enough examples to move every block toward the target"
        rationale.append(f"large and {'similar' if similar else 'different'}: fine-tune the whole network from the pretrained weights (head first, body LR 1e-4): {why}")
    measurements = {
        "examples_per_class": per_class, "strength": result.strength, "chance": result.chance, "best": result.best,
        "best_accuracy": best.probe_accuracy, "mean_shift": shift, "leep_gain": result.leep_gain, "plateau": plateau.block,
        "plateau_depth": plateau.index / depth if depth else 1.0,
    }  # fmt: skip
    return Advice(case, strategy, kwargs, rationale, measurements, result)


def advise(
    data: str | Path | Dataset,
    *,
    backbone: str | Backbone = "efficientnet_lite0",
    limit: int | None = 400,
    every: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    quiet: bool = True,
    text_column: str | None = None,
    label_column: str | None = None,
) -> Advice:
    """Measure size and similarity of ``data`` for ``backbone`` and recommend how to fit it.

    Parameters
    ----------
    limit : int, default=400
        Examples profiled (a stratified subset); size is always counted on the whole dataset.

    Examples
    --------
    >>> advice = headstart.advise("data/ants_bees")  # doctest: +SKIP
    >>> print(advice)  # doctest: +SKIP
    >>> run = headstart.fit("data/ants_bees", strategy=advice.strategy, **advice.fit_kwargs)  # doctest: +SKIP
    """
    dataset = data if isinstance(data, Dataset) else load_dataset(data, text_column=text_column, label_column=label_column, seed=seed)
    counts = np.bincount(np.concatenate([dataset.labels(s) for s in ("train", "val") if s in dataset.splits]), minlength=len(dataset.classes))
    model = backbone if isinstance(backbone, Backbone) else create_backbone(backbone)
    result = profile(dataset, backbone=model, every=every, limit=limit, seed=seed, cache_dir=cache_dir, quiet=quiet)
    return decide(float(np.median(counts)), result)
