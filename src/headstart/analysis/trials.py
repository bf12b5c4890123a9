"""``fit --strategy auto --budget TIME``: measure the leading candidates instead of predicting them.

The advisor's expected accuracies (:mod:`headstart.analysis.costs`) are a model; on a close call
they are as likely wrong as right. With a time budget, :func:`successive_halving` trains the
leading candidates briefly on train and scores them on validation (the test split is never seen),
keeps the better half, doubles the epochs and repeats until one is left or the budget would run
out (Jamieson & Talwalkar 2016; Hyperband's inner loop). The winner is then trained for real with
the epochs the rest of the budget affords (:func:`affordable_epochs`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from headstart.analysis.costs import Candidate

LEADING = 3  # candidates tried: the ones expected best
FIRST_EPOCHS = 1  # body epochs of the first rung; each later rung doubles them
FINAL_SHARE = 0.5  # at least this share of the budget is kept for training the winner


@dataclass
class Trial:
    candidate: str
    rung: int
    epochs: int | None  # body epochs (None: feature extraction, whose head schedule is its own)
    val_accuracy: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def successive_halving(
    candidates: list[Candidate], train: Callable[[Candidate, int | None], float], *, budget: float, default_epochs: int,
    clock: Callable[[], float] = time.perf_counter, leading: int = LEADING,
) -> tuple[Candidate, list[Trial], str]:
    """``(winner, trials, why)``: rungs of short trials of the ``leading`` best-expected candidates.

    ``train(candidate, epochs)`` trains on train, scores on validation and returns the accuracy
    (``epochs`` is ``None`` for feature extraction, trained once with its own schedule). Trials
    may spend ``budget`` less :data:`FINAL_SHARE` of it. Within a rung the cheaper candidates go
    first; a trial whose expected seconds (its own last trial's per epoch, else the advisor's
    estimate scaled to the epochs) do not fit in what is left is skipped, and the candidate drops
    out. The better half (by validation accuracy; ties to the cheaper) goes on with twice the epochs.
    """
    start = clock()
    allowed = budget * (1 - FINAL_SHARE)
    alive = sorted((c for c in candidates if c.strategy is not None), key=lambda c: -c.accuracy)[:leading]
    fallback = alive[0]
    trials: list[Trial] = []
    scores: dict[str, float] = {}
    per_epoch: dict[str, float] = {}
    skipped: list[str] = []
    epochs, rung = FIRST_EPOCHS, 1
    while len(alive) > 1:
        tried = []
        for candidate in sorted(alive, key=lambda c: c.seconds):
            frozen = candidate.strategy == "feature-extraction"
            if frozen and candidate.name in scores:  # its head schedule is the same at every rung
                tried.append(candidate)
                continue
            expected = candidate.seconds if frozen else per_epoch.get(candidate.name, candidate.seconds / default_epochs) * epochs
            if clock() - start + expected > allowed:
                skipped.append(f"{candidate.name} (rung {rung}: expected {expected:.0f} s, {max(allowed - (clock() - start), 0):.0f} s left for trials)")
                continue
            began = clock()
            scores[candidate.name] = train(candidate, None if frozen else epochs)
            took = clock() - began
            if not frozen:
                per_epoch[candidate.name] = took / epochs
            trials.append(Trial(candidate.name, rung, None if frozen else epochs, scores[candidate.name], took))
            tried.append(candidate)
        if not tried:
            break
        alive = sorted(tried, key=lambda c: (-scores[c.name], c.seconds))[: max(1, math.ceil(len(tried) / 2)) if len(tried) > 1 else 1]
        if len(tried) < 2 and rung > 1:
            break
        epochs, rung = epochs * 2, rung + 1
    if not trials:
        return fallback, trials, f"no trial fitted in the budget ({'; '.join(skipped)}): the advisor's expected best, {fallback.name}, is used"
    winner = alive[0]
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    why = f"{winner.name} scored {scores[winner.name]:.3f} on validation in its last trial" + (
        " (" + ", ".join(f"{name} {score:.3f}" for name, score in ranked if name != winner.name) + ")" if len(ranked) > 1 else "")
    if skipped:
        why += "; skipped for the budget: " + "; ".join(skipped)
    return winner, trials, why


def affordable_epochs(trials: list[Trial], winner: Candidate, *, left: float, default: int) -> int | None:
    """Body epochs of the winner's final training: as many as its trials' seconds per epoch say fit in ``left`` (1 to ``default``)."""
    if winner.strategy == "feature-extraction":
        return None
    own = [t for t in trials if t.candidate == winner.name and t.epochs]
    if not own:
        return default
    per_epoch = max(t.seconds / t.epochs for t in own if t.epochs)  # the head warm-up included: an overestimate
    return max(1, min(default, int(left // per_epoch)))
