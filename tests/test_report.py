"""The run report: written by every fit, rebuilt by `headstart report`, checked in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from browser import Chromium, find_chromium

from headstart.cli import main
from headstart.metrics import describe, span
from headstart.report import write_report
from headstart.rundir import LR_FIND_NAME, REPORT_NAME

SCREENSHOTS = os.environ.get("HEADSTART_SCREENSHOTS")  # keep the screenshots here (default: the test's tmp dir)


@pytest.fixture(scope="session")
def scratch_run(elpv_folder: Path, fe_run, tmp_path_factory: pytest.TempPathFactory):
    """A real scratch run on the same ELPV folder, beside ``fe_run`` (small input so it takes seconds)."""
    from headstart.api import fit

    return fit(elpv_folder, strategy="scratch", out=fe_run.directory.parent / "scratch", quiet=True, epochs=2, image_size=64)


def _sections(page: str) -> set[str]:
    return set(re.findall(r'<section id="([a-z_]+)"', page))


def test_fit_writes_a_self_contained_report(fe_run):
    page = (fe_run.directory / REPORT_NAME).read_text(encoding="utf-8")
    assert {"data", "strategy", "curves", "results", "mistakes", "log"} <= _sections(page)
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
    assert page.count('<div class="snippet">') == min(len(wrong), 12)


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
        assert {"data", "strategy", "curves", "results"} <= shown
        kept = run.history.kept()
        assert browser.evaluate("document.querySelector('#kept').textContent") == f"Weights kept: {kept['sentence']}."
        cards = browser.evaluate("Array.from(document.querySelectorAll('.card')).map(c => c.innerText.replace(/\\s+/g, ' '))")
        test = run.metrics["test"]
        assert any(c.startswith("TEST ACCURACY") and span(test, "accuracy") in c and f"n = {test['n']}" in c for c in cards), cards
        assert any(c.startswith("WEIGHTS KEPT") and f"epoch {kept['phase_epoch']}/{kept['phase_epochs']} of {kept['phase']}" in c for c in cards), cards
        assert describe(test, "accuracy") in browser.evaluate("document.querySelector('#results .lead').textContent")
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
