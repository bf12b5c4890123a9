"""Regression and multi-label targets (issue 27): reading, every strategy, resume, export, the estimators, transfer across tasks.

Contract tests use a 2-layer random BERT (``tiny_text_backbone``) or a tiny timm network at 48 px on
generated data; the two real-data tests use ELPV's defect probability and TREC questions in pairs.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import photo, shared_dataset
from PIL import Image

from headstart.api import fit, resume
from headstart.cli import main
from headstart.data import load_dataset
from headstart.inference import from_pretrained, predict, predict_proba
from headstart.tasks import get_task
from headstart.training.callbacks import Callback

WORDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma")


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Two generated text tables: a score that the first word sets (plus noise), and the set of the two words a text names."""
    root = tmp_path_factory.mktemp("tasks")
    rng = np.random.default_rng(0)
    scores = _write(root / "scores.csv", ["text", "target"], [[f"{WORDS[i % 6]} item {i}", f"{1.5 * (i % 6) + rng.normal() * 0.1:.3f}"] for i in range(72)])
    pairs = [[f"{WORDS[i % 6]} and {WORDS[i // 6 % 6]} {i}", "|".join(sorted({WORDS[i % 6], WORDS[i // 6 % 6]}))] for i in range(72)]
    return {"scores": scores, "pairs": _write(root / "pairs.csv", ["text", "label"], pairs)}


@pytest.fixture(scope="module")
def listing(tmp_path_factory):
    """Generated pictures listed twice: with their mean brightness as a number, and one row per label (bright/red/wide)."""
    root = tmp_path_factory.mktemp("listing")
    numbers, labels = [], []
    for i in range(40):
        image = photo(i, size=(40 + 8 * (i % 3), 40))
        array = np.asarray(image).astype(np.float32) * (0.3 + 0.7 * (i % 5) / 4)
        image = Image.fromarray(array.astype(np.uint8))
        image.save(root / f"{i}.png")
        numbers.append([f"{i}.png", f"{array.mean() / 255:.4f}"])
        names = [n for n, on in (("bright", i % 5 >= 3), ("wide", i % 3 == 2), ("odd", i % 2 == 1)) if on] or ["plain"]
        labels += [[f"{i}.png", n] for n in names]
    return {"numbers": _write(root / "numbers.csv", ["path", "label"], numbers), "labels": _write(root / "labels.csv", ["path", "label"], labels)}


# --------------------------------------------------------------------------------------------- reading
def test_numeric_label_column_is_read_as_regression_with_a_note_and_the_override(tables):
    data = load_dataset(tables["scores"])
    assert data.task == "regression" and data.classes == ["target"]
    assert data.labels("train").dtype == np.float32 and data.labels("train").ndim == 1
    assert any("read as a regression target; pass --task classification" in note for note in data.notes)
    assert data.summary()["task"] == "regression" and data.summary()["target"]["train"]["n"] == len(data.items("train"))
    halves = _write(tables["scores"].with_name("halves.csv"), ["text", "label"], [[f"text {i}", f"{i % 3 + 0.5}"] for i in range(30)])
    assert load_dataset(halves).task == "regression"
    classes = load_dataset(halves, task="classification")
    assert classes.task == "classification" and classes.classes == ["0.5", "1.5", "2.5"] and classes.labels("train").dtype == np.int64


def test_whole_numbers_stay_classes(tmp_path):
    path = _write(tmp_path / "digits.csv", ["text", "label"], [[f"text {i}", i % 3] for i in range(30)])
    data = load_dataset(path)
    assert data.task == "classification" and data.classes == ["0", "1", "2"]


def test_malformed_number_is_one_line_naming_the_file_and_row(tmp_path, capsys):
    path = _write(tmp_path / "bad.csv", ["text", "label"], [[f"text {i}", "0,5" if i == 3 else f"{i / 7:.3f}"] for i in range(12)])
    assert main(["fit", str(path), "--task", "regression", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{path}:5: label '0,5' is not a number" in err and "--task classification" in err


def test_multilabel_delimiter_and_one_row_per_label(tables, listing):
    data = load_dataset(tables["pairs"], task="multilabel")
    assert data.classes == sorted(WORDS) and data.labels("train").shape == (len(data.items("train")), 6)
    assert set(data.labels("train").sum(1).tolist()) <= {1.0, 2.0}
    semicolons = tables["pairs"].with_name("semi.csv")
    semicolons.write_text(tables["pairs"].read_text().replace("|", ";"))
    assert load_dataset(semicolons, task="multilabel", label_delimiter=";").classes == sorted(WORDS)
    rows = load_dataset(listing["labels"], task="multilabel")
    assert rows.modality == "image" and sum(len(rows.items(s)) for s in rows.splits) == 40  # 40 pictures on more rows
    assert any("rows are 40 examples" in note for note in rows.notes)
    (folder := listing["labels"].parent / "folder" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="one label per file"):
        load_dataset(folder.parent, task="multilabel")


# --------------------------------------------------------------------------------------------- fit, predict, evaluate
def test_regression_from_the_command_line(tables, tiny_text_backbone, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", str(tables["scores"]), "--backbone", tiny_text_backbone, "--out", str(out), "--quiet", "--json"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "regression" and {"mae", "rmse", "r2", "intervals"} <= set(metrics["test"])
    assert metrics["target"]["name"] == "target" and metrics["target"]["std"] > 0
    assert set(metrics["test"]["intervals"]) >= {"mae", "rmse", "r2", "confidence", "n", "too_few"}
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "regression" and config["head"]["num_classes"] == 1 and config["target"]["mean"] == metrics["target"]["mean"]
    examples = json.loads((out / "predictions.json").read_text())["examples"]
    assert {"true", "predicted", "error"} <= set(examples[0]) and examples[0]["error"] == pytest.approx(examples[0]["predicted"] - examples[0]["true"], abs=1e-5)
    capsys.readouterr()
    assert main(["predict", str(out), "gamma item", "--json"]) == 0
    value = json.loads(capsys.readouterr().out)[0]["value"]
    assert value == pytest.approx(predict(out, ["gamma item"])[0].value)
    assert main(["evaluate", str(out), str(tables["scores"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mae"] == pytest.approx(metrics["test"]["mae"])
    assert main(["lr-find", str(tables["scores"]), "--run", str(out), "--steps", "12", "--plot", "none", "--json"]) == 0  # the run's MSE, not cross-entropy
    found = json.loads((out / "lr_find.json").read_text())
    assert len(found["losses"]) >= 5 and all(math.isfinite(v) for v in found["losses"][:5])


def test_multilabel_in_python_thresholds_are_saved_and_reloaded(tables, tiny_text_backbone, tmp_path):
    run = fit(tables["pairs"], backbone=tiny_text_backbone, task="multilabel", out=tmp_path / "run", quiet=True)
    test = run.metrics["test"]
    assert run.metrics["task"] == "multilabel" and {"micro_f1", "macro_f1", "map", "subset_accuracy", "per_label"} <= set(test)
    assert set(test["per_label"]["alpha"]) == {"f1", "ap", "threshold", "support"} and test["intervals"]["too_few"] is True
    model = from_pretrained(run.directory)
    assert model.task.name == "multilabel" and model.thresholds == run.model.thresholds and len(model.thresholds) == 6
    assert [test["per_label"][c]["threshold"] for c in model.classes] == model.thresholds
    proba = predict_proba(model, ["alpha and beta"])
    assert proba.shape == (1, 6) and ((proba > 0) & (proba < 1)).all()
    result = predict(model, ["alpha and beta"])[0]
    assert result.labels == [c for c, p, t in zip(model.classes, proba[0], model.thresholds) if p >= t]
    record = json.loads((run.directory / "predictions.json").read_text())["examples"][0]
    assert set(record) == {"item", "true", "predicted", "scores"}


@pytest.mark.parametrize(("strategy", "task", "extra"), [
    ("fine-tune", "regression", {"trainable_blocks": 1}), ("gradual", "multilabel", {"unfreeze_blocks": 1}), ("full", "regression", {"hidden": 8}),
    ("lora", "multilabel", {}), ("scratch", "regression", {"loss": "huber"}), ("feature-extraction", "multilabel", {"dropout": 0.1}),
])  # fmt: skip
def test_every_strategy_trains_each_task(tables, tiny_text_backbone, tmp_path, strategy, task, extra):
    data = tables["scores" if task == "regression" else "pairs"]
    run = fit(data, backbone=tiny_text_backbone, strategy=strategy, task=task, epochs=1, out=tmp_path / "run", quiet=True, report=False, **extra)
    assert run.metrics["task"] == task and run.model.task.name == task
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) for r in run.history.epochs)
    assert from_pretrained(run.directory).task.describe() == run.model.task.describe()


def test_image_regression_fine_tunes_from_cached_activations(listing, tmp_path):
    """A frozen bottom runs once (the activation cache) and the top trains on standardised targets; predictions are in target units.
    The "pretrained" weights are a seeded random test_efficientnet saved to a file (fine-tuning needs weights; the hub is offline)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(timm.create_model("test_efficientnet", pretrained=False).state_dict(), str(weights := tmp_path / "w.safetensors"))
    run = fit(listing["numbers"], backbone="timm:test_efficientnet", weights=weights, strategy="fine-tune", trainable_blocks=1, epochs=1, image_size=48,
              augment="none", out=tmp_path / "run", quiet=True, report=False)  # fmt: skip
    assert run.model.task.name == "regression" and "are frozen and inputs are fixed, so their output is computed once" in (tmp_path / "run" / "log.txt").read_text()
    values = predict_proba(run.model, load_dataset(listing["numbers"]).items("test"))
    assert values.ndim == 1 and 0 < values.mean() < 1


class _InterruptAfterFirst(Callback):
    """Ctrl-C after the first epoch of ``phase``."""

    def __init__(self, phase: str) -> None:
        self.phase = phase

    def on_epoch_end(self, state):
        if state.phase == self.phase:
            raise KeyboardInterrupt


def test_regression_resumes_exactly(tables, tiny_text_backbone, tmp_path):
    kwargs = dict(backbone=tiny_text_backbone, strategy="fine-tune", trainable_blocks=1, epochs=3, quiet=True, report=False)
    whole = fit(tables["scores"], out=tmp_path / "whole", **kwargs)
    with pytest.raises(KeyboardInterrupt):
        fit(tables["scores"], out=tmp_path / "cut", callbacks=[_InterruptAfterFirst("fine-tune")], **kwargs)
    resumed = resume(tmp_path / "cut", quiet=True)
    assert resumed.metrics["test"] == whole.metrics["test"]
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(), whole.model.state_dict().values()))


def test_sample_weight_moves_a_regression_head(tables, tiny_text_backbone):
    from headstart.estimator import TransferRegressor

    data = load_dataset(tables["scores"])
    texts, y = data.items("train"), data.labels("train")
    plain = TransferRegressor(tiny_text_backbone, epochs=5).fit(texts, y)
    ones = TransferRegressor(tiny_text_backbone, epochs=5).fit(texts, y, sample_weight=np.ones(len(y)))
    heavy = TransferRegressor(tiny_text_backbone, epochs=5).fit(texts, y, sample_weight=np.where(y > 3, 10.0, 1.0))
    assert np.allclose(plain.predict(texts), ones.predict(texts)) and not np.allclose(plain.predict(texts), heavy.predict(texts))


# --------------------------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def image_runs(listing, tmp_path_factory):
    root = tmp_path_factory.mktemp("image-runs")
    return {task: fit(listing["numbers" if task == "regression" else "labels"], backbone="timm:test_efficientnet", strategy="scratch", task=task, epochs=1,
                      image_size=48, out=root / task, quiet=True, report=False)
            for task in ("regression", "multilabel")}  # fmt: skip


def _pixels(model, paths):
    return torch.stack([model.preprocessing.eval_transform()(Image.open(p).convert("RGB")) for p in paths])


@pytest.mark.parametrize("task", ["regression", "multilabel"])
def test_torchscript_export_includes_the_task_output(image_runs, tmp_path, capsys, task):
    run = image_runs[task]
    assert main(["export", str(run.directory), "--format", "torchscript", "--out", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    spec = json.loads(Path(result["preprocessing"]).read_text())
    assert spec["task"] == task and spec["outputs"] == [get_task(task).export_name]
    model = from_pretrained(run.directory)
    paths = [e["item"] for e in run.predictions["examples"][:5]]
    with torch.inference_mode():
        scripted = torch.jit.load(result["model"])(_pixels(model, paths)).numpy()
    expected = predict_proba(model, [Path(p) for p in paths])
    assert scripted.shape == expected.shape and np.abs(scripted - expected).max() < 1e-4  # values in target units / probabilities


def test_onnx_export_of_a_regression_model_gives_values(image_runs, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install headstart[export])")
    run = image_runs["regression"]
    assert main(["export", str(run.directory), "--format", "onnx", "--out", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    model = from_pretrained(run.directory)
    paths = [e["item"] for e in run.predictions["examples"][:6]]
    session = ort.InferenceSession(result["model"], providers=["CPUExecutionProvider"])
    values = session.run(["value"], {"pixel_values": _pixels(model, paths).numpy()})[0]
    assert np.abs(values - predict_proba(model, [Path(p) for p in paths])).max() < 1e-4


# --------------------------------------------------------------------------------------------- transfer across tasks
def test_a_regression_source_transfers_to_classes_and_back(tables, listing, tiny_text_backbone, tmp_path):
    from headstart.pretraining import pretrain

    source = pretrain(tables["scores"], arch=tiny_text_backbone, epochs=1, out=tmp_path / "source", quiet=True)
    assert source.model.task.name == "regression"
    words = _write(tmp_path / "words.csv", ["text", "label"], [[f"{WORDS[i % 6]} thing {i}", "early" if i % 6 < 3 else "late"] for i in range(48)])
    target = fit(words, backbone=str(source.directory), strategy="fine-tune", trainable_blocks=1, epochs=1, out=tmp_path / "target", quiet=True, report=False)
    assert target.model.task.name == "classification" and target.model.head.num_classes == 2
    body = {k: v for k, v in source.model.backbone.state_dict().items()}
    assert any(torch.equal(body[k], v) for k, v in target.model.backbone.state_dict().items() if "embeddings" in k)  # the frozen bottom carried over
    classes = pretrain(words, arch=tiny_text_backbone, epochs=1, out=tmp_path / "classes", quiet=True)
    back = fit(tables["scores"], backbone=str(classes.directory), epochs=2, out=tmp_path / "back", quiet=True, report=False)
    assert back.model.task.name == "regression" and back.model.head.num_classes == 1 and np.isfinite(back.metrics["test"]["mae"])


# --------------------------------------------------------------------------------------------- real data
def test_real_elpv_defect_probability_as_a_regression_target(tmp_path):
    """120 ELPV cells (stratified by probability and cell type), their defect probability as the target; EfficientNet-Lite0
    features at 64 px. R² above 0 means the pretrained features carry the defect signal beyond predicting the mean."""
    from headstart.data import load_elpv

    data = load_elpv(task="probability", limit=120, seed=0)
    assert data.task == "regression" and data.classes == ["defect_probability"] and set(np.round(data.labels("train") * 3)) <= {0, 1, 2, 3}
    run = fit(data, strategy="feature-extraction", image_size=64, out=tmp_path / "elpv", quiet=True, report=False)
    test = run.metrics["test"]
    assert run.metrics["task"] == "regression" and test["n"] == 30 and test["intervals"]["r2"] is not None
    assert test["r2"] > 0 and test["mae"] < 0.35


def test_real_multilabel_trec_question_pairs(tmp_path):
    """A multi-label set from real data: TREC questions (6 coarse types, the shared copy) joined in pairs, each pair labelled
    with the union of its two questions' types (1 or 2 labels). 360 pairs from the first 720 training questions, MiniLM features."""
    trec = shared_dataset("trec") / "data.csv"
    with trec.open(encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("split", "train") == "train"][:720]
    pairs = [[f"{a['text']} {b['text']}", "|".join(sorted({a["label"], b["label"]}))] for a, b in zip(rows[::2], rows[1::2])]
    path = _write(tmp_path / "trec_pairs.csv", ["text", "label"], pairs)
    run = fit(path, backbone="minilm", task="multilabel", out=tmp_path / "trec", quiet=True, report=False)
    test = run.metrics["test"]
    assert len(run.model.classes) == 6 and test["n"] >= 60 and test["intervals"]["map"] is not None
    rate = sum(label["support"] for label in test["per_label"].values()) / (test["n"] * 6)  # share of (pair, label) cells that are positive
    print({k: round(test[k], 3) for k in ("micro_f1", "macro_f1", "map", "subset_accuracy")}, "positive rate", round(rate, 3))
    assert test["map"] > rate + 0.2  # random scores give an AP near the positive rate
    assert test["micro_f1"] > 2 * rate / (1 + rate) + 0.1  # predicting every label for every pair
    assert 0 < test["subset_accuracy"] <= 1
