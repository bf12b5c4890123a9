"""A short, deterministic slice of ``bench/fuzz_readers.py``: the image and table readers never crash."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("hypothesis", reason="the fuzz slice needs the dev extra: pip install -e '.[dev]'")

_spec = importlib.util.spec_from_file_location("fuzz_readers", Path(__file__).resolve().parents[1] / "bench" / "fuzz_readers.py")
fuzz_readers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_readers)


@pytest.mark.parametrize(("target", "examples"), [("images", 60), ("tables", 200)])
def test_readers_survive_damaged_files(target, examples):
    fuzz_readers.fuzz_target(target, max_examples=examples, derandomize=True)()


def test_damaged_multi_frame_tiff_is_skipped_not_a_crash(tmp_path):
    """Found by the fuzzer: frame 1 of a TIFF was damaged; counting frames raised inside a training worker."""
    import io

    from PIL import Image

    from headstart.data import check_image, load_image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="TIFF", save_all=True, append_images=[Image.new("RGB", (8, 8))])
    data = bytearray(buffer.getvalue())
    second = data.rfind(b"\x00\x01\x04\x00")  # the ImageWidth tag (256) of the second frame's directory
    data[second : second + 2] = b"\x00\x7f"  # retag it: the frame now has no width
    path = tmp_path / "two.tiff"
    path.write_bytes(bytes(data))
    assert check_image(path) is None and load_image(path).size == (8, 8)  # the first frame is intact and used


def test_extreme_aspect_ratio_is_skipped_not_a_crash(tmp_path):
    """Found by the fuzzer: a 1-pixel-wide TIFF strip passed the check, then resizing it ran out of memory."""
    from PIL import Image

    from headstart.data import check_image, load_dataset

    Image.new("L", (1, 30_000)).save(tmp_path / "strip.png")
    assert check_image(tmp_path / "strip.png") == "extreme aspect ratio (1 x 30000, over 100:1); crop it or remove it"
    Image.new("RGB", (2_000, 21)).save(tmp_path / "banner.png")  # 95:1 is still an image
    assert check_image(tmp_path / "banner.png") is None
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i, 0, 0) if name == "a" else (0, i, 0)).save(tmp_path / "data" / name / f"{i}.png")
    (tmp_path / "strip.png").rename(tmp_path / "data" / "a" / "strip.png")
    assert [r for _, r in load_dataset(tmp_path / "data").skipped] == [check_image(tmp_path / "data" / "a" / "strip.png")]


def test_float_image_with_nan_and_inf_decodes_cleanly(tmp_path):
    """Found by the fuzzer: a float (PFM) image holding NaN/inf gave undefined pixels and numpy warnings."""
    import warnings

    import numpy as np
    from PIL import Image

    from headstart.data import load_image

    pixels = np.array([[np.nan, np.inf, -np.inf, 0.5]], dtype=np.float32).repeat(4, axis=0)
    Image.fromarray(pixels, mode="F").save(tmp_path / "float.tiff")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = np.asarray(load_image(tmp_path / "float.tiff"))
    assert rgb[0, :, 0].tolist() == [0, 0, 0, 127]  # NaN and inf become black; 0..1 floats are scaled to 0..255


def test_csv_row_longer_than_its_header_is_read(tmp_path):
    """Found by the fuzzer: a row with more cells than the header added a ``None`` column name."""
    from headstart.data import load_dataset

    path = tmp_path / "wide.csv"
    path.write_text("text,label\n" + "".join(f"t{i},{i % 2},extra,cells\n" for i in range(10)), encoding="utf-8")
    assert load_dataset(path).classes == ["0", "1"]
    with pytest.raises(ValueError, match=r"short.csv: cannot tell which column holds the text"):
        (tmp_path / "short.csv").write_text("\n,\n", encoding="utf-8")
        load_dataset(tmp_path / "short.csv")
