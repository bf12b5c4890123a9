"""The training loop, its state and callbacks, optimizers and schedules, regularizers, checkpoints, distributed runs."""
