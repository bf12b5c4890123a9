"""`headstart export`: ONNX Runtime and TorchScript give the logits torch gives, on real inputs.

The ONNX checks feed the runtime with inputs prepared only from ``preprocessing.json`` (PIL and
NumPy for images, the saved tokenizer for texts): the file must say everything a runtime needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.cli import main
from headstart.inference import from_pretrained

TOLERANCE = 1e-4


def _export(run_dir: Path, out: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["export", str(run_dir), "--format", fmt, "--out", str(out), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _test_items(run_dir: Path, n: int = 8) -> list[str]:
    return [e["item"] for e in json.loads((run_dir / "predictions.json").read_text())["examples"][:n]]


def _pixels_from_spec(path: str, spec: dict) -> np.ndarray:
    """The image steps of preprocessing.json, written with PIL and NumPy only."""
    image = Image.open(path).convert("RGB")
    short = spec["resize_size"]
    w, h = image.size
    size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    image = image.resize(size, {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[spec["interpolation"]])
    crop = spec["input_size"]
    left, top = int(round((image.width - crop) / 2.0)), int(round((image.height - crop) / 2.0))
    array = np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
    array = (array - np.asarray(spec["mean"], dtype=np.float32)) / np.asarray(spec["std"], dtype=np.float32)
    return array.transpose(2, 0, 1)


def _torch_logits(model, items) -> np.ndarray:
    batch = model.preprocessing(items) if model.modality == "text" else torch.stack([model.preprocessing.eval_transform()(Image.open(p).convert("RGB")) for p in items])
    with torch.inference_mode():
        return model.eval()(batch).float().numpy()


@pytest.fixture(scope="module")
def small_image_run(elpv_folder, tmp_path_factory):
    """A small network on real images: the ONNX exporter traces every operator once, so its time grows
    with the graph (Lite0: ~23 s of CPU), not with what the test checks; the text test exports a real model."""
    from headstart.api import fit

    return fit(elpv_folder, backbone="timm:test_efficientnet", strategy="scratch", epochs=1, image_size=48, out=tmp_path_factory.mktemp("runs") / "small", quiet=True, report=False)


def test_onnx_image_parity(small_image_run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install headstart[export])")
    run = small_image_run.directory
    result = _export(run, tmp_path, "onnx", capsys)
    spec = json.loads(Path(result["preprocessing"]).read_text())
    assert spec["classes"] == small_image_run.model.classes and spec["inputs"] == ["pixel_values"]
    items = _test_items(run)
    session = ort.InferenceSession(result["model"], providers=["CPUExecutionProvider"])
    pixels = np.stack([_pixels_from_spec(p, spec["image"]) for p in items])
    onnx_logits = session.run(["logits"], {"pixel_values": pixels})[0]
    torch_logits = _torch_logits(from_pretrained(run), items)
    assert np.abs(onnx_logits - torch_logits).max() < TOLERANCE
    assert (onnx_logits.argmax(1) == torch_logits.argmax(1)).all()


def test_onnx_text_parity(text_run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install headstart[export])")
    from transformers import AutoTokenizer

    result = _export(text_run.directory, tmp_path, "onnx", capsys)
    spec = json.loads(Path(result["preprocessing"]).read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / spec["text"]["tokenizer"]))
    texts = _test_items(text_run.directory) + ["a much longer text than any the exporter saw, " * 4]  # another batch size and length
    batch = tokenizer(texts, padding=True, truncation=True, max_length=spec["text"]["max_length"], return_tensors="np")
    session = ort.InferenceSession(result["model"], providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {name: batch[name].astype(np.int64) for name in spec["inputs"]})[0]
    torch_logits = _torch_logits(from_pretrained(text_run.directory), texts)
    assert onnx_logits.shape == (len(texts), len(spec["classes"]))
    assert np.abs(onnx_logits - torch_logits).max() < TOLERANCE


def test_torchscript_image_parity(fe_run, tmp_path, capsys):
    result = _export(fe_run.directory, tmp_path, "torchscript", capsys)
    model = from_pretrained(fe_run.directory)
    items = _test_items(fe_run.directory, n=5)  # not the batch size it was traced with
    pixels = torch.stack([model.preprocessing.eval_transform()(Image.open(p).convert("RGB")) for p in items])
    with torch.inference_mode():
        scripted = torch.jit.load(result["model"])(pixels).numpy()
    assert np.abs(scripted - _torch_logits(model, items)).max() < TOLERANCE


def test_export_does_not_overwrite(fe_run, tmp_path, capsys):
    _export(fe_run.directory, tmp_path, "torchscript", capsys)
    assert main(["export", str(fe_run.directory), "--format", "torchscript", "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
