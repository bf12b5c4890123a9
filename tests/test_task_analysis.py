"""Issue 27, measurement side: the probe, LogME and the advisor read numeric and multi-label targets."""

from __future__ import annotations

import numpy as np
import pytest

from headstart.analysis.advisor import decide, measured_size
from headstart.analysis.probe_scores import probe_accuracy, strata
from headstart.analysis.probes import BlockScore, Profile


def _regression(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 6))
    y = (signal @ rng.normal(size=6) + 0.2 * rng.normal(size=n)).astype(np.float32)
    return signal, rng.normal(size=(n, 6)), y


def _multilabel(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 6))
    y = (signal[:, :3] + 0.3 * rng.normal(size=(n, 3)) > 0.3).astype(np.float32)  # three labels, some rows with several
    return signal, rng.normal(size=(n, 6)), y


def test_the_regression_probe_is_ridge_r2():
    signal, noise, y = _regression()
    informed, spread = probe_accuracy(signal, y)
    assert informed > 0.9 and spread < 0.1
    assert probe_accuracy(noise, y)[0] < 0.1  # R² of noise is about 0 (negative out of fold)
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    expected = cross_val_score(make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15))), signal, y, cv=KFold(5, shuffle=True, random_state=0), scoring="r2")
    assert informed == pytest.approx(expected.mean())


def test_the_multilabel_probe_is_per_label_logistic_map():
    signal, noise, y = _multilabel()
    informed, _ = probe_accuracy(signal, y)
    uninformed, _ = probe_accuracy(noise, y)
    assert informed > 0.9 and uninformed < 0.7 and uninformed > y.mean(0).min() - 0.1  # near the labels' share of positives
    with pytest.raises(ValueError, match="at least 10 examples"):
        probe_accuracy(signal[:8], y[:8])


def test_subsets_stratify_as_the_data_splits_do():
    y = np.linspace(0, 1, 200, dtype=np.float32)
    groups = strata(y)
    assert set(groups.tolist()) == set(range(5)) and np.all(np.diff(groups) >= 0)  # quintiles
    rows = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 1], [1, 1, 0]], dtype=np.float32)  # label 2 is the rarest
    assert strata(rows).tolist() == [1, 0, 2, 1]  # each row's rarest label: 1, 0, 2, 1
    assert strata(np.array([2, 0, 1])).tolist() == [2, 0, 1]


def test_size_counts_examples_for_regression_and_positives_per_label_for_multilabel():
    assert measured_size(np.array([0, 0, 0, 1, 2, 2])) == 2.0  # median examples per class
    assert measured_size(np.linspace(0, 1, 7, dtype=np.float32)) == 7.0
    assert measured_size(np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0]], dtype=np.float32)) == 1.0  # positives 3, 1, 1


def _profile(task: str, best: float, counts: list[int], n: int) -> Profile:
    rows = [BlockScore(i, f"b{i}", 8, score, 0.0, -1.0 + score, 0.05) for i, score in enumerate([best - 0.3, best - 0.1, best])]
    return Profile("m", "d", n, ["a", "b", "c"], 0.01, rows, class_counts=counts, task=task)


def test_the_advisor_says_what_it_counts_for_a_numeric_target():
    small, large = decide(600, _profile("regression", 0.9, [], 600)), decide(1500, _profile("regression", 0.9, [], 1500))
    assert small.case == "small, similar" and large.case == "large, similar"
    assert "size: 600 examples (a numeric target has no classes: every example counts), below 1000: small" in str(small)
    assert "at or above 1000: large" in str(large)
    assert "best probe R² 0.900" in str(small) and "against 0.000 for predicting the mean" in str(small)
    assert small.plain.startswith("You have few examples (600)") and "predict your target" in small.plain
    weak = decide(1500, _profile("regression", 0.5, [], 1500))
    assert weak.case == "large, different" and "50.0% of the target's variance unexplained" in str(weak) and "unexplained" in weak.plain


def test_the_advisor_reads_multilabel_map_against_the_labels_prevalence():
    result = _profile("multilabel", 0.95, [20, 40, 60], 200)  # mean prevalence 0.2
    assert result.chance == pytest.approx(0.2) and result.strength == pytest.approx(0.75 / 0.8)
    advice = decide(40, result)
    assert "median 40 positive examples per label, below 100: small" in str(advice)
    assert "best probe mAP 0.950" in str(advice) and "expected test mAP" in str(advice)
    assert advice.plain.startswith("You have few positive examples per label (40)")


def test_a_profile_keeps_its_task_through_json():
    result = _profile("regression", 0.7, [], 50)
    again = Profile.from_dict(result.to_dict())
    assert again.task == "regression" and again.metric == "R²" and "probe R²" in again.to_markdown()
    saved_before = {key: value for key, value in result.to_dict().items() if key != "task"}  # profile.json written before issue 27
    assert Profile.from_dict(saved_before).task == "classification"


def test_profile_rank_and_advise_read_a_numeric_and_a_multilabel_table(topics_csv, tiny_text_backbone, tmp_path):
    """End to end on real texts with a tiny BERT: the target is each utterance's length in characters (regression) and
    the union of two utterances' topics (multi-label); only the plumbing is asserted, not the scores."""
    import csv

    from headstart.analysis.advisor import advise
    from headstart.analysis.probes import profile
    from headstart.analysis.ranking import rank
    from headstart.backbones import create_backbone

    with topics_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with (tmp_path / "lengths.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([r["text"], f"{len(r['text']) / 10:.1f}"] for r in rows)  # not all whole: read as regression
    with (tmp_path / "pairs.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([f"{a['text']} {b['text']}", "|".join(sorted({a["label"], b["label"]}))] for a, b in zip(rows[0::2], rows[1::2][::-1]))
    backbone = create_backbone(tiny_text_backbone)
    numeric = profile(tmp_path / "lengths.csv", backbone=backbone, quiet=True)
    assert numeric.task == "regression" and numeric.metric == "R²" and numeric.chance == 0.0 and numeric.source_leep is None
    ranked = rank(tmp_path / "lengths.csv", backbones=[backbone], quiet=True)
    assert np.isfinite(ranked.candidates[0].score)
    with pytest.raises(ValueError, match="for regression targets use logme"):
        rank(tmp_path / "lengths.csv", backbones=[backbone], score_name="hscore", quiet=True)
    from headstart.data import load_dataset

    data = load_dataset(tmp_path / "lengths.csv")
    advice = advise(data, backbone=backbone, quiet=True)
    learned = len(data.items("train")) + len(data.items("val"))
    assert f"size: {learned} examples (a numeric target has no classes: every example counts), below 1000: small" in str(advice)

    labelled = profile(load_dataset(tmp_path / "pairs.csv", task="multilabel"), backbone=backbone, quiet=True)
    assert labelled.task == "multilabel" and labelled.metric == "mAP" and len(labelled.class_counts) == 3 and 0 < labelled.chance < 1
