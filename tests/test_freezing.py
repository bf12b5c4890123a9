"""Freezing means: no gradient, not in the optimizer, BatchNorm statistics never move."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headstart.freezing import freeze, freeze_report, select_blocks, unfreeze
from headstart.model import TransferModel
from headstart.training import TrainSettings, fit_model, param_groups


@pytest.fixture()
def model(lite0):
    import copy

    return TransferModel.from_backbone(copy.deepcopy(lite0), ["a", "b"])


def test_selectors(model):
    names = lambda blocks: [b.name for b in blocks]  # noqa: E731
    assert names(select_blocks(model, model.blocks[:-3])) == names(model.blocks)[:-3]
    assert names(select_blocks(model, ["stem", "stage[01]"])) == ["stem", "stage0", "stage1"]
    assert names(select_blocks(model, until="stage1")) == ["stem", "stage0", "stage1"]
    assert names(select_blocks(model, fraction=0.5)) == names(model.blocks)[:5]
    assert names(select_blocks(model, [0, -1])) == ["stem", "classifier"]
    with pytest.raises(KeyError, match="blocks are"):
        select_blocks(model, "nope")
    with pytest.raises(ValueError, match="only one"):
        select_blocks(model, [0], until="stage1")


def test_freeze_report_and_bn_mode(model):
    report = freeze(model, model.blocks[:-3])
    assert report.frozen_blocks == model.blocks.names()[:-3]
    model.train()
    report = freeze_report(model)
    modes = {b.name: b.batchnorm_mode for b in report.blocks}
    assert modes["stem"] == "eval" and modes["stage6"] == "train" and modes["head"] == "train"
    assert report.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert "parameters trainable" in str(report) and "FreezeReport(" not in str(report)  # words, never a repr
    unfreeze(model)
    assert freeze_report(model).frozen == 0


def test_frozen_weights_and_bn_statistics_bit_identical_after_training(model):
    freeze(model, model.blocks[:-3])
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("backbone.stages.stage6", "backbone.stages.head", "head."))}
    trainable_before = model.backbone.stages["stage6"][0].conv_pw.weight.clone()
    groups = param_groups(model, 1e-3, 1e-4, 0.01)
    in_optimizer = {id(p) for g in groups for p in g["params"]}
    assert all(p.requires_grad for p in model.parameters() if id(p) in in_optimizer)
    assert not any(id(p) in in_optimizer for p in model.backbone.stages["stem"].parameters())
    torch.manual_seed(0)
    data = [(torch.randn(4, 3, 96, 96), torch.tensor([0, 1, 0, 1])) for _ in range(3)]
    fit_model(model, data, None, TrainSettings(epochs=2, lr=1e-2, body_lr=1e-2, patience=None))
    after = model.state_dict()
    for key, value in frozen.items():
        assert torch.equal(after[key], value), key  # includes BN running_mean/var/num_batches_tracked
    assert not torch.equal(model.backbone.stages["stage6"][0].conv_pw.weight, trainable_before)
    assert all(p.grad is None for p in model.backbone.stages["stem"].parameters())


def test_everything_frozen_is_a_clear_error(model):
    freeze(model)
    with pytest.raises(ValueError, match="Nothing to train"):
        param_groups(model, 1e-3, None, 0.0)


def test_fold_batchnorm_runs_the_same_network_without_its_batchnorm(lite0, elpv_folder, two_threads):
    from headstart.caches.embeddings import compute_embeddings
    from headstart.data import load_dataset, make_loader
    from headstart.freezing import fold_batchnorm

    items = load_dataset(elpv_folder).items("train")[:20]
    images, _ = next(iter(make_loader(items, None, lite0.preprocessing, batch_size=20)))
    before = {k: v.clone() for k, v in lite0.state_dict().items()}
    folded, count = fold_batchnorm(lite0, images[:2])
    norms = [m for m in lite0.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert count == len(norms) == 49 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(before[k], v) for k, v in lite0.state_dict().items())  # the original is untouched
    with torch.inference_mode():
        whole, fast = lite0(images), folded(images)
        blocks, fast_blocks = lite0.forward_blocks(images, ["stage3", "head"]), folded.forward_blocks(images, ["stage3", "head"])
    torch.testing.assert_close(fast, whole, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast_blocks["stage3"], blocks["stage3"], rtol=1e-4, atol=1e-4)
    # the embedding pass folds, and a cached feature does not depend on the batch it was computed in
    by_eight, at_once = compute_embeddings(lite0, items, batch_size=8), compute_embeddings(lite0, items, batch_size=32)
    torch.testing.assert_close(torch.from_numpy(by_eight), whole, rtol=1e-4, atol=1e-4)
    assert np.array_equal(by_eight, at_once)


def test_fold_batchnorm_refuses_a_pairing_that_changes_the_output():
    from headstart.freezing import fold_batchnorm

    class Shared(torch.nn.Module):  # the convolution's output is read twice: folding its BatchNorm would change the sum
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.norm(y) + y

    torch.manual_seed(0)
    model = Shared()
    model.norm.running_mean.uniform_(-1, 1), model.norm.running_var.uniform_(0.5, 2)
    same, count = fold_batchnorm(model, torch.randn(2, 3, 8, 8))
    assert same is model and count == 0


def test_frozen_bottom_trains_with_batchnorm_folded_and_saves_the_original_weights(lite0, tmp_path):
    import copy
    from dataclasses import replace

    from headstart.freezing import freeze_bottom, set_batchnorm
    from headstart.progress import Progress

    backbone = copy.deepcopy(lite0)
    backbone.preprocessing = replace(backbone.preprocessing, input_size=64)
    model = TransferModel.from_backbone(backbone, ["a", "b"])
    freeze_bottom(model, 3)  # stage6, head and the classifier train
    stored = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    set_batchnorm(model, "eval")  # the training blocks' statistics stay put too, so the two forwards see the same network
    model.train()
    plain = model(x)
    with model.frozen_batchnorm_folded() as folded:
        assert folded == model.blocks.names()[:-3]  # stem .. stage5
        fast = model(x)
        assert list(model.state_dict()) == list(stored)  # the folded copies are not part of the model
        unfreeze(model, ["stage5"])  # a block that trains again runs as stored
        assert model.backbone._runner("stage5", model.backbone.stages["stage5"]) is model.backbone.stages["stage5"]
        freeze(model, ["stage5"])
    assert float((fast - plain).detach().abs().max() / plain.detach().abs().max()) < 1e-5
    set_batchnorm(model, "train")
    assert not model.backbone._folded
    # a phase folds while it trains; what it saves is the stored network with its BatchNorm
    data = [(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])) for _ in range(2)]
    with Progress(quiet=True) as progress:
        fit_model(model, data, None, TrainSettings(epochs=1, lr=1e-2, body_lr=1e-2, patience=None), phase="fine-tune", progress=progress)
    assert any("fine-tune: BatchNorm folded into the convolutions of the frozen blocks stem, stage0" in line for line in progress.lines)
    after = model.state_dict()
    assert list(after) == list(stored) and not model.backbone._folded
    assert all(torch.equal(after[k], v) for k, v in stored.items() if k.startswith(("backbone.stages.stem", "backbone.stages.stage5")))
    model.save_pretrained(tmp_path / "run")
    reloaded = TransferModel.from_pretrained(tmp_path / "run")
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in after.items())
