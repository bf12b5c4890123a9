"""Fine-tuning methods: freeze audit, SIGKILL-safe resume of phases, per-block rates, gradual
unfreezing, L2-SP/BSS, LoRA, gradient accumulation."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from headstart.api import fit, resume
from headstart.freezing import FreezableMixin, FreezeAuditError, audit_freeze, freeze_bottom, frozen_parameter_names
from headstart.inference import from_pretrained, predict_proba
from headstart.model import TransferModel
from headstart.training.callbacks import Callback
from headstart.training.checkpoint import checkpoint_dir
from headstart.training.loop import fit_model
from headstart.training.optim import block_rates, param_groups
from headstart.training.regularizers import BSS, L2SP
from headstart.training.state import TrainSettings

SMALL = {"cut": "stage3", "image_size": 64, "batch_size": 8}  # a fast, real fine-tune on the ELPV fixture
GRADUAL = {"strategy": "gradual", "epochs": 2, "unfreeze_blocks": 2, "l2sp": 0.01, **SMALL}


def _curves(run):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in run.history.epochs]


@pytest.fixture()
def model(lite0):
    return TransferModel.from_backbone(copy.deepcopy(lite0), ["a", "b"])


# -- freeze audit ------------------------------------------------------------------------------


class Corrupt(Callback):
    """Break the frozen state after the optimizer is built, as a buggy callback or resume would."""

    def __init__(self, how: str) -> None:
        self.how = how

    def on_fit_start(self, state):
        model, optimizer = state.model, state.optimizer
        frozen = next(p for p in model.parameters() if not p.requires_grad)
        if self.how == "requires_grad":
            frozen.requires_grad_(True)
        elif self.how == "optimizer":
            optimizer.add_param_group({"params": [frozen], "lr": 1e-3})
        elif self.how == "grad":
            frozen.grad = torch.zeros_like(frozen)
        elif self.how == "unfreeze_more":  # trainable now, yet not in the optimizer: it would silently not train
            for p in model.parameters():
                p.requires_grad_(True)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("requires_grad", "meant to be frozen but requires a gradient"),
        ("optimizer", "frozen but in the optimizer"),
        ("grad", "frozen but holds a gradient"),
        ("unfreeze_more", "meant to be frozen but requires a gradient"),
    ],
)
def test_audit_stops_a_corrupted_phase_before_it_trains(model, how, message):
    freeze_bottom(model, 2)
    before = copy.deepcopy(model.state_dict())
    data = [(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1]))]
    with pytest.raises(FreezeAuditError, match=message):
        fit_model(model, data, None, TrainSettings(epochs=1, patience=None), phase="fine-tune", callbacks=[Corrupt(how)])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # stopped before any step


def test_audit_catches_batchnorm_of_frozen_blocks_in_train_mode(model, monkeypatch):
    freeze_bottom(model, 2)
    optimizer = torch.optim.AdamW(param_groups(model, 1e-3, None, 0.0))
    model.train()
    line = audit_freeze(model, optimizer, meant_frozen=frozen_parameter_names(model), phase="fine-tune")
    assert line.startswith("freeze audit (fine-tune): ok") and "BatchNorm in eval" in line
    monkeypatch.setattr(FreezableMixin, "train", nn.Module.train)  # a plain nn.Module forgets frozen blocks' BN (the Keras pitfall)
    model.train()
    with pytest.raises(FreezeAuditError, match="BatchNorm meant to stay in eval mode is training.*backbone.stages.stem"):
        audit_freeze(model, optimizer, meant_frozen=frozen_parameter_names(model), phase="fine-tune")


def test_audit_after_resume_refuses_a_different_frozen_set(elpv_folder, tmp_path):
    class Stop(Callback):
        def on_epoch_end(self, state):
            if state.phase == "fine-tune":
                raise KeyboardInterrupt

    kwargs = dict(strategy="fine-tune", epochs=2, trainable_blocks=1, head_warmup=False, quiet=True, **SMALL)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(elpv_folder, out=out, callbacks=[Stop()], **kwargs)
    args_file = checkpoint_dir(out) / "fit.json"
    args = json.loads(args_file.read_text())
    args_file.write_text(json.dumps({**args, "trainable_blocks": 2}))  # the resumed run would unfreeze another block
    with pytest.raises(FreezeAuditError, match="after resume .* differ from the frozen set the checkpoint recorded"):
        resume(out, quiet=True)
    args_file.write_text(json.dumps(args))
    from headstart.cli import main

    assert main(["fit", "--resume", str(out), "--quiet"]) == 0  # `headstart fit --resume RUN` = `headstart resume RUN`
    run = from_pretrained(out)
    log = (out / "log.txt").read_text()
    assert "freeze audit (fine-tune): ok" in log and "(after resume)" in log
    assert json.loads((out / "history.json").read_text())["freeze_audits"][-1].endswith("(after resume)")
    assert run.classes == ["defective", "functional"] and json.loads((out / "metrics.json").read_text())["test"]["n"] > 0


# -- SIGKILL mid-epoch, then resume -------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import headstart.training.checkpoint as checkpoint
    import headstart.training.loop as training
    from headstart.training.callbacks import Callback
    from headstart.api import fit

    armed, seen = False, 0
    original = training.to_device

    class Arm(Callback):
        def on_epoch_end(self, state):
            global armed
            armed = state.phase == "gradual-2"  # after the first epoch of the second unfreezing stage

    def to_device(inputs, device):
        global seen
        if armed:
            seen += 1
            if seen == 2:  # in the middle of an epoch, between two batches of the same step sequence
                os.kill(os.getpid(), signal.SIGKILL)
        return original(inputs, device)

    training.to_device = to_device
    checkpoint.WRITE_EVERY_SECONDS = 0  # every epoch on disk: the kill must find the first epoch of gradual-2 there
    fit(sys.argv[1], out=sys.argv[2], quiet=True, callbacks=[Arm()], **{kwargs})
    """
)


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_result(elpv_folder, tmp_path):
    whole = fit(elpv_folder, out=tmp_path / "whole", quiet=True, **GRADUAL)
    out = tmp_path / "killed"
    script = tmp_path / "child.py"
    script.write_text(_CHILD.replace("{kwargs}", repr(GRADUAL)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, str(script), str(elpv_folder), str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    state = json.loads((checkpoint_dir(out) / "state.json").read_text())
    assert state["phase"] == "gradual-2" and not state["finished"]  # the last checkpoint is the end of its first epoch
    resumed = resume(out, quiet=True)
    assert resumed.metrics["test"]["accuracy"] == whole.metrics["test"]["accuracy"]
    assert resumed.metrics["test"]["loss"] == pytest.approx(whole.metrics["test"]["loss"], rel=1e-5, abs=1e-6)
    for a, b in zip(_curves(resumed), _curves(whole), strict=True):
        assert a["phase"] == b["phase"] and a["epoch"] == b["epoch"]
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5, abs=1e-6) and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-6)
    log = (out / "log.txt").read_text()
    assert "gradual: stage 2/2" in log and "freeze audit (gradual-2): ok" in log and "(after resume)" in log
    for key, value in whole.model.state_dict().items():
        assert torch.allclose(value.float(), resumed.model.state_dict()[key].float(), rtol=1e-4, atol=1e-6), key


# -- per-block learning rates ------------------------------------------------------------------


def test_layer_decay_and_block_rates_on_a_cnn_and_a_transformer(model, minilm):
    text = TransferModel.from_backbone(copy.deepcopy(minilm), ["a", "b"])
    for m in (model, text):
        names = [b.name for b in m.backbone.blocks]
        rates = {name: rate for name, _, rate in block_rates(m, 1e-3, None, layer_decay=0.5)}
        assert rates["classifier"] == 1e-3
        for depth, name in enumerate(reversed(names), start=1):
            assert rates[name] == pytest.approx(1e-3 * 0.5**depth)
        spread = {name: rate for name, _, rate in block_rates(m, 1e-3, None, block_lrs=(1e-5, 1e-3))}
        assert spread[names[0]] == pytest.approx(1e-5) and spread["classifier"] == pytest.approx(1e-3)
        assert all(spread[a] < spread[b] for a, b in zip(names, names[1:]))
        covered = sum(len(params) for _, params, _ in block_rates(m, 1e-3, None))
        assert covered == len(list(m.parameters()))  # every parameter has a rate
    rates = {name: rate for name, _, rate in block_rates(text, 1e-3, 1e-4, block_lrs={"layer5": 3e-4, "layer[0-2]": 0.0})}
    assert rates["layer5"] == 3e-4 and rates["layer1"] == 0.0 and rates["layer4"] == 1e-4 and rates["classifier"] == 1e-3
    freeze_bottom(text, 3)
    groups = param_groups(text, 1e-3, None, 0.01, layer_decay=0.8)
    assert {g["block"] for g in groups} == {"classifier", "layer5", "layer4"}  # frozen blocks get no group
    with pytest.raises(KeyError, match="no block matches"):
        block_rates(text, 1e-3, None, block_lrs={"stage9": 1e-4})
    with pytest.raises(ValueError, match="layer_decay=1.5"):
        TrainSettings(layer_decay=1.5)


def test_layer_decay_fit_on_text_and_cli(topics_csv, tmp_path, capsys):
    from headstart.cli import main

    args = ["fit", str(topics_csv), "--strategy", "full", "--epochs", "1", "--no-head-warmup", "--cut", "layer1", "--layer-decay", "0.7"]
    assert main([*args, "--out", str(tmp_path / "t"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["test"]["n"] > 0
    groups = json.loads((tmp_path / "t" / "config.json").read_text())["training"]["strategy"]["settings"]
    assert groups["layer_decay"] == 0.7 and groups["body_lr"] == 1e-4  # recorded; body_lr is replaced by the decay
    log = (tmp_path / "t" / "log.txt").read_text()
    assert "freeze audit (full): ok" in log and "optimizer groups" in log
    assert main(["fit", str(topics_csv), "--block-lrs", "1e-3", "--strategy", "full", "--out", str(tmp_path / "u")]) == 2
    assert "--block-lrs '1e-3': write LOW:HIGH" in capsys.readouterr().err


# -- regularisers --------------------------------------------------------------------------------


def test_l2sp_is_zero_at_the_source_and_pulls_back(model):
    penalty = L2SP(model, alpha=0.1)
    assert penalty(model, None).item() == 0.0
    weight = model.backbone.stages["head"][0].weight
    with torch.no_grad():
        weight.add_(1.0)
    value = penalty(model, None)
    assert value.item() == pytest.approx(0.5 * 0.1 * weight.numel(), rel=1e-4)
    value.backward()
    assert torch.allclose(weight.grad, torch.full_like(weight, 0.1))
    assert param_groups(model, 1e-3, None, 0.01, decay_body=False)[-1]["weight_decay"] == 0.0


def test_bss_penalises_the_smallest_singular_values():
    features = torch.randn(16, 8, requires_grad=True)
    value = BSS(eta=1.0, k=2)(None, features)
    singular = torch.linalg.svdvals(features.detach())
    assert value.item() == pytest.approx(float((singular[-2:] ** 2).sum()), rel=1e-5)
    value.backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_l2sp_keeps_the_body_closer_to_the_source(elpv_folder, lite0, tmp_path):
    kwargs = dict(strategy="full", epochs=1, head_warmup=False, lr=3e-3, body_lr=3e-3, quiet=True, save=False, cut="stage1", image_size=48, batch_size=8)
    plain = fit(elpv_folder, **kwargs)
    held = fit(elpv_folder, l2sp=10.0, bss=0.001, **kwargs)
    source = lite0.state_dict()

    def distance(run):
        return sum(float((v - source[k]).pow(2).sum()) for k, v in run.model.backbone.state_dict().items() if k.startswith("stages.stage1") and v.is_floating_point())

    assert 0 < distance(held) < distance(plain)
    with pytest.raises(ValueError, match="trains none"):
        fit(elpv_folder, strategy="feature-extraction", l2sp=0.01, save=False, quiet=True)


# -- gradual unfreezing ----------------------------------------------------------------------------


def test_gradual_unfreezing_schedule_on_plateau(topics_csv, tmp_path):
    run = fit(topics_csv, backbone="minilm", cut="layer2", strategy="gradual", epochs=2, patience=1, unfreeze_blocks=2, out=tmp_path / "g", quiet=True)
    log = (tmp_path / "g" / "log.txt").read_text()
    for stage, blocks in ((1, "layer2"), (2, "layer1, layer2")):
        assert f"gradual: stage {stage}/2 from epoch" in log and f"trainable {blocks} + classifier" in log
        assert f"freeze audit (gradual-{stage}): ok" in log and "or 1 without improvement" in log
    phases = [r["phase"] for r in run.history.epochs]
    assert [p for p in dict.fromkeys(phases)] == ["head warm-up", "gradual-1", "gradual-2"]
    assert all(1 <= phases.count(f"gradual-{k}") <= 2 for k in (1, 2))
    frozen = {b.name for b in run.model.blocks if not any(p.requires_grad for p in b.module.parameters())}
    assert frozen == {"embeddings", "layer0"}


# -- LoRA --------------------------------------------------------------------------------------------


def test_lora_trains_adapters_only_and_reloads_with_its_head(topics_csv, minilm, tmp_path):
    run = fit(topics_csv, backbone="minilm", cut="layer2", strategy="lora", epochs=2, lora_rank=4, out=tmp_path / "lora", quiet=True)
    log = (tmp_path / "lora" / "log.txt").read_text()
    assert "LoRA rank 4 on query, value:" in log and "freeze audit (lora): ok" in log
    source = minilm.state_dict()
    lora = [n for n, p in run.model.backbone.named_parameters() if "lora_" in n]
    assert lora and all("lora_" in n for n, p in run.model.backbone.named_parameters() if p.requires_grad)
    base = {k.replace(".base_layer", ""): v for k, v in run.model.backbone.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(v, source[k]) for k, v in base.items())  # pretrained weights untouched
    assert len(base) == len([k for k in source if not k.startswith("model.encoder.layer.") or int(k.split(".")[3]) <= 2])
    assert any(float(p.detach().abs().sum()) > 0 for n, p in run.model.backbone.named_parameters() if "lora_B" in n)  # B starts at zero: it trained
    reloaded = from_pretrained(tmp_path / "lora")
    texts = ["I love pizza and pasta", "who won the football match", "my laptop will not boot"]
    assert reloaded.backbone.adapter == {"rank": 4, "alpha": 16.0, "dropout": 0.1, "targets": ["query", "value"]}
    assert torch.equal(torch.from_numpy(predict_proba(run.model, texts)), torch.from_numpy(predict_proba(reloaded, texts)))


# -- training mechanics ------------------------------------------------------------------------------


def test_gradient_accumulation_equals_a_larger_batch():
    torch.manual_seed(0)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    models = [nn.Linear(6, 3), nn.Linear(6, 3)]
    models[1].load_state_dict(models[0].state_dict())
    big = [(x[i : i + 16], y[i : i + 16]) for i in (0, 16)]
    small = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    fit_model(models[0], big, None, TrainSettings(epochs=3, lr=1e-2, patience=None))
    fit_model(models[1], small, None, TrainSettings(epochs=3, lr=1e-2, patience=None, accumulate=2))
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_bf16_on_cpu_is_refused_with_a_reason(elpv_folder):
    if torch.cuda.is_available():
        pytest.skip("bf16 autocast is allowed on a GPU")
    with pytest.raises(ValueError, match="bf16.*needs a GPU"):
        fit(elpv_folder, strategy="fine-tune", epochs=1, precision="bf16", head_warmup=False, save=False, quiet=True, **SMALL)


# -- learning-rate finder ------------------------------------------------------------------------------


def test_lr_find_before_and_after_a_fit_changes_nothing(fe_run, elpv_folder, tmp_path, capsys):
    from headstart.analysis.lr_finder import lr_find
    from headstart.cli import main

    model = fe_run.model
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(64, model.head.in_features), dim=1) * 5
    y = (x[:, 0] > 0).long()
    result = lr_find(model.head, [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)], steps=60)
    assert 1e-7 <= result.suggestion <= 10 and len(result.lrs) == len(result.losses) >= 5
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()) and not model.training
    assert all(p.grad is None for p in model.parameters())
    plot = result.plot(tmp_path / "lr.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["lr-find", str(elpv_folder), "--steps", "30", "--plot", str(tmp_path / "cli.png"), "--json"]) == 0  # before a fit: a new model
    out = json.loads(capsys.readouterr().out)
    assert 1e-7 <= out["suggestion"] <= 10 and Path(out["plot"]).is_file()
    saved = tmp_path / "run"  # a copy: lr-find --run writes lr_find.json into the run, and fe_run is shared by other tests
    shutil.copytree(fe_run.directory, saved)
    after = ["--run", str(saved), "--trainable-blocks", "1", "--steps", "8", "--image-size", "64", "--batch-size", "8", "--plot", "none"]
    assert main(["lr-find", str(elpv_folder), *after]) == 0  # after a fit: the saved run's model, end to end
    assert json.loads((saved / "lr_find.json").read_text())["suggestion"] > 0 and not (fe_run.directory / "lr_find.json").exists()
    assert "the top 1 blocks and the head: " in capsys.readouterr().out


def test_lr_find_on_a_flat_curve_suggests_below_where_it_breaks():
    """A fitted model: the loss is flat until the rate breaks training; the steepest point is noise, so it is not the answer."""
    from headstart.analysis.lr_finder import lr_find

    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x[:, 0] > 0).long()
    head = torch.nn.Linear(8, 2)
    with torch.no_grad():  # already the solution: nothing left to descend
        head.weight.zero_()
        head.weight[1, 0], head.weight[0, 0] = 20.0, -20.0
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    flat = lr_find(head, batches, steps=80, start=1e-6, end=100)
    assert flat.flat and flat.ceiling is not None and flat.suggestion == pytest.approx(flat.ceiling / 10)
    assert "no rate lowers the loss by 10%" in flat.describe()
    fresh = lr_find(torch.nn.Linear(8, 2), batches, steps=80, start=1e-6, end=100)
    assert not fresh.flat and "steepest descent" in fresh.describe()


# -- few-shot contrastive tuning --------------------------------------------------------------------


def test_contrastive_tuning_separates_the_classes_of_a_few_examples(topics_csv, minilm):
    from headstart.data import load_dataset
    from headstart.strategies.fewshot import contrastive_pairs, contrastive_tune, embed

    pairs = contrastive_pairs([0, 0, 1, 1, 2, 2], iterations=3, seed=0)
    assert len(pairs) == 36 and sum(t for _, _, t in pairs) == 18 and all(i != j for i, j, _ in pairs)
    assert all((i // 2 == j // 2) == (t == 1.0) for i, j, t in pairs)
    with pytest.raises(ValueError, match="at least 2 classes"):
        contrastive_pairs([0, 1, 1])
    data = load_dataset(topics_csv, seed=0)
    labels = data.labels("train")
    chosen = [i for c in range(3) for i in [k for k, y in enumerate(labels) if y == c][:4]]  # 4 examples per class
    texts, y = [data.items("train")[i] for i in chosen], labels[chosen]
    encoder = copy.deepcopy(minilm).cut("layer2")  # three layers: the same mechanics, half the time

    def margin(model):
        e = torch.from_numpy(embed(model, texts))
        sims, same = e @ e.T, torch.from_numpy(y[:, None] == y[None, :])
        off = ~torch.eye(len(y), dtype=torch.bool)
        return float(sims[same & off].mean() - sims[~same].mean())

    before = margin(encoder)
    losses = contrastive_tune(encoder, texts, y, iterations=2, lr=1e-4, batch_size=8, seed=0)
    assert len(losses) == 6 and margin(encoder) > before


def test_templated_examples_label_each_class_name():
    from headstart.strategies.fewshot import templated_examples

    texts, labels = templated_examples(["joy", "fear"], per_class=2)
    assert texts == ["This sentence is joy"] * 2 + ["This sentence is fear"] * 2 and labels == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="needs a"):
        templated_examples(["joy"], template="no slot")


def test_fit_contrastive_tunes_the_encoder_and_reloads_it(topics_csv, elpv_folder, tiny_text_backbone, tmp_path):
    """`fit --strategy contrastive`: the encoder moves, class-name examples join train, the saved run predicts the same.
    The plumbing, on the tiny BERT; the test above tunes the real MiniLM."""
    from headstart.backbones import create_backbone
    from headstart.strategies import Contrastive, make_strategy

    assert make_strategy("contrastive", label_templates=3).templates == 3
    with pytest.raises(ValueError, match="only applies to --strategy contrastive"):
        make_strategy("full", label_templates=3)
    run = fit(topics_csv, backbone=tiny_text_backbone, strategy=Contrastive(iterations=1, templates=2), out=tmp_path / "run", quiet=True, seed=0, report=False)
    assert run.model.backbone.fingerprint() != create_backbone(tiny_text_backbone).fingerprint()  # tuned, so no stale cached embedding is reused
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "6 class-name examples added to train" in log and "steps over same/different-class pairs" in log
    texts = ["pizza with cheese", "the match ended in a draw"]
    assert torch.allclose(torch.from_numpy(predict_proba(from_pretrained(tmp_path / "run"), texts)), torch.from_numpy(predict_proba(run.model, texts)), atol=1e-5)
    with pytest.raises(ValueError, match="tunes a sentence encoder.*use fine-tune or full"):
        fit(elpv_folder, strategy="contrastive", out=tmp_path / "img", quiet=True, report=False)
