"""The run report: written by every fit, rebuilt by `headstart report`, checked in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from browser import Chromium, find_chromium

from headstart.cli import main
from headstart.metrics import describe, span
from headstart.report import write_report
from headstart.rundir import LR_FIND_NAME, REPORT_NAME

SCREENSHOTS = os.environ.get("HEADSTART_SCREENSHOTS")  # keep the screenshots here (default: the test's tmp dir)

pytestmark = pytest.mark.report  # these tests read the report and interpretation their fits write


@pytest.fixture(scope="session")
def scratch_run(elpv_folder: Path, fe_run, tmp_path_factory: pytest.TempPathFactory):
    """A real scratch run on the same ELPV folder, beside ``fe_run`` (small input so it takes seconds)."""
    from headstart.api import fit

    return fit(elpv_folder, strategy="scratch", out=fe_run.directory.parent / "scratch", quiet=True, epochs=2, image_size=64)


def _sections(page: str) -> set[str]:
    return set(re.findall(r'<section id="([a-z_]+)"', page))


def test_fit_writes_a_self_contained_report(fe_run):
    page = (fe_run.directory / REPORT_NAME).read_text(encoding="utf-8")
    assert {"data", "strategy", "curves", "results", "mistakes", "confused", "top_losses", "pr_roc", "embedding", "log"} <= _sections(page)
    assert not re.search(r'(src|href)="(https?:)?//', page), "the report must not fetch anything"
    assert "<script" not in page
    test = fe_run.metrics["test"]
    assert f"{100 * test['accuracy']:.1f}%" in page
    wrong = sum(row[j] for i, row in enumerate(test["confusion_matrix"]) for j in range(len(row)) if i != j)
    assert f"{wrong} of {test['n']} test examples are misclassified" in page
    thumbnails = page.count('<div class="thumb"><img src="data:image/jpeg;base64,')
    assert thumbnails == min(wrong, 12)
    assert page.count("pill frozen") == len(fe_run.model.backbone.blocks)  # feature extraction: every body block frozen


def test_predictions_match_the_metrics(fe_run):
    saved = json.loads((fe_run.directory / "predictions.json").read_text())
    test = fe_run.metrics["test"]
    assert saved["split"] == "test" and len(saved["examples"]) == test["n"]
    correct = sum(e["true"] == e["predicted"] for e in saved["examples"])
    assert correct == round(test["accuracy"] * test["n"])
    assert all(Path(e["item"]).is_file() for e in saved["examples"])


def test_interpretation_is_saved_with_the_run(fe_run):
    """Top losses are the highest -log p(true) of predictions.json, with a 7x7 Grad-CAM map each (lite0 at 224 px); the projection covers the split."""
    from headstart.rundir import INTERPRETATION_NAME

    found = json.loads((fe_run.directory / INTERPRETATION_NAME).read_text())
    examples = json.loads((fe_run.directory / "predictions.json").read_text())["examples"]
    losses = [-np.log(max(e["p_true"], 1e-12)) for e in examples]
    top = found["top_losses"]
    assert found["split"] == "test" and found["n"] == len(examples) and len(top) == min(8, len(examples))
    assert [t["loss"] for t in top] == pytest.approx(sorted(losses, reverse=True)[: len(top)], abs=1e-4)
    assert [t["loss"] for t in top] == pytest.approx([losses[t["index"]] for t in top], abs=1e-4)
    for t in top:
        heat = np.asarray(t["heatmap"])
        assert heat.shape == (7, 7) and heat.min() >= 0 and heat.max() in (0.0, 1.0)
    assert found["heatmap"] == {"method": "grad-cam", "target": "predicted class", "block": fe_run.model.backbone.blocks[-1].name}
    projection = found["projection"]
    assert len(projection["points"]) == len(examples) and projection["index"] == list(range(len(examples)))
    assert 1 >= projection["explained"][0] >= projection["explained"][1] > 0


def test_pr_roc_numbers_match_sklearn(fe_run):
    """AP and ROC AUC on the page equal scikit-learn's on probabilities recomputed from the model (not from predictions.json)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from headstart.caches.embeddings import EmbeddingCache
    from headstart.inference import predict_proba
    from headstart.report.insights import pr_roc_section
    from headstart.rundir import SavedRun

    examples = json.loads((fe_run.directory / "predictions.json").read_text())["examples"]
    classes = fe_run.model.classes
    counts = [sum(e["true"] == c for e in examples) for c in classes]
    positive = 0 if counts[0] < counts[1] else 1  # the rarer class, the second on a tie
    probs = predict_proba(fe_run.model, [Path(e["item"]) for e in examples], cache=EmbeddingCache())  # the frozen body's features, cached by the fit
    actual = np.array([e["true"] == classes[positive] for e in examples])
    section = pr_roc_section(SavedRun.load(fe_run.directory))
    assert section["positive"] == classes[positive] and section["positives"] == actual.sum()
    assert section["ap"] == pytest.approx(average_precision_score(actual, probs[:, positive]), abs=1e-6)
    assert section["auc"] == pytest.approx(roc_auc_score(actual, probs[:, positive]), abs=1e-6)
    page = (fe_run.directory / REPORT_NAME).read_text(encoding="utf-8")
    assert f"average precision <b>{section['ap']:.3f}</b>" in page and f"ROC AUC <b>{section['auc']:.3f}</b>" in page


def test_report_command_rebuilds_with_scratch_side_by_side(fe_run, scratch_run, tmp_path, capsys):
    (fe_run.directory / REPORT_NAME).unlink()
    assert main(["report", str(fe_run.directory)]) == 0
    assert "wrote" in capsys.readouterr().out
    page = (fe_run.directory / REPORT_NAME).read_text(encoding="utf-8")
    assert "compare" in _sections(page) and "<h2>Transfer vs scratch</h2>" in page  # the scratch sibling on the same data was found
    gain = 100 * (fe_run.metrics["test"]["accuracy"] - scratch_run.metrics["test"]["accuracy"])
    assert f"{gain:+.1f} points" in page
    # an explicit --compare from elsewhere, written to another file
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(fe_run.directory, elsewhere / "fe", ignore=shutil.ignore_patterns("*.safetensors"))
    assert main(["report", str(elsewhere / "fe"), "--compare", str(scratch_run.directory), "--out", str(tmp_path / "r.html")]) == 0
    assert "compare" in _sections((tmp_path / "r.html").read_text(encoding="utf-8"))


def test_compare_without_a_scratch_run_is_not_transfer_vs_scratch(fe_run, tmp_path):
    """Two feature-extraction runs side by side: "Runs compared", no gain over scratch (with a scratch run: the test above)."""
    runs = tmp_path / "runs"
    first, second = runs / "elpv-feature-extraction-20261124-101500", runs / "elpv-feature-extraction-20261124-103000"
    for target in (first, second):
        shutil.copytree(fe_run.directory, target, ignore=shutil.ignore_patterns("*.safetensors"))
    page = write_report(first, compare=[second], out=tmp_path / "compare.html").read_text(encoding="utf-8")
    assert "compare" in _sections(page) and "<h2>Runs compared</h2>" in page and '<a href="#compare">Runs compared</a>' in page
    assert "Transfer vs scratch" not in page and "points</b> of held-out accuracy" not in page
    binary = find_chromium()
    if binary is None:
        return
    with Chromium(binary) as browser:
        browser.open((tmp_path / "compare.html").resolve().as_uri())
        assert browser.evaluate("document.querySelector('#compare h2').textContent") == "Runs compared"
        assert not [i for i in browser.images() if not i["complete"] or i["naturalWidth"] == 0]
        folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        browser.screenshot(folder / "report-compare.png")


def test_lr_finder_section_appears_only_with_its_file(fe_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fe_run.directory, run, ignore=shutil.ignore_patterns("*.safetensors"))
    assert "lr_find" not in _sections(write_report(run).read_text(encoding="utf-8"))
    lrs = [1e-6 * 10 ** (i / 10) for i in range(60)]
    losses = [0.7 - 0.3 * min(i, 40) / 40 + (0.0 if i < 45 else 0.2 * (i - 45)) for i in range(60)]
    (run / LR_FIND_NAME).write_text(json.dumps({"lrs": lrs, "losses": losses, "suggestion": lrs[30]}))
    page = write_report(run).read_text(encoding="utf-8")
    assert "lr_find" in _sections(page) and f"{lrs[30]:.2g}" in page


def test_text_report_shows_snippets_rationale_and_profile(text_run):
    page = (text_run.directory / REPORT_NAME).read_text(encoding="utf-8")
    assert {"data", "strategy", "curves", "results", "profile"} <= _sections(page)
    assert "Chosen by the advisor" in page
    for line in text_run.advice["rationale"]:
        assert line.replace("'", "&#39;").replace('"', "&#34;").replace("<", "&lt;").replace(">", "&gt;") in page
    wrong = [e for e in json.loads((text_run.directory / "predictions.json").read_text())["examples"] if e["true"] != e["predicted"]]
    assert page.count('<div class="snippet">') == min(len(wrong), 12) + min(text_run.metrics["test"]["n"], 8)  # worst mistakes, then top losses
    assert {"confused", "top_losses", "embedding"} <= _sections(page) and "pr_roc" not in _sections(page)  # three classes: no PR/ROC
    assert text_run.interpretation["heatmap"] is None and all(t["heatmap"] is None for t in text_run.interpretation["top_losses"])
    matrix = np.asarray(text_run.metrics["test"]["confusion_matrix"])
    np.fill_diagonal(matrix, 0)
    if matrix.max():  # the most confused pair heads its table
        i, j = np.unravel_index(matrix.argmax(), matrix.shape)
        classes = text_run.metrics["test"]["classes"]
        assert re.search(rf'<table class="confused">.*?<td>{classes[i]}</td><td class="muted">→</td><td>{classes[j]}</td><td class="num">{matrix.max()}</td>', page, re.S)


def test_not_a_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a finished headstart run" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["image", "text"])
def test_report_renders_in_headless_chromium(which, fe_run, scratch_run, text_run, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it); this test renders the report in it")
    run = fe_run if which == "image" else text_run
    report = write_report(run.directory)
    with Chromium(binary) as browser:
        browser.open(report.resolve().as_uri())
        images = browser.images()
        broken = [i for i in images if not i["complete"] or i["naturalWidth"] == 0]
        assert images and not broken, broken
        assert browser.console_errors() == []
        assert browser.requests() == [report.resolve().as_uri()]
        shown = set(browser.evaluate("Array.from(document.querySelectorAll('section')).filter(s => s.offsetHeight > 0).map(s => s.id)"))
        assert {"data", "strategy", "curves", "results", "confused", "top_losses", "embedding"} <= shown
        kept = run.history.kept()
        assert browser.evaluate("document.querySelector('#kept').textContent") == f"Weights kept: {kept['sentence']}."
        cards = browser.evaluate("Array.from(document.querySelectorAll('.card')).map(c => c.innerText.replace(/\\s+/g, ' '))")
        test = run.metrics["test"]
        assert any(c.startswith("TEST ACCURACY") and span(test, "accuracy") in c and f"n = {test['n']}" in c for c in cards), cards
        assert any(c.startswith("WEIGHTS KEPT") and f"epoch {kept['phase_epoch']}/{kept['phase_epochs']} of {kept['phase']}" in c for c in cards), cards
        assert describe(test, "accuracy") in browser.evaluate("document.querySelector('#results .lead').textContent")
        if which == "image":
            assert "pr_roc" in shown
            overlays = [i for i in images if i["alt"].startswith("heat map over ")]
            assert len(overlays) == len(run.interpretation["top_losses"]) and all(i["naturalWidth"] > 0 for i in overlays)
        folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        shot = browser.screenshot(folder / f"report-{which}.png")
    from PIL import Image

    with Image.open(shot) as image:
        assert image.width == 1280 and image.height > 2000  # the whole page, not the first screen


def test_runs_saved_before_the_report_still_get_one(fe_run, tmp_path):
    """Older run directories lack dataset.json, predictions.json and the block states: those parts are left out."""
    run = tmp_path / "old"
    shutil.copytree(fe_run.directory, run, ignore=shutil.ignore_patterns("*.safetensors", "dataset.json", "predictions.json", REPORT_NAME))
    config = json.loads((run / "config.json").read_text())
    del config["training"]["blocks"]
    (run / "config.json").write_text(json.dumps(config))
    page = write_report(run).read_text(encoding="utf-8")
    assert {"data", "strategy", "curves", "results"} <= _sections(page) and "mistakes" not in _sections(page)
    assert "pill frozen" not in page and "defective" in page


@pytest.fixture(scope="module")
def sms_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 real SMS-spam rows (every 36th of the shared set, in order), written to a temporary CSV."""
    from conftest import shared_dataset

    lines = (shared_dataset("sms_spam") / "data.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    path = tmp_path_factory.mktemp("sms") / "sms_spam.csv"
    path.write_text(lines[0] + "".join(lines[1::36][:150]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hymenoptera_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 real hymenoptera photos (the first 30 ants and 30 bees of its train folder, linked, not copied)."""
    from conftest import shared_dataset

    source, root = shared_dataset("hymenoptera") / "train", tmp_path_factory.mktemp("hymenoptera")
    for name in ("ants", "bees"):
        (root / name).mkdir()
        for path in sorted((source / name).iterdir())[:30]:
            (root / name / path.name).symlink_to(path)
    return root


@pytest.mark.parametrize("which", ["hymenoptera-fine-tune", "sms-spam"])
def test_shared_reports_show_every_section(which, sms_subset, hymenoptera_subset, tmp_path, capsys):
    """A real run per modality with everything a report can show: lr-find and profile saved into the
    run, a scratch sibling; every section of the navigation is rendered with its images in Chromium."""

    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it); this test renders the report in it")
    if which == "sms-spam":
        data, fit_args, scratch_args, size = str(sms_subset), ["--strategy", "feature-extraction"], ["--epochs", "1"], []
    else:
        data, size = str(hymenoptera_subset), ["--image-size", "64"]
        fit_args, scratch_args = ["--strategy", "fine-tune", "--trainable-blocks", "2", "--epochs", "2"], ["--epochs", "1"]
    run, scratch = tmp_path / "runs" / "transfer", tmp_path / "runs" / "scratch"
    assert main(["fit", data, *fit_args, *size, "--out", str(run), "--quiet"]) in (0, None)
    assert main(["fit", data, "--strategy", "scratch", *scratch_args, *size, "--out", str(scratch), "--quiet"]) in (0, None)
    assert main(["lr-find", data, "--run", str(run), "--steps", "30", "--plot", "none", "--quiet", *size]) in (0, None)
    assert main(["profile", data, "--run", str(run), "--limit", "60", "--folds", "3", "--plot", "none", "--quiet"]) in (0, None)
    capsys.readouterr()
    report = write_report(run)
    with Chromium(binary) as browser:
        browser.open(report.resolve().as_uri())
        images = browser.images()
        assert images and not [i for i in images if not i["complete"] or i["naturalWidth"] == 0]
        assert browser.console_errors() == []
        shown = set(browser.evaluate("Array.from(document.querySelectorAll('section')).filter(s => s.offsetHeight > 0).map(s => s.id)"))
        from headstart.report import NAV

        assert {section for section, _ in NAV} <= shown, {section for section, _ in NAV} - shown
        assert "macro F1" in browser.evaluate("document.querySelector('#compare .lead').textContent")
        folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        browser.screenshot(folder / f"report-{which}.png")


def test_class_names_the_plot_font_cannot_draw_are_numbered(elpv_folder, tmp_path):
    """CJK class names: the confusion matrix numbers the classes when the font lacks the glyphs; the page keeps the names."""
    from headstart.api import fit
    from headstart.report import drawable

    assert drawable(["ants", "Ünïcödé bees"])
    data = tmp_path / "data"
    for source, name in (("defective", "有缺陷"), ("functional", "正常")):
        shutil.copytree(elpv_folder / source, data / name)
    run = fit(data, out=tmp_path / "run", image_size=64, epochs=5, quiet=True)
    page = (run.directory / REPORT_NAME).read_text(encoding="utf-8")
    assert "有缺陷" in page and "正常" in page
    assert ("Classes are numbered as in the table" in page) == (not drawable(["有缺陷", "正常"]))
