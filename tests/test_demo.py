"""The demo keeps its runs where it says, never over earlier work, and says what fine-tuning kept."""

from __future__ import annotations

from types import SimpleNamespace

from headstart.cli import main
from headstart.demo import fine_tune_verdict
from headstart.training import History


def test_demo_refuses_a_folder_that_holds_something(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(out), "--quiet"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and [p.name for p in out.iterdir()] == ["notes.txt"]


def test_the_verdict_says_whether_the_fine_tuned_weights_were_kept():
    epochs = [{"epoch": 1, "phase": "feature-extraction"}, {"epoch": 2, "phase": "feature-extraction"}, {"epoch": 3, "phase": "fine-tune"}]
    head_kept = SimpleNamespace(history=History(epochs=epochs, kept_epoch=2))
    tuned_kept = SimpleNamespace(history=History(epochs=epochs, kept_epoch=3))
    assert fine_tune_verdict(head_kept).startswith("fine-tuning did not beat the head alone")
    assert fine_tune_verdict(tuned_kept) == "fine-tuning changed the model: the weights of fine-tune epoch 3 were kept"
