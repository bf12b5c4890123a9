"""`pretrain`: a source model trained from scratch on small real data, then used as a backbone everywhere."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import headstart
from headstart.analysis.ranking import source_probabilities
from headstart.backbones import create_backbone
from headstart.cli import main
from headstart.pretraining import source_architecture

ARCH = "test_resnet"  # timm's 0.1M-parameter ResNet: 5 blocks, trains in seconds at 16 px


def _digit_folder(root: Path, digits: range, per_class: int) -> Path:
    """scikit-learn's real 8x8 digits as PNG class folders (generated at test time, nothing committed)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    for digit in digits:
        (root / str(digit)).mkdir(parents=True)
        for i in np.flatnonzero(data.target == digit)[:per_class]:
            Image.fromarray((data.images[i] * 255 / 16).astype(np.uint8)).save(root / str(digit) / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def digits_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _digit_folder(tmp_path_factory.mktemp("digits") / "zero_to_four", range(5), 30)


@pytest.fixture(scope="session")
def digits_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _digit_folder(tmp_path_factory.mktemp("digits") / "five_to_nine", range(5, 10), 20)


@pytest.fixture(scope="session")
def source_run(digits_source: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("src") / "run"
    return headstart.pretrain(digits_source, arch=ARCH, image_size=16, epochs=4, lr=3e-3, batch_size=16, augment="none", out=out, quiet=True)


def test_source_architecture_names():
    assert source_architecture("resnet18") == "timm:resnet18"
    assert source_architecture("timm:resnet18") == "timm:resnet18"
    assert source_architecture("efficientnet_lite0") == "efficientnet_lite0"
    with pytest.raises(ValueError, match="Unknown architecture 'resnet181'; did you mean"):
        source_architecture("resnet181")


def test_pretrained_run_is_a_scratch_source_model(source_run):
    config = json.loads((source_run.directory / "config.json").read_text())
    assert config["backbone"]["architecture"] == ARCH and config["preprocessing"]["input_size"] == 16
    assert config["training"]["strategy"]["name"] == "scratch" and config["classes"] == ["0", "1", "2", "3", "4"]
    assert source_run.metrics["test"]["accuracy"] > 0.6  # 5 digits (chance 0.2); 0.93 seen


def test_pretrained_backbone_feeds_fit_profile_rank_advise(source_run, digits_target, tmp_path):
    backbone = str(source_run.directory)
    run = headstart.fit(digits_target, backbone=backbone, strategy="feature-extraction", epochs=5, out=tmp_path / "fe", quiet=True)
    assert run.model.preprocessing.input_size == 16  # the source's resolution travels with it
    trained = source_run.model.backbone.state_dict()
    for key, value in run.model.backbone.state_dict().items():  # frozen body: exactly the source's weights
        torch.testing.assert_close(value, trained[key])

    result = headstart.profile(digits_target, backbone=backbone, folds=3)
    assert [r.block for r in result.rows] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert all(0 <= r.probe_accuracy <= 1 and math.isfinite(r.logme) for r in result.rows)

    torch.manual_seed(0)
    random_init = create_backbone(str(source_run.directory), pretrained=False)  # same architecture, random weights
    ranking = headstart.rank(digits_target, backbones=[backbone, random_init])
    assert [c.backbone for c in ranking.candidates] == [backbone, f"timm:{ARCH}"]  # trained on digits beats random by LogME
    leep = headstart.rank(digits_target, backbones=[backbone], score_name="leep").candidates[0].score
    assert math.isfinite(leep) and leep < 0  # LEEP is a log-likelihood

    advice = headstart.advise(digits_target, backbone=backbone, limit=None)
    assert advice.case.startswith("small") and advice.measurements["plateau"] in {r.block for r in result.rows}


def test_run_directory_backbone_reads_its_own_head_as_source_head(source_run, digits_target):
    backbone = create_backbone(str(source_run.directory))
    head = backbone.source_head()
    assert head is not None and head.num_classes == 5  # the source task's digits, not a random ImageNet head
    probabilities = source_probabilities(backbone, np.zeros((3, backbone.feature_dim), dtype=np.float32))
    assert probabilities.shape == (3, 5) and np.allclose(probabilities.sum(1), 1)
    assert backbone.cut("layer3").source_head() is None  # a cut body no longer feeds that head


def test_pretrain_cli(digits_source, digits_target, tmp_path, capsys):
    out = tmp_path / "cli-source"
    argv = ["pretrain", str(digits_source), "--arch", ARCH, "--image-size", "16", "--epochs", "1", "--augment", "none", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"--backbone {out}" in printed and (out / "model.safetensors").is_file()
    assert main([*argv, "--json"]) == 2  # never overwrites without --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["rank", str(digits_target), "--backbones", str(out), "--only", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["candidates"][0]["backbone"] == str(out)
    assert main(["pretrain", str(digits_source), "--arch", "resnet181", "--out", str(tmp_path / "x")]) == 2
    assert "Unknown architecture 'resnet181'" in capsys.readouterr().err


def test_pretrain_hf_architecture_from_a_config_on_text(topics_csv, tmp_path):
    """A 2-layer BERT from a config.json (tokenizer of the embedded MiniLM), trained from scratch on real text."""
    from headstart.backbones.embedded import _minilm_dir

    folder = tmp_path / "tiny-bert"
    folder.mkdir()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(_minilm_dir() / name, folder / name)
    config = json.loads((_minilm_dir() / "config.json").read_text())
    config.update(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    (folder / "config.json").write_text(json.dumps(config))

    run = headstart.pretrain(topics_csv, arch=f"hf:{folder}", epochs=2, out=tmp_path / "text-source", quiet=True)
    assert json.loads((run.directory / "config.json").read_text())["backbone"]["architecture"] == "bert"
    result = headstart.profile(topics_csv, backbone=str(run.directory), folds=3)
    assert [r.block for r in result.rows] == ["embeddings", "layer0", "layer1"] and {r.dim for r in result.rows} == {32}
    ranking = headstart.rank(topics_csv, backbones=[str(run.directory)], score_name="leep")
    assert math.isfinite(ranking.candidates[0].score)  # a text run's head is a source head too
