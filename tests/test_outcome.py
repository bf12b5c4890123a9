"""What a result says about itself: which weights were kept, how sure its scores are, when overfitting is
called, and how runs side by side are told apart. Fast: records and matrices, no model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, matthews_corrcoef

from headstart.metrics import MIN_EXAMPLES, _scores, bootstrap, classification_metrics, describe, headline, intervals, wilson
from headstart.outcome import WARMUP, epoch_label, kept_weights, overfitting
from headstart.report.figures import compare_labels
from headstart.rundir import LOG_NAME


def record(epoch: int, phase: str, *, val_loss: float = 0.5, train_loss: float = 0.5, val_accuracy: float = 0.8, **extra) -> dict:
    return {"epoch": epoch, "phase": phase, "val_loss": val_loss, "train_loss": train_loss, "val_accuracy": val_accuracy, **extra}


def fine_tune(head: int = 40, tuned: int = 2, planned: int = 6, phase: str = WARMUP) -> list[dict]:
    rows = [record(e, phase, phase_epoch=e, phase_epochs=30 if head <= 30 else head) for e in range(1, head + 1)]
    return rows + [record(head + k, "fine-tune", phase_epoch=k, phase_epochs=planned) for k in range(1, tuned + 1)]


# ---- which weights were kept -------------------------------------------------------------------


def test_a_fine_tune_that_kept_the_head_says_so():
    kept = kept_weights(fine_tune(), 40)
    assert kept["phase"] == WARMUP and kept["epoch"] == 40 and kept["phase_epoch"] == 40 and not kept["later_phase_won"]
    assert kept["sentence"] == "fine-tuning did not beat the head alone on validation; the head-only model (head warm-up epoch 40/40) was saved"


def test_a_fine_tune_that_won_names_its_own_epoch_within_the_phase():
    kept = kept_weights(fine_tune(head=12), 14)
    assert kept["phase"] == "fine-tune" and kept["label"] == "fine-tune epoch 2/6" and kept["phase_epochs"] == 6 and kept["later_phase_won"]
    assert kept["sentence"] == "fine-tuning beat the head alone on validation: the weights of fine-tune epoch 2/6 were saved"
    assert epoch_label(fine_tune(head=12), 3) == "head warm-up epoch 3/30"


def test_runs_saved_before_the_warm_up_had_its_name_are_told_the_same():
    old = [{k: v for k, v in r.items() if k not in ("phase_epoch", "phase_epochs")} for r in fine_tune(head=5, phase="feature-extraction")]
    kept = kept_weights(old, 5)
    assert kept["phase"] == WARMUP and kept["label"] == "head warm-up epoch 5/5" and "did not beat the head alone" in kept["sentence"]
    assert kept_weights([record(1, "feature-extraction"), record(2, "feature-extraction")], 2)["sentence"].startswith("the weights of feature-extraction epoch 2/2")
    assert kept_weights([], None) is None


def test_gradual_stages_that_did_not_help_are_named():
    rows = [record(1, WARMUP), record(2, "gradual-1"), record(3, "gradual-2"), record(4, "gradual-3")]
    assert kept_weights(rows, 2)["sentence"] == "gradual-2, gradual-3 did not beat gradual-1 on validation; the weights of gradual-1 epoch 1/1 were saved"


# ---- intervals ---------------------------------------------------------------------------------------


def test_wilson_matches_known_values():
    assert wilson(8, 8) == pytest.approx((8 / (8 + 1.959963984540054**2), 1.0))  # k = n: the lower bound is n / (n + z^2)
    assert wilson(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert wilson(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)  # Wilson (1927) as tabulated by Newcombe (1998), method 3


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_scores_of_a_matrix_equal_scikit_learn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200)
    y[y == 3] = 2  # class 3 has no true example (scikit-learn's zero_division=0 and present-class average)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))
    m = np.asarray(classification_metrics(y, p, list("abcd"))["confusion_matrix"], dtype=float)
    s = _scores(np.diag(m)[None], m.sum(1)[None], m.sum(0)[None], np.array([m.sum()]))
    assert s["macro_f1"][0] == pytest.approx(f1_score(y, p, labels=range(4), average="macro", zero_division=0))
    assert s["mcc"][0] == pytest.approx(matthews_corrcoef(y, p))
    assert s["balanced_accuracy"][0] == pytest.approx(balanced_accuracy_score(y, p))


def test_the_bootstrap_is_seeded_and_equals_resampling_the_examples():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.where(rng.random(400) < 0.8, y, 1 - y)
    metrics = classification_metrics(y, p, ["a", "b"])
    assert metrics["intervals"] == intervals(metrics["confusion_matrix"], ["a", "b"])  # the same numbers every time
    # the multinomial draw over cells against the textbook bootstrap (resample example indices), 2000 rounds each
    idx = np.random.default_rng(1).integers(0, 400, (2000, 400))
    yt, yp = y[idx], p[idx]
    tp = np.stack([((yt == c) & (yp == c)).sum(1) for c in (0, 1)], 1).astype(float)
    rows = np.stack([(yt == c).sum(1) for c in (0, 1)], 1).astype(float)
    cols = np.stack([(yp == c).sum(1) for c in (0, 1)], 1).astype(float)
    textbook = np.percentile(_scores(tp, rows, cols, np.full(2000, 400.0))["macro_f1"], [2.5, 97.5])
    assert metrics["intervals"]["macro_f1"] == pytest.approx(textbook, abs=0.01)
    low, high = metrics["intervals"]["macro_f1"]
    assert low < metrics["macro_f1"] < high and 0.05 < high - low < 0.10  # about +-2 standard errors of a proportion near 0.8 on 400
    assert bootstrap([[10, 0], [0, 10]])["macro_f1"].min() == 1.0  # a perfect matrix resamples to perfect ones


def test_too_few_examples_to_tell():
    small = classification_metrics([0, 1] * 4, [0, 1] * 4, ["a", "b"])
    assert small["intervals"]["too_few"] and small["intervals"]["macro_f1"] is None and small["intervals"]["accuracy"][0] == pytest.approx(0.6756, abs=1e-4)
    assert headline(small) == f"test accuracy 100.0% (95% CI 67.6–100.0%), macro F1 1.000, n=8: too few examples to tell (fewer than {MIN_EXAMPLES})"
    enough = classification_metrics([0, 1] * 20, [0, 1] * 19 + [1, 1], ["a", "b"])
    assert "too few" not in headline(enough) and describe(enough, "macro_f1", percent=False).startswith("0.975 (95% CI 0.9")
    old = {k: v for k, v in enough.items() if k != "intervals"}  # metrics.json written before intervals: computed from its matrix
    assert describe(old, "accuracy") == describe(enough, "accuracy")


# ---- overfitting beyond the noise ----------------------------------------------------------------------


def rising(se: float | None, n: int) -> list[dict]:
    """Three epochs where validation loss rises by 0.2 while training loss falls."""
    extra = {} if se is None else {"val_loss_se": se, "val_n": n}
    return [record(e, "fine-tune", val_loss=v, train_loss=t, **extra) for e, v, t in ((1, 0.50, 0.9), (2, 0.60, 0.7), (3, 0.70, 0.5))]


def test_a_rise_on_four_validation_examples_is_noise():
    per_example = np.array([0.05, 0.1, 1.9, 0.75])  # a typical spread of per-example losses on 4 examples
    se = per_example.std(ddof=1) / np.sqrt(4)
    result = overfitting(rising(se, 4), None)
    assert not result["detected"] and result["within_noise"] == ["fine-tune epoch 3/3"] and result["message"] == ""


def test_a_clear_rise_on_many_examples_is_overfitting():
    result = overfitting(rising(0.02, 2000), 1)
    assert result["detected"] and result["epochs"] == [3]
    assert "training loss fell (at fine-tune epoch 3/3), more than 2 standard errors (0.020) of the mean loss over 2000 validation examples" in result["message"]
    assert result["message"].endswith("the weights of fine-tune epoch 1/3 were kept")


def test_the_noise_rule_edges():
    assert overfitting(rising(0.1, 50), None)["detected"] is False  # a rise of exactly 2 standard errors is not more than them
    assert overfitting(rising(0.0999, 50), None)["detected"] is True
    assert overfitting(rising(None, 0), None)["detected"] is True  # runs saved without a noise estimate: as before
    assert overfitting(rising(float("nan"), 1), None)["detected"] is False  # one validation example: no telling


def test_validation_records_its_noise():
    import torch

    from headstart.training.evaluation import validate

    x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 1])
    model = torch.nn.Linear(3, 2)
    result = validate(model, [(x, y)], torch.device("cpu"))
    each = torch.nn.functional.cross_entropy(model(x), y, reduction="none").detach().numpy().astype(np.float64)
    assert result["val_n"] == 6 and result["val_loss"] == pytest.approx(each.mean(), abs=1e-6)
    assert result["val_loss_se"] == pytest.approx(each.std(ddof=1) / np.sqrt(6), rel=1e-4)


# ---- runs side by side -----------------------------------------------------------------------------------


def saved(name: str, strategy: str, backbone: str = "efficientnet_lite0") -> SimpleNamespace:
    return SimpleNamespace(strategy=strategy, directory=Path("runs") / name, training={"backbone": backbone})


def test_compare_labels_are_short_and_distinct():
    runs = [saved("elpv-feature-extraction-20261124-101500", "feature-extraction"), saved("elpv-feature-extraction-20261124-103000", "feature-extraction"),
            saved("elpv-fine-tune-20261124-104500", "fine-tune"), saved("elpv-scratch-20261124-110000", "scratch")]  # fmt: skip
    labels = compare_labels(runs)
    assert labels == ["feature-extraction\n101500", "feature-extraction\n103000", "fine-tune", "scratch"]
    assert compare_labels([saved("a", "fine-tune", "minilm"), saved("b", "fine-tune", "efficientnet_lite0")]) == ["fine-tune\nminilm", "fine-tune\nefficientnet_lite0"]
    twins = compare_labels([saved("x/fe", "feature-extraction"), saved("y/fe", "feature-extraction")])
    assert len(set(twins)) == 2 and all(len(line) <= 22 for label in twins for line in label.split("\n"))


def test_metrics_json_is_plain_json():
    metrics = classification_metrics([0, 1, 2] * 12, [0, 1, 1] * 12, ["a", "b", "c"])
    assert json.loads(json.dumps(metrics))["intervals"]["per_class_f1"]["c"] == [0.0, 0.0]


# ---- end to end ------------------------------------------------------------------------------------------


def test_fit_end_line_and_metrics_json_say_what_was_kept_and_how_sure(elpv_folder, tmp_path, capsys):
    """A real, small fine-tune from the CLI: its last lines and metrics.json give the kept phase and the intervals."""
    from headstart.cli import main

    out = tmp_path / "ft"
    assert main(["fit", str(elpv_folder), "--strategy", "fine-tune", "--trainable-blocks", "1", "--cut", "stage1", "--image-size", "32", "--augment", "none",
                 "--batch-size", "8", "--epochs", "2", "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr()
    saved = json.loads((out / "metrics.json").read_text())
    kept, test = saved["kept"], saved["test"]
    assert kept["phase"] in (WARMUP, "fine-tune") and kept["phase_epoch"] <= kept["phase_epochs"]
    assert kept["later_phase_won"] == (kept["phase"] == "fine-tune")
    stdout = " ".join(printed.out.split())  # rich wraps long lines at the terminal's width
    assert f"kept: {kept['sentence']}" in stdout
    assert headline(test) in stdout and "95% CI" in stdout and test["intervals"]["accuracy"][0] < test["accuracy"] <= test["intervals"]["accuracy"][1]
    log = (out / LOG_NAME).read_text()
    assert "fine-tune epoch 1/2:" in log and "fine-tune epoch 2/2:" in log and f"kept: {kept['sentence']}" in log
    history = json.loads((out / "history.json").read_text())
    assert history["kept"] == kept and all("val_loss_se" in r and r["val_n"] > 0 for r in history["epochs"])
