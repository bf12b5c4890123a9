"""Datasets: image and audio folders, text tables and file listings, split, validated, with bad files skipped and counted.

``load_dataset(path)`` accepts

* an image or audio folder with one sub-folder per class, optionally inside ``train/``, ``val/``
  and ``test/`` (any of the last two may be missing); a folder is audio when it holds more audio
  files (WAV, FLAC, OGG, MP3, ...) than images;
* a CSV, TSV or JSONL file with a text column and a label column (and optionally ``split``);
* a listing of files: a CSV/TSV/JSONL with a ``path`` (or ``file``) column and a label column,
  paths relative to the listing; a folder holding ``index.csv`` is read through it.

Files that cannot be used are never a traceback: they are skipped and listed with the reason in
:attr:`Dataset.skipped`. Problems only the user can fix (a class with one example, no label column)
raise ``ValueError`` with one line naming the file and the fix. A table's label column is read
as classes, numbers or label sets by the task (:mod:`headstart.data.targets`).

Why this module is long: every reader keeps the row each example came from, for errors that name
it, and the CSV checks (encoding, quoting that swallows rows) are the file format's, kept with it.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from headstart.config import LABEL_DELIMITER
from headstart.data.audio import AUDIO_EXTENSIONS, check_audio
from headstart.data.dataset import Dataset, content_key, label_name, sort_classes, unify_labels
from headstart.data.images import IMAGE_EXTENSIONS, check_image
from headstart.data.splits import _take, stratified_split
from headstart.data.targets import check_targets, check_task, encode_splits, merged_rows_note, parse_labels, resolve_task, strata
from headstart.errors import DataWarning

TABLE_EXTENSIONS = frozenset({".csv", ".tsv", ".jsonl", ".json"})
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
TEXT_COLUMNS = ("text", "sentence", "message", "content", "review", "document", "question")
LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "y")
PATH_COLUMNS = ("path", "file", "filename", "filepath", "file_path", "audio", "image")
INDEX_NAME = "index.csv"


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_loop(folder: Path, root: Path) -> bool:
    """True when ``folder`` is a symbolic link to ``root`` or one of its parents (walking it never ends)."""
    return folder.is_symlink() and root.resolve().is_relative_to(folder.resolve())


FILE_KINDS = {"image": (IMAGE_EXTENSIONS, check_image), "audio": (AUDIO_EXTENSIONS, check_audio)}


def check_file(path: Path, modality: str) -> str | None:
    """Why ``path`` cannot be used as an ``modality`` example ("image" or "audio"), or None."""
    return FILE_KINDS[modality][1](path)


def check_files(paths: Sequence[Path], modality: str) -> list[str | None]:
    """:func:`check_file` of every path, decoded on 4 threads (Pillow and libsndfile release the GIL)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(FILE_KINDS[modality][1], paths))


def folder_modality(root: Path) -> str:
    """``"audio"`` when a folder tree holds more audio files than images, else ``"image"``."""
    counts = Counter("image" if p.suffix.lower() in IMAGE_EXTENSIONS else "audio" for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS | AUDIO_EXTENSIONS)
    return "audio" if counts["audio"] > counts["image"] else "image"


def _scan_class_folders(root: Path, skipped: list[tuple[str, str]], modality: str = "image") -> tuple[list[Path], list[str]]:
    paths: list[Path] = []
    names: list[str] = []
    folders = []
    for folder in _class_folders(root):
        if _is_loop(folder, root):
            skipped.append((str(folder), "symbolic link loop (points to a parent folder); class left out"))
        else:
            folders.append(folder)
    for folder in folders:
        for path in sorted(folder.rglob("*")):  # rglob does not follow symbolic links below the class folder
            if path.is_dir():
                continue
            if any(part.startswith(".") for part in path.relative_to(folder).parts):
                skipped.append((str(path), "hidden file"))
                continue
            if path.suffix.lower() not in FILE_KINDS[modality][0]:
                skipped.append((str(path), f"not an {modality} file ({path.suffix or 'no extension'})"))
                continue
            paths.append(path)
            names.append(folder.name)
    problems = check_files(paths, modality)
    kept = [(p, n) for p, n, problem in zip(paths, names, problems) if problem is None]
    skipped.extend((str(p), problem) for p, problem in zip(paths, problems) if problem is not None)
    used = {n for _, n in kept}
    what = "images" if modality == "image" else "audio clips"
    skipped.extend((str(folder), f"class folder without usable {what}; class left out") for folder in folders if folder.name not in used)
    return [p for p, _ in kept], [n for _, n in kept]


def _load_folder(root: Path, *, val_fraction: float, test_fraction: float, seed: int) -> Dataset:
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    modality = folder_modality(root)
    # A split layout has class folders inside its split folders (a class called "train" does not).
    split_dirs = {SPLIT_NAMES[p.name.lower()]: p for p in _class_folders(root) if p.name.lower() in SPLIT_NAMES and _class_folders(p)}
    raw: dict[str, tuple[list[Path], list[str]]] = {}
    if "train" in split_dirs:
        for split, folder in split_dirs.items():
            raw[split] = _scan_class_folders(folder, skipped, modality)
    else:
        raw["all"] = _scan_class_folders(root, skipped, modality)
    return _finish(root, modality, raw, skipped, notes, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 (invalid byte at offset {error.start}); re-save the file as UTF-8"
        ) from None
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{number}: not a JSON object; write one JSON object per line (JSONL)")
                rows.append(row)
        return rows
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    csv.field_size_limit(10_000_000)
    lines = io.StringIO(text, newline="").readlines()  # the lines the csv module counts
    reader = csv.DictReader(lines, delimiter=delimiter)
    rows: list[dict[str, Any]] = []
    try:
        header = reader.fieldnames or []  # reads the header record
        spans = [(_record_start(lines, 1), reader.line_num)]  # (first line, last line) of each record
        for row in reader:
            spans.append((_record_start(lines, spans[-1][1] + 1), reader.line_num))
            rows.append(row)
    except csv.Error as error:
        raise ValueError(f"{path}:{reader.line_num + 1}: unreadable {'TSV' if delimiter == chr(9) else 'CSV'} ({error}); fix or remove that line") from None
    cells = [list(header), *([v for k, v in r.items() if k is not None] for r in rows)]
    _check_quoting(path, lines, spans, cells, delimiter)
    return rows


def _record_start(lines: list[str], number: int) -> int:
    """The line a record starting at or after line ``number`` begins on: the csv reader skips empty lines."""
    while number <= len(lines) and not lines[number - 1].strip("\r\n"):
        number += 1
    return number


def _check_quoting(path: Path, lines: list[str], spans: list[tuple[int, int]], records: list[list[Any]], delimiter: str) -> None:
    """Raise when a stray quote made one record of many lines: it never closes, or it swallowed whole rows.

    A quoted field may hold line breaks, so a record of several lines is only wrong when its quote is
    still open at the end of the file, or when most of its inner lines are rows of their own: as many
    cells as the header, one of them a value its column holds in the single-line records (a label).
    """
    fix = 'fix the quoting (a quote inside a quoted cell is written twice: "")' + (" or save the file as TSV" if delimiter == "," else "")
    first = spans[-1][0]
    try:
        list(csv.reader(lines[first - 1 :], delimiter=delimiter, strict=True))
    except csv.Error as error:
        if "unexpected end of data" in str(error):
            raise ValueError(f"{path}:{first}: a quote opens on line {first} and never closes (the rest of the file became one cell); {fix}") from None
    width = len(records[0])
    single = [r for r, (a, b) in zip(records, spans) if a == b and len(r) == width and None not in r]
    known = [{str(r[j]) for r in single} for j in range(width)]
    for first, last in spans:
        if last - first < 1:
            continue
        inner = [next(csv.reader([line], delimiter=delimiter), []) for line in lines[first:last]]
        rowlike = [cells for cells in inner if len(cells) == width and any(c in known[j] for j, c in enumerate(cells) if c.strip())]
        if rowlike and len(rowlike) * 2 >= len(inner):
            raise ValueError(f"{path}:{first}: a quote opens on line {first} and closes only on line {last}, swallowing {len(rowlike)} rows into one cell; {fix}")


def _pick_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, path: Path, flag: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{path}: no column {wanted!r} (columns: {list(columns)}); pass {flag} with one of them")
        return wanted
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    raise ValueError(f"{path}: cannot tell which column holds the {what} (columns: {list(columns)}); pass {flag} NAME")


def _load_table(path: Path, *, text_column: str | None, label_column: str | None, val_fraction: float, test_fraction: float, seed: int, task: str, delimiter: str) -> Dataset:
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path}: no rows; the file needs a header and at least one row per class")
    columns = [c for c in rows[0] if isinstance(c, str)]  # a CSV row longer than its header adds a None key
    path_col = _listing_column(columns) if text_column is None else None
    if path_col is not None:
        return _load_listing(path, rows, columns, path_col, label_column, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, task=task, delimiter=delimiter)
    text_col = _pick_column(columns, text_column, TEXT_COLUMNS, "text", path, "--text-column")
    label_col = _pick_column(columns, label_column, LABEL_COLUMNS, "labels", path, "--label-column")
    notes = _guessed_columns(columns, text=(text_col, text_column), labels=(label_col, label_column))
    split_col = next((c for c in columns if c.lower() == "split"), None)
    skipped: list[tuple[str, str]] = []
    raw: dict[str, tuple[list[str], list[str], list[str]]] = {}
    for number, row in enumerate(rows, start=2 if path.suffix.lower() in (".csv", ".tsv") else 1):
        text, label = row.get(text_col), row.get(label_col)
        where = f"{path.name}:{number}"
        if text is None or str(text).strip() == "":
            skipped.append((where, "missing text"))
            continue
        if label is None or str(label).strip() == "":
            skipped.append((where, "missing label"))
            continue
        split = _row_split(row, split_col)
        if not split:
            skipped.append((where, f"unknown split {row.get(split_col)!r}"))
            continue
        items, labels, wheres = raw.setdefault(split, ([], [], []))
        items.append(str(text))
        labels.append(label_name(label))
        wheres.append(where)
    return _finish_table(path, "text", raw, skipped, notes, label_col, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, task=task, delimiter=delimiter)


def _finish_table(source: Path, modality: str, raw: dict[str, tuple[list[Any], list[str], list[str]]], skipped: list[tuple[str, str]], notes: list[str], column: str,
                  *, val_fraction: float, test_fraction: float, seed: int, task: str, delimiter: str) -> Dataset:  # fmt: skip
    """The rows of a table or listing read as ``task`` (``auto`` decided from the label cells), then split."""
    task, task_notes = resolve_task(task, [n for _, names, _ in raw.values() for n in names], source, column, delimiter)
    parsed = parse_labels(task, raw, source, delimiter)
    notes.extend(task_notes + (merged_rows_note(raw, parsed) if task == "multilabel" else []))
    return _finish(source, modality, parsed, skipped, notes, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, task=task, target=column)


def _guessed_columns(columns: Sequence[str], **picked: tuple[str, str | None]) -> list[str]:
    """Notes naming each column taken by its name rather than given (``what=(used, given)``), and how to choose another."""
    flag = {"text": "--text-column", "labels": "--label-column"}
    return [f"{what}: column {used!r} (guessed from its name among {list(columns)}); pass {flag[what]} NAME to use another" for what, (used, given) in picked.items() if given is None]


def _listing_column(columns: Sequence[str]) -> str | None:
    """The path column of a table that lists files (image or audio) rather than holding texts, else None."""
    path_col = next((c for c in columns if c.lower() in PATH_COLUMNS), None)
    return path_col if path_col is not None and not any(c.lower() in TEXT_COLUMNS for c in columns) else None


def table_lists_files(path: str | Path) -> bool:
    """True for a CSV/TSV/JSONL whose rows name image or audio files (a listing), False for texts."""
    rows = _read_rows(Path(path))
    return bool(rows) and _listing_column([c for c in rows[0] if isinstance(c, str)]) is not None


def _row_split(row: dict[str, Any], split_col: str | None) -> str:
    """``"all"`` without a split column, the canonical split name, or ``""`` for an unknown one."""
    return "all" if split_col is None else SPLIT_NAMES.get(str(row.get(split_col, "")).strip().lower(), "")


def _load_listing(
    path: Path, rows: list[dict[str, Any]], columns: list[str], path_col: str, label_column: str | None, *, val_fraction: float, test_fraction: float, seed: int,
    task: str, delimiter: str,
) -> Dataset:
    """A table of ``path,label[,split]`` rows naming image or audio files relative to the table."""
    label_col = _pick_column(columns, label_column, LABEL_COLUMNS, "labels", path, "--label-column")
    notes = [f"files listed in {path.name}", *_guessed_columns(columns, labels=(label_col, label_column))]
    split_col = next((c for c in columns if c.lower() == "split"), None)
    skipped: list[tuple[str, str]] = []
    entries: list[tuple[str, Path, str, str]] = []
    for number, row in enumerate(rows, start=2 if path.suffix.lower() in (".csv", ".tsv") else 1):
        where, file, label, split = f"{path.name}:{number}", str(row.get(path_col) or "").strip(), row.get(label_col), _row_split(row, split_col)
        if not file or label is None or str(label).strip() == "" or not split:
            skipped.append((where, "missing path" if not file else "missing label" if split else f"unknown split {row.get(split_col)!r}"))
            continue
        entries.append((split, (path.parent / file).resolve() if not Path(file).is_absolute() else Path(file), label_name(label), where))
    kinds = Counter("audio" if f.suffix.lower() in AUDIO_EXTENSIONS else "image" for _, f, _, _ in entries if f.suffix.lower() in AUDIO_EXTENSIONS | IMAGE_EXTENSIONS)
    if not kinds:
        raise ValueError(f"{path}: column {path_col!r} names no image or audio files; list files such as clip.wav or photo.jpg")
    modality = kinds.most_common(1)[0][0]
    usable = [e for e in entries if e[1].suffix.lower() in FILE_KINDS[modality][0]]
    skipped.extend((str(f), f"not an {modality} file ({f.suffix or 'no extension'})") for _, f, _, _ in entries if f.suffix.lower() not in FILE_KINDS[modality][0])
    raw: dict[str, tuple[list[Path], list[str], list[str]]] = {}
    for (split, file, label, where), problem in zip(usable, check_files([f for _, f, _, _ in usable], modality)):
        if problem is not None:
            skipped.append((str(file), problem))
            continue
        items, labels, wheres = raw.setdefault(split, ([], [], []))
        items.append(file)
        labels.append(label)
        wheres.append(where)
    return _finish_table(path, modality, raw, skipped, notes, label_col, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, task=task, delimiter=delimiter)


def _finish(
    source: Path,
    modality: str,
    raw: dict[str, tuple[list[Any], list[str]]],
    skipped: list[tuple[str, str]],
    notes: list[str],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    task: str = "classification",
    target: str = "target",
    names: Sequence[str] | None = None,
) -> Dataset:
    """Split and encode ``raw`` (split or ``"all"`` -> items and labels: class names, numbers for regression, tuples of names for multilabel)."""
    if task == "classification":
        rename, label_notes = unify_labels(name for _, names in raw.values() for name in names)
        raw = {split: (items, [rename.get(n, n) for n in names]) for split, (items, names) in raw.items()}
        notes.extend(label_notes)
    if "train" in raw and "test" not in raw and "val" in raw:
        raw["test"] = raw.pop("val")
        notes.append("the given validation split is the held-out evaluation split; validation was carved from train")
    if "all" in raw:
        pool = raw.pop("all")
        _check_classes(source, pool[1], task)
        rest, test = stratified_split(strata(task, pool[1]), test_fraction, seed)
        raw["test"] = _take(pool, test)
        raw["train"] = _take(pool, rest)
        notes.append(f"no split given: stratified {1 - test_fraction:.0%}/{test_fraction:.0%} train/test split (seed {seed})")
    if "train" not in raw:
        raise ValueError(f"{source}: no training examples found; add a train/ folder or a 'train' split")
    _check_classes(source, raw["train"][1], task)
    if "val" not in raw:
        keep, val = stratified_split(strata(task, raw["train"][1]), val_fraction, seed + 1)
        raw["val"] = _take(raw["train"], val)
        raw["train"] = _take(raw["train"], keep)
        notes.append(f"validation: stratified {val_fraction:.0%} of train (seed {seed + 1})")
    if task == "classification":
        classes = sort_classes(raw["train"][1])
        index = {name: i for i, name in enumerate(classes)}
        splits: dict[str, tuple[list[Any], list[Any]]] = {}
        for split in ("train", "val", "test"):
            items, names = raw.get(split, ([], []))
            unknown = sorted(set(names) - set(index))
            if unknown:
                raise ValueError(f"{source}: labels {unknown[:5]} appear in {split} but not in train; add training examples for them or remove them")
            splits[split] = (items, [index[n] for n in names])
    else:
        classes, splits = encode_splits(task, raw, source, target, names)
    duplicates, found = _duplicates(splits)
    alerts = []
    if duplicates:
        alerts.append(
            f"leakage: {duplicates} of {len(splits['test'][0])} test examples are identical (by content hash) to training or "
            f"validation examples (e.g. {' '.join(str(found).split())[:120]}); held-out metrics will be optimistic; remove the duplicates"
        )
        warnings.warn(f"{source}: {alerts[-1]}", DataWarning, stacklevel=3)
    return Dataset(modality, classes, splits, str(source), skipped, notes, alerts, duplicates, task=task)


def _duplicates(splits: dict[str, tuple[list[Any], list[int]]]) -> tuple[int, Any]:
    """Test examples whose content (file bytes or text) also occurs in train or val, and the first of them."""
    seen = {content_key(item) for split in ("train", "val") for item in splits[split][0]}
    hits = [item for item in splits["test"][0] if content_key(item) in seen]
    return len(hits), (hits[0] if hits else None)


def _check_classes(source: Path, labels: Sequence[Any], task: str = "classification") -> None:
    if task != "classification":
        check_targets(source, task, labels)
        return
    counts = Counter(labels)
    if len(counts) < 2:
        found = f"only the class {next(iter(counts))!r}" if counts else "no usable examples"
        raise ValueError(f"{source}: found {found}; a classifier needs at least 2 classes with examples")
    small = sorted(name for name, n in counts.items() if n < 2)
    if small:
        raise ValueError(f"{source}: classes {small[:5]} have fewer than 2 examples; add examples or remove those classes")


def load_dataset(
    path: str | Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
    task: str = "auto",
    label_delimiter: str = LABEL_DELIMITER,
) -> Dataset:
    """Read an image or audio folder, a text table or a file listing into a split :class:`Dataset` (see module docstring).

    ``task``: what a label is (see :mod:`headstart.data.targets`); ``auto`` decides from a table's label cells.
    """
    path = Path(path)
    check_task(task)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder; pass an image or audio folder or a CSV/TSV/JSONL file")
    if path.is_dir() and (path / INDEX_NAME).is_file():
        path = path / INDEX_NAME
    if path.is_dir():
        if task not in ("auto", "classification"):
            raise ValueError(f"{path}: a folder of class sub-folders holds one label per file (its folder): it is classification; for --task {task} pass a CSV/TSV/JSONL listing (path,label)")
        return _load_folder(path, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    if path.suffix.lower() in TABLE_EXTENSIONS:
        return _load_table(path, text_column=text_column, label_column=label_column, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                           task=task, delimiter=label_delimiter)  # fmt: skip
    raise ValueError(f"{path}: unsupported dataset; pass a folder of class sub-folders or a .csv/.tsv/.jsonl file (text or a path column)")
