"""End to end on real embedded models and small real data: fit, save, reload, predict, evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headstart.api import fit
from headstart.data import load_dataset
from headstart.inference import evaluate, predict, predict_proba
from headstart.model import TransferModel


def test_feature_extraction_run_directory(fe_run):
    files = {p.name for p in fe_run.directory.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.json", "history.json", "log.txt", "backbone"} <= files
    assert not any(p.suffix in (".pt", ".pth", ".pkl", ".bin") for p in fe_run.directory.rglob("*"))
    config = json.loads((fe_run.directory / "config.json").read_text())
    assert config["classes"] == ["defective", "functional"] and config["preprocessing"]["input_size"] == 224
    metrics = json.loads((fe_run.directory / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix"):
        assert key in metrics["test"]
    assert metrics["test"]["accuracy"] > 0.6  # real signal on 10 test images of real cells
    history = json.loads((fe_run.directory / "history.json").read_text())
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(history["epochs"][0]) and "overfitting" in history


def test_reload_gives_identical_predictions(fe_run, elpv_folder):
    files = sorted(elpv_folder.rglob("*.png"))[:6]
    reloaded = TransferModel.from_pretrained(fe_run.directory)
    assert np.array_equal(predict_proba(fe_run.model, files), predict_proba(reloaded, files))
    results = predict(fe_run.directory, [str(f) for f in files])
    assert all(r.label in ("defective", "functional") and 0.5 <= r.probability <= 1 for r in results)


def test_second_run_reuses_cached_embeddings(fe_run, elpv_folder, tmp_path):
    run = fit(elpv_folder, strategy="feature-extraction", hidden=32, out=tmp_path / "again", quiet=True, epochs=5)
    log = (run.directory / "log.txt").read_text()
    assert "(0 computed," in log


def test_existing_run_directory_is_never_overwritten(fe_run, elpv_folder):
    before = (fe_run.directory / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        fit(elpv_folder, out=fe_run.directory, quiet=True)
    assert (fe_run.directory / "model.safetensors").read_bytes() == before


def test_evaluate_run_on_dataset(fe_run, elpv_folder):
    metrics = evaluate(fe_run.directory, elpv_folder)
    assert metrics["n"] == len(load_dataset(elpv_folder).items("test"))
    assert len(metrics["confusion_matrix"]) == 2


def test_fine_tune_is_deterministic_and_reloads(elpv_folder, tmp_path):
    kwargs = dict(strategy="fine-tune", trainable_blocks=2, epochs=1, batch_size=8, quiet=True, image_size=64)  # 64 px: a tenth of 224's work, the same code
    a = fit(elpv_folder, out=tmp_path / "a", **kwargs)
    b = fit(elpv_folder, out=tmp_path / "b", **kwargs)
    assert a.history.epochs[0]["train_loss"] == b.history.epochs[0]["train_loss"]
    assert a.metrics == b.metrics
    reloaded = TransferModel.from_pretrained(a.directory)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(a.model.eval()(x), reloaded(x))


def test_final_scoring_reads_the_decoded_image_cache(elpv_folder, tmp_path, monkeypatch):
    from collections import Counter

    from PIL import Image

    data = load_dataset(elpv_folder)
    opened: Counter = Counter()
    real_open = Image.open

    def counting_open(source, *args, **kwargs):
        opened[str(source)] += 1
        return real_open(source, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    monkeypatch.setenv("HEADSTART_WORKERS", "0")  # every decode happens in this process, where it is counted
    run = fit(data, strategy="full", epochs=1, head_warmup=False, cut="stage1", image_size=48, batch_size=8, quiet=True, save=False, cache_dir=tmp_path)
    files = {str(p) for s in ("train", "val", "test") for p in data.items(s)}
    assert set(opened) == files and set(opened.values()) == {1}  # val scored from the cache after training; test decoded once, into it
    assert run.metrics["val"]["n"] == len(data.items("val"))


def test_text_feature_extraction_and_cut(topics_csv, tmp_path):
    run = fit(topics_csv, backbone="minilm", out=tmp_path / "t", quiet=True, epochs=40)
    assert run.metrics["test"]["accuracy"] >= 0.6  # 3 topics, chance is 0.33
    texts = ["I love pizza and pasta", "who won the football match"]
    assert np.allclose(predict_proba(run.directory, texts), predict_proba(run.model, texts), atol=1e-6)
    cut = fit(topics_csv, backbone="minilm", cut="layer2", out=tmp_path / "cut", quiet=True, epochs=5)
    assert TransferModel.from_pretrained(cut.directory).backbone.blocks.names()[-1] == "layer2"


def test_modality_mismatch_is_clear(topics_csv):
    with pytest.raises(ValueError, match="image backbone but .* holds text data"):
        fit(topics_csv, backbone="efficientnet_lite0", save=False, quiet=True)


def test_model_is_a_layer(lite0):
    model = TransferModel.from_backbone(lite0.cut("stage3"), ["a", "b", "c"])
    wrapper = torch.nn.Sequential(model, torch.nn.Softmax(dim=-1))
    with torch.inference_mode():
        assert wrapper.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


def test_run_directory_is_a_backbone(fe_run, elpv_folder, tmp_path):
    """A saved run can be the starting point of another (the develop-model approach)."""
    from headstart.backbones import create_backbone

    backbone = create_backbone(str(fe_run.directory))
    assert backbone.blocks.names() == fe_run.model.backbone.blocks.names()
    assert torch.equal(backbone.blocks["stem"].module[0].weight, fe_run.model.backbone.blocks["stem"].module[0].weight)
    run = fit(elpv_folder, backbone=str(fe_run.directory), out=tmp_path / "second", quiet=True, epochs=3)
    assert run.metrics["test"]["n"] > 0


def test_image_size_is_saved_and_reused(elpv_folder, tmp_path):
    run = fit(elpv_folder, image_size=160, out=tmp_path / "r160", quiet=True, epochs=3)
    assert TransferModel.from_pretrained(run.directory).preprocessing.input_size == 160


def test_cached_evaluation_equals_full_forward(fe_run, elpv_folder):
    from headstart.caches.embeddings import EmbeddingCache

    files = sorted(elpv_folder.rglob("*.png"))[:8]
    fe_run.model.backbone.requires_grad_(False)
    cached = predict_proba(fe_run.model, files, cache=EmbeddingCache())
    assert np.allclose(cached, predict_proba(fe_run.model, files), atol=1e-5)


def test_damaged_cache_entry_is_rebuilt(lite0, elpv_folder, tmp_path):
    from headstart.caches.embeddings import EmbeddingCache

    files = sorted(elpv_folder.rglob("*.png"))[:4]
    first, computed = EmbeddingCache(tmp_path).embed(lite0, files)
    assert computed == 4
    [shard] = list(tmp_path.rglob("part-*.npy"))
    data = bytearray(shard.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # corrupt the last float
    shard.write_bytes(bytes(data))
    again, computed = EmbeddingCache(tmp_path).embed(lite0, files)
    assert computed == 4 and np.array_equal(first, again)


def test_tta_views_are_saved_with_the_run_and_averaged(elpv_folder, topics_csv, tmp_path):
    """``tta="dihedral"``: the probabilities are the mean over the 8 symmetries of the preprocessed image, and the
    views travel with the run (a reloaded model predicts the same)."""
    from PIL import Image

    from headstart.data.preprocessing import TTA_VIEWS
    from headstart.inference import from_pretrained

    run = fit(elpv_folder, out=tmp_path / "run", strategy="fine-tune", trainable_blocks=1, epochs=1, image_size=64, augment="dihedral",
              tta="dihedral", quiet=True)  # fmt: skip
    model = from_pretrained(run.directory)
    assert model.preprocessing.tta == "dihedral" and len(TTA_VIEWS["dihedral"]) == 8
    with Image.open(sorted(elpv_folder.rglob("*.png"))[0]) as image:
        photo = image.convert("RGB")
    x = model.preprocessing.eval_transform()(photo)[None]
    with torch.inference_mode():
        views = torch.stack([model.eval()(view(x)).softmax(-1) for view in TTA_VIEWS["dihedral"]])
    assert not torch.allclose(views[0], views[1:].mean(0), atol=1e-4)  # the views disagree, so averaging matters
    assert np.allclose(predict_proba(model, [photo]), views.mean(0).numpy(), atol=1e-5)
    assert np.allclose(predict_proba(run.model, [photo]), predict_proba(model, [photo]), atol=1e-6)
    with pytest.raises(ValueError, match="tta applies to image data"):
        fit(topics_csv, backbone="minilm", tta="flip", save=False, quiet=True)
