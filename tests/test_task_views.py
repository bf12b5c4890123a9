"""Issue 27, presentation: the report, compare view, CLI, tracking and web app of a regression and a multi-label run.

Both runs are real and tiny: ELPV cells with their defect probability as the target (efficientnet_lite0's
frozen features at 64 px), and pairs of real chatterbot-corpus utterances whose labels are the union of
their two topics (a 2-layer random BERT). Only their shape is asserted, never a score.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from headstart.cli import main
from headstart.report import write_report
from headstart.rundir import REPORT_NAME


def _sections(page: str) -> set[str]:
    return set(re.findall(r'<section id="([a-z_]+)"', page))


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory: pytest.TempPathFactory):
    """Feature extraction on 64 ELPV cells read from a listing whose label is the defect probability (auto-detected: 0, 1/3, 2/3, 1 are not all whole)."""
    from headstart.api import fit
    from headstart.data import load_elpv

    data = load_elpv(task="4class", limit=64, seed=0)
    root = tmp_path_factory.mktemp("elpv-probability")
    with (root / "cells.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "target"])  # the defect probability; "target" is a label column name headstart recognises
        for split in data.splits:
            for path, label in zip(data.items(split), data.labels(split)):
                shutil.copy(path, root / path.name)
                writer.writerow([path.name, f"{int(data.classes[label][2]) / 3:.4f}"])  # "p=k/3" -> k/3
    return fit(root / "cells.csv", strategy="feature-extraction", image_size=64, epochs=20, out=root / "runs" / "fe", quiet=True)


@pytest.fixture(scope="module")
def multilabel_run(topics_csv: Path, tiny_text_backbone: str, tmp_path_factory: pytest.TempPathFactory):
    """Pairs of real topic utterances joined into one text; its labels are both topics (``|``-separated), or one when they agree."""
    from headstart.api import fit

    with topics_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    order = np.random.default_rng(0).permutation(len(rows))
    root = tmp_path_factory.mktemp("topic-pairs")
    with (root / "pairs.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for a, b in zip(order[0::2], order[1::2]):
            writer.writerow([f"{rows[a]['text']} {rows[b]['text']}", "|".join(sorted({rows[a]["label"], rows[b]["label"]}))])
    return fit(root / "pairs.csv", backbone=tiny_text_backbone, task="multilabel", strategy="feature-extraction", epochs=20, out=root / "runs" / "fe", quiet=True)


def test_a_regression_report_shows_its_errors_not_a_confusion_matrix(regression_run):
    test = regression_run.metrics["test"]
    assert test["task"] == "regression"
    page = (regression_run.directory / REPORT_NAME).read_text(encoding="utf-8")
    assert {"data", "curves", "results", "mistakes"} <= _sections(page)
    assert not {"confused", "top_losses", "pr_roc", "embedding"} & _sections(page)
    assert f"{test['mae']:.3f}" in page and f"{test['r2']:.3f}" in page and "RMSE" in page
    assert "Predicted against true" in page and "Confusion matrix" not in page and "Largest errors" in page
    examples = regression_run.predictions["examples"]
    assert page.count('<div class="thumb"><img src="data:image/jpeg;base64,') == min(12, len(examples))  # every card with its cell
    worst = max(examples, key=lambda e: abs(e["error"]))
    first_card = page.split('<section id="mistakes">')[1].split('<div class="example">')[1]
    assert f"(error {worst['error']:+.3g})" in first_card  # the largest error first
    assert "with a numeric target, <b>target</b>" in page and "1 − MSE (standardised)" in page


def test_a_multilabel_report_has_its_scores_and_a_per_label_table(multilabel_run):
    test = multilabel_run.metrics["test"]
    assert test["task"] == "multilabel"
    page = (multilabel_run.directory / REPORT_NAME).read_text(encoding="utf-8")
    assert {"results", "mistakes"} <= _sections(page) and "confused" not in _sections(page)
    for label in ("micro F1", "macro F1", "mAP", "subset accuracy"):
        assert label in page
    table = page.split("<h3>Per label</h3>")[1].split("</table>")[0]
    for name, row in test["per_label"].items():
        assert f"<td>{name}</td>" in table and f"{row['threshold']:.3f}" in table and f">{row['support']}</td>" in table
    assert "labels (an example counts under each of its labels)" in page


def test_the_compare_view_shows_the_tasks_scores(regression_run, tmp_path):
    first, second = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    for target in (first, second):
        shutil.copytree(regression_run.directory, target, ignore=shutil.ignore_patterns("*.safetensors"))
    page = write_report(first, compare=[second], out=tmp_path / "compare.html").read_text(encoding="utf-8")
    table = page.split('<section id="compare">')[1].split("</table>")[0]
    assert all(f'<th class="num">{name}</th>' in table for name in ("MAE", "RMSE", "R²")) and "accuracy" not in table
    assert table.count(f"{regression_run.metrics['test']['r2']:.3f}") == 2


def test_evaluate_prints_each_tasks_scores(regression_run, multilabel_run, capsys):
    assert main(["evaluate", str(regression_run.directory), str(Path(regression_run.dataset["source"]))]) == 0
    out = capsys.readouterr().out
    assert "MAE" in out and "R²" in out and "confusion" not in out
    assert main(["evaluate", str(multilabel_run.directory), str(Path(multilabel_run.dataset["source"])), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["task"] == "multilabel"


def test_tracking_logs_the_tasks_scores(regression_run):
    from headstart.report.tracking import held_out_scores, split_scores

    metrics = json.loads((regression_run.directory / "metrics.json").read_text())  # with the target's statistics beside the splits
    assert "target" in metrics and set(split_scores(metrics)) == {"val", "test"} and set(split_scores(metrics)["test"]) == {"mae", "rmse", "r2", "loss"}

    assert held_out_scores({"task": "regression", "mae": 0.1, "rmse": 0.2, "r2": 0.5, "loss": 0.3, "n": 9}) == {"mae": 0.1, "rmse": 0.2, "r2": 0.5, "loss": 0.3}
    scores = held_out_scores({"task": "multilabel", "micro_f1": 0.7, "macro_f1": 0.6, "map": 0.8, "subset_accuracy": 0.4, "per_label": {}})
    assert scores == {"micro_f1": 0.7, "macro_f1": 0.6, "map": 0.8, "subset_accuracy": 0.4}
    assert held_out_scores({"accuracy": 0.9, "macro_f1": 0.8, "mcc": 0.5}) == {"accuracy": 0.9, "macro_f1": 0.8, "mcc": 0.5}  # classification, as before


def test_the_web_app_shows_each_tasks_scores_and_offers_the_task(regression_run, multilabel_run, tmp_path):
    pytest.importorskip("fastapi", reason='the web app needs its extra: pip install "headstart[ui]"')
    testclient = pytest.importorskip("fastapi.testclient", exc_type=ImportError)
    from headstart.config import TASK_NAMES
    from headstart.metrics import span
    from headstart.ui import create_app
    from headstart.ui.app import run_info

    row = run_info(regression_run.directory)
    assert row["task"] == "regression" and row["score_label"] == "R²" and row["score"] == regression_run.metrics["test"]["r2"]
    assert [s["label"] for s in row["scores"]] == ["MAE", "RMSE", "R²"] and row["scores"][0]["interval"] == span(regression_run.metrics["test"], "mae", percent=False)
    row = run_info(multilabel_run.directory)
    assert [s["label"] for s in row["scores"]] == ["micro F1", "macro F1", "mAP", "subset accuracy"] and row["accuracy"] is None

    app = create_app(allowed=[tmp_path, Path(regression_run.dataset["source"]).parent], project=tmp_path / "project", hosts=("testserver",))
    client = testclient.TestClient(app, headers={"X-Headstart-Token": app.state.token})
    page = client.get("/").text
    assert all(f'<option value="{name}"' in page for name in TASK_NAMES) and '<option value="auto" selected>' in page
    summary = client.post("/api/dataset", json={"path": str(Path(regression_run.dataset["source"]))}).json()
    assert summary["task"] == "regression" and summary["classes"] == ["target"]
    refused = client.post("/api/train", json={"path": str(Path(regression_run.dataset["source"])), "backbone": "efficientnet_lite0", "task": "ranking"})
    assert refused.status_code == 400 and "unknown task 'ranking'" in refused.json()["error"]
