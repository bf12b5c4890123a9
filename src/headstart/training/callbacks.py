"""Hooks into :func:`~headstart.training.loop.fit_model`, and the two that every phase runs.

Keeping the best weights and stopping on a plateau are callbacks like any user's, not branches of
the loop: :class:`KeepBest` runs first and :class:`EarlyStopping` last, so a user's callback sees
this epoch's ``state.best`` (the checkpoint saves it) and may set ``state.stop`` before the stop check.
"""

from __future__ import annotations

import copy

from headstart.outcome import epoch_label
from headstart.training.evaluation import validate
from headstart.training.state import Best, TrainState

EVENTS = ("on_fit_start", "on_epoch_end", "on_fit_end")


class Callback:
    """Named no-op hooks called by :func:`~headstart.training.loop.fit_model` (a fixed set: :data:`EVENTS`).

    Each receives the phase's :class:`~headstart.training.state.TrainState`, whose docstring says
    which fields a callback may read and which it may set.
    """

    def on_fit_start(self, state: TrainState) -> None:
        """Before the first epoch; the optimizer and scheduler exist, ``state.record`` is empty.

        To continue an interrupted phase, set ``state.epochs_done`` (epochs of this phase already
        run), ``state.best`` and ``state.resumed``.
        """

    def on_epoch_end(self, state: TrainState) -> None:
        """After the validation of epoch ``state.epoch``: ``state.record`` holds its metrics and
        ``state.best`` the best epoch so far (this one included); set ``state.stop`` to end the phase."""

    def on_fit_end(self, state: TrainState) -> None:
        """After the last epoch; the model holds the best weights (``state.history.kept_epoch``)."""


class KeepBest(Callback):
    """Track the best epoch under ``settings.monitor`` and give the model its weights at the end.

    A phase that follows an earlier one (fine-tuning after the head warm-up) starts from weights
    that already scored: they are validated and kept as the best, so the phase never ends worse
    than it started.
    """

    def on_fit_start(self, state: TrainState) -> None:
        if state.history.epochs and state.val_loader is not None:
            device = next(state.model.parameters()).device
            record = validate(state.model, state.val_loader, device, state.task)
            # The earlier phase ended holding its own best epoch's weights (not always its last epoch's): that is the one named.
            start = state.history.kept_epoch if state.history.kept_epoch is not None else state.history.epochs[-1]["epoch"]
            state.best = Best(record, copy.deepcopy(state.model.state_dict()), start, 0)

    def on_epoch_end(self, state: TrainState) -> None:
        if state.settings.improved(state.record, state.best.record):
            state.best = Best(state.record, copy.deepcopy(state.model.state_dict()), state.epoch, 0)
        else:
            state.best.waited += 1

    def on_fit_end(self, state: TrainState) -> None:
        if state.best.weights is not None:
            state.model.load_state_dict(state.best.weights)
            state.history.kept_epoch = state.best.epoch


class EarlyStopping(Callback):
    """End the phase after ``settings.patience`` epochs without improvement, or when a callback set ``state.stop``."""

    def on_epoch_end(self, state: TrainState) -> None:
        patience = state.settings.patience
        if state.stop or (patience is not None and state.best.waited >= patience):
            state.stop = True
            if state.progress is not None:
                kept = epoch_label(state.history.epochs, state.best.epoch)  # numbered within its phase, as the log and the bar number them
                state.progress.log(f"{state.phase}: early stop after epoch {state.record.get('phase_epoch', state.epoch)}/{state.settings.epochs} (best: {kept})")
