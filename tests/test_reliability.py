"""Interrupted runs resume exactly, foreign pickles never run, GPU out-of-memory halves the batch, seeds repeat."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from headstart.api import fit, resume
from headstart.cli import main
from headstart.training.callbacks import Callback
from headstart.training.checkpoint import checkpoint_dir


class InterruptAt(Callback):
    """Press Ctrl-C after epoch ``epoch`` of ``phase`` (as a user would, between two batches)."""

    def __init__(self, phase: str, epoch: int) -> None:
        self.phase, self.epoch, self.seen = phase, epoch, 0

    def on_epoch_end(self, state):
        if state.phase == self.phase:
            self.seen += 1
            if self.seen == self.epoch:
                raise KeyboardInterrupt


class CountEpochs(Callback):
    def __init__(self) -> None:
        self.epochs: list[str] = []

    def on_epoch_end(self, state):
        self.epochs.append(state.phase)


def _curves(run):
    return [{k: v for k, v in record.items() if not k.endswith("seconds")} for record in run.history.epochs]  # timings vary


@pytest.mark.parametrize(
    ("strategy", "phase", "epoch", "settings"),
    [
        ("feature-extraction", "feature-extraction", 4, {"epochs": 8}),
        # augmented on the device (here the CPU: issue 28), so that its draws and shuffle are shown to resume; the per-image
        # path's resume is test_finetuning's SIGKILL test
        ("fine-tune", "fine-tune", 1, {"epochs": 2, "trainable_blocks": 1, "cut": "stage3", "image_size": 64, "batch_size": 8, "augment_on": "device"}),
    ],
)
def test_ctrl_c_leaves_a_run_that_resumes_exactly(elpv_folder, tmp_path, capsys, strategy, phase, epoch, settings):
    kwargs = dict(strategy=strategy, quiet=True, **settings)
    whole = fit(elpv_folder, out=tmp_path / "whole", **kwargs)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt, match=f"headstart resume {out}"):
        fit(elpv_folder, out=out, callbacks=[InterruptAt(phase, epoch)], **kwargs)
    state = json.loads((checkpoint_dir(out) / "state.json").read_text())
    assert state["phase"] == phase and not state["finished"] and not (out / "metrics.json").exists()
    with pytest.raises(FileExistsError, match="interrupted run; continue it with `headstart resume"):
        fit(elpv_folder, out=out, **kwargs)
    if strategy == "feature-extraction":
        assert main(["resume", str(out), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["metrics"] == json.loads(json.dumps(whole.metrics))
        assert "resuming" in (out / "log.txt").read_text()
    else:
        counter = CountEpochs()
        resumed = resume(out, quiet=True, callbacks=[counter])
        assert resumed.metrics == whole.metrics and _curves(resumed) == _curves(whole)
        assert counter.epochs == [phase] * (settings["epochs"] - epoch)  # finished epochs and phases were not run again
    assert json.loads((out / "history.json").read_text())["epochs"][-1]["val_loss"] == whole.history.epochs[-1]["val_loss"]
    if settings.get("augment_on") == "device":
        assert "augmentation: light, of the cached pixels on cpu" in (out / "log.txt").read_text()
    assert not checkpoint_dir(out).exists()  # finished: nothing left to resume
    assert main(["resume", str(out)]) == 2 and "nothing to resume" in capsys.readouterr().err


def test_cli_ctrl_c_names_the_resume_command(elpv_folder, tmp_path, capsys, monkeypatch):
    from headstart.strategies import FeatureExtraction

    def press_ctrl_c(self, model, data, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(FeatureExtraction, "run", press_ctrl_c)
    out = tmp_path / "run"
    assert main(["fit", str(elpv_folder), "--out", str(out), "--quiet"]) == 130
    assert f"headstart resume {out}" in capsys.readouterr().err
    assert json.loads((checkpoint_dir(out) / "fit.json").read_text())["data"] == str(elpv_folder.resolve())


class OutOfMemoryAbove(Callback):
    """Raise the GPU's out-of-memory error while the training batch is larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def on_fit_start(self, state):
        if state.train_loader is not None and state.train_loader.batch_size > self.limit:  # the head on features trains full batch
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_retries_with_half_the_batch(elpv_folder, tmp_path):
    run = fit(elpv_folder, out=tmp_path / "oom", strategy="fine-tune", epochs=1, image_size=32, batch_size=16, callbacks=[OutOfMemoryAbove(8)], quiet=True)
    config = json.loads((run.directory / "config.json").read_text())
    assert config["training"]["batch_size"] == 8
    assert "out of GPU memory with batch size 16; restarting with batch size 8" in (run.directory / "log.txt").read_text()
    with pytest.raises(MemoryError, match="even with batch size 1; use a smaller --image-size"):
        fit(elpv_folder, save=False, strategy="fine-tune", epochs=1, image_size=32, batch_size=1, callbacks=[OutOfMemoryAbove(0)], quiet=True)


class _CreatesAFile:
    """Unpickling this object calls ``open(path, "w")``: the file appears only if foreign code runs."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(elpv_folder, tmp_path, capsys):
    from headstart.backbones import create_backbone
    from headstart.backbones.weights import load_state_dict

    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": _CreatesAFile(marker)}, evil)
    with pytest.raises(ValueError, match="evil.pth: not a plain weights file.*never pickled code"):
        load_state_dict(evil)
    assert not marker.exists()
    assert main(["fit", str(elpv_folder), "--backbone", "timm:resnet18", "--weights", str(evil), "--out", str(tmp_path / "r")]) == 2
    assert "never pickled code" in capsys.readouterr().err and not marker.exists()
    with pytest.raises(ValueError, match="never pickled code"):
        create_backbone("timm:resnet18", weights=evil)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_CreatesAFile(marker))).close()  # the payload is real: plain pickle runs it
    assert marker.exists()


def test_same_seed_gives_identical_metrics(fe_run, elpv_folder, tmp_path):
    again = fit(elpv_folder, strategy="feature-extraction", out=tmp_path / "again", quiet=True, epochs=30)  # fe_run's settings, seed 0
    assert again.metrics == fe_run.metrics and _curves(again) == _curves(fe_run)
    assert (again.directory / "model.safetensors").read_bytes() == (fe_run.directory / "model.safetensors").read_bytes()


def test_a_seeded_run_does_not_depend_on_what_the_cache_holds(elpv_folder, tmp_path, two_threads):
    """CI once failed here: a fine-tune run had put its warm-up features (from the frozen bottom's
    activations, equal only to float rounding) into the embedding cache, and the next seeded
    feature-extraction run read those instead of its own."""
    cache = tmp_path / "cache"
    settings = dict(strategy="feature-extraction", quiet=True, epochs=5, cache_dir=cache, image_size=64)
    cold = fit(elpv_folder, out=tmp_path / "cold", **settings)
    tuned = fit(elpv_folder, out=tmp_path / "ft", strategy="fine-tune", trainable_blocks=1, epochs=1, batch_size=8, image_size=64, quiet=True, cache_dir=cache)
    warm = fit(elpv_folder, out=tmp_path / "warm", **settings)
    assert warm.metrics == cold.metrics and _curves(warm) == _curves(cold)
    fresh = fit(elpv_folder, out=tmp_path / "ft-fresh", strategy="fine-tune", trainable_blocks=1, epochs=1, batch_size=8, image_size=64, quiet=True, cache_dir=tmp_path / "other")
    assert fresh.metrics == tuned.metrics  # the fine-tune run itself: warm cache or cold, the same


class PoisonWeights(Callback):
    """Make the first trained weight NaN, as a far too high learning rate would."""

    def on_fit_start(self, state):
        with torch.no_grad():
            next(state.model.parameters()).fill_(float("nan"))


def test_nan_loss_stops_with_a_hint_to_lower_the_learning_rate(elpv_folder, tmp_path):
    with pytest.raises(FloatingPointError, match=r"^fine-tune epoch 1/1: loss became nan; lower the learning rate \(now 0.001\)$"):
        fit(elpv_folder, out=tmp_path / "nan", strategy="fine-tune", head_warmup=False, image_size=32, epochs=1, callbacks=[PoisonWeights()], quiet=True)
    with pytest.raises(FloatingPointError, match=r"^feature-extraction epoch 1/3: loss became nan; a feature or a head weight is not finite"):
        fit(elpv_folder, out=tmp_path / "nan-head", epochs=3, callbacks=[PoisonWeights()], quiet=True)
