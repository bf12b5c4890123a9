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
from dataclasses import asdict, dataclass, replace
from typing import Any

from headstart.analysis.costs import Candidate
from headstart.config import FitConfig, parse_budget
from headstart.data import Dataset

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
    if not trials:  # the measuring used the budget up: the cheapest candidate, not the expected best, is what still fits
        cheapest = min(candidates, key=lambda c: c.seconds if c.strategy is not None else float("inf"))
        return cheapest, trials, f"no trial fitted in the budget ({'; '.join(skipped)}): the cheapest candidate, {cheapest.name}, is used"
    winner = alive[0]
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    why = f"{winner.name} scored {scores[winner.name]:.3f} on validation in its last trial" + (
        " (" + ", ".join(f"{name} {score:.3f}" for name, score in ranked if name != winner.name) + ")" if len(ranked) > 1 else "")
    if skipped:
        why += "; skipped for the budget: " + "; ".join(skipped)
    return winner, trials, why


def affordable_epochs(trials: list[Trial], winner: Candidate, *, left: float, default: int) -> int | None:
    """Body epochs of the winner's final training: as many as its seconds per epoch say fit in ``left`` (1 to ``default``)."""
    if winner.strategy == "feature-extraction":
        return None
    own = [t for t in trials if t.candidate == winner.name and t.epochs]
    # from its trials (the head warm-up included: an overestimate), else from the advisor's expected seconds
    per_epoch = max(t.seconds / t.epochs for t in own if t.epochs) if own else winner.seconds / default
    return max(1, min(default, int(left // per_epoch)))


def budgeted_pick(dataset: Dataset, config: FitConfig, advice: Any, started: float, fit_config: Callable[[Dataset, FitConfig], Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(strategy, fit kwargs, record)`` of the winner of :func:`successive_halving` among the advisor's candidates within ``config.budget``.

    ``fit_config`` is :func:`headstart.api.fit_config` (passed in: this module sits below the API);
    each trial trains on train and is scored on val, with the test split emptied. ``started``: when
    the fit began, so that the measuring the advisor did counts against the budget.
    """
    from headstart.analysis.advisor import FINE_TUNE

    budget = parse_budget(config.budget)
    assert budget is not None
    if not dataset.items("val"):
        raise ValueError("--budget compares candidates on the validation split; this data has none (add a val/ folder or a split column)")
    held_in = replace(dataset, splits={**dataset.splits, "test": ([], [])})  # the trials never see the test split

    def train(candidate: Candidate, epochs: int | None) -> float:
        trial = replace(config, strategy=candidate.strategy, budget=None, out=None, save=False, quiet=True, report=False, log_to=None, resume=False,
                        **{k: v for k, v in candidate.fit_kwargs.items() if k != "epochs"}, epochs=epochs)  # fmt: skip
        return float(fit_config(held_in, trial).metrics["val"]["accuracy"])

    winner, trials, why = successive_halving(advice.candidates, train, budget=budget - (time.perf_counter() - started), default_epochs=FINE_TUNE["epochs"])
    left = budget - (time.perf_counter() - started)
    epochs = affordable_epochs(trials, winner, left=left, default=int(winner.fit_kwargs.get("epochs", FINE_TUNE["epochs"])))
    kwargs = {**winner.fit_kwargs, **({"epochs": epochs} if epochs is not None else {})}
    lines = [f"trial {t.rung}: {t.candidate}" + (f", {t.epochs} epoch{'s' if t.epochs > 1 else ''}" if t.epochs else "") + f": val accuracy {t.val_accuracy:.3f} in {t.seconds:.0f} s" for t in trials]
    lines += [f"winner: {why}", f"{budget:.0f} s budget, {budget - left:.0f} s spent on measuring and trials; the winner trains "
              + (f"{epochs} body epoch{'s' if epochs > 1 else ''}" if epochs else "its head") + f" in the {max(left, 0):.0f} s left"]  # fmt: skip
    record = {"budget": budget, "spent": budget - left, "winner": winner.name, "why": why, "epochs": epochs, "trials": [t.to_dict() for t in trials], "lines": lines}
    return str(winner.strategy), kwargs, record
