"""The training loop's choices that decide which weights a run keeps."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from headstart.training import History, TrainSettings, fit_model


def test_monitor_val_accuracy_breaks_ties_by_loss():
    settings = TrainSettings(monitor="val_accuracy")
    best = {"val_loss": 0.30, "val_accuracy": 0.90}
    assert settings.improved({"val_loss": 0.40, "val_accuracy": 0.92}, best)  # more correct, less confident
    assert settings.improved({"val_loss": 0.20, "val_accuracy": 0.90}, best)  # tie → lower loss wins
    assert not settings.improved({"val_loss": 0.35, "val_accuracy": 0.90}, best)
    assert not TrainSettings().improved({"val_loss": 0.40, "val_accuracy": 0.92}, best)  # val_loss monitor


def test_unknown_monitor_is_a_clear_error():
    with pytest.raises(ValueError, match="monitor='val_f1'"):
        TrainSettings(monitor="val_f1")


def _separable_task() -> tuple[DataLoader, nn.Module]:
    """64 seeded points whose class is the sign of their first coordinate, and a linear model for them."""
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16), nn.Linear(5, 2)


def test_kept_epoch_is_the_restored_one():
    loader, model = _separable_task()
    history = fit_model(model, loader, loader, TrainSettings(epochs=6, lr=5e-2, patience=None))
    kept = history.kept_epoch
    losses = {r["epoch"]: r["val_loss"] for r in history.epochs}
    assert kept == min(losses, key=losses.get)
    assert history.overfitting()["best_epoch"] == kept
    x, y = loader.dataset.tensors
    final_loss = nn.functional.cross_entropy(model(x), y).item()
    assert final_loss == pytest.approx(losses[kept], rel=1e-5)


def test_later_phase_keeps_the_start_when_it_never_improves():
    loader, model = _separable_task()
    history = fit_model(model, loader, loader, TrainSettings(epochs=30, lr=5e-2, patience=None))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # A rate this large can only make a converged model worse; the phase must hand it back unchanged.
    fit_model(model, loader, loader, TrainSettings(epochs=2, lr=50.0, grad_clip=None, patience=None), phase="fine-tune", history=history)
    assert history.kept_epoch == 30
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(history, History)


def test_torch_compile_trains_the_same_weights():
    """Compiled training steps (inductor, on this CPU) reach the weights the eager loop reaches; the
    module itself stays plain, so its state dict (what runs save) has the usual keys."""
    x = torch.randn(96, 6, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] + x[:, 1] > 0).long()
    trained = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
        loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
        history = fit_model(model, loader, loader, TrainSettings(epochs=3, lr=1e-2, patience=None, torch_compile=compiled))
        trained.append((model.state_dict(), [r["train_loss"] for r in history.epochs]))
    (eager, eager_losses), (compiled_state, compiled_losses) = trained
    assert list(compiled_state) == list(eager) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    for key in eager:
        torch.testing.assert_close(compiled_state[key], eager[key], atol=1e-5, rtol=1e-4)


def test_torch_compile_reaches_the_strategy_from_the_cli():
    from headstart.cli import build_parser
    from headstart.strategies import make_strategy

    args = build_parser().parse_args(["fit", "data", "--strategy", "full", "--torch-compile"])
    assert args.torch_compile and make_strategy("full", torch_compile=args.torch_compile).settings.torch_compile
    assert not make_strategy("full").settings.torch_compile


def test_a_later_phase_that_never_improves_names_the_epoch_whose_weights_it_holds():
    """The earlier phase ends holding its best epoch's weights, not its last's: that epoch is the one kept and named."""
    loader, model = _separable_task()
    history = fit_model(model, loader, loader, TrainSettings(epochs=6, lr=20.0, grad_clip=None, patience=None), phase="head warm-up")
    first = history.kept_epoch
    assert first < 6  # a rate this large makes later epochs worse: the phase ends on an earlier epoch's weights
    fit_model(model, loader, loader, TrainSettings(epochs=2, lr=50.0, grad_clip=None, patience=None), phase="fine-tune", history=history)
    assert history.kept_epoch == first
    assert history.kept()["label"] == f"head warm-up epoch {first}/6" and not history.kept()["later_phase_won"]
    assert [r["phase_epoch"] for r in history.epochs] == [1, 2, 3, 4, 5, 6, 1, 2]


def test_progress_counts_steps_across_the_phase():
    """One bar of steps per phase (ETA inside a long epoch), its description following the epoch; the log is unchanged."""

    class Recorder:
        def __init__(self) -> None:
            self.tasks: list[dict] = []
            self.lines: list[str] = []

        def task(self, description, total):
            record = {"descriptions": [description], "total": total, "advanced": 0, "done": False}
            self.tasks.append(record)
            return type("T", (), {"advance": lambda s, n=1: record.__setitem__("advanced", record["advanced"] + n),
                                  "update": lambda s, d: record["descriptions"].append(d), "done": lambda s: record.__setitem__("done", True)})()  # fmt: skip

        def log(self, message):
            self.lines.append(message)

    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)
    progress = Recorder()
    fit_model(nn.Linear(5, 2), loader, loader, TrainSettings(epochs=3, lr=1e-2, patience=None), progress=progress)
    [task] = progress.tasks
    assert task["total"] == task["advanced"] == 3 * 3 and task["done"]
    assert task["descriptions"][-1] == "train epoch 3/3"
