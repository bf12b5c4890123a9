"""Style transfer: the frozen backbone never changes, the losses fall, the result is a valid image of the right size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from headstart.cli import main
from headstart.style import FourierImage, StyleObjective, default_layers, gram_matrix, optimize_pixels, softmax_features, stylize, to_tensor


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny images make each op too small to split: on a busy 2-core machine two threads ran these tests 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def china() -> Image.Image:
    return Image.fromarray(load_sample_image("china.jpg")).resize((80, 60), Image.LANCZOS)


@pytest.fixture(scope="session")
def flower() -> Image.Image:
    return Image.fromarray(load_sample_image("flower.jpg")).resize((64, 43), Image.LANCZOS)


def test_loss_pieces():
    features = torch.randn(2, 5, 4, 6)
    gram = gram_matrix(features)
    assert gram.shape == (2, 5, 5) and torch.allclose(gram, gram.transpose(1, 2))
    assert torch.allclose(gram[0], features[0].reshape(5, -1) @ features[0].reshape(5, -1).T / 24)
    soft = softmax_features(features, 2.0)
    assert (soft > 0).all() and torch.allclose(soft.mean(dim=(1, 2, 3)), torch.ones(2))
    assert torch.allclose(softmax_features(features * 2, 4.0), soft)  # scale-free with a matching temperature


def test_fourier_image_starts_exactly_at_the_content(china):
    image = to_tensor(china)
    assert torch.allclose(FourierImage(image).image(), image.clamp(1 / 255, 254 / 255), atol=1e-5)


def test_weights_stay_bit_identical_and_result_has_content_size(lite0, china, flower):
    before = {k: v.clone() for k, v in lite0.state_dict().items()}
    flags = [p.requires_grad for p in lite0.parameters()]
    was_training = lite0.training
    lite0.train()
    result = stylize(china, flower, backbone=lite0, size=None, steps=4, progress=False)
    assert all(torch.equal(before[k], v) for k, v in lite0.state_dict().items())
    assert [p.requires_grad for p in lite0.parameters()] == flags
    assert all(p.grad is None for p in lite0.parameters())
    assert lite0.training  # mode restored
    lite0.train(was_training)
    assert isinstance(result, Image.Image) and result.mode == "RGB" and result.size == china.size
    assert np.asarray(result).std() > 1  # a real picture, not a constant
    assert stylize(china, flower, backbone=lite0, size=40, steps=1, progress=False).size == (40, 30)


@pytest.mark.parametrize("transform", ["softmax", "none"])
def test_style_and_content_losses_fall(lite0, china, flower, transform):
    content, style = to_tensor(china), to_tensor(flower)
    noise = torch.rand(content.shape, generator=torch.Generator().manual_seed(0))
    for weights, term, start in (
        (dict(content_weight=1.0, style_weight=0.0, tv_weight=0.0), "content", noise),  # content alone, from noise
        (dict(content_weight=0.0, style_weight=1.0, tv_weight=0.0), "style", noise),  # style alone (texture synthesis)
        (dict(), "style", content),  # the default mix, from the content image
    ):
        objective = StyleObjective(lite0, content, style, transform=transform, **weights)
        with torch.no_grad():
            first = objective(start)
        result = optimize_pixels(objective, start, steps=20, progress=False)
        with torch.no_grad():
            last = objective(result)
        assert float(getattr(last, term)) < 0.7 * float(getattr(first, term)), (weights, term)
        assert float(last.total) < float(first.total)
        assert float(result.min()) >= 0.0 and float(result.max()) <= 1.0


def test_adam_and_seeded_noise_are_deterministic(lite0, china, flower):
    options = dict(backbone=lite0, size=48, steps=3, optimizer="adam", init="noise", progress=False)
    first = np.asarray(stylize(china, flower, seed=1, **options))
    assert np.array_equal(first, np.asarray(stylize(china, flower, seed=1, **options)))
    assert not np.array_equal(first, np.asarray(stylize(china, flower, seed=2, **options)))


def test_layers_by_block_name_and_glob(lite0, china, flower):
    objective = StyleObjective(lite0, to_tensor(china), to_tensor(flower), content_layer="stage3", style_layers=["stem", "stage[12]"])
    assert objective.style_layers == ["stem", "stage1", "stage2"] and objective.content_layers == ["stage3"]
    with pytest.raises(KeyError, match="stage9.*blocks are"):
        StyleObjective(lite0, to_tensor(china), to_tensor(flower), style_layers=["stage9"])
    assert default_layers(lite0) == ("stage4", ("stem", "stage1", "stage2", "stage3", "stage5"))


def test_other_backbones(minilm, china, flower):
    from headstart.backbones import create_backbone

    with pytest.raises(ValueError, match="convolutional image backbone"):
        StyleObjective(minilm, to_tensor(china), to_tensor(flower))
    vgg = create_backbone("timm:vgg11", pretrained=False)  # architecture only: no weights offline
    assert vgg.blocks.names() == ["stage0", "stage1", "stage2", "stage3", "stage4", "pool"]
    content, style = default_layers(vgg)
    assert content == "stage3" and style == ("stage0", "stage1", "stage2", "stage3", "stage4")
    assert stylize(china, flower, backbone=vgg, size=32, steps=1, progress=False).size == (32, 24)


def test_cli_stylize_refuses_to_overwrite(tmp_path, china, flower, capsys):
    content, style, out = tmp_path / "content.jpg", tmp_path / "style.png", tmp_path / "out.png"
    china.save(content)
    flower.save(style)
    args = ["stylize", str(content), str(style), "--out", str(out), "--size", "48", "--steps", "2", "--layers", "stem,stage1", "--quiet"]
    assert main(args) == 0
    assert Image.open(out).size == (48, 36)
    assert "saved" in capsys.readouterr().out
    written = out.read_bytes()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == written
    assert main([*args, "--overwrite", "--seed", "3", "--init", "noise"]) == 0
    assert main(["stylize", str(tmp_path / "missing.jpg"), str(style), "--out", str(tmp_path / "x.png")]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    assert main(["stylize", str(content), str(style), "--out", str(tmp_path / "y.png"), "--layers", "stage99"]) == 2
    assert "stage99" in capsys.readouterr().err
