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
raise ``ValueError`` with one line naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps

from headstart.data.audio import AUDIO_EXTENSIONS, check_audio

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
TABLE_EXTENSIONS = frozenset({".csv", ".tsv", ".jsonl", ".json"})
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
TEXT_COLUMNS = ("text", "sentence", "message", "content", "review", "document", "question")
LARGEST_DECODE = 4096
MAX_ASPECT_RATIO = 100  # a 1 x 8,000,000 strip decodes, but resizing its short side to 256 needs 2 billion pixels
LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "y")
PATH_COLUMNS = ("path", "file", "filename", "filepath", "file_path", "audio", "image")
INDEX_NAME = "index.csv"

Item = Union[Path, str, Image.Image]


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
    """

    modality: str
    classes: list[str]
    splits: dict[str, tuple[list[Any], list[int]]]
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duplicates: int = 0

    def items(self, split: str) -> list[Any]:
        return self.splits[split][0]

    def labels(self, split: str) -> np.ndarray:
        return np.asarray(self.splits[split][1], dtype=np.int64)

    def summary(self) -> dict[str, Any]:
        counts = {
            split: {self.classes[k]: int(v) for k, v in sorted(Counter(labels).items())}
            for split, (_, labels) in self.splits.items()
        }
        reasons = Counter(reason for _, reason in self.skipped)
        return {
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


# ------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------


def load_image(source: Item) -> Image.Image:
    """Decode an image to 8-bit RGB: EXIF rotation applied; palette, RGBA, CMYK, 16-bit and grey converted.

    Animated images give their first frame. JPEGs wider or taller than ``2 * LARGEST_DECODE`` are
    decoded at reduced scale (never below ``LARGEST_DECODE`` a side): the model sees a few hundred
    pixels, and a 10,000 x 10,000 photo then costs 75 MB instead of 300 MB.
    """
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    if hasattr(source, "to_pil"):  # a headstart.caches.images.CachedImage: decoded and presized earlier
        return source.to_pil()
    with _quiet_pillow(), Image.open(source) as image:  # closed here: a long run must not leak one file handle per image
        if image.format == "JPEG" and max(image.size) > 2 * LARGEST_DECODE:
            image.draft("RGB", (LARGEST_DECODE, LARGEST_DECODE))  # decode a huge photo at 1/2, 1/4 or 1/8 scale
        return _to_rgb(image)


@contextlib.contextmanager
def _quiet_pillow() -> Iterator[None]:
    """Silence Pillow's warnings about damaged metadata ("Corrupt EXIF data", "Truncated File Read").

    The pixels decode (or the file is skipped with a reason); a scraped folder must not flood the
    terminal with one warning per file. Bombs beyond Pillow's hard limit still raise.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def _to_rgb(image: Image.Image) -> Image.Image:
    with _quiet_pillow():
        if image.tell() != 0:  # an animation is used by its first frame (never count frames: a damaged one raises)
            image.seek(0)
        image = ImageOps.exif_transpose(image) or image
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            with np.errstate(invalid="ignore", over="ignore"):
                array = np.nan_to_num(np.asarray(image).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)  # float images may hold NaN/inf
            high = array.max(initial=0.0)
            scale = 255.0 if image.mode == "F" and high <= 1.0 else 255.0 / (65535.0 if high > 255 else 255.0)
            image = Image.fromarray((array * scale).clip(0, 255).astype(np.uint8))
        if image.mode in ("P", "PA", "LA", "RGBA", "La"):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        return image.convert("RGB")


def check_image(path: Path) -> str | None:
    """Fully decode ``path`` (at reduced scale for JPEG); return why it is unusable, or None."""
    if not path.exists():
        return "no such file (or a broken or looping symbolic link)"
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with _quiet_pillow(), Image.open(path) as image:
            width, height = image.size
            if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
                return f"extreme aspect ratio ({width} x {height}, over {MAX_ASPECT_RATIO}:1); crop it or remove it"
            image.draft("RGB", (64, 64))
            _to_rgb(image)  # the same conversion training will do, at reduced scale for JPEG
        return None
    except Image.DecompressionBombError:
        return "decompression bomb (too many pixels)"
    except (OSError, SyntaxError, ValueError) as error:
        text = str(error).split("\n")[0]
        if "cannot identify image file" in text:
            return "not an image (cannot identify format)"
        return f"cannot decode image ({text[:80]})"
    except Exception as error:  # noqa: BLE001 - Pillow raises TypeError, KeyError, struct.error... for damaged files
        return f"cannot decode image ({type(error).__name__}: {str(error).splitlines()[0][:80] if str(error) else ''})"


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


# ------------------------------------------------------------------------------------------------
# Text tables
# ------------------------------------------------------------------------------------------------


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
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        return list(reader)
    except csv.Error as error:
        raise ValueError(f"{path}:{reader.line_num + 1}: unreadable {'TSV' if delimiter == chr(9) else 'CSV'} ({error}); fix or remove that line") from None


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


def _load_table(path: Path, *, text_column: str | None, label_column: str | None, val_fraction: float, test_fraction: float, seed: int) -> Dataset:
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path}: no rows; the file needs a header and at least one row per class")
    columns = [c for c in rows[0] if isinstance(c, str)]  # a CSV row longer than its header adds a None key
    path_col = _listing_column(columns) if text_column is None else None
    if path_col is not None:
        return _load_listing(path, rows, columns, path_col, label_column, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    text_col = _pick_column(columns, text_column, TEXT_COLUMNS, "text", path, "--text-column")
    label_col = _pick_column(columns, label_column, LABEL_COLUMNS, "labels", path, "--label-column")
    split_col = next((c for c in columns if c.lower() == "split"), None)
    skipped: list[tuple[str, str]] = []
    raw: dict[str, tuple[list[str], list[str]]] = {}
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
        items, labels = raw.setdefault(split, ([], []))
        items.append(str(text))
        labels.append(label_name(label))
    return _finish(path, "text", raw, skipped, [], val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)


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
    path: Path, rows: list[dict[str, Any]], columns: list[str], path_col: str, label_column: str | None, *, val_fraction: float, test_fraction: float, seed: int
) -> Dataset:
    """A table of ``path,label[,split]`` rows naming image or audio files relative to the table."""
    label_col = _pick_column(columns, label_column, LABEL_COLUMNS, "labels", path, "--label-column")
    split_col = next((c for c in columns if c.lower() == "split"), None)
    skipped: list[tuple[str, str]] = []
    entries: list[tuple[str, Path, str]] = []
    for number, row in enumerate(rows, start=2 if path.suffix.lower() in (".csv", ".tsv") else 1):
        where, file, label, split = f"{path.name}:{number}", str(row.get(path_col) or "").strip(), row.get(label_col), _row_split(row, split_col)
        if not file or label is None or str(label).strip() == "" or not split:
            skipped.append((where, "missing path" if not file else "missing label" if split else f"unknown split {row.get(split_col)!r}"))
            continue
        entries.append((split, (path.parent / file).resolve() if not Path(file).is_absolute() else Path(file), label_name(label)))
    kinds = Counter("audio" if f.suffix.lower() in AUDIO_EXTENSIONS else "image" for _, f, _ in entries if f.suffix.lower() in AUDIO_EXTENSIONS | IMAGE_EXTENSIONS)
    if not kinds:
        raise ValueError(f"{path}: column {path_col!r} names no image or audio files; list files such as clip.wav or photo.jpg")
    modality = kinds.most_common(1)[0][0]
    usable = [e for e in entries if e[1].suffix.lower() in FILE_KINDS[modality][0]]
    skipped.extend((str(f), f"not an {modality} file ({f.suffix or 'no extension'})") for _, f, _ in entries if f.suffix.lower() not in FILE_KINDS[modality][0])
    raw: dict[str, tuple[list[Path], list[str]]] = {}
    for (split, file, label), problem in zip(usable, check_files([f for _, f, _ in usable], modality)):
        if problem is not None:
            skipped.append((str(file), problem))
            continue
        items, labels = raw.setdefault(split, ([], []))
        items.append(file)
        labels.append(label)
    return _finish(path, modality, raw, skipped, [f"files listed in {path.name}"], val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)


def label_name(value: Any) -> str:
    """A label as a class name: ``1``, ``1.0`` and ``"1"`` are one class; surrounding spaces dropped."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def sort_classes(names: set[str] | Sequence[str]) -> list[str]:
    """Class names in order: numerically when every name is a number (2 before 10), else by text."""
    names = sorted(set(names))
    try:
        return sorted(names, key=float)
    except ValueError:
        return names


# ------------------------------------------------------------------------------------------------
# Splitting
# ------------------------------------------------------------------------------------------------


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
) -> Dataset:
    if "train" in raw and "test" not in raw and "val" in raw:
        raw["test"] = raw.pop("val")
        notes.append("the given validation split is the held-out evaluation split; validation was carved from train")
    if "all" in raw:
        pool = raw.pop("all")
        _check_classes(source, pool[1])
        rest, test = stratified_split(pool[1], test_fraction, seed)
        raw["test"] = _take(pool, test)
        raw["train"] = _take(pool, rest)
        notes.append(f"no split given: stratified {1 - test_fraction:.0%}/{test_fraction:.0%} train/test split (seed {seed})")
    if "train" not in raw:
        raise ValueError(f"{source}: no training examples found; add a train/ folder or a 'train' split")
    _check_classes(source, raw["train"][1])
    if "val" not in raw:
        keep, val = stratified_split(raw["train"][1], val_fraction, seed + 1)
        raw["val"] = _take(raw["train"], val)
        raw["train"] = _take(raw["train"], keep)
        notes.append(f"validation: stratified {val_fraction:.0%} of train (seed {seed + 1})")
    classes = sort_classes(raw["train"][1])
    index = {name: i for i, name in enumerate(classes)}
    splits: dict[str, tuple[list[Any], list[int]]] = {}
    for split in ("train", "val", "test"):
        items, names = raw.get(split, ([], []))
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise ValueError(f"{source}: labels {unknown[:5]} appear in {split} but not in train; add training examples for them or remove them")
        splits[split] = (items, [index[n] for n in names])
    duplicates, found = _duplicates(splits)
    alerts = []
    if duplicates:
        alerts.append(
            f"leakage: {duplicates} of {len(splits['test'][0])} test examples are identical (by content hash) to training or "
            f"validation examples (e.g. {str(found)[:120]}); held-out metrics will be optimistic; remove the duplicates"
        )
        warnings.warn(f"{source}: {alerts[-1]}", UserWarning, stacklevel=3)
    return Dataset(modality, classes, splits, str(source), skipped, notes, alerts, duplicates)


def _duplicates(splits: dict[str, tuple[list[Any], list[int]]]) -> tuple[int, Any]:
    """Test examples whose content (file bytes or text) also occurs in train or val, and the first of them."""
    seen = {content_key(item) for split in ("train", "val") for item in splits[split][0]}
    hits = [item for item in splits["test"][0] if content_key(item) in seen]
    return len(hits), (hits[0] if hits else None)


def _check_classes(source: Path, labels: Sequence[str]) -> None:
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
) -> Dataset:
    """Read an image or audio folder, a text table or a file listing into a split :class:`Dataset` (see module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder; pass an image or audio folder or a CSV/TSV/JSONL file")
    if path.is_dir() and (path / INDEX_NAME).is_file():
        path = path / INDEX_NAME
    if path.is_dir():
        return _load_folder(path, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    if path.suffix.lower() in TABLE_EXTENSIONS:
        return _load_table(path, text_column=text_column, label_column=label_column, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    raise ValueError(f"{path}: unsupported dataset; pass a folder of class sub-folders or a .csv/.tsv/.jsonl file (text or a path column)")


def from_examples(items: Sequence[Any], labels: Sequence[Any], *, val_fraction: float = 0.15, seed: int = 0, source: str = "<in memory>") -> Dataset:
    """A training :class:`Dataset` from in-memory examples (image or audio paths, PIL images or texts)."""
    if len(items) != len(labels):
        raise ValueError(f"{len(items)} examples but {len(labels)} labels")
    modality = item_modality(items)
    items = as_items(items, modality)
    check_items(items, modality)
    raw = {"train": (list(items), [label_name(y) for y in labels])}
    return _finish(Path(source), modality, raw, [], [], val_fraction=val_fraction, test_fraction=0.0, seed=seed)


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


# ------------------------------------------------------------------------------------------------
# Torch loading
# ------------------------------------------------------------------------------------------------


class ExampleDataset:
    """A torch-style dataset of (input, label); files are decoded (``decode``) and transformed per access."""

    def __init__(self, items: Sequence[Any], labels: Sequence[int] | None, transform: Any = None, decode: Any = None) -> None:
        self.items, self.labels, self.transform, self.decode = list(items), labels, transform, decode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        item = self.items[index]
        if self.decode is not None:
            item = self.decode(item)
        if self.transform is not None:
            item = self.transform(item)
        return item, (-1 if self.labels is None else int(self.labels[index]))


def loader_workers(examples: int, batch_size: int, *, in_process: bool = False) -> int:
    """How many DataLoader worker processes decode and augment ``examples`` in batches of ``batch_size``.

    On a CPU the training step needs the cores: at most 2 workers, and none when the work is cheap
    enough to run between steps in the training process (``in_process``: augmenting cached pixels,
    BENCHMARKS.md P2). On a GPU the step runs on the device and the cores are free to feed it: one
    worker per core but one, up to 8 (P5). Never more than there are batches.
    ``HEADSTART_WORKERS`` overrides the choice.
    """
    from headstart.training import distributed

    batches = max(1, examples // max(1, batch_size))
    if (chosen := os.environ.get("HEADSTART_WORKERS")) is not None:
        if not chosen.strip().isdigit():
            raise ValueError(f"HEADSTART_WORKERS={chosen!r}: set it to a whole number of loader worker processes (0 for none), or unset it")
        return min(int(chosen), batches)
    if distributed.device().type == "cpu":
        return 0 if in_process else min(2, batches)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(max(1, cores - 1), 8, batches)


def make_loader(
    items: Sequence[Any],
    labels: Sequence[int] | None,
    preprocessing: Any,
    *,
    batch_size: int,
    train: bool = False,
    augment: str = "none",
    seed: int = 0,
    workers: int | None = None,
    shard: bool = False,
) -> Any:
    """A DataLoader yielding ``(inputs, labels)`` batches ready for a backbone.

    ``shard``: under torchrun, this rank's share of the examples (see :func:`_loader`).
    """
    from headstart.data.preprocessing import AudioPreprocessing, ImagePreprocessing, SpectrogramPreprocessing

    if isinstance(preprocessing, ImagePreprocessing) and train and augment != "none" and _all_presized(items):
        # Augmenting cached pixels with torch ops costs ~1 ms an image: on a CPU the training process does it
        # between steps, since loader workers would take cores from the step (BENCHMARKS.md, P2).
        from headstart.caches.images import CachedImage

        if workers is None:
            workers = loader_workers(len(items), batch_size, in_process=True)
        dataset = ExampleDataset(items, labels, preprocessing.presized_train_transform(augment), decode=CachedImage.array)
        return _loader(dataset, batch_size=batch_size, shuffle=True, seed=seed, shard=shard, num_workers=workers, collate_fn=preprocessing.collate,
                       prefetch_factor=4 if workers else None)  # fmt: skip
    if isinstance(preprocessing, (ImagePreprocessing, SpectrogramPreprocessing)):
        transform = preprocessing.train_transform(augment) if train else preprocessing.eval_transform()
        if workers is None:
            workers = loader_workers(len(items), batch_size) if len(items) > batch_size else 0
        dataset = ExampleDataset(items, labels, transform, decode=load_image if isinstance(preprocessing, ImagePreprocessing) else None)
        return _loader(dataset, batch_size=batch_size, shuffle=train, seed=seed, shard=shard, num_workers=workers, persistent_workers=False,
                       prefetch_factor=4 if workers else None)  # fmt: skip

    import torch

    def collate(batch: list[tuple[Any, int]]) -> tuple[dict[str, Any], Any]:
        inputs, ys = zip(*batch)
        return preprocessing(list(inputs)), torch.as_tensor(ys)

    transform = preprocessing.waveform_transform(augment if train else "none") if isinstance(preprocessing, AudioPreprocessing) else None
    return _loader(ExampleDataset(items, labels, transform), batch_size=batch_size, shuffle=train, seed=seed, shard=shard, collate_fn=collate)


def _all_presized(items: Sequence[Any]) -> bool:
    from headstart.caches.images import CachedImage

    return bool(items) and all(isinstance(item, CachedImage) for item in items)


def tensor_loader(inputs: Any, labels: Sequence[int], *, batch_size: int, shuffle: bool = False, seed: int = 0, shard: bool = False) -> Any:
    """Batches of precomputed tensors (cached features or activations), shuffled as :func:`make_loader` shuffles."""
    import torch
    from torch.utils.data import TensorDataset

    dataset = TensorDataset(torch.as_tensor(inputs), torch.as_tensor(np.asarray(labels)))
    return _loader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed, shard=shard)


def _loader(dataset: Any, *, batch_size: int, shuffle: bool, seed: int, shard: bool, **options: Any) -> Any:
    """The one DataLoader recipe: seeded shuffling; with ``shard`` under torchrun, a ``DistributedSampler``
    for training (same number of steps on every rank) or an unpadded share for evaluation; batches
    in pinned memory when training runs on a GPU, so the copy to it overlaps compute."""
    import torch
    from torch.utils.data import DataLoader

    from headstart.training import distributed

    sampler = distributed.train_sampler(dataset, seed=seed) if shard and shuffle else None
    if shard and not shuffle:
        dataset = distributed.eval_subset(dataset)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler, pin_memory=distributed.device().type == "cuda",
                      generator=torch.Generator().manual_seed(seed), **options)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Real data shipped by packages
# ------------------------------------------------------------------------------------------------


def load_elpv(*, task: str = "binary", test_fraction: float = 0.25, val_fraction: float = 0.15, seed: int = 0, limit: int | None = None) -> Dataset:
    """The ELPV solar-cell set (``pip install elpv-dataset``; CC BY-NC-SA 4.0, never redistribute).

    ``task="binary"``: defective when the defect probability is >= 0.5; ``task="4class"``: the four
    probabilities {0, 1/3, 2/3, 1}. The test split is stratified by probability *and* cell type, as
    in Deitsch et al. (2019); ``limit`` keeps a stratified subset (for demos and tests).
    """
    try:
        import elpv_dataset
    except ImportError:
        raise ImportError("load_elpv needs the package `elpv-dataset`: pip install elpv-dataset") from None
    root = Path(elpv_dataset.__file__).parent / "data"
    rows = [line.split() for line in (root / "labels.csv").read_text().splitlines() if line.strip()]
    paths = [root / r[0] for r in rows]
    probability = np.array([float(r[1]) for r in rows])
    kind = [r[2] for r in rows]
    if task == "binary":
        names = ["defective" if p >= 0.5 else "functional" for p in probability]
    elif task == "4class":
        names = [f"p={round(p * 3)}/3" for p in probability]
    else:
        raise ValueError(f"task={task!r}; use 'binary' or '4class'")
    strata = [f"{p:.2f}-{k}" for p, k in zip(probability, kind)]
    if limit is not None and limit < len(paths):
        _, taken = stratified_split(strata, limit / len(paths), seed + 7)
        paths, names, strata = [paths[i] for i in taken], [names[i] for i in taken], [strata[i] for i in taken]
    train_index, test_index = stratified_split(strata, test_fraction, seed)
    raw = {"train": ([paths[i] for i in train_index], [names[i] for i in train_index]), "test": ([paths[i] for i in test_index], [names[i] for i in test_index])}
    notes = [f"elpv {task}: stratified {1 - test_fraction:.0%}/{test_fraction:.0%} split by defect probability and cell type (seed {seed})"]
    return _finish(root, "image", raw, [], notes, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
