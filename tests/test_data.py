"""Datasets: layouts, splits, conversions, and every bad file skipped with a reason or refused in one line."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import class_folder as _folder
from conftest import photo as _photo
from PIL import Image

from headstart.data import load_dataset, load_image


def test_bad_files_are_skipped_named_and_counted(tmp_path):
    root = _folder(tmp_path / "d", per_class=6)
    good = io.BytesIO()
    _photo(99).save(good, format="JPEG")
    (root / "cats" / "empty.jpg").write_bytes(b"")
    (root / "cats" / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (root / "cats" / "notes.jpg").write_text("this is text, not a JPEG")
    (root / "dogs" / "readme.txt").write_text("not an image")
    (root / "dogs" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / ".hidden").mkdir()
    png = io.BytesIO()
    _photo(5).save(png, format="PNG")
    (root / "dogs" / "truncated.png").write_bytes(png.getvalue()[:200])
    data = load_dataset(root)
    reasons = {Path(f).name: r for f, r in data.skipped}
    assert set(reasons) == {"empty.jpg", "truncated.jpg", "notes.jpg", "readme.txt", "truncated.png", ".DS_Store"}
    assert reasons["empty.jpg"] == "empty file"
    assert "not an image" in reasons["notes.jpg"] and "not an image" in reasons["readme.txt"]
    assert "decode" in reasons["truncated.jpg"] and "decode" in reasons["truncated.png"]
    assert reasons[".DS_Store"] == "hidden file"
    assert data.summary()["skipped"] == 6
    total = sum(len(data.items(s)) for s in ("train", "val", "test"))
    assert total == 12 and data.classes == ["cats", "dogs"]


def test_image_modes_are_converted_to_rgb(tmp_path):
    base = _photo(1)
    cases = {
        "grey": base.convert("L"),
        "palette": base.convert("P"),
        "rgba": base.convert("RGBA"),
        "cmyk": base.convert("CMYK"),
        "sixteen": Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257),
    }
    for name, image in cases.items():
        path = tmp_path / f"{name}.{'jpg' if name == 'cmyk' else 'png'}"
        image.save(path)
        out = load_image(path)
        assert out.mode == "RGB" and out.size == base.size, name
    sixteen = np.asarray(load_image(tmp_path / "sixteen.png"))
    assert abs(int(sixteen.mean()) - int(np.asarray(base.convert("L")).mean())) <= 2  # scaled, not clipped


def test_exif_rotation_applied(tmp_path):
    image = _photo(2, size=(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg").size == (20, 40)


def test_split_folders_are_used(tmp_path):
    _folder(tmp_path / "d" / "train", per_class=8)
    _folder(tmp_path / "d" / "val", per_class=3, seed=1)
    data = load_dataset(tmp_path / "d")
    assert len(data.items("test")) == 6  # val/ becomes the held-out split
    assert len(data.items("train")) + len(data.items("val")) == 16
    assert any("held-out" in n for n in data.notes)


def test_stratified_split_is_seeded(tmp_path):
    root = _folder(tmp_path / "d", per_class=10)
    a, b, c = load_dataset(root, seed=0), load_dataset(root, seed=0), load_dataset(root, seed=1)
    assert a.items("test") == b.items("test") and a.items("test") != c.items("test")
    assert sorted(a.labels("test").tolist()) == [0, 0, 1, 1]


def test_class_errors_are_one_line(tmp_path):
    root = _folder(tmp_path / "one", per_class=3, classes=("only",))
    with pytest.raises(ValueError, match="at least 2 classes") as error:
        load_dataset(root)
    assert "\n" not in str(error.value) and str(root) in str(error.value)
    root = _folder(tmp_path / "small", per_class=3)
    (root / "rare").mkdir()
    _photo(7).save(root / "rare" / "x.jpg")
    with pytest.raises(ValueError, match=r"fewer than 2 examples"):
        load_dataset(root)


def test_text_tables(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("id,message,category,extra\n" + "".join(f"{i},text number {i},{'a' if i % 2 else 'b'},x\n" for i in range(20)) + "20,,a,x\n21,no label,,x\n")
    data = load_dataset(csv_path)
    assert data.modality == "text" and data.classes == ["a", "b"]
    assert sorted(r for _, r in data.skipped) == ["missing label", "missing text"]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(f'{{"text": "t{i}", "label": {i % 2}, "split": "{"test" if i < 4 else "train"}"}}\n' for i in range(20)))
    data = load_dataset(jsonl)
    assert data.classes == ["0", "1"] and len(data.items("test")) == 4
    tsv = tmp_path / "t.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"s{i}\t{i % 2}\n" for i in range(10)))
    assert load_dataset(tsv).classes == ["0", "1"]


def test_text_table_errors(tmp_path):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8.*re-save"):
        load_dataset(bad)
    cols = tmp_path / "cols.csv"
    cols.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="--text-column"):
        load_dataset(cols)
    leak = tmp_path / "leak.csv"
    leak.write_text("text,label,split\n" + "".join(f"t{i},{i % 2},train\n" for i in range(8)) + "z,new,test\n")
    with pytest.raises(ValueError, match=r"\['new'\] appear in test but not in train"):
        load_dataset(leak)


def test_missing_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_dataset(tmp_path / "nope")


def test_a_class_named_train_is_not_a_split(tmp_path):
    root = _folder(tmp_path / "vehicles", per_class=4, classes=("bus", "train"))
    data = load_dataset(root)
    assert data.classes == ["bus", "train"]


def test_jsonl_row_that_is_not_an_object(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JSON object"):
        load_dataset(bad)


def test_dihedral_augmentation_covers_the_eight_symmetries_of_the_square():
    """Every output is one of the 8 rotations/reflections of some crop; over many draws all 8 appear."""

    from headstart.data.preprocessing import ImagePreprocessing

    prep = ImagePreprocessing(input_size=8, crop_pct=1.0, mean=(0.0,) * 3, std=(1.0,) * 3)
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    image = Image.fromarray(np.stack([pixels] * 3, axis=-1))
    base = torch.as_tensor(pixels, dtype=torch.float32) / 255
    symmetries = [torch.rot90(t, k) for t in (base, base.flip(-1)) for k in range(4)]
    transform = prep.train_transform("dihedral")
    transform.transforms[0].scale = (1.0, 1.0)  # full-image crop, so each output is exactly a symmetry
    transform.transforms[0].ratio = (1.0, 1.0)
    torch.manual_seed(0)
    seen = set()
    for _ in range(200):
        out = transform(image)
        assert out.shape == (3, 8, 8)
        matches = [i for i, s in enumerate(symmetries) if torch.allclose(out[0], s, atol=1e-6)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))


def test_audio_augment_presets_are_image_ones():
    from headstart.data.preprocessing import AUDIO_AUGMENT_PRESETS, AUGMENT_PRESETS

    assert set(AUDIO_AUGMENT_PRESETS) < set(AUGMENT_PRESETS)


def test_loader_workers_leave_cpu_cores_to_the_step_and_feed_a_gpu(monkeypatch):
    from headstart.data import loader_workers
    from headstart.training import distributed

    monkeypatch.delenv("HEADSTART_WORKERS", raising=False)
    monkeypatch.setattr(distributed, "device", lambda: torch.device("cpu"))
    assert loader_workers(1000, 32) == 2
    assert loader_workers(1000, 32, in_process=True) == 0  # cached pixels are augmented between steps
    assert loader_workers(40, 32) == 1  # never more workers than batches
    monkeypatch.setattr(distributed, "device", lambda: torch.device("cuda"))
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(16)), raising=False)
    assert loader_workers(10_000, 128) == 8  # 15 free cores, capped at 8
    assert loader_workers(10_000, 128, in_process=True) == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1, 2}, raising=False)
    assert loader_workers(10_000, 128) == 2  # one core stays with the training process
    monkeypatch.setenv("HEADSTART_WORKERS", "5")
    assert loader_workers(10_000, 128) == 5
    assert loader_workers(300, 128) == 2
    monkeypatch.setenv("HEADSTART_WORKERS", "many")
    with pytest.raises(ValueError, match="HEADSTART_WORKERS='many': set it to a whole number"):
        loader_workers(10_000, 128)
