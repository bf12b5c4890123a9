"""The four cases of transfer learning, measured: small/large target x similar/different to the source.

``advise(data, backbone=...)`` measures the two axes of the textbook table and turns them into
settings for :func:`headstart.fit`, with the numbers behind the choice:

* **size** - the median number of labelled examples per class (train + val). Below
  ``SMALL_PER_CLASS`` (100) training many pretrained parameters overfits more than it adapts;
  the threshold is a rule of thumb (Yosinski et al. 2014 and the CS231n notes use "small" for a few
  hundred images per class or less), not a measured boundary. A numeric target has no classes:
  every example counts, against ``SMALL_EXAMPLES`` (1000, the per-class rule for ten classes; a rule
  of thumb the benchmark grid has not checked). A multi-label target counts the median number of
  positive examples per label (each label is a yes/no problem whose positives are the scarce side)
  against ``SMALL_PER_CLASS``. The probe is the task's (accuracy, ridge R², per-label mAP; see
  :func:`headstart.analysis.probe_scores.probe_accuracy`) and is read against its own chance floor.
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

from headstart.analysis.costs import (
    TOLERANCE,
    Candidate,
    StepCost,
    bag_of_words_accuracy,
    cheapest_within,
    expected_gain,
    fine_tune_seconds,
    measure_step,
)
from headstart.analysis.probes import Profile, labelled_examples, profile
from headstart.analysis.transferability import target_kind
from headstart.backbones import Backbone, create_backbone
from headstart.data import Dataset, load_dataset
from headstart.data.preprocessing import TextPreprocessing, text_length_note

SMALL_PER_CLASS = 100  # median examples per class below which the target counts as "small"
SMALL_EXAMPLES = 1000  # examples below which a numeric target counts as "small" (SMALL_PER_CLASS for ten classes)
STRONG_FEATURES = 0.85  # chance-corrected best probe accuracy from which frozen features "already solve" the target
FAR_SHIFT = 0.2  # mean BatchNorm-statistics shift (KL) from which the target is "far" from the source
CUT_MARGIN = 0.02  # feature extraction cuts below the last block only when that block's probe is this much (or a fold std) worse
FINE_TUNE = {"lr": 1e-3, "body_lr": 1e-4, "epochs": 15}
PROBE_FOLDS = 5  # profile()'s cross-validation folds: the probe's standard error is its fold spread / sqrt(5)


@dataclass
class Advice:
    """A recommended strategy with the keyword arguments for :func:`headstart.fit` and why."""

    case: str
    strategy: str
    fit_kwargs: dict[str, Any]
    rationale: list[str]
    measurements: dict[str, Any] = field(default_factory=dict)
    profile: Profile | None = None
    plain: str = ""  # one sentence for a person who does not read KL divergences (the web app shows it)
    candidates: list[Candidate] = field(default_factory=list)
    close_call: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "strategy": self.strategy, "fit_kwargs": self.fit_kwargs, "rationale": self.rationale, "measurements": self.measurements,
                "plain": self.plain, "candidates": [c.to_dict() for c in self.candidates], "close_call": self.close_call}  # fmt: skip

    def __str__(self) -> str:
        return "\n".join([f"case: {self.case} -> {self.strategy} {self.fit_kwargs}", *(f"  - {line}" for line in self.rationale)])


def points(x: float) -> str:
    """``0.012`` -> ``"1.2 points"``, ``0.01`` -> ``"1 point"``."""
    text = f"{x * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text} point" + ("" if text in ("1", "-1") else "s")


def seconds_text(candidate: Candidate) -> str:
    seconds = candidate.seconds
    if not candidate.measured:
        return "time not measured"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


# How the size, the probe and the plain sentence are said for each task (what is counted, what the probe's floor is)
WORDS = {
    "classification": {"size": "median {n:.0f} examples per class", "few": "examples per class", "floor": "the majority class",
                       "solved": "they already separate the classes", "gap": "{gap:.1%} of the examples still misclassified",
                       "apart": "tell your classes apart", "mixed": "leave part of your classes mixed up"},
    "regression": {"size": "{n:.0f} examples (a numeric target has no classes: every example counts)", "few": "examples", "floor": "predicting the mean",
                   "solved": "they already predict the target", "gap": "{gap:.1%} of the target's variance unexplained",
                   "apart": "predict your target", "mixed": "leave much of your target unexplained"},
    "multilabel": {"size": "median {n:.0f} positive examples per label", "few": "positive examples per label", "floor": "a random ranking (the labels' mean share of positives)",
                   "solved": "they already rank each label's examples", "gap": "mAP {gap:.3f} short of perfect",
                   "apart": "tell your labels apart", "mixed": "leave part of your labels mixed up"},
}  # fmt: skip


def _similarity_words(strong: bool, near: bool, strength: float, shift: float | None, words: dict[str, str] = WORDS["classification"]) -> tuple[str, str]:
    """The reason for "similar"/"different" (one template per combination) and its plain-words twin, from the same tests."""
    features = f"the frozen features {'reach' if strong else 'fall short of'} {STRONG_FEATURES} ({strength:.2f})"
    if shift is None:
        statistics, plain_far = "this backbone keeps no source statistics to compare", ""
    else:
        statistics = f"the data sit {'near' if near else 'far from'} the source ({shift:.2f} {'<' if near else '>='} {FAR_SHIFT})"
        plain_far = "" if near else " and your examples look unlike what it learned from"
    if strong and near:
        return f"similar: {features} and {statistics}", f"the network's features already {words['apart']}" + ("" if shift is None else ", and your examples look like what it learned from")
    if strong:
        return f"different: {statistics}, although {features}", f"the network's features {words['apart']}, but your examples look unlike what it learned from, where frozen features generalise least"
    link = "and" if not near else ("although" if shift is not None else ";")
    return f"different: {features}, {link} {statistics}".replace(", ; ", "; "), f"the network's features alone {words['mixed']}{plain_far}"


def _candidates(per_class: float, result: Profile, similar_case: tuple[bool, bool], cost: StepCost | None, sizes: dict[str, int], bag: tuple[float, float, float] | None) -> tuple[list[Candidate], str]:
    """Feature extraction, fine-tune the top half, the case rule's fine-tune, and bag-of-words, each with expected accuracy and seconds."""
    small, similar = similar_case
    depth = max(r.index for r in result.rows)
    rows = {r.block: r for r in result.rows}
    best, last = rows[result.best], result.rows[-1]
    margin = max(CUT_MARGIN, best.probe_std)
    cut = best.index != depth and best.probe_accuracy - last.probe_accuracy > margin
    where = (
        f"{best.block}: the last block scores {best.probe_accuracy - last.probe_accuracy:.3f} lower, more than the folds vary ({margin:.3f})" if cut
        else "the last block" + (f" ({best.block} scores within {margin:.3f}, the folds' spread)" if best.index != depth else "")
    )  # fmt: skip
    fe_row = best if cut else last
    names = [r.block for r in sorted(result.rows, key=lambda r: r.index)]
    uniform = cost is None
    cost = cost or StepCost({name: 1.0 for name in names}, 2.0)  # without a measurement: every block costs the same (order only)
    train, val, everything = sizes.get("train", 0), sizes.get("val", 0), sum(sizes.values())
    blocks = list(cost.forward)
    upto = blocks[: blocks.index(fe_row.block) + 1] if fe_row.block in blocks else blocks
    embed = everything * sum(cost.forward[b] for b in upto)
    epochs = FINE_TUNE["epochs"]
    near = result.mean_shift is None or result.mean_shift < FAR_SHIFT
    # What the head reaches on frozen features: the probe trained on as many examples as the head (the train split) when measured
    head, spread = fe_row.head_accuracy()
    gain = expected_gain(1 - head, per_class)  # fine-tuning starts from what the head on frozen features reaches

    rule_kwargs = {"trainable_blocks": depth, **FINE_TUNE} if small else dict(FINE_TUNE)
    rule_blocks = blocks[1:] if small else blocks
    candidates = [Candidate("feature-extraction", "feature-extraction", {"cut": fe_row.block} if cut else {}, head, spread, embed, not uniform)]
    half = depth // 2
    if 1 <= half < depth:
        candidates.append(Candidate(f"fine-tune top {half}", "fine-tune", {"trainable_blocks": half, **FINE_TUNE}, head + gain * (0.5 if near else 0.0), spread,
                                    embed + fine_tune_seconds(cost, blocks[-half:], train=train, val=val, epochs=epochs), not uniform))  # fmt: skip
    candidates.append(Candidate("fine-tune all but the first" if small else "full", "fine-tune" if small else "full", rule_kwargs, head + gain, spread,
                                embed + fine_tune_seconds(cost, rule_blocks, train=train, val=val, epochs=epochs), not uniform))  # fmt: skip
    if bag is not None:
        candidates.append(Candidate("bag-of-words", None, {}, bag[0], bag[1], bag[2] * max(train, 1) / max(result.n_examples, 1), bag is not None))
    return candidates, where


def decide(per_class: float, result: Profile, *, cost: StepCost | None = None, sizes: dict[str, int] | None = None, bag: tuple[float, float, float] | None = None) -> Advice:
    """The four-case table and the cost-aware pick applied to measured size and profile (pure: no data or model needed).

    ``per_class``: the size as the task counts it (median examples per class; examples for a numeric
    target; median positives per label for multi-label; the task is ``result.task``).

    ``cost``: the per-block step times of :func:`headstart.analysis.costs.measure_step` (without it
    the candidates are ordered as if every block cost the same and no seconds are quoted);
    ``sizes``: examples per split; ``bag``: the bag-of-words baseline's (accuracy, std, seconds).
    """
    depth = max(r.index for r in result.rows)
    rows = {r.block: r for r in result.rows}
    best, plateau, first, last = rows[result.best], rows[result.plateau], result.rows[0], result.rows[-1]
    words, metric = WORDS[result.task], result.metric
    small_at = SMALL_EXAMPLES if result.task == "regression" else SMALL_PER_CLASS
    small = per_class < small_at
    strong = result.strength >= STRONG_FEATURES
    shift = result.mean_shift
    near = shift is None or shift < FAR_SHIFT
    similar = strong and near
    case = f"{'small' if small else 'large'}, {'similar' if similar else 'different'}"
    reason, plain_reason = _similarity_words(strong, near, result.strength, shift, words)
    strength_spread = best.probe_std / (1 - result.chance) if result.chance < 1 else 0.0
    rationale = [
        f"size: {words['size'].format(n=per_class)}, {'below' if small else 'at or above'} {small_at}: {'small' if small else 'large'}",
        f"frozen features: best probe {metric} {best.probe_accuracy:.3f} ± {best.probe_std:.3f} at {best.block} against {result.chance:.3f} for {words['floor']}, "
        f"{result.strength:.2f} of the way to perfect ({'>=' if strong else '<'} {STRONG_FEATURES}: "
        + (f"{words['solved']})" if strong else f"{words['gap'].format(gap=1 - best.probe_accuracy)}, room for fine-tuning)"),
    ]
    if shift is None:
        rationale.append("source statistics: this backbone keeps none (no BatchNorm), so similarity rests on the features alone")
    else:
        shifted = [r for r in result.rows if r.shift is not None]
        peak = max(shifted, key=lambda r: r.shift or 0.0)
        ends = [shifted[0], *([peak] if peak not in (shifted[0], shifted[-1]) else []), shifted[-1]]
        rationale.append(
            f"source statistics: the target's activations drift {shift:.2f} on average from the source's BatchNorm statistics "
            f"(KL; " + ", ".join(f"{r.block} {r.shift:.2f}" + (" (peak)" if r is peak else "") for r in ends) + "; "
            f"{'<' if near else '>='} {FAR_SHIFT}: {'near' if near else 'far from'} the source domain)"
        )
    evidence = f"depth: probe {metric} {first.probe_accuracy:.3f} at {first.block} -> {last.probe_accuracy:.3f} at {last.block}, "
    evidence += f"within {points(result.tolerance)} of the best from {plateau.block} ({plateau.index / depth if depth else 1.0:.0%} of the depth)"
    if result.leep_gain is not None:
        evidence += f"; the source head's classes explain {result.leep_gain:.0%} of the label entropy (LEEP {result.source_leep:.3f})"
    rationale.append(evidence)
    rationale.append(f"case: {case}; {reason}")
    candidates, where = _candidates(per_class * SMALL_PER_CLASS / small_at, result, (small, similar), cost, sizes or {"train": result.n_examples}, bag)
    if small and similar:
        rationale.append(f"the table says: a new head on frozen features from {where}; moving pretrained weights has little to add and much to overfit")
    elif small:
        rationale.append(f"the table says: keep {first.block}, the most general features, frozen and fine-tune the {depth} blocks above it (head first, body LR 1e-4); "
                         f"with {per_class:.0f} {words['few']} fine-tuning can overfit, so the head is fitted first and the epoch with the best validation score is kept")  # fmt: skip
    else:
        rationale.append("the table says: fine-tune the whole network from the pretrained weights (head first, body LR 1e-4): "
                         + ("the features are close already, and enough examples adapt every block" if similar else "enough examples to move every block toward the target"))  # fmt: skip
    fe_row = next(r for r in result.rows if r.block == candidates[0].fit_kwargs.get("cut", last.block))
    if fe_row.probe_at_train is not None:
        rationale.append(f"the head trains on the train split alone ({(sizes or {}).get('train', '?')} examples), fewer than the probe's folds: "
                         f"probed at that size, {fe_row.block} scores {fe_row.probe_at_train:.3f} ± {fe_row.probe_at_train_std:.3f} "
                         f"(against {fe_row.probe_accuracy:.3f} on train + val), the feature extraction expected below")  # fmt: skip
    pick, rival, margin = cheapest_within(candidates)
    rationale.append(f"expected test {metric} and time on this machine: " + "; ".join(
        f"{c.name} {c.accuracy:.3f} ± {c.spread:.3f}, {seconds_text(c)}" for c in candidates))  # fmt: skip
    if rival is None:
        rationale.append(f"pick: {pick.name}, the cheapest candidate and expected within {points(TOLERANCE)} of the best")
    elif rival.accuracy >= pick.accuracy and rival.seconds >= pick.seconds:
        cost = f" for {seconds_text(rival)} instead of {seconds_text(pick)}" if pick.measured else ""
        rationale.append(f"pick: {pick.name}, the cheapest expected within {points(TOLERANCE)} of the best: {rival.name} is expected {points(rival.accuracy - pick.accuracy)} higher{cost}")
    else:
        rationale.append(f"pick: {pick.name}, expected best: the nearest cheaper, {rival.name}, is expected {points(pick.accuracy - rival.accuracy)} lower, more than {points(TOLERANCE)}")
    close = []
    if abs(result.strength - STRONG_FEATURES) <= strength_spread:
        other = f"{'small' if small else 'large'}, {'different' if similar else 'similar'}" if near else case
        close.append(f"strength {result.strength:.2f} is within its fold spread (± {strength_spread:.2f}) of the {STRONG_FEATURES} threshold" + (f"; the case could as well be '{other}'" if other != case else ""))
    error = best.probe_std / PROBE_FOLDS**0.5  # the standard error of the probe's mean accuracy: what the expected accuracies inherit
    if margin != float("inf") and abs(margin) <= error:
        close.append(f"the pick's margin ({points(margin)}) is within the standard error of the probe's accuracy (± {points(error)})")
    if close:
        rationale.append("close call: " + "; ".join(close) + "; `fit --strategy auto --budget TIME` tries the leading candidates instead of predicting")
    bag_candidate = next((c for c in candidates if c.strategy is None), None)
    if bag_candidate is not None:
        bought = best.probe_accuracy - bag_candidate.accuracy
        rationale.append(f"bag-of-words (TF-IDF + logistic regression): {bag_candidate.accuracy:.3f} ± {bag_candidate.spread:.3f} cross-validated; the frozen encoder's best probe "
                         + (f"beats it by {points(bought)}" if bought > TOLERANCE else f"is within {points(TOLERANCE)} of it ({points(bought)}): what the encoder buys here comes from fine-tuning, if anything"))  # fmt: skip
    plain = f"You have {'few' if small else 'many'} {words['few']} ({per_class:.0f}), and {plain_reason}. "
    plain += {"feature-extraction": "Keeping the network as it is and training only a new last layer is expected to do as well as anything slower.",
              "fine-tune": f"Letting the network's top layers adapt ({pick.name}) is expected to gain about {points(pick.accuracy - candidates[0].accuracy)} over training only a new last layer.",
              "full": f"Letting every layer adapt is expected to gain about {points(pick.accuracy - candidates[0].accuracy)} over training only a new last layer."}[pick.strategy or "feature-extraction"]  # fmt: skip
    if close:
        plain += " It is a close call: the measurements sit within their own noise of the line between two choices."
    measurements = {
        "examples_per_class": per_class, "strength": result.strength, "strength_spread": strength_spread, "chance": result.chance, "best": result.best,
        "best_accuracy": best.probe_accuracy, "best_std": best.probe_std, "mean_shift": shift, "leep_gain": result.leep_gain, "plateau": plateau.block,
        "plateau_depth": plateau.index / depth if depth else 1.0, "pick": pick.name, "margin": None if margin == float("inf") else margin,
        "peak_shift": max((r.shift for r in result.rows if r.shift is not None), default=None),
    }  # fmt: skip
    return Advice(case, pick.strategy or "feature-extraction", dict(pick.fit_kwargs), rationale, measurements, result, plain, candidates, bool(close))


def measured_size(labels: np.ndarray, n_classes: int = 0) -> float:
    """The size the four-case rule reads: median examples per class, every example of a numeric target, or median positives per label."""
    kind = target_kind(labels)
    if kind == "regression":
        return float(len(labels))
    return float(np.median(labels.sum(0) if kind == "multilabel" else np.bincount(labels, minlength=n_classes)))


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
    size = measured_size(np.concatenate([dataset.labels(s) for s in ("train", "val") if s in dataset.splits]), len(dataset.classes))
    model = backbone if isinstance(backbone, Backbone) else create_backbone(backbone)
    result = profile(dataset, backbone=model, every=every, limit=limit, seed=seed, cache_dir=cache_dir, quiet=quiet)
    _, items, labels = labelled_examples(dataset, limit=limit, seed=seed)
    cost = measure_step(model, items)  # a few batches on this machine: what each candidate's seconds are made of
    bag = bag_of_words_accuracy(items, labels, seed=seed) if dataset.modality == "text" and result.task == "classification" else None  # a classifier baseline
    sizes = {split: len(dataset.items(split)) for split in dataset.splits}
    advice = decide(size, result, cost=cost, sizes=sizes, bag=bag)
    if isinstance(model.preprocessing, TextPreprocessing):  # what `fit` will do with texts longer than the window, counted on every split
        lengths = model.preprocessing.length_report([text for split in dataset.splits for text in dataset.items(split)])
        advice.measurements["text_lengths"] = lengths
        if note := text_length_note(lengths):
            advice.rationale.append(f"long texts: {note.removeprefix('warning: ')}; the probes above read them cut the same way")
    return advice
