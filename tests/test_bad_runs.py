"""Bad weights files, edited run configs, starts that fail, a full disk and Ctrl-C through a pipe (docs/bad-input.md).

Each case ends in one ``error:`` line (exit status 2) or the resume message (exit status 130), and a
run directory that is complete, resumable or absent: never half-written.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import class_folder

from headstart.api import fit, resume
from headstart.backbones import create_backbone
from headstart.cli import main
from headstart.errors import is_user_error
from headstart.inference import from_pretrained
from headstart.training.callbacks import Callback
from headstart.training.checkpoint import checkpoint_dir

FAST = ["--image-size", "32", "--quiet"]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return class_folder(tmp_path / "data", per_class=6)


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ------------------------------------------------------------------------------------------------
# Weights files and run configs: one line naming the file and the fix, before anything is allocated
# ------------------------------------------------------------------------------------------------


def test_a_pickle_named_safetensors_is_one_line(data, tmp_path, capsys):
    weights = tmp_path / "pickle_named.safetensors"
    torch.save({"conv_stem.weight": torch.zeros(2)}, weights)
    out = tmp_path / "run"
    assert main(["fit", str(data), "--backbone", "timm:test_efficientnet", "--weights", str(weights), "--out", str(out), *FAST]) == 2
    line = one_error_line(capsys)
    assert "pickle_named.safetensors: not a safetensors file (" in line and "it looks like a torch.save file: rename it to .pth" in line
    assert not out.exists()
    with pytest.raises(ValueError, match="pickle_named.safetensors: not a safetensors file"):
        create_backbone("timm:test_efficientnet", weights=weights)


class _CreatesAFile:
    """Unpickling this object calls ``open(path, "w")``: the file appears only if foreign code runs."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_hf_folder_whose_weights_are_pickled_code_is_one_line(data, tmp_path, capsys):
    from transformers import BertConfig

    folder = tmp_path / "tiny-bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100).save_pretrained(folder)
    marker = tmp_path / "pwned.txt"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"embeddings.word_embeddings.weight": _CreatesAFile(marker)}))
    out = tmp_path / "run"
    assert main(["fit", str(data), "--backbone", f"hf:{folder}", "--out", str(out), *FAST]) == 2
    line = one_error_line(capsys)
    assert f"{folder / 'pytorch_model.bin'}: not a plain weights file (refused by torch.load(weights_only=True)); headstart only loads tensors" in line
    assert not marker.exists() and not out.exists()
    with pytest.raises(ValueError, match="pytorch_model.bin: not a plain weights file"):
        create_backbone(f"hf:{folder}")
    assert not marker.exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    return fit(class_folder(root / "data", per_class=6), out=root / "run", epochs=2, image_size=32, quiet=True, report=False).directory


EDITS = {  # (section, key, value) -> what the error names
    "hidden 1e12 (a float)": ("head", "hidden", 1e12, "head.hidden is 1000000000000.0, expected a whole number from 1 to 65536"),
    "hidden 10**12": ("head", "hidden", 10**12, "head.hidden is 1000000000000, expected a whole number from 1 to 65536"),
    "num_classes 10**7": ("head", "num_classes", 10**7, "head.num_classes is 10000000, expected a whole number from 2 to 1000000"),
    "dropout 1.5": ("head", "dropout", 1.5, "head.dropout is 1.5, expected a number from 0 to 1 (excluded)"),
    "input_size 40000": ("preprocessing", "input_size", 40000, "preprocessing.input_size is 40000, expected a whole number from 8 to 4096"),
    "input_size '224'": ("preprocessing", "input_size", "224", "preprocessing.input_size is '224', expected a whole number"),
    "crop_pct 0.001": ("preprocessing", "crop_pct", 0.001, "preprocessing.crop_pct is 0.001, expected a crop that resizes to at most 8192 pixels"),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_an_edited_run_config_is_refused_before_anything_is_allocated(tiny_run, tmp_path, capsys, case):
    section, key, value, expected = EDITS[case]
    run = tmp_path / "edited"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    config[section][key] = value
    (run / "config.json").write_text(json.dumps(config))
    image = next((tiny_run.parent / "data" / "cats").iterdir())
    assert main(["predict", str(run), str(image)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {run / 'config.json'}: {expected}") and line.endswith("fix the value or fit the run again"), line
    with pytest.raises(ValueError, match=rf"config.json: {section}\.{key} is "):
        from_pretrained(run)
    assert main(["fit", str(image.parent.parent), "--backbone", str(run), "--strategy", "scratch", "--out", str(tmp_path / "again"), *FAST]) == 2
    assert expected in one_error_line(capsys)  # a run used as a backbone is checked too


def test_the_unedited_run_loads(tiny_run):
    assert from_pretrained(tiny_run).classes == ["cats", "dogs"]


# ------------------------------------------------------------------------------------------------
# A start that fails leaves nothing that looks resumable
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--backbone", "timm:test_efficientnet", "--weights", "no/such/weights.pth"], "weights.pth: weights file not found"),
        (["--backbone", "no-such-backbone"], "Unknown backbone 'no-such-backbone'"),
    ],
)
def test_a_start_that_fails_leaves_nothing_to_resume(data, tmp_path, capsys, options, message):
    out = tmp_path / "run"
    for _ in range(2):  # the same command again: the same error, not "holds an interrupted run"
        assert main(["fit", str(data), *options, "--out", str(out), *FAST]) == 2
        line = one_error_line(capsys)
        assert message in line and "interrupted" not in line
        assert not out.exists()


class FailAtStart(Callback):
    def on_fit_start(self, state):
        raise RuntimeError("a bug before the first epoch")


def test_a_crash_before_the_first_epoch_leaves_nothing_to_resume(data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="a bug before the first epoch"):
        fit(data, out=out, epochs=2, image_size=32, quiet=True, callbacks=[FailAtStart()])
    assert not out.exists()
    assert fit(data, out=out, epochs=2, image_size=32, quiet=True, report=False).directory == out


def test_ctrl_c_before_the_model_is_built_saves_nothing(data, tmp_path, capsys, monkeypatch):
    from headstart.model import TransferModel

    def press_ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(TransferModel, "from_backbone", press_ctrl_c)
    out = tmp_path / "run"
    assert main(["fit", str(data), "--out", str(out), *FAST]) == 130
    assert capsys.readouterr().err.strip() == f"interrupted; nothing was saved in {out}"
    assert not out.exists()


# ------------------------------------------------------------------------------------------------
# A full disk: the run is left resumable (and the message says `headstart resume OUT`) or absent
# ------------------------------------------------------------------------------------------------


def disk_full_at(monkeypatch, name: str, nth: int = 1) -> list[str]:
    """Make the ``nth`` atomic write whose file name starts with ``name`` fail as a full disk does; returns the names written."""
    real_replace = os.replace
    written: list[str] = []

    def replace(source, target, *args, **kwargs):
        target_name = Path(target).name
        if target_name.startswith(name):
            written.append(target_name)
            if len(written) == nth:
                raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return written


def test_a_full_disk_before_training_saves_nothing(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    disk_full_at(monkeypatch, "fit.json")
    assert main(["fit", str(data), "--out", str(out), "--epochs", "2", *FAST]) == 2
    assert one_error_line(capsys) == f"error: {out}: no space left on the device writing fit.json; nothing was saved in {out}; free space and run the command again"
    assert not out.exists()
    monkeypatch.undo()
    assert main(["fit", str(data), "--out", str(out), "--epochs", "2", *FAST]) == 0


@pytest.mark.parametrize(
    ("name", "nth", "written"),
    [
        ("tensors-", 2, []),  # the second epoch's checkpoint: the first one is kept
        ("metrics.json", 1, ["model.safetensors", "config.json"]),  # the final save: its first files are removed again
    ],
)
def test_a_full_disk_during_a_run_leaves_it_resumable(data, tmp_path, capsys, monkeypatch, name, nth, written):
    out = tmp_path / "run"
    monkeypatch.setattr("headstart.training.checkpoint.WRITE_EVERY_SECONDS", 0)  # every epoch written: the second write is the second epoch's
    disk_full_at(monkeypatch, name, nth)
    assert main(["fit", str(data), "--out", str(out), "--epochs", "3", *FAST]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {out}: no space left on the device writing {name}")
    assert line.endswith(f"the run is resumable: `headstart resume {out}` continues after its last finished epoch once space is freed")
    assert (checkpoint_dir(out) / "state.json").is_file()
    assert not any((out / f).exists() for f in ["model.safetensors", "config.json", "metrics.json", "backbone"])  # not a half-written run
    monkeypatch.undo()
    assert main(["resume", str(out), "--quiet"]) == 0
    assert (out / "metrics.json").is_file() and (out / "config.json").is_file() and not checkpoint_dir(out).exists()
    assert len(json.loads((out / "history.json").read_text())["epochs"]) == 3


def test_a_full_disk_is_a_user_error_in_the_api(data, tmp_path, monkeypatch):
    monkeypatch.setattr("headstart.training.checkpoint.WRITE_EVERY_SECONDS", 0)
    disk_full_at(monkeypatch, "tensors-", 2)
    with pytest.raises(OSError, match="the run is resumable") as caught:
        fit(data, out=tmp_path / "run", epochs=2, image_size=32, quiet=True)
    assert is_user_error(caught.value)


class _StopAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state) -> None:
        if len(state.history.epochs) == self.epoch:
            raise KeyboardInterrupt


def test_short_epochs_are_written_at_phase_ends_and_when_the_fit_stops(data, tmp_path, monkeypatch):
    """Epochs shorter than the write interval are kept in memory: one file per phase, and the last
    finished epoch is written when Ctrl-C (or an error) stops the fit."""
    written = disk_full_at(monkeypatch, "tensors-", nth=0)  # records the names, never fails
    fit(data, out=tmp_path / "whole", epochs=4, image_size=32, quiet=True, report=False)
    assert len(written) == 1  # feature extraction is one phase: its end
    written.clear()
    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        fit(data, out=out, epochs=4, image_size=32, quiet=True, report=False, callbacks=[_StopAfter(3)])
    assert len(written) == 1 and len(json.loads((checkpoint_dir(out) / "state.json").read_text())["history"]) == 3


# ------------------------------------------------------------------------------------------------
# Ctrl-C of a CLI run whose output goes to a pipe
# ------------------------------------------------------------------------------------------------

_SLOW_EPOCHS = """
import pathlib, sys, time
from headstart.training.checkpoint import Checkpoint
saved = Checkpoint.on_epoch_end
def slow(self, state):
    saved(self, state)  # kept in memory: the checkpoint is written every 30 s, and when the fit stops
    pathlib.Path(sys.argv[-1]).touch()
    time.sleep(1)  # room to press Ctrl-C between epochs
Checkpoint.on_epoch_end = slow
from headstart.cli import main
sys.exit(main(sys.argv[1:-1]))
"""


def test_ctrl_c_with_output_to_a_pipe_exits_130_and_leaves_a_resumable_run(data, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    epoch_done = tmp_path / "epoch-done"
    command = [sys.executable, "-c", _SLOW_EPOCHS, "fit", str(data), "--out", str(out), "--epochs", "20", "--image-size", "32", str(epoch_done)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not epoch_done.is_file() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.poll() is None, child.communicate()
        os.killpg(child.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    lines = stderr.decode().strip().splitlines()
    assert child.returncode == 130, stderr.decode()
    assert lines[-1] == f"interrupted; continue with `headstart resume {out}` (nothing after the last finished epoch is lost)"
    assert "Traceback" not in stderr.decode()
    state = json.loads((checkpoint_dir(out) / "state.json").read_text())
    assert not state["finished"] and len(state["history"]) >= 1
    resumed = resume(out, quiet=True)
    assert len(resumed.history.epochs) <= 20 and (out / "metrics.json").is_file() and not checkpoint_dir(out).exists()
