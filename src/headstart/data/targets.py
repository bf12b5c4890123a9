"""How a label column is read for each task: classes, a number, or a set of labels.

* ``classification``: each cell is one class name (as ever).
* ``regression``: each cell is a number (``0.33``, ``-1e3``); a cell that is not one is an error
  naming the file and row. ``auto`` picks regression for a table whose label cells are all numbers
  that are not all whole or take more than :data:`~headstart.config.REGRESSION_DISTINCT` values,
  and says so in a note with the way back (``--task classification``).
* ``multilabel``: a cell holds several labels separated by the delimiter (``|`` by default,
  ``--label-delimiter``), and/or the same item (text or file) comes on several rows, one per label:
  its labels are the union. An image or audio *folder* has one label per file (its folder), so it
  is always read as classification.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headstart.config import REGRESSION_DISTINCT, TASK_NAMES
from headstart.data.dataset import _NUMBER, sort_classes

Raw = dict[str, tuple[list[Any], list[Any]]]


def check_task(task: str) -> None:
    if task not in TASK_NAMES:
        raise ValueError(f"task={task!r}; choose one of {list(TASK_NAMES)}")


def is_number(text: str) -> bool:
    return bool(_NUMBER.fullmatch(text.strip()))


def resolve_task(task: str, names: Sequence[str], source: Path, column: str, delimiter: str) -> tuple[str, list[str]]:
    """The task a table's label column is read as, and the note saying why when ``task`` is ``auto``."""
    check_task(task)
    if task != "auto":
        return task, []
    if names and all(is_number(n) for n in names):
        values = np.array([float(n) for n in names])
        distinct = len(np.unique(values))
        whole = bool(np.all(values == np.round(values)))
        if not whole or distinct > REGRESSION_DISTINCT:
            why = "not all whole numbers" if not whole else f"{distinct} distinct values, more than {REGRESSION_DISTINCT}"
            return "regression", [f"task: the label column {column!r} of {source.name} holds numbers ({why}): read as a regression target; "
                                  "pass --task classification to read the values as classes"]  # fmt: skip
    notes = []
    if delimiter and sum(delimiter in n for n in names) * 2 > len(names):
        notes.append(f"task: most labels contain {delimiter!r}; read as classes: pass --task multilabel if they list several labels each")
    return "classification", notes


def parse_labels(task: str, raw: dict[str, tuple[list[Any], list[str], list[str]]], source: Path, delimiter: str) -> Raw:
    """``raw`` (split -> items, label cells, where each came from) as the labels :func:`headstart.data.readers._finish` takes for ``task``.

    Regression cells become floats (one that is not a number is an error naming ``file:row``);
    multi-label cells become tuples of label names, an item on several rows merged into one example.
    """
    out: Raw = {}
    for split, (items, names, wheres) in raw.items():
        if task == "regression":
            values = []
            for name, where in zip(names, wheres):
                if not is_number(name) or not np.isfinite(float(name)):
                    raise ValueError(f"{source.parent / where}: label {name!r} is not a number; fix that row (e.g. 0.25), or pass --task classification to read the labels as classes")
                values.append(float(name))
            out[split] = (list(items), values)
        elif task == "multilabel":
            merged: dict[Any, set[str]] = {}
            for item, name in zip(items, names):
                parts = {p.strip() for p in (name.split(delimiter) if delimiter else [name]) if p.strip()}
                merged.setdefault(item, set()).update(parts)
            out[split] = (list(merged), [tuple(sorted(v)) for v in merged.values()])
        else:
            out[split] = (list(items), list(names))
    return out


def merged_rows_note(raw: dict[str, tuple[list[Any], list[str], list[str]]], parsed: Raw) -> list[str]:
    """A note when items came on several rows (one per label) and were merged."""
    rows, examples = sum(len(v[0]) for v in raw.values()), sum(len(v[0]) for v in parsed.values())
    return [f"multilabel: {rows} rows are {examples} examples (an item on several rows has the union of their labels)"] if rows != examples else []


def strata(task: str, labels: Sequence[Any]) -> list[Any]:
    """What a split is stratified by: the class; the target's quintile (regression); an example's rarest label (multilabel)."""
    if task == "regression":
        values = np.asarray(labels, dtype=np.float64)
        if len(values) < 10:
            return [0] * len(values)
        return np.searchsorted(np.quantile(values, [0.2, 0.4, 0.6, 0.8]), values, side="right").tolist()
    if task == "multilabel":
        counts = Counter(name for names in labels for name in names)
        return [min(names, key=lambda n: (counts[n], n)) if names else "" for names in labels]
    return list(labels)


def check_targets(source: Path, task: str, labels: Sequence[Any]) -> None:
    """Enough to learn from: two examples (regression, with two different values), or one label present (multilabel)."""
    if task == "regression":
        if len(labels) < 2 or len(set(labels)) < 2:
            raise ValueError(f"{source}: found {len(labels)} usable examples with {len(set(labels))} distinct values; a regression target needs at least 2 different values")
    elif not any(labels) or len(labels) < 2:
        raise ValueError(f"{source}: found {len(labels)} usable examples and no labels; a multi-label set needs examples with labels")


def encode_splits(task: str, raw: Raw, source: Path, target: str, names: Sequence[str] | None = None) -> tuple[list[str], dict[str, tuple[list[Any], list[Any]]]]:
    """Class names (the target column's name for regression; the label vocabulary of train for multilabel, or ``names``
    where the caller fixes it, as the estimator's columns) and each split's labels."""
    if task == "regression":
        return [target], {split: raw.get(split, ([], [])) for split in ("train", "val", "test")}
    classes = list(names) if names is not None else sort_classes({n for labels in raw["train"][1] for n in labels})
    index = {name: i for i, name in enumerate(classes)}
    splits = {}
    for split in ("train", "val", "test"):
        items, sets = raw.get(split, ([], []))
        unknown = sorted({n for labels in sets for n in labels} - set(index))
        if unknown:
            raise ValueError(f"{source}: labels {unknown[:5]} appear in {split} but not in train; add training examples for them or remove them")
        splits[split] = (items, [tuple(index[n] for n in labels) for labels in sets])
    return classes, splits

