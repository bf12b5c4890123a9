"""Training a model: the loop, its typed state and callbacks, optimizers and schedules, evaluation,
regularizers, checkpoints and distributed runs.

:func:`fit_model` trains one phase; :class:`Callback` subclasses (the built-in :class:`KeepBest` and
:class:`EarlyStopping`, :class:`~headstart.training.checkpoint.Checkpoint`, trackers, users' own)
watch and steer it through one :class:`TrainState`. The submodules import each other directly,
never through this package, so importing any of them does not pull the rest in a cycle.
"""

from headstart.training.callbacks import Callback, EarlyStopping, KeepBest
from headstart.training.evaluation import evaluate_loader
from headstart.training.loop import fit_model, seed_everything
from headstart.training.optim import make_scheduler, param_groups
from headstart.training.state import History, TrainSettings, TrainState

__all__ = [
    "Callback",
    "EarlyStopping",
    "History",
    "KeepBest",
    "TrainSettings",
    "TrainState",
    "evaluate_loader",
    "fit_model",
    "make_scheduler",
    "param_groups",
    "seed_everything",
]
