"""The four cases of transfer learning, measured: small/large target x similar/different to the source.

``advise(data, backbone=...)`` measures the two axes of the textbook table and turns them into
settings for :func:`headstart.fit`, with the numbers behind the choice:

* **size** - the median number of labelled examples per class (train + val). Below
  ``SMALL_PER_CLASS`` (100) training many pretrained parameters overfits more than it adapts;
  the threshold is a rule of thumb (Yosinski et al. 2014 and the CS231n notes use "small" for a few
  hundred images per class or less), not a measured boundary.
* **similarity** - read from the layer-wise :func:`headstart.profiling.profile`: when the linear
  probe keeps improving up to the last blocks (its plateau lies in the top quarter of the depth),
  the source's most specific features still serve the target: *similar*. When the plateau comes
  earlier, the top blocks add nothing for this target: *different*.

What follows, per case:

================  ==========================================================================
small, similar    feature extraction on the last block (nothing to gain from moving weights)
small, different  feature extraction on the plateau block (the later, source-specific blocks are cut)
large, similar    fine-tune the blocks after the plateau (at least 2), body LR = head LR / 10
large, different  fine-tune every block from the plateau up, BatchNorm statistics re-estimated
================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones import Backbone, create_backbone
from headstart.data import Dataset, load_dataset
from headstart.profiling import Profile, profile

SMALL_PER_CLASS = 100  # median examples per class below which the target counts as "small"
SIMILAR_DEPTH = 0.75  # plateau at or beyond this fraction of the depth: "similar"


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
    plateau, last = rows[result.plateau], result.rows[-1]
    relative = plateau.index / depth if depth else 1.0
    small = per_class < SMALL_PER_CLASS
    similar = relative >= SIMILAR_DEPTH
    case = f"{'small' if small else 'large'}, {'similar' if similar else 'different'}"
    rationale = [
        f"size: median {per_class:.0f} examples per class ({'<' if small else '>='} {SMALL_PER_CLASS}: {'small' if small else 'large'})",
        f"profile: probe accuracy {result.rows[0].probe_accuracy:.3f} at {result.rows[0].block} -> best {rows[result.best].probe_accuracy:.3f} at {result.best}; "
        f"last block {last.block} {last.probe_accuracy:.3f}; LogME {result.rows[0].logme:.3f} -> {last.logme:.3f}",
        f"plateau (first block within {result.tolerance * 100:g} points of the best): {plateau.block}, at {relative:.0%} of the depth "
        f"({'>=' if similar else '<'} {SIMILAR_DEPTH:.0%}: {'similar' if similar else 'different'} to the source)",
    ]
    blocks_after = depth - plateau.index  # blocks above the plateau
    if small and similar:
        strategy, kwargs = "feature-extraction", {}
        rationale.append("small and similar: the last block's features already fit; a new head on frozen features avoids overfitting")
    elif small:
        strategy, kwargs = "feature-extraction", {"cut": plateau.block}
        rationale.append(f"small and different: the {blocks_after} blocks after {plateau.block} add nothing here, so cut there and train only a head")
    elif similar:
        trainable = max(2, blocks_after + 1)
        strategy, kwargs = "fine-tune", {"trainable_blocks": trainable, "lr": 1e-3, "body_lr": 1e-4, "epochs": 15}
        rationale.append(f"large and similar: fine-tune the top {trainable} blocks at body LR 1e-4 (head 1e-3); lower blocks stay frozen")
    else:
        trainable = depth + 1 - plateau.index
        strategy, kwargs = "fine-tune", {"trainable_blocks": trainable, "lr": 1e-3, "body_lr": 1e-4, "epochs": 15, "batchnorm": "train"}
        rationale.append(
            f"large and different: fine-tune the {trainable} blocks from {plateau.block} up, with BatchNorm in train mode so its "
            "statistics move to the target domain"
        )
    measurements = {"examples_per_class": per_class, "plateau": plateau.block, "plateau_depth": relative, "best": result.best}
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
