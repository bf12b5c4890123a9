"""Layer-wise features, `profile` and `rank` on real embedded models and small real data."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.analysis.probes import Profile, profile, profiled_blocks
from headstart.analysis.ranking import rank
from headstart.caches.embeddings import EmbeddingCache, compute_embeddings
from headstart.cli import main
from headstart.data import load_dataset


@torch.inference_mode()
def test_one_pass_block_features_equal_each_cut(lite0, minilm):
    lite0.eval()
    images = torch.randn(2, 3, 224, 224)
    pooled = lite0.forward_blocks(images, lite0.blocks.names())
    for name in lite0.blocks.names():
        torch.testing.assert_close(pooled[name], lite0.cut(name)(images), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pooled["head"], lite0(images))
    minilm.eval()
    batch = minilm.preprocessing(["a short one", "a somewhat longer sentence, so the mask matters"])
    pooled = minilm.forward_blocks(batch, minilm.blocks.names())
    for name in minilm.blocks.names():
        torch.testing.assert_close(pooled[name], minilm.cut(name)(batch), atol=1e-5, rtol=1e-4)


def test_block_features_are_cached_under_the_cut_key(lite0, elpv_folder, tmp_path):
    items = load_dataset(elpv_folder).items("train")[:6]
    cache = EmbeddingCache(tmp_path)
    features, computed = cache.embed_blocks(lite0, items, ["stage2", -1])
    assert computed == 6 and set(features) == {"stage2", "head"}
    again, computed = cache.embed(lite0.cut("stage2"), items)  # what fit(cut="stage2") reads
    assert computed == 0
    np.testing.assert_allclose(again, features["stage2"], atol=1e-5)
    np.testing.assert_allclose(features["stage2"], compute_embeddings(lite0.cut("stage2"), items), atol=1e-5)
    _, computed = cache.embed_blocks(lite0, [*items, *load_dataset(elpv_folder).items("val")[:2]], ["stage2", "head"])
    assert computed == 2  # only the new examples go through the network


def test_profiled_blocks_thin_deep_models(lite0):
    assert profiled_blocks(lite0) == lite0.blocks.names()
    assert profiled_blocks(lite0, every=4) == ["stage2", "stage6", "head"]
    with pytest.raises(ValueError, match="positive"):
        profiled_blocks(lite0, every=0)


def test_plateau_is_the_first_block_within_tolerance_of_the_best():
    from headstart.analysis.probes import BlockScore

    rows = [BlockScore(i, f"b{i}", 8, acc, 0.0, 0.0) for i, acc in enumerate([0.5, 0.79, 0.805, 0.81, 0.8])]
    result = Profile("m", "d", 10, ["a", "b"], 0.01, rows)
    assert result.best == "b3" and result.plateau == "b2"
    assert Profile("m", "d", 10, ["a", "b"], 0.05, rows).plateau == "b1"


def test_profile_images_python(lite0, elpv_folder, tmp_path):
    result = profile(elpv_folder, backbone=lite0, blocks=["stage1", "stage4", "head"], folds=3)
    assert [r.block for r in result.rows] == ["stage1", "stage4", "head"]
    assert [r.dim for r in result.rows] == [24, 112, 1280]
    assert all(0 <= r.probe_accuracy <= 1 and math.isfinite(r.logme) for r in result.rows)
    assert result.plateau in ("stage1", "stage4", "head")
    png = result.plot(tmp_path / "profile.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 5 | stage4 | 112 |" in result.to_markdown()
    assert all(r.shift is not None and r.shift > 0 for r in result.rows) and result.source_leep < 0  # BatchNorm statistics, ImageNet head
    assert sum(result.class_counts) == result.n_examples and 0 < result.leep_gain < 1
    again = Profile.from_dict(json.loads(json.dumps(result.to_dict())))  # what a run's profile.json reloads to
    assert again.rows == result.rows and again.class_counts == result.class_counts and again.source_leep == result.source_leep
    assert again.strength == result.strength and again.mean_shift == result.mean_shift
    assert profile(elpv_folder, backbone=lite0, blocks=["stage1"], folds=3).source_leep is None  # the source head reads only the last block


def test_profile_text_cli(topics_csv, tmp_path, capsys):
    plot = tmp_path / "minilm.png"
    assert main(["profile", str(topics_csv), "--every", "2", "--folds", "3", "--plot", str(plot), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backbone"] == "minilm" and [b["block"] for b in result["blocks"]] == ["layer0", "layer2", "layer4", "layer5"]
    best = max(b["probe_accuracy"] for b in result["blocks"])
    plateau = next(b for b in result["blocks"] if b["block"] == result["plateau"])
    assert plateau["probe_accuracy"] >= best - 0.01 and plot.is_file()
    # the sentence encoder's top layers separate topics better than its embeddings
    assert result["blocks"][-1]["logme"] > result["blocks"][0]["logme"]


def test_profile_cli_errors(topics_csv, elpv_folder, capsys):
    assert main(["profile", str(topics_csv), "--backbone", "efficientnet_lite0", "--plot", "none"]) == 2
    assert "image backbone" in capsys.readouterr().err
    assert main(["profile", str(elpv_folder), "--limit", "3", "--plot", "none"]) == 2
    assert "limit=3 is too small" in capsys.readouterr().err


def test_rank_images_python(lite0, elpv_folder):
    torch.manual_seed(0)
    from headstart.backbones import create_backbone

    scratch = create_backbone("efficientnet_lite0", pretrained=False)
    result = rank(elpv_folder, backbones=[lite0, lite0.cut("stage3"), scratch], score_name="leep")
    assert [c.note for c in result.candidates][-1] == "no source head"  # the cut has no ImageNet head: listed last
    scored = [c.score for c in result.candidates[:2]]
    assert scored == sorted(scored, reverse=True) and all(s <= 0 for s in scored)
    logme_ranking = rank(elpv_folder, backbones=[lite0, scratch])
    assert all(math.isfinite(c.score) for c in logme_ranking.candidates)
    assert logme_ranking.n_examples == sum(len(load_dataset(elpv_folder).items(s)) for s in ("train", "val"))


def test_rank_text_cli(topics_csv, capsys):
    assert main(["rank", str(topics_csv), "--score", "hscore-shrinkage", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [c["backbone"] for c in result["candidates"]] == ["minilm"] and result["score"] == "hscore-shrinkage"
    assert main(["rank", str(topics_csv), "--backbones", "efficientnet_lite0", "--only"]) == 2
    assert "image backbone" in capsys.readouterr().err


def _profile(accuracies: list[float], *, shift: float | None = None, counts: tuple[int, ...] = (50, 50)) -> Profile:
    from headstart.analysis.probes import BlockScore

    rows = [BlockScore(i, f"b{i}", 8, acc, 0.0, -1.0 + acc, shift) for i, acc in enumerate(accuracies)]
    return Profile("m", "d", sum(counts), [f"c{i}" for i in range(len(counts))], 0.01, rows, class_counts=list(counts))


STRONG, WEAK = [0.5, 0.6, 0.7, 0.8, 0.95], [0.5, 0.6, 0.7, 0.8, 0.85]  # chance-corrected best: 0.90 and 0.70


@pytest.mark.parametrize(
    ("per_class", "accuracies", "shift", "case", "strategy", "settings"),
    [
        (40, STRONG, None, "small, similar", "feature-extraction", {}),
        (40, STRONG, 0.05, "small, similar", "feature-extraction", {}),
        (40, [0.5, 0.8, 0.96, 0.9, 0.9], None, "small, similar", "feature-extraction", {"cut": "b2"}),  # the last block is clearly worse
        (40, [0.5, 0.8, 0.9, 0.96, 0.95], None, "small, similar", "feature-extraction", {}),  # within noise of the best: keep the last
        (40, WEAK, None, "small, different", "fine-tune", {"trainable_blocks": 4}),  # every block but the first
        (40, STRONG, 0.5, "small, different", "feature-extraction", {}),  # far from the source, but 5 points of headroom: fine-tuning is expected to add < 1 point
        (500, STRONG, 0.05, "large, similar", "full", {"body_lr": 1e-4}),
        (500, WEAK, 0.5, "large, different", "full", {"body_lr": 1e-4}),
    ],
)
def test_advisor_four_cases(per_class, accuracies, shift, case, strategy, settings):
    from headstart.analysis.advisor import decide

    advice = decide(per_class, _profile(accuracies, shift=shift))
    assert advice.case == case and advice.strategy == strategy
    assert settings.items() <= advice.fit_kwargs.items() and (settings or advice.fit_kwargs == {})
    assert f"median {per_class} examples per class" in str(advice)
    assert ("no BatchNorm" in str(advice)) == (shift is None)
    if case.endswith("different"):  # the reason names the test that failed
        assert ("the frozen features fall short of 0.85 (0.70)" in str(advice)) == (accuracies is WEAK)
        assert ("the data sit far from the source (0.50 >= 0.2)" in str(advice)) == (shift == 0.5)


def test_advisor_reads_accuracy_against_the_majority_class():
    from headstart.analysis.advisor import decide

    balanced, skewed = _profile(STRONG), _profile(STRONG, counts=(90, 10))  # 0.95 is 0.90 of the way from 0.5, 0.5 of the way from 0.9
    assert balanced.strength == pytest.approx(0.9) and skewed.strength == pytest.approx(0.5)
    assert decide(40, balanced).case == "small, similar" and decide(40, skewed).case == "small, different"
    assert "against 0.900 for the majority class" in str(decide(40, skewed))


def test_source_shift_is_zero_for_the_source_statistics_and_high_for_a_far_domain(lite0, elpv_folder, tmp_path):
    from sklearn.datasets import load_sample_images

    from headstart.analysis.advisor import FAR_SHIFT
    from headstart.analysis.probes import source_shift

    photos = []
    for i, array in enumerate(load_sample_images().images):  # two real photographs, eight crops each
        image = Image.fromarray(array)
        for j in range(8):
            path = tmp_path / f"{i}-{j}.png"
            image.crop((25 * j, 20 * j, 25 * j + 240, 20 * j + 240)).save(path)
            photos.append(path)
    cells = load_dataset(elpv_folder).items("train")[:16]
    near, far = source_shift(lite0, photos), source_shift(lite0, cells)
    assert list(near) == lite0.blocks.names() == list(far)
    assert np.mean(list(near.values())) < FAR_SHIFT <= np.mean(list(far.values()))

    model = copy.deepcopy(lite0)  # the stem's BatchNorm given exactly the statistics of its input on the cells: no shift left there
    norm = next(m for m in model.blocks["stem"].module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen: list[torch.Tensor] = []
    hook = norm.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach().double()))
    source_shift(model, cells)
    hook.remove()
    x = torch.cat(seen).transpose(0, 1).flatten(1)
    norm.running_mean.copy_(x.mean(1)), norm.running_var.copy_(x.var(1, unbiased=False))
    assert source_shift(model, cells)["stem"] < 1e-4 < far["stem"]
    stem_only = model.cut("stem")
    assert list(source_shift(stem_only, cells)) == ["stem"]


def test_source_shift_is_none_without_batchnorm(minilm):
    from headstart.analysis.probes import source_shift

    assert source_shift(minilm, ["a sentence", "another one"]) is None


def test_advise_cli_images(elpv_folder, capsys, monkeypatch):
    from headstart.analysis import advisor
    from headstart.analysis.advisor import FAR_SHIFT

    measured = []
    real_advise = advisor.advise
    monkeypatch.setattr(advisor, "advise", lambda *a, **k: measured.append(real_advise(*a, **k)) or measured[-1])
    assert main(["advise", str(elpv_folder), "--json"]) == 0
    advice = json.loads(capsys.readouterr().out)
    assert advice["case"] == "small, different" and advice["strategy"] == "fine-tune"  # 24 solar cells per class, far from ImageNet
    assert advice["measurements"]["examples_per_class"] == pytest.approx(24 * 0.8, abs=2)
    assert advice["measurements"]["mean_shift"] >= FAR_SHIFT and advice["fit_kwargs"]["trainable_blocks"] == 8  # all but the stem
    assert 0 < advice["measurements"]["leep_gain"] < 1  # ImageNet's classes say a little about defects
    monkeypatch.setattr(advisor, "advise", lambda *a, **k: measured[0])  # the same measurements, shown as text
    assert main(["advise", str(elpv_folder)]) == 0
    assert "next: headstart fit" in capsys.readouterr().out


def test_advise_cli_text(topics_csv, capsys):
    assert main(["advise", str(topics_csv), "--json"]) == 0  # minilm by default for a table
    advice = json.loads(capsys.readouterr().out)
    assert advice["case"].startswith("small")  # 30 utterances per topic
    assert advice["strategy"] == ("feature-extraction" if advice["case"] == "small, similar" else "fine-tune")
    assert advice["measurements"]["mean_shift"] is None and advice["measurements"]["leep_gain"] is None  # no BatchNorm, no source head
    assert advice["measurements"]["plateau"] in ["embeddings"] + [f"layer{i}" for i in range(6)]
    assert main(["advise", str(topics_csv), "--backbone", "efficientnet_lite0"]) == 2
    assert "image backbone" in capsys.readouterr().err


def test_fit_auto_text_python(topics_csv, tmp_path):
    import headstart

    run = headstart.fit(topics_csv, backbone="minilm", strategy="auto", out=tmp_path / "auto", quiet=True, epochs=20)
    log = (tmp_path / "auto" / "log.txt").read_text()
    assert "auto: case: small" in log and "size: median" in log
    assert run.metrics["test"]["accuracy"] > 0.5  # 3 topics: chance is 1/3
