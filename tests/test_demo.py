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


def test_the_verdict_is_the_kept_weights_sentence():
    """One sentence for "what was kept", in the demo as in the CLI, the report and metrics.json (tests/test_outcome.py)."""
    epochs = [{"epoch": e, "phase": phase, "val_loss": 0.5, "train_loss": 0.5, "val_accuracy": 0.8} for e, phase in ((1, "head warm-up"), (2, "head warm-up"), (3, "fine-tune"))]
    head_kept = History(epochs=epochs, kept_epoch=2)
    tuned_kept = History(epochs=epochs, kept_epoch=3)
    assert fine_tune_verdict(SimpleNamespace(history=head_kept)).startswith("fine-tuning did not beat the head alone")
    assert fine_tune_verdict(SimpleNamespace(history=tuned_kept)) == "fine-tuning beat the head alone on validation: the weights of fine-tune epoch 1/1 were saved"
    assert fine_tune_verdict(SimpleNamespace(history=head_kept)) == head_kept.to_dict()["kept"]["sentence"]
