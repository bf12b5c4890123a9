"""Fuzz the image and table readers with hypothesis: no file a user can hand us may crash them.

Properties
----------
images
    For any bytes saved under an image extension, ``check_image`` returns ``None`` or a one-line
    reason and never raises; when it returns ``None``, ``load_image`` and the evaluation transform
    give a ``(3, 224, 224)`` tensor (what training will do with the file later).
tables
    For any bytes saved as ``.csv``, ``.tsv`` or ``.jsonl``, ``load_dataset`` returns a dataset or
    raises ``ValueError`` with one line that names the file.

Inputs are real encodings first (PIL images of random mode, size and format; tables of random rows
with quotes, separators, newlines, NULs, non-ASCII and numbers) and then damaged (truncated, bytes
overwritten, bytes inserted), so most examples get past the format's magic number.

By hand, for minutes (``tests/test_fuzz_slice.py`` runs a short deterministic slice)::

    nice -n 10 python bench/fuzz_readers.py --minutes 5            # both targets, half the time each
    nice -n 10 python bench/fuzz_readers.py --target tables --minutes 2
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from headstart.data import IMAGE_EXTENSIONS, check_image, load_dataset, load_image
from headstart.data.preprocessing import ImagePreprocessing

MODES = ("RGB", "L", "P", "RGBA", "CMYK", "I;16", "1", "LA", "I", "F", "YCbCr", "LAB", "HSV")
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM")
_TRANSFORM = ImagePreprocessing().eval_transform()


def _encode(mode: str, width: int, height: int, fmt: str, seed: int, frames: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    if mode in ("I;16", "I", "F"):
        image = Image.fromarray((rng.random((height, width)) * 65535).astype(np.uint16))  # a 16-bit greyscale
    image = image if image.mode == mode else image.convert(mode)
    buffer = io.BytesIO()
    extra = {"save_all": True, "append_images": [image.copy() for _ in range(frames - 1)]} if frames > 1 and fmt in ("GIF", "PNG", "TIFF", "WEBP") else {}
    try:
        image.save(buffer, format=fmt, **extra)
    except (OSError, ValueError, KeyError, TypeError):  # this mode cannot be written in this format
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` unchanged, truncated, with bytes overwritten, or with bytes inserted."""
    kind = draw(st.sampled_from(("intact", "truncate", "overwrite", "insert", "header")))
    if kind == "intact" or not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    if kind == "truncate":
        return data[:at]
    if kind == "header":  # the dimensions and chunk lengths live in the first bytes
        at = draw(st.integers(0, min(len(data) - 1, 40)))
    chunk = draw(st.binary(min_size=1, max_size=8))
    if kind == "insert":
        return data[:at] + chunk + data[at:]
    return data[:at] + chunk + data[at + len(chunk) :]


@st.composite
def image_files(draw: st.DrawFn) -> tuple[bytes, str]:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=256)), draw(st.sampled_from(sorted(IMAGE_EXTENSIONS)))
    fmt = draw(st.sampled_from(FORMATS))
    data = _encode(
        draw(st.sampled_from(MODES)), draw(st.integers(1, 48)), draw(st.integers(1, 48)), fmt, draw(st.integers(0, 2**16)), draw(st.integers(1, 3))
    )
    suffix = {"JPEG": ".jpg", "ICO": ".png", "PPM": ".png"}.get(fmt, "." + fmt.lower())
    return draw(damaged(data)), draw(st.sampled_from((suffix, suffix, ".jpg", ".png")))


CELLS = st.one_of(
    st.text(alphabet=st.sampled_from(list('ab ,;\t"\'\n\r\x00é猫\\{}[]:') + ["\ufeff"]), max_size=12),
    st.integers(-3, 12).map(str),
    st.sampled_from(("", "1.0", "nan", "true", "null", "spam", "ham", "1e400")),
)


@st.composite
def table_files(draw: st.DrawFn) -> tuple[bytes, str]:
    suffix = draw(st.sampled_from((".csv", ".tsv", ".jsonl")))
    header = draw(st.lists(st.sampled_from(("text", "label", "split", "id", "Text", "LABEL", "")), min_size=0, max_size=4))
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=5), max_size=16))
    buffer = io.StringIO()
    if suffix == ".jsonl":
        for row in rows:
            values = [json.loads(c) if c in ("1.0", "true", "null") or c.lstrip("-").isdigit() else c for c in row]
            buffer.write(json.dumps(dict(zip(header, values)), ensure_ascii=draw(st.booleans())) + "\n")
    elif draw(st.booleans()):
        writer = csv.writer(buffer, delimiter="\t" if suffix == ".tsv" else ",")
        writer.writerow(header)
        writer.writerows(rows)
    else:  # written by hand: quotes and separators unescaped
        sep = "\t" if suffix == ".tsv" else ","
        buffer.write("\n".join(sep.join(r) for r in [header, *rows]))
    encoding = draw(st.sampled_from(("utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1")))
    data = buffer.getvalue().encode(encoding, errors="replace")
    return draw(damaged(data)), suffix


def check_image_file(data: bytes, suffix: str) -> None:
    """The images property for one file (raises AssertionError or the reader's own error on failure)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        reason = check_image(path)
        if reason is not None:
            assert isinstance(reason, str) and reason and "\n" not in reason, reason
            return
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a reader warning that slips through is a finding too
            tensor = _TRANSFORM(load_image(path))
        assert tuple(tensor.shape) == (3, 224, 224), tensor.shape


def check_table_file(data: bytes, suffix: str) -> None:
    """The tables property for one file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # the leakage warning is an intended outcome
                dataset = load_dataset(path)
        except ValueError as error:
            message = str(error)
            assert "\n" not in message and path.name in message, message
            return
        assert dataset.classes and all(isinstance(t, str) for s in ("train", "val", "test") for t in dataset.items(s))


PROPERTIES = {"images": (image_files, check_image_file), "tables": (table_files, check_table_file)}


def fuzz_target(name: str, **options: object):
    """A hypothesis test of property ``name`` ("images" or "tables") with ``settings(**options)``."""
    strategy, check = PROPERTIES[name]

    @settings(deadline=None, database=None, suppress_health_check=list(HealthCheck), **options)  # type: ignore[arg-type]
    @given(strategy())
    def target(case: tuple[bytes, str]) -> None:
        check(*case)

    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=[*PROPERTIES, "all"], default="all")
    parser.add_argument("--minutes", type=float, default=4.0, help="wall-clock budget, shared by the targets")
    args = parser.parse_args()
    names = list(PROPERTIES) if args.target == "all" else [args.target]
    for name in names:
        deadline = time.monotonic() + 60 * args.minutes / len(names)
        examples = 0
        while time.monotonic() < deadline:
            try:
                fuzz_target(name, max_examples=500)()
            except Exception:  # noqa: BLE001 - report every finding, shrunk by hypothesis
                print(f"{name}: FAILED after {examples} examples\n{traceback.format_exc()}")
                break
            examples += 500
        else:
            print(f"{name}: {examples} examples in {args.minutes / len(names):.1f} min, no failure")


if __name__ == "__main__":
    main()
