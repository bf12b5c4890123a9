"""The split dataset every reader returns, and how labels and example contents are named."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from headstart.data.images import Item


@dataclass
class Dataset:
    """Examples split into ``train``/``val``/``test``, with class names and what was skipped.

    Attributes
    ----------
    modality : {"image", "audio", "text"}
    classes : list of str
        Sorted class names; labels are indices into it.
    splits : dict
        ``split name -> (items, labels)``; items are paths (images, audio) or strings (texts).
    skipped : list of (str, str)
        ``(file or row, reason)`` for everything left out.
    notes : list of str
        How the splits were formed (e.g. "val/ folder used as test split").
    warnings : list of str
        Problems that do not stop training but bias its results (test examples duplicated in train).
    duplicates : int
        Number of test examples whose content also appears in train or val.
    weights : dict or None
        ``split name -> per-example weights`` of the training loss (scikit-learn's ``sample_weight``,
        set by :func:`headstart.data.from_examples`); ``None``: every example counts once.
    task : {"classification", "regression", "multilabel"}
        What a label is (:mod:`headstart.tasks`). ``classes`` then holds the class names, the target
        column's name (one), or the label names; ``splits`` holds class indices, numbers, or tuples
        of label indices, and :meth:`labels` returns them as int64 ``(n,)``, float32 ``(n,)`` or a
        float32 0/1 matrix ``(n, len(classes))``.
    """

    modality: str
    classes: list[str]
    splits: dict[str, tuple[list[Any], list[int]]]
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duplicates: int = 0
    weights: dict[str, np.ndarray] | None = None
    task: str = "classification"

    def items(self, split: str) -> list[Any]:
        return self.splits[split][0]

    def labels(self, split: str) -> np.ndarray:
        if self.task == "regression":
            return np.asarray(self.splits[split][1], dtype=np.float32)
        if self.task == "multilabel":
            matrix = np.zeros((len(self.splits[split][1]), len(self.classes)), dtype=np.float32)
            for row, codes in enumerate(self.splits[split][1]):
                matrix[row, list(codes)] = 1.0
            return matrix
        return np.asarray(self.splits[split][1], dtype=np.int64)

    def _counts(self, labels: list[Any]) -> dict[str, int]:
        """Examples per class; per label (multilabel: an example counts once under each of its labels); all of them (regression)."""
        if self.task == "regression":
            return {self.classes[0]: len(labels)}
        if self.task == "multilabel":
            return {self.classes[k]: int(v) for k, v in sorted(Counter(k for codes in labels for k in codes).items())}
        return {self.classes[k]: int(v) for k, v in sorted(Counter(labels).items())}

    def summary(self) -> dict[str, Any]:
        counts = {split: self._counts(labels) for split, (_, labels) in self.splits.items()}
        reasons = Counter(reason for _, reason in self.skipped)
        extra: dict[str, Any] = {"task": self.task}
        if self.task == "regression":
            extra["target"] = {split: {"n": len(v), "mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)), "max": float(np.max(v))}
                               for split, (_, v) in self.splits.items() if len(v)}  # fmt: skip
        if self.task == "multilabel":
            extra["examples"] = {split: len(items) for split, (items, _) in self.splits.items()}
        return {
            **extra,
            "source": self.source,
            "modality": self.modality,
            "classes": self.classes,
            "counts": counts,
            "skipped": len(self.skipped),
            "skipped_reasons": dict(reasons),
            "skipped_files": [{"file": f, "reason": r} for f, r in self.skipped],
            "notes": self.notes,
            "warnings": self.warnings,
            "duplicates_across_splits": self.duplicates,
        }


def label_name(value: Any) -> str:
    """A label as a class name: ``1``, ``1.0`` and ``"1"`` are one class; surrounding spaces dropped."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def number_spelling(name: str) -> str | None:
    """The plain spelling of a label that is a number (``01``, ``1.0``, ``+1``, ``1e0`` -> ``1``), else None."""
    if not _NUMBER.fullmatch(name.strip()):
        return None
    value = Decimal(name.strip())
    return "0" if value == 0 else format(value.normalize(), "f")


def unify_labels(names: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Labels that are one number written differently become one class; texts are never merged.

    Returns the renaming (spelling -> class name; empty when every number has one spelling) and the
    notes that say what was merged, and which texts differ only in case (kept apart: "a" is not "A").
    """
    names = set(names)
    numbers: dict[str, set[str]] = {}
    for name in names:
        plain = number_spelling(name)
        if plain is not None:
            numbers.setdefault(plain, set()).add(name)
    merged = {plain: sorted(spellings) for plain, spellings in sorted(numbers.items()) if len(spellings) > 1}
    rename = {name: plain for plain, spellings in numbers.items() for name in spellings if name != plain} if merged else {}
    notes = []
    if merged:
        groups = "; ".join(f"{', '.join(map(repr, spellings))} -> {plain!r}" for plain, spellings in list(merged.items())[:5])
        notes.append(f"labels that are the same number written differently are one class: {groups}{' ...' if len(merged) > 5 else ''}")
    cases: dict[str, list[str]] = {}
    for name in sorted(names):
        cases.setdefault(name.casefold(), []).append(name)
    twins = [spellings for spellings in cases.values() if len(spellings) > 1]
    if twins:
        shown = "; ".join(" and ".join(map(repr, spellings)) for spellings in twins[:5])
        notes.append(f"labels {shown} differ only in upper/lower case and stay separate classes; write them one way if they are one class")
    return rename, notes


def sort_classes(names: set[str] | Sequence[str]) -> list[str]:
    """Class names in order: numerically when every name is a number (2 before 10), else by text."""
    names = sorted(set(names))
    try:
        return sorted(names, key=float)
    except ValueError:
        return names


def content_key(item: Item) -> str:
    """Hash of what an example *contains* (file bytes, pixels or text): the embedding-cache key."""
    digest = hashlib.sha256()
    if isinstance(item, Image.Image):
        digest.update(f"{item.mode}{item.size}".encode())
        digest.update(item.tobytes())
    elif isinstance(item, Path):
        digest.update(item.read_bytes())
    else:
        digest.update(str(item).encode("utf-8"))
    return digest.hexdigest()[:32]
