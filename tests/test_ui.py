"""The web app's server side through FastAPI's TestClient: refusals (paths, zips), one job at a time, cancel, resume, predict."""

from __future__ import annotations

import io
import json
import stat
import sys
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason='the web app needs its extra: pip install "headstart[ui]"')
pytest.importorskip("python_multipart", reason='the web app needs its extra: pip install "headstart[ui]"')
testclient = pytest.importorskip("fastapi.testclient", reason="FastAPI's TestClient needs httpx2 (in the dev extra)", exc_type=ImportError)

from conftest import class_folder  # noqa: E402

from headstart.training.callbacks import Callback  # noqa: E402
from headstart.ui import create_app  # noqa: E402


def client(tmp_path: Path, allowed: list[Path] | None = None, **kwargs) -> testclient.TestClient:
    """The page's own requests: TestClient's Host (``testserver``) is served, and each request carries the session token."""
    app = create_app(allowed=allowed or [tmp_path], project=tmp_path / "project", hosts=("testserver",), **kwargs)
    return testclient.TestClient(app, headers={"X-Headstart-Token": app.state.token})


def wait_for(c: testclient.TestClient, done, timeout: float = 300.0) -> dict:
    """Poll /api/job as the page does until ``done(job)``."""
    deadline = time.monotonic() + timeout
    while True:
        job = c.get("/api/job").json()
        if done(job):
            return job
        assert time.monotonic() < deadline, f"job did not get there in {timeout}s: {job}"
        time.sleep(0.1)


def zip_bytes(entries: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def one_line(response) -> str:
    message = response.json()["error"]
    assert "\n" not in message and "Traceback" not in message
    return message


# -- paths ---------------------------------------------------------------------------------------


def test_paths_outside_the_allowed_folders_are_refused(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    class_folder(outside)
    allowed.mkdir()
    (allowed / "escape").symlink_to(outside, target_is_directory=True)
    c = client(tmp_path, [allowed])
    for path in (str(outside), str(allowed / ".." / "outside"), "../outside", str(allowed / "escape"), "/"):
        response = c.post("/api/dataset", json={"path": path})
        assert response.status_code == 403, path
        assert "outside the folders this page may read" in one_line(response)
    assert c.get("/api/browse", params={"path": str(outside)}).status_code == 403
    listed = c.get("/api/browse", params={"path": str(allowed)}).json()
    assert listed["entries"] == [] and listed["parent"] is None  # the link out is not offered, nor the folder above


def test_a_folder_inside_is_summarised_and_bad_data_is_one_line(tmp_path):
    class_folder(tmp_path / "pets", per_class=5)
    c = client(tmp_path)
    data = c.post("/api/dataset", json={"path": "pets"}).json()  # relative to the first allowed folder
    assert data["classes"] == ["cats", "dogs"] and data["total"] == 10 and data["modality"] == "image"
    assert data["backbone"] == "efficientnet_lite0"
    class_folder(tmp_path / "lonely", classes=("cats",))
    response = c.post("/api/dataset", json={"path": str(tmp_path / "lonely")})
    assert response.status_code == 400 and "at least 2 classes" in one_line(response)
    assert c.post("/api/dataset", json={}).status_code == 400


# -- uploads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "links", "expected"),
    [
        ({"cats/0.jpg": b"x", "../evil.txt": b"owned"}, None, "points outside"),
        ({"cats/../../evil.txt": b"owned"}, None, "points outside"),
        ({"/tmp/evil.txt": b"owned"}, None, "absolute path"),
        ({"C:/evil.txt": b"owned"}, None, "absolute path"),
        ({"cats/0.jpg": b"x"}, {"cats/link.jpg": "/etc/passwd"}, "symbolic link"),
    ],
)
def test_unsafe_zips_are_refused_before_anything_is_unpacked(tmp_path, entries, links, expected):
    c = client(tmp_path)
    response = c.post("/api/upload/zip", files={"archive": ("pets.zip", zip_bytes(entries, links=links), "application/zip")})
    assert response.status_code == 400 and expected in one_line(response) and "nothing was unpacked" in one_line(response)
    assert list((tmp_path / "project" / "datasets").iterdir()) == []
    assert not list(tmp_path.rglob("evil.txt"))


def test_zip_bombs_are_refused_by_their_unpacked_size(tmp_path):
    c = client(tmp_path, max_unpacked=1024**2)
    bomb = zip_bytes({"cats/zeros.jpg": bytes(8 * 1024**2)})
    assert len(bomb) < 64 * 1024  # 8 MB of zeros squeezed small: the size that matters is the unpacked one
    response = c.post("/api/upload/zip", files={"archive": ("bomb.zip", bomb, "application/zip")})
    assert response.status_code == 400 and "unpacks to more than 1 MB" in one_line(response)
    assert list((tmp_path / "project" / "datasets").iterdir()) == []
    response = c.post("/api/upload/zip", files={"archive": ("notes.zip", b"not a zip", "application/zip")})
    assert "not a zip archive" in one_line(response)


def test_a_zip_of_class_folders_and_dropped_images_become_datasets(tmp_path):
    folder = class_folder(tmp_path / "src" / "pets", per_class=3)
    entries = {f"pets/{p.relative_to(folder)}": p.read_bytes() for p in sorted(folder.rglob("*.jpg"))}
    entries["__MACOSX/pets/._0.jpg"] = b"resource fork"
    c = client(tmp_path)
    data = c.post("/api/upload/zip", files={"archive": ("pets.zip", zip_bytes(entries), "application/zip")}, data={"name": "my pets"}).json()
    assert data["classes"] == ["cats", "dogs"] and data["total"] == 6
    assert Path(data["path"]) == (tmp_path / "project" / "datasets" / "my pets" / "pets").resolve()
    again = c.post("/api/upload/zip", files={"archive": ("pets.zip", zip_bytes(entries), "application/zip")}, data={"name": "my pets"})
    assert again.status_code == 400 and "already exists" in one_line(again)

    cats = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in sorted((folder / "cats").iterdir())]
    sent = c.post("/api/upload/images", data={"dataset": "dropped", "label": "../cats"}, files=[*cats, ("files", ("notes.txt", b"hello", "text/plain"))]).json()
    assert sent["class"] == "cats" and sent["saved"] == 3 and sent["refused"] == ["notes.txt (not an image or audio file)"]  # the name cannot climb out
    dogs = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in sorted((folder / "dogs").iterdir())]
    sent = c.post("/api/upload/images", data={"dataset": "dropped", "label": "dogs"}, files=dogs).json()
    assert sent["classes"] == {"cats": 3, "dogs": 3}
    assert c.post("/api/dataset", json={"path": sent["path"]}).json()["total"] == 6


# -- jobs ---------------------------------------------------------------------------------------------


def test_one_job_at_a_time_and_cancel_leaves_a_resumable_run(tmp_path, elpv_folder):
    c = client(tmp_path, [elpv_folder])
    started = c.post("/api/train", json={"path": str(elpv_folder), "backbone": "efficientnet_lite0", "epochs": 100000, "patience": 100000}).json()
    assert started["status"] == "running" and started["kind"] == "training"
    second = c.post("/api/train", json={"path": str(elpv_folder), "backbone": "efficientnet_lite0"})
    assert second.status_code == 409 and "one job at a time" in one_line(second)
    assert c.post("/api/advise", json={"path": str(elpv_folder), "backbone": "efficientnet_lite0"}).status_code == 409
    wait_for(c, lambda job: len(job["epochs"]) >= 2)
    assert c.post("/api/cancel").json()["cancel_requested"]
    job = wait_for(c, lambda job: job["status"] != "running")
    assert job["status"] == "cancelled" and "resume" in job["message"]
    run = tmp_path / "project" / "runs" / started["run"]
    saved = json.loads((run / "checkpoint" / "state.json").read_text())
    assert len(saved["history"]) == len(job["epochs"])  # the checkpoint holds every epoch the page showed, and no more
    assert (run / "checkpoint" / saved["tensors_file"]).is_file() and not (run / "config.json").exists()
    [row] = c.get("/api/runs").json()
    assert row["status"] == "stopped" and row["epochs"] == len(job["epochs"])
    assert c.post("/api/predict", data={"run": row["name"], "text": "x"}).status_code == 400  # not finished: nothing to try yet


class StopAt(Callback):
    """Ctrl-C after epoch ``n``, as a person would press it."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_end(self, state):
        if state.epoch == self.n:
            raise KeyboardInterrupt


@pytest.mark.report
def test_resume_from_the_page_finishes_a_stopped_run_and_runs_compare(tmp_path, elpv_folder, fe_run):
    from headstart.api import fit

    runs = tmp_path / "project" / "runs"
    with pytest.raises(KeyboardInterrupt):
        fit(elpv_folder, out=runs / "elpv-stopped", epochs=6, patience=None, quiet=True, callbacks=[StopAt(3)])
    (runs / "elpv-fe").symlink_to(fe_run.directory, target_is_directory=True)
    c = client(tmp_path, [elpv_folder])
    rows = {r["name"]: r for r in c.get("/api/runs").json()}
    assert rows["elpv-stopped"]["status"] == "stopped" and rows["elpv-fe"]["status"] == "finished"
    assert c.post("/api/resume", json={"run": "elpv-stopped"}).json()["kind"] == "training"
    job = wait_for(c, lambda job: job["status"] != "running")
    assert job["status"] == "done", job["message"]
    assert [r["epoch"] for r in job["epochs"]] == [1, 2, 3, 4, 5, 6]  # the 3 saved epochs, then the 3 that were left
    assert job["result"]["status"] == "finished" and job["result"]["epochs"] == 6
    report = c.get("/runs/elpv-stopped/report.html")
    assert report.status_code == 200 and "<html" in report.text
    assert c.get("/runs/..%2F..%2Fetc/report.html").status_code in (400, 404)
    assert c.post("/api/compare", json={"runs": ["elpv-stopped"]}).status_code == 400
    assert c.post("/api/compare", json={"runs": ["elpv-stopped", "elpv-fe"]}).json()["url"] == "/compare.html"
    page = c.get("/compare.html").text
    assert "elpv-stopped" in page and "elpv-fe" in page


def test_predict_images_and_texts_with_top_classes(tmp_path, fe_run, text_run, elpv_folder):
    from headstart.inference import predict

    runs = tmp_path / "project" / "runs"
    runs.mkdir(parents=True)
    (runs / "elpv").symlink_to(fe_run.directory, target_is_directory=True)
    (runs / "topics").symlink_to(text_run.directory, target_is_directory=True)
    c = client(tmp_path)
    image = sorted(elpv_folder.rglob("*.png"))[0]
    answer = c.post("/api/predict", data={"run": "elpv"}, files=[("files", (image.name, image.read_bytes(), "image/png"))]).json()
    [row] = answer["results"]
    expected = predict(fe_run.directory, [image])[0]
    assert row["item"] == image.name and row["label"] == expected.label and row["probability"] == pytest.approx(expected.probability, abs=1e-5)
    assert [t["class"] for t in row["top"]][0] == expected.label and sum(t["probability"] for t in row["top"]) == pytest.approx(1.0, abs=1e-4)
    bad = c.post("/api/predict", data={"run": "elpv"}, files=[("files", ("photo.png", b"not an image", "image/png"))])
    assert bad.status_code == 400 and one_line(bad).startswith("photo.png:")
    texts = "what is your favourite food\n\nwho won the football match"
    answer = c.post("/api/predict", data={"run": "topics", "text": texts}).json()
    assert [r["label"] for r in answer["results"]] == [p.label for p in predict(text_run.directory, texts.split("\n")[::2])]
    assert len(answer["results"][0]["top"]) == 3


# -- command line -----------------------------------------------------------------------------------------


def test_headstart_ui_without_the_extra_says_what_to_install(monkeypatch, capsys):
    from headstart.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.delitem(sys.modules, "headstart.ui", raising=False)
    assert main(["ui"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "headstart[ui]"' in err


@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("::1", False), ("localhost", False), ("0.0.0.0", True)])
def test_serve_binds_loopback_by_default_and_warns_otherwise(tmp_path, monkeypatch, capsys, host, warned):
    import headstart.ui

    calls = []
    monkeypatch.setattr(headstart.ui.uvicorn, "run", lambda app, **kw: calls.append(kw))
    try:
        headstart.ui.serve(allowed=[tmp_path], project=tmp_path / "project", host=host, port=0)
    except OSError as error:  # e.g. no IPv6 on this machine
        pytest.skip(str(error))
    assert calls == [{"host": host, "port": 0, "log_level": "warning"}]
    out, err = capsys.readouterr()
    assert ("lets every machine" in err) == warned and "open http://" in out
