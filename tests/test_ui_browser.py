"""The web app end to end in a real browser: Playwright driving Debian's chromium (no browser download).

A person's path through the page: open it, choose a folder of real images (scikit-learn's
handwritten digits, three classes), train a feature-extraction model and watch its accuracy
appear, classify a digit the model never saw, and have a zip with a ``../`` entry refused.
Screenshots go to the test's tmp folder, or to ``$HEADSTART_UI_SCREENSHOTS`` (how ``docs/ui/`` was
made: ``HEADSTART_UI_SCREENSHOTS=docs/ui pytest tests/test_ui_browser.py``, which also asks for the
advisor's recommendation on the way).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.metrics import MIN_EXAMPLES, span

pytestmark = pytest.mark.report  # the page links the report of the runs it trains

pytest.importorskip("fastapi", reason='the web app needs its extra: pip install "headstart[ui]"')
pytest.importorskip("python_multipart", reason='the web app needs its extra: pip install "headstart[ui]"')
playwright = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (pip install playwright; never `playwright install`)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)", allow_module_level=True)

DIGITS = {0: "zero", 1: "one", 7: "seven"}


def digit_png(image: np.ndarray, path: Path) -> Path:
    """An 8x8 scikit-learn digit as a dark-on-white 64x64 PNG."""
    Image.fromarray((255 - image * 16).clip(0, 255).astype(np.uint8)).resize((64, 64), Image.NEAREST).convert("RGB").save(path)
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A folder of 16 real handwritten digits for each of 3 classes, and one more digit kept out of it."""
    from sklearn.datasets import load_digits

    data = load_digits()
    root = tmp_path_factory.mktemp("ui-data") / "digits"
    for value, name in DIGITS.items():
        (root / name).mkdir(parents=True)
        for i in np.flatnonzero(data.target == value)[:16]:
            digit_png(data.images[i], root / name / f"{i}.png")
    new = int(np.flatnonzero(data.target == 7)[40])
    return root, digit_png(data.images[new], tmp_path_factory.mktemp("ui-new") / "new-seven.png"), "seven"


@pytest.fixture(scope="module")
def server(digits, tmp_path_factory):
    """The app on a free loopback port, served by uvicorn on a thread."""
    import uvicorn

    from headstart.ui import create_app

    project = tmp_path_factory.mktemp("ui-project")
    app = create_app(allowed=[digits[0].parent], project=project)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", project
    uv.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def page(server):
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"] if os.geteuid() == 0 else [])
        page = browser.new_page(viewport={"width": 1180, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server[0])
        yield page
        browser.close()
        assert not errors, f"the page raised: {errors}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("HEADSTART_UI_SCREENSHOTS") or tmp_path_factory.mktemp("ui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shoot(page, shots: Path, name: str, *, section: str | None = None) -> None:
    unstick = "header.top, #banner { position: static !important; }"  # the sticky bars would cover a scrolled-to section
    target = page.locator(section) if section else page
    target.screenshot(path=str(shots / f"{name}.png"), style=unstick, **({} if section else {"full_page": True}))


def test_choose_train_try_and_refuse_a_bad_zip(page, server, digits, shots):
    from headstart.inference import predict

    folder, new_image, _ = digits
    url, project = server
    expect = playwright.expect
    expect(page.locator("#browser")).to_contain_text("digits/")  # the allowed folder is listed
    page.click("#browser >> text=digits/")
    expect(page.locator("#browser")).to_contain_text("looks like a dataset (3 class folders with images)")
    shoot(page, shots, "1-start", section="#step-data")
    expect(page.locator("#job-pill")).to_have_text("Idle")

    expect(page.locator("#folder-path")).to_have_value(str(folder))
    page.click("#use-folder")
    expect(page.locator("#summary-lead")).to_contain_text("48 images in 3 classes")
    expect(page.locator("#summary-table")).to_contain_text("seven")
    page.select_option("#strategy", "feature-extraction")
    if os.environ.get("HEADSTART_UI_SCREENSHOTS"):  # the docs show the advisor too (a minute more of CPU)
        page.click("#advise")
        expect(page.locator("#advice")).to_contain_text("Recommended:", timeout=600_000)
        page.click("#advice button")
    shoot(page, shots, "2-data", section="#step-summary")

    page.click("#train")
    expect(page.locator("#job-pill")).to_contain_text("Training")
    expect(page.locator("#accuracy")).to_have_text(re.compile(r"\d+\.\d%"), timeout=600_000)
    if os.environ.get("HEADSTART_UI_SCREENSHOTS"):  # and beside the recommended run, the plain one, to compare
        page.select_option("#strategy", "fine-tune")
        page.select_option("#strategy", "feature-extraction")
        expect(page.locator("#advice-use")).to_be_hidden()
        page.click("#train")
        expect(page.locator("#live-text")).to_contain_text("epoch", timeout=600_000)
        page.wait_for_timeout(1500)
        shoot(page, shots, "3-training", section="#step-train")
        expect(page.locator("#runs-table tbody tr")).to_have_count(2, timeout=600_000)
        expect(page.locator("#job-pill")).to_contain_text("done", timeout=600_000)
    run = max((project / "runs").iterdir(), key=lambda d: d.stat().st_mtime)
    accuracy = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    expect(page.locator("#accuracy")).to_have_text(f"{100 * accuracy:.1f}%")  # the number the run saved
    expect(page.locator("#chart-acc polyline")).to_have_count(2)  # training and validation curves were drawn
    expect(page.locator("#runs-table")).to_contain_text("finished")
    expect(page.locator("#open-report")).to_have_attribute("href", f"/runs/{run.name}/report.html")
    saved = json.loads((run / "metrics.json").read_text())  # the card says what metrics.json says: the weights kept, the interval
    expect(page.locator("#kept")).to_have_text(f"Weights kept: {saved['kept']['sentence']}.")
    expect(page.locator("#kept-card")).to_contain_text(f"epoch {saved['kept']['phase_epoch']}/{saved['kept']['phase_epochs']}")
    expect(page.locator("#accuracy-interval")).to_contain_text(span(saved["test"], "accuracy"))
    expect(page.locator("#too-few")).to_have_count(1 if saved["test"]["n"] < MIN_EXAMPLES else 0)
    shoot(page, shots, "3-trained", section="#step-train")

    page.set_input_files("#predict-files", str(new_image))
    page.click("#predict")
    expected = predict(run, [new_image])[0]
    expect(page.locator(".prediction .label")).to_have_text(f"{expected.label} · {100 * expected.probability:.1f}% sure")
    expect(page.locator(".prediction .bars > div")).to_have_count(3)
    shoot(page, shots, "4-try", section="#step-try")
    shoot(page, shots, "5-runs", section="#step-runs")

    # two runs of one strategy side by side: "Runs compared", not "Transfer vs scratch" (no scratch run is ticked)
    shutil.copytree(run, project / "runs" / f"{run.name}-again", ignore=shutil.ignore_patterns("*.safetensors"))
    page.evaluate("refreshRuns()")
    expect(page.locator("#runs-table input[type=checkbox]")).to_have_count(len(list((project / "runs").iterdir())))
    for box in page.locator("#runs-table input[type=checkbox]").all()[:2]:
        box.check()
    with page.expect_popup() as opened:
        page.click("#compare")
    compared = opened.value
    compared.wait_for_load_state()
    expect(compared.locator("#compare h2")).to_have_text("Runs compared")
    assert "Transfer vs scratch" not in compared.content()
    assert compared.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    compared.close()

    page.click("button[data-tab=zip]")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("digits/seven/0.png", new_image.read_bytes())
        archive.writestr("../evil.txt", "outside")
    page.set_input_files("#zip-file", files=[{"name": "sneaky.zip", "mimeType": "application/zip", "buffer": buffer.getvalue()}])
    page.click("#upload-zip")
    expect(page.locator("#banner")).to_be_visible()
    expect(page.locator("#banner-text")).to_contain_text("sneaky.zip: entry '../evil.txt' points outside")
    assert list((project / "datasets").iterdir()) == [] and not (project / "evil.txt").exists()
    shoot(page, shots, "6-zip-refused")
