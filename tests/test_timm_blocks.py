"""Every timm family is a list of exact, runnable blocks (issue 23): random weights, 64 px, each model built once."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from conftest import class_folder

from headstart.backbones import BackboneSpec, TimmBackbone
from headstart.backbones.timm import _timm_preprocessing
from headstart.errors import Unsplittable
from headstart.freezing import freeze, freeze_bottom

SMALL_SWIN = {"img_size": 64, "window_size": 4, "embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}
TEST_MODELS = ["test_byobnet", "test_coatnet", "test_convnext", "test_convnext2", "test_convnext3", "test_efficientnet", "test_efficientnet_evos",
               "test_efficientnet_gn", "test_efficientnet_ln", "test_mambaout", "test_maxvit", "test_nfnet", "test_resnet", "test_vit", "test_vit2",
               "test_vit3", "test_vit4", "test_vit_relpos"]  # fmt: skip
FAMILIES = {
    **{name: {"img_size": 64} if name.startswith(("test_vit", "test_coatnet", "test_maxvit")) else {} for name in TEST_MODELS},
    "mobilenetv3_small_050": {}, "regnetx_002": {}, "densenet121": {"growth_rate": 8, "block_config": (2, 2, 2, 2)},
    "swin_tiny_patch4_window7_224": SMALL_SWIN, "mobilevit_xxs": {}, "efficientvit_b0": {}, "levit_128s": {"img_size": 64, "depth": (1, 1, 1)},
    "ghostnet_050": {}, "repvit_m1": {"depth": (1, 1, 1, 1)}, "fastvit_t8": {"layers": (1, 1, 1, 1)}, "edgenext_xx_small": {},
}  # fmt: skip


@functools.cache
def built(arch: str) -> tuple[torch.nn.Module, TimmBackbone]:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **FAMILIES[arch]).eval()
    preprocessing = dataclasses.replace(_timm_preprocessing(model), input_size=64)
    return model, TimmBackbone(model, BackboneSpec(f"timm:{arch}", "image", "timm", arch), preprocessing).eval()


def documented_block(model: torch.nn.Module, backbone: TimmBackbone) -> tuple[str, int]:
    """The block nearest the middle whose output timm documents in ``feature_info``, and that width."""
    widths = {info["module"]: info["num_chs"] for info in model.feature_info}
    names = backbone.blocks.names()[:-1]
    for name in sorted(names, key=lambda n: abs(names.index(n) - len(names) // 2)):
        index = name.removeprefix("stage").removeprefix("block")
        for module in (f"stages.{index}", f"layers.{index}", f"blocks.{index}", name, f"features.{name}"):
            if module in widths:
                return name, widths[module]
    raise AssertionError(f"no block of {names} is in feature_info {list(widths)}")


def test_at_least_twenty_families_and_every_timm_test_model():
    import timm

    assert set(timm.list_models("test_*")) <= set(FAMILIES)
    assert len({type(built(arch)[0]).__name__ for arch in FAMILIES}) >= 15  # classes; 29 models in all


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_blocks_are_exact_freezable_and_cuttable(arch):
    model, backbone = built(arch)
    blocks = backbone.blocks
    assert backbone.splittable and len(blocks) >= 3, blocks.names()
    x = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    with torch.no_grad():
        out = x
        for stage in backbone.stages.values():  # the blocks in sequence are the model's own forward_features
            out = stage(out)
        assert torch.allclose(out, model.forward_features(x), atol=1e-5)
        name, width = documented_block(model, backbone)
        cut = backbone.cut(name).eval()  # shares its modules: feature_dim would put them back in train mode
        features = cut(x)
        assert features.shape == (1, width)  # a middle cut pools to the width feature_info documents
        assert torch.allclose(backbone.forward_blocks(x, [name])[name], features, atol=1e-6)
    in_blocks = {id(p) for b in blocks for p in b.module.parameters()}
    assert all(id(p) in in_blocks for p in backbone.parameters())  # nothing outside a block escapes freezing
    try:
        freeze(backbone, blocks[:-2])
        top = {id(p) for b in blocks[-2:] for p in b.module.parameters()}
        assert {id(p) for p in backbone.parameters() if p.requires_grad} == top
    finally:
        backbone.requires_grad_(True)


def test_unsplittable_model_is_refused_in_one_line():
    """A ViT with relative positions and a class token runs code between its modules: kept whole, and fine-tune refuses it."""
    import timm

    from headstart.heads import ClassifierHead
    from headstart.model import TransferModel

    model = timm.create_model("test_vit_relpos", pretrained=False, img_size=64, class_token=True, global_pool="token")
    preprocessing = dataclasses.replace(_timm_preprocessing(model), input_size=64)
    backbone = TimmBackbone(model, BackboneSpec("timm:test_vit_relpos", "image", "timm", "test_vit_relpos"), preprocessing)
    assert backbone.blocks.names() == ["features"] and not backbone.splittable
    transfer = TransferModel(backbone, ClassifierHead(backbone.feature_dim, 2), ["a", "b"])
    freeze_bottom(transfer, 1)  # the head alone: allowed
    with pytest.raises(Unsplittable, match=r"^timm:test_vit_relpos has no exact block layout.*feature-extraction"):
        freeze_bottom(transfer, 2)


def test_fine_tune_trains_only_the_top_blocks_and_reloads(tmp_path):
    """The freeze audit line and the run's block table show the bottom frozen; the saved run predicts as the trained model."""
    from safetensors.torch import save_file

    import headstart
    from headstart.model import TransferModel
    from headstart.rundir import LOG_NAME, read_run_config

    arch = "test_mambaout"  # split generically, channels-last maps, its head's norm after pooling
    model, backbone = built(arch)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    data = class_folder(tmp_path / "data", per_class=6)
    run = headstart.fit(data, backbone=f"timm:{arch}", weights=weights, strategy="fine-tune", trainable_blocks=2, epochs=1, image_size=32,
                        out=tmp_path / "run", quiet=True)  # fmt: skip
    assert "freeze audit (fine-tune): ok" in (tmp_path / "run" / LOG_NAME).read_text()
    names = backbone.blocks.names()
    rows = {row["name"]: row["trainable"] for row in read_run_config(tmp_path / "run")["training"]["blocks"]}
    assert [n for n in names if rows[n]] == names[-2:]  # the bottom stayed frozen
    again = TransferModel.from_pretrained(tmp_path / "run").eval()
    x = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(run.model.eval()(x), again(x), atol=1e-6)


def test_summary_shows_blocks_widths_and_norm_kinds(capsys):
    import json

    from headstart.cli import main

    assert main(["summary", "timm:test_mambaout", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in shown["blocks"]}
    assert list(rows) == ["stem", "stage0", "stage1", "stage2", "stage3"] and shown["splittable"]
    assert [rows[f"stage{i}"]["width"] for i in range(4)] == [16, 32, 48, 64]  # feature_info's channels
    assert rows["stage1"]["norms"] == "LayerNorm×2"
    assert main(["summary", "timm:test_byobnet", "--json"]) == 0
    assert all("BatchNorm" in row["norms"] for row in json.loads(capsys.readouterr().out)["blocks"])


def test_a_cut_generic_model_saves_and_reloads(tmp_path):
    """A run cut at a middle block of a generically split model is rebuilt at that block (the name is in its config)."""
    from headstart.heads import ClassifierHead
    from headstart.model import TransferModel

    _, backbone = built("test_mambaout")
    cut = backbone.cut("stage1")
    model = TransferModel(cut, ClassifierHead(32, 2), ["a", "b"]).eval()
    model.save_pretrained(tmp_path / "cut")
    again = TransferModel.from_pretrained(tmp_path / "cut").eval()
    x = torch.linspace(-1, 1, 2 * 3 * 64 * 64).reshape(2, 3, 64, 64)
    assert again.backbone.blocks.names() == ["stem", "stage0", "stage1"]
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
