"""The bad-input corpus: one generated input per case and its documented outcome (docs/bad-input.md).

Every outcome is either "used" (converted to what the model expects), "skipped and counted" (named
with its reason in the run's summary and log) or a one-line error naming the file and the fix.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import class_folder, photo
from PIL import Image

from headstart.api import fit
from headstart.data import load_dataset, load_image
from headstart.data.preprocessing import ImagePreprocessing
from headstart.inference import predict


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb(path: Path, side: int = 20_000) -> None:
    """A 1-bit PNG of side x side black pixels: about 60 KB on disk, 400 million pixels once decoded."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + side // 8)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b""))


def claims_size(path: Path, width: int = 13_000, height: int = 13_000) -> None:
    """A small real PNG whose IHDR (CRC fixed) claims ``width`` x ``height``: its size is known from the header alone."""
    data = bytearray(_encoded(photo(6, (8, 8)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


SKIPPED = {
    "zero-byte file": ("empty.jpg", lambda p: p.write_bytes(b""), "empty file"),
    "truncated JPEG": ("cut.jpg", lambda p: p.write_bytes(_encoded(photo(1, (64, 64)), "JPEG")[:600]), "cannot decode image"),
    "truncated PNG": ("cut.png", lambda p: p.write_bytes(_encoded(photo(2), "PNG")[:300]), "cannot decode image"),
    "text file named .jpg": ("notes.jpg", lambda p: p.write_text("holiday notes, not a picture"), "not an image (cannot identify format)"),
    "decompression bomb": ("bomb.png", decompression_bomb, "decompression bomb"),
    "13,000 x 13,000 PNG (under Pillow's limit)": ("big.png", claims_size, "too large: 169 megapixels (limit 64; HEADSTART_MAX_PIXELS)"),
    "non-image extension": ("readme.txt", lambda p: p.write_text("hello"), "not an image file (.txt)"),
    "hidden file": (".DS_Store", lambda p: p.write_bytes(b"\x00\x00\x00\x01Bud1"), "hidden file"),
    "AppleDouble file": ("._0.jpg", lambda p: p.write_bytes(b"\x00\x05\x16\x07"), "hidden file"),
    "broken symlink": ("gone.jpg", lambda p: p.symlink_to(p.parent / "missing.jpg"), "broken or looping symbolic link"),
    "self-referencing symlink": ("loop.jpg", lambda p: p.symlink_to(p), "broken or looping symbolic link"),
}


@pytest.mark.parametrize("case", list(SKIPPED))
def test_unusable_file_is_skipped_named_and_counted(tmp_path, case):
    name, write, reason = SKIPPED[case]
    root = class_folder(tmp_path / "data")
    write(root / "cats" / name)
    data = load_dataset(root)
    assert data.skipped == [(str(root / "cats" / name), data.skipped[0][1])] and reason in data.skipped[0][1]
    assert data.summary()["skipped"] == 1 and sum(len(data.items(s)) for s in ("train", "val", "test")) == 8


def _rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated by 90 degrees
    photo(3, (60, 20)).save(path, exif=exif)


def _animated(path: Path) -> None:
    red, blue = Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))
    red.save(path, save_all=True, append_images=[blue], duration=100, loop=0)


def _huge(path: Path) -> None:
    Image.linear_gradient("L").resize((10_000, 10_000)).convert("RGB").save(path, quality=40)


USED = {  # case -> (file name, writer, check of the decoded RGB image)
    "CMYK JPEG": ("cmyk.jpg", lambda p: photo(4).convert("CMYK").save(p), lambda im: im.size == (40, 30)),
    "16-bit PNG": (
        "deep.png",
        lambda p: Image.fromarray(np.full((30, 40), 65535 // 2, dtype=np.uint16)).save(p),
        lambda im: abs(int(np.asarray(im).mean()) - 127) <= 1,  # scaled to 8 bits, not clipped to white
    ),
    "palette PNG": ("palette.png", lambda p: photo(5).convert("P").save(p), lambda im: im.size == (40, 30)),
    "RGBA PNG": (
        "alpha.png",
        lambda p: Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(p),
        lambda im: np.asarray(im).min() == 255,  # transparent pixels become white, not black
    ),
    "EXIF-rotated photo": ("rotated.jpg", _rotated, lambda im: im.size == (20, 60)),
    "animated GIF": ("animated.gif", _animated, lambda im: tuple(np.asarray(im)[16, 16]) == (255, 0, 0)),  # first frame
    "10,000 x 10,000 JPEG": ("huge.jpg", _huge, lambda im: im.size == (5_000, 5_000)),  # decoded at half scale
}


@pytest.mark.parametrize("case", list(USED))
def test_unusual_image_is_converted_and_used(tmp_path, case):
    name, write, check = USED[case]
    root = class_folder(tmp_path / "data")
    write(root / "cats" / name)
    data = load_dataset(root)
    assert data.skipped == []
    [path] = [p for s in ("train", "val", "test") for p in data.items(s) if p.name == name]
    image = load_image(path)
    assert image.mode == "RGB" and check(image)
    assert ImagePreprocessing().eval_transform()(image).shape == (3, 224, 224)


def test_empty_class_folder_is_left_out_and_counted(tmp_path):
    root = class_folder(tmp_path / "data", classes=("cats", "dogs", "owls"))
    (root / "empty").mkdir()
    for path in (root / "owls").iterdir():
        path.write_bytes(b"")  # a class whose every file is unusable is empty too
    data = load_dataset(root)
    assert data.classes == ["cats", "dogs"]
    assert (str(root / "empty"), "class folder without usable images; class left out") in data.skipped
    assert data.summary()["skipped_reasons"] == {"empty file": 4, "class folder without usable images; class left out": 2}


def test_symlink_loop_folder_is_skipped(tmp_path):
    root = class_folder(tmp_path / "data")
    (root / "again").symlink_to(root, target_is_directory=True)  # data/again -> data
    (root / "cats" / "deeper").symlink_to(root, target_is_directory=True)  # inside a class: not followed
    data = load_dataset(root)
    assert data.classes == ["cats", "dogs"] and sum(len(data.items(s)) for s in ("train", "val", "test")) == 8
    assert data.skipped == [(str(root / "again"), "symbolic link loop (points to a parent folder); class left out")]


def test_single_class_dataset_is_a_one_line_error(tmp_path):
    root = class_folder(tmp_path / "data", classes=("cats",))
    with pytest.raises(ValueError, match=r"found only the class 'cats'; a classifier needs at least 2 classes") as error:
        load_dataset(root)
    assert str(root) in str(error.value) and "\n" not in str(error.value)


def test_labels_only_in_test_are_a_one_line_error(tmp_path):
    class_folder(tmp_path / "data" / "train")
    class_folder(tmp_path / "data" / "test", classes=("cats", "dogs", "owls"), seed=1)
    with pytest.raises(ValueError, match=r"labels \['owls'\] appear in test but not in train; add training examples for them or remove them"):
        load_dataset(tmp_path / "data")


def test_duplicates_across_train_and_test_warn_with_the_count(tmp_path):
    root = tmp_path / "data"
    class_folder(root / "train", per_class=6)
    (root / "test" / "cats").mkdir(parents=True)
    (root / "test" / "dogs").mkdir(parents=True)
    for i in range(2):
        photo(100 + i).save(root / "test" / "cats" / f"new{i}.jpg")
        photo(200 + i).save(root / "test" / "dogs" / f"new{i}.jpg")
    (root / "test" / "cats" / "copy.jpg").write_bytes((root / "train" / "cats" / "0.jpg").read_bytes())
    (root / "test" / "dogs" / "copy.jpg").write_bytes((root / "train" / "dogs" / "5.jpg").read_bytes())
    with pytest.warns(UserWarning, match=r"leakage: 2 of 6 test examples are identical \(by content hash\)"):
        data = load_dataset(root)
    assert data.duplicates == 2 and data.summary()["duplicates_across_splits"] == 2


def test_run_summary_counts_skips_and_keeps_odd_class_names(tmp_path):
    """Class names with spaces and non-ASCII letters survive training, saving, reloading and predicting."""
    root = class_folder(tmp_path / "données", per_class=6, classes=("red panda", "ours brun ü", "猫"))
    (root / "猫" / "empty.jpg").write_bytes(b"")
    (root / "red panda" / ".DS_Store").write_bytes(b"\x00")
    (root / "red panda" / "dup.jpg").write_bytes((root / "red panda" / "0.jpg").read_bytes())
    run = fit(root, out=tmp_path / "run é", epochs=5, quiet=True, image_size=64)
    config = json.loads((run.directory / "config.json").read_text(encoding="utf-8"))
    assert config["classes"] == ["ours brun ü", "red panda", "猫"]
    assert config["dataset"]["skipped"] == 2 and config["dataset"]["skipped_reasons"] == {"hidden file": 1, "empty file": 1}
    log = (run.directory / "log.txt").read_text(encoding="utf-8")
    assert "data: skipped 2 (1 hidden file, 1 empty file)" in log and "empty.jpg (empty file)" in log
    [prediction] = predict(run.directory, [root / "猫" / "1.jpg"])
    assert prediction.label in config["classes"]


def test_predict_names_a_bad_image_in_one_line(fe_run, tmp_path):
    bad = tmp_path / "photo.jpg"
    bad.write_text("not a picture")
    with pytest.raises(ValueError, match=r"photo.jpg: not an image \(cannot identify format\); pass image files"):
        predict(fe_run.directory, [bad])
    bomb = tmp_path / "bomb.png"
    decompression_bomb(bomb)
    with pytest.raises(ValueError, match="bomb.png: decompression bomb"):
        predict(fe_run.directory, [bomb])


def test_pixel_budget_is_checked_from_the_header_and_set_by_the_environment(tmp_path, monkeypatch):
    from headstart.data import check_image

    big = tmp_path / "big.png"
    claims_size(big)  # 8 x 8 pixels of data: decoding it would fail as truncated, so a skip for size proves nothing was decoded
    assert check_image(big) == "too large: 169 megapixels (limit 64; HEADSTART_MAX_PIXELS)"
    with pytest.raises(ValueError, match=r"big.png: too large: 169 megapixels"):
        load_image(big)
    monkeypatch.setenv("HEADSTART_MAX_PIXELS", "200_000_000")
    assert check_image(big).startswith("cannot decode image")  # allowed now: Pillow tries, and finds the 8 x 8 body
    monkeypatch.setenv("HEADSTART_MAX_PIXELS", "1000")
    small = tmp_path / "small.png"
    photo(7, (40, 30)).save(small)
    assert check_image(small) == "too large: 0.0012 megapixels (limit 0.001; HEADSTART_MAX_PIXELS)"
    with pytest.raises(ValueError, match="small.png: too large"):
        load_image(small)
    monkeypatch.setenv("HEADSTART_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="HEADSTART_MAX_PIXELS='lots': not a positive whole number of pixels"):
        check_image(small)


def test_huge_jpeg_is_budgeted_at_the_scale_it_decodes_at(tmp_path, monkeypatch):
    from headstart.data import check_image

    path = tmp_path / "huge.jpg"
    Image.new("RGB", (10_000, 10_000), (90, 120, 150)).save(path, quality=40)  # decoded at 1/2 scale: 25 megapixels
    monkeypatch.setenv("HEADSTART_MAX_PIXELS", "26000000")
    assert check_image(path) is None
    monkeypatch.setenv("HEADSTART_MAX_PIXELS", "24000000")
    assert check_image(path) == "too large: 25 megapixels (limit 24; HEADSTART_MAX_PIXELS)"


def test_predict_refuses_an_image_over_the_pixel_budget(fe_run, tmp_path):
    big = tmp_path / "big.png"
    claims_size(big)
    with pytest.raises(ValueError, match=r"big.png: too large: 169 megapixels \(limit 64; HEADSTART_MAX_PIXELS\); pass image files"):
        predict(fe_run.directory, [big])


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------


def _rows(n: int = 12) -> str:
    return "".join(f"message number {i},{'spam' if i % 2 else 'ham'}\n" for i in range(n))


def test_csv_missing_label_and_missing_text_are_skipped_and_counted(tmp_path):
    path = tmp_path / "sms.csv"
    path.write_text("text,label\n" + _rows() + ",ham\nno label here,\n   ,spam\n", encoding="utf-8")
    data = load_dataset(path)
    assert data.skipped == [("sms.csv:14", "missing text"), ("sms.csv:15", "missing label"), ("sms.csv:16", "missing text")]
    assert sum(len(data.items(s)) for s in ("train", "val", "test")) == 12


def test_csv_extra_columns_are_ignored(tmp_path):
    path = tmp_path / "sms.csv"
    path.write_text("id,text,label,sender,date\n" + "".join(f"{i},{row.rstrip()},+4412345,2024-01-01\n" for i, row in enumerate(_rows().splitlines())), encoding="utf-8")
    data = load_dataset(path)
    assert data.classes == ["ham", "spam"] and data.skipped == [] and data.items("train")[0].startswith("message number")


def test_numeric_and_string_labels_name_the_same_classes(tmp_path):
    path = tmp_path / "mixed.jsonl"
    values = [1, "1", 1.0, " 1 ", 2, "2", 10, 10.0]
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": v}) + "\n" for i, v in enumerate(values * 2)), encoding="utf-8")
    data = load_dataset(path)
    assert data.classes == ["1", "2", "10"]  # one class per value, ordered as numbers
    numeric = tmp_path / "numeric.csv"
    numeric.write_text("text,label\n" + "".join(f"t{i},{i % 3}\n" for i in range(12)), encoding="utf-8")
    assert load_dataset(numeric).classes == ["0", "1", "2"]


def test_non_utf8_table_is_a_one_line_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nun café crème,a\n".encode("cp1252"))
    with pytest.raises(ValueError, match=r"latin1.csv: not UTF-8 \(invalid byte at offset 17\); re-save the file as UTF-8"):
        load_dataset(path)


def test_unreadable_csv_line_is_a_one_line_error(tmp_path):
    path = tmp_path / "huge_field.csv"
    path.write_text("text,label\n" + _rows(4) + '"' + "x" * 10_000_001 + '",ham\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"huge_field.csv:6: unreadable CSV \(field larger than field limit \(10000000\)\); fix or remove that line"):
        load_dataset(path)


def test_100000_character_text_is_kept_and_truncated_by_the_tokenizer(tmp_path, minilm):
    path = tmp_path / "long.csv"
    long = "word " * 20_000
    path.write_text("text,label\n" + _rows() + f"{long},ham\n", encoding="utf-8")
    data = load_dataset(path)
    texts = [t for s in ("train", "val", "test") for t in data.items(s)]
    assert len(long) == 100_000 and long in texts
    assert minilm.preprocessing([long])["input_ids"].shape[1] == minilm.preprocessing.max_length


def test_numbers_written_differently_are_one_class_and_texts_differing_in_case_stay_apart(tmp_path):
    """A spreadsheet's `1`, `1.0`, `01` and ` 1` are one class (with a note); `a` and `A` stay two (with a note)."""
    path = tmp_path / "scores.csv"
    spellings = ["1", "1.0", "01", " 1", "2", "2.0", "a", "A"]
    path.write_text("text,label\n" + "".join(f"review {i},{spellings[i % 8]}\n" for i in range(48)), encoding="utf-8")
    data = load_dataset(path)
    assert data.classes == ["1", "2", "A", "a"]
    assert "labels that are the same number written differently are one class: '01', '1', '1.0' -> '1'; '2', '2.0' -> '2'" in data.notes
    assert any(note.startswith("labels 'A' and 'a' differ only in upper/lower case and stay separate classes") for note in data.notes)
    consistent = tmp_path / "consistent.csv"
    consistent.write_text("text,label\n" + "".join(f"review {i},{i % 2}.0\n" for i in range(12)), encoding="utf-8")
    plain = load_dataset(consistent)  # one spelling per number: kept as written, nothing to say
    assert plain.classes == ["0.0", "1.0"] and not any("same number" in note for note in plain.notes)


def test_guessed_text_and_label_columns_are_named_in_the_notes(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("id,sentence,category,stars\n" + "".join(f"{i},review {i},{'ab'[i % 2]},{i % 3}\n" for i in range(30)), encoding="utf-8")
    notes = load_dataset(path).notes
    assert "labels: column 'category' (guessed from its name among ['id', 'sentence', 'category', 'stars']); pass --label-column NAME to use another" in notes
    assert any(n.startswith("text: column 'sentence' (guessed from its name") and "--text-column" in n for n in notes)
    chosen = load_dataset(path, text_column="sentence", label_column="stars")
    assert chosen.classes == ["0", "1", "2"] and not any("guessed" in n for n in chosen.notes)
    listing = tmp_path / "photos"
    class_folder(listing)
    (listing / "index.csv").write_text("path,class\n" + "".join(f"{c}/{i}.jpg,{c}\n" for c in ("cats", "dogs") for i in range(4)), encoding="utf-8")
    assert any(n.startswith("labels: column 'class' (guessed") for n in load_dataset(listing).notes)


def test_broken_csv_quoting_is_a_one_line_error_naming_the_line(tmp_path):
    """An unbalanced quote used to swallow the file into one cell and end in 'no training examples found'."""
    path = tmp_path / "quotes.csv"
    path.write_text('text,label\n"great phone,ham\n' + _rows(), encoding="utf-8")
    with pytest.raises(ValueError, match=r"quotes.csv:2: a quote opens on line 2 and never closes .*; fix the quoting .* or save the file as TSV$") as error:
        load_dataset(path)
    assert "\n" not in str(error.value)
    path.write_text("text,label\n" + _rows() + '"stray quote,ham\n' + _rows(4) + '"closed here",spam\n' + _rows(), encoding="utf-8")
    with pytest.raises(ValueError, match=r"quotes.csv:14: a quote opens on line 14 and closes only on line 19, swallowing 5 rows into one cell"):
        load_dataset(path)
    tsv = tmp_path / "quotes.tsv"
    tsv.write_text('text\tlabel\n"great phone\tham\n' + _rows().replace(",", "\t"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"quotes.tsv:2: a quote opens on line 2 and never closes .*\"\"\)$"):
        load_dataset(tsv)
    multiline = tmp_path / "paragraphs.csv"  # quoted cells holding line breaks (and commas) are fine
    multiline.write_text("text,label\n" + "".join(f'"first, part {i}\nsecond, ham\n\nthird",{"spam" if i % 2 else "ham"}\n' for i in range(12)), encoding="utf-8")
    data = load_dataset(multiline)
    assert data.classes == ["ham", "spam"] and sum(len(data.items(s)) for s in ("train", "val", "test")) == 12


@pytest.mark.report
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """Run files used to be 0600 whatever the umask (tempfile.mkstemp's mode survived the rename)."""
    import os

    from headstart.io import atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "note.txt", "hello")
        run = fit(class_folder(tmp_path / "data"), out=tmp_path / "run", strategy="feature-extraction", epochs=2, quiet=True, image_size=32)
    finally:
        os.umask(old)
    for path in (tmp_path / "note.txt", run.directory / "report.html", run.directory / "metrics.json", run.directory / "config.json"):
        assert oct(path.stat().st_mode & 0o777) == oct(mode), path.name


def _leaky_folder(root: Path) -> Path:
    class_folder(root / "train", per_class=6)
    for name in ("cats", "dogs"):
        (root / "test" / name).mkdir(parents=True)
        for i in range(2):
            photo(300 + i + (10 if name == "dogs" else 0)).save(root / "test" / name / f"new{i}.jpg")
        (root / "test" / name / "copy.jpg").write_bytes((root / "train" / name / "0.jpg").read_bytes())
    return root


def test_cli_prints_a_data_warning_once(tmp_path):
    """`headstart fit` printed the leakage warning twice: Python's UserWarning with its source line, then the log line."""
    import subprocess
    import sys

    root = _leaky_folder(tmp_path / "data")
    command = [sys.executable, "-m", "headstart", "fit", str(root), "--out", str(tmp_path / "run"), "--strategy", "feature-extraction", "--epochs", "2", "--image-size", "32"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert output.count("leakage: 2 of 6 test examples are identical") == 1 and "UserWarning" not in output and "warnings.warn" not in output
    assert "warning: leakage: 2 of 6" in output


def test_cli_quiet_prints_a_data_warning_as_one_line(tmp_path, capsys):
    from headstart.cli import main

    root = _leaky_folder(tmp_path / "data")
    assert main(["fit", str(root), "--out", str(tmp_path / "run"), "--strategy", "feature-extraction", "--epochs", "2", "--image-size", "32", "--quiet"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "leakage" in line]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {root}: leakage: 2 of 6 test examples are identical")


def test_interrupted_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    from headstart.io import atomic_path, atomic_write_text

    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
