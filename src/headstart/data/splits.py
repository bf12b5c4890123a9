"""Stratified splitting: every class keeps its share in each split, reproducibly from a seed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def stratified_split(labels: Sequence[Any], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, taken) with ``fraction`` of each class taken, at least one per class."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    kept, taken = [], []
    for value in sorted(set(labels.tolist())):
        index = np.flatnonzero(labels == value)
        rng.shuffle(index)
        n_take = min(len(index) - 1, max(1, int(round(fraction * len(index))))) if fraction > 0 else 0
        taken.extend(index[:n_take])
        kept.extend(index[n_take:])
    return np.sort(np.asarray(kept, dtype=np.int64)), np.sort(np.asarray(taken, dtype=np.int64))


def _take(pair: tuple[list[Any], list[str]], index: np.ndarray) -> tuple[list[Any], list[str]]:
    return [pair[0][i] for i in index], [pair[1][i] for i in index]
