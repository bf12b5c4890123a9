"""Examples passed in memory (paths, PIL images or texts) rather than read from a folder or table.

Apart from :mod:`headstart.data.dataset` because they are checked and split with the readers' rules,
and the readers build :class:`~headstart.data.dataset.Dataset`s: one module would import the other both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from headstart.data.audio import AUDIO_EXTENSIONS
from headstart.data.dataset import Dataset, label_name
from headstart.data.images import IMAGE_EXTENSIONS
from headstart.data.readers import FILE_KINDS, _finish, check_file


def from_examples(items: Sequence[Any], labels: Sequence[Any], *, val_fraction: float = 0.15, seed: int = 0, source: str = "<in memory>",
                  weights: Sequence[float] | None = None, task: str = "classification", names: Sequence[str] | None = None) -> Dataset:  # fmt: skip
    """A training :class:`Dataset` from in-memory examples (image or audio paths, PIL images or texts).

    ``weights``: one per example, weighting its training loss (kept in ``Dataset.weights``, split as the examples are).
    ``task``: ``labels`` are class labels, numbers (``regression``; ``names``: the target's one name) or a 0/1
    matrix ``(n, len(names))`` (``multilabel``; ``names``: its columns, default ``"0"``, ``"1"`` ...).
    """
    if len(items) != len(labels) or (weights is not None and len(weights) != len(items)):
        raise ValueError(f"{len(items)} examples but {len(labels)} labels" + (f" and {len(weights)} weights" if weights is not None else ""))
    modality = item_modality(items)
    items = as_items(items, modality)
    check_items(items, modality)
    # Split the examples' positions with the readers' rules, then put the examples (and their weights) back in.
    if task == "regression":
        codes: list[Any] = [float(y) for y in labels]
    elif task == "multilabel":
        matrix = np.asarray(labels)
        names = [str(j) for j in range(matrix.shape[1])] if names is None else [str(n) for n in names]
        codes = [tuple(names[j] for j in np.flatnonzero(row)) for row in matrix]
    else:
        codes = [label_name(y) for y in labels]
    raw: dict[str, tuple[list[Any], list[Any]]] = {"train": (list(range(len(items))), codes)}
    data = _finish(Path(source), modality, raw, [], [], val_fraction=val_fraction, test_fraction=0.0, seed=seed, task=task,
                   target=str(names[0]) if task == "regression" and names else "target", names=names if task == "multilabel" else None)  # fmt: skip
    positions = {split: list(data.splits[split][0]) for split in data.splits}
    data.splits = {split: ([items[i] for i in positions[split]], codes) for split, (_, codes) in data.splits.items()}
    if weights is not None:
        data.weights = {split: np.asarray(weights, dtype=np.float32)[np.asarray(positions[split], dtype=np.int64)] for split in data.splits}
    return data


def item_modality(items: Sequence[Any]) -> str:
    """``"image"``, ``"audio"`` or ``"text"``: what in-memory examples are (paths are told by their extension)."""

    def kind(x: Any) -> str:
        if isinstance(x, Image.Image):
            return "image"
        suffix = Path(x).suffix.lower() if isinstance(x, (str, Path)) and len(str(x)) < 4096 else ""
        return "image" if suffix in IMAGE_EXTENSIONS else "audio" if suffix in AUDIO_EXTENSIONS else "image" if isinstance(x, Path) else "text"

    kinds = {kind(x) for x in items}
    return kinds.pop() if len(kinds) == 1 and kinds <= {"image", "audio"} else "text"


def as_items(items: Sequence[Any], modality: str) -> list[Any]:
    """Examples as the loaders expect them: image or audio paths given as strings become ``Path``s."""
    return [Path(x) if modality in FILE_KINDS and isinstance(x, str) else x for x in items]


def check_items(items: Sequence[Any], modality: str) -> None:
    """Raise on the first file that cannot be used, naming it: for examples the user passes one by one."""
    if modality not in FILE_KINDS:
        return
    for item in items:
        problem = check_file(item, modality) if isinstance(item, Path) else None
        if problem is not None:
            raise ValueError(f"{item}: {problem}; pass {modality} files ({'WAV, FLAC, OGG, MP3' if modality == 'audio' else 'JPEG, PNG, ...'}) or remove it")
