"""The web app against other web pages in the user's browser: DNS rebinding (a foreign Host) and cross-site requests
(a foreign Origin, ``Sec-Fetch-Site: cross-site``, no session token). Each attack is refused before the route runs,
and nothing reaches the project folder."""

from __future__ import annotations

import asyncio
import io
import socket
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason='the web app needs its extra: pip install "headstart[ui]"')
pytest.importorskip("python_multipart", reason='the web app needs its extra: pip install "headstart[ui]"')
testclient = pytest.importorskip("fastapi.testclient", reason="FastAPI's TestClient needs httpx2 (in the dev extra)", exc_type=ImportError)

from conftest import class_folder  # noqa: E402

from headstart.ui import create_app  # noqa: E402
from headstart.ui.security import TOKEN_HEADER, Guard, served_hosts, split_host  # noqa: E402

EVIL = "http://evil.example"


@pytest.fixture
def setup(tmp_path):
    """The app as TestClient reaches it (Host ``testserver``), a dataset it may read, and the session token."""
    class_folder(tmp_path / "pets", per_class=3)
    app = create_app(allowed=[tmp_path], project=tmp_path / "project", hosts=("testserver",))
    return testclient.TestClient(app), app, tmp_path


def pets_zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*.jpg")):
            archive.write(path, f"pets/{path.relative_to(folder)}")
    return buffer.getvalue()


def attacks(tmp_path: Path) -> dict[str, dict]:
    """Every POST route with a body that would succeed (or at least run) were it not refused."""
    pets = tmp_path / "pets"
    image = sorted(pets.rglob("*.jpg"))[0]
    return {
        "/api/dataset": {"json": {"path": str(pets)}},
        "/api/upload/zip": {"files": {"archive": ("pets.zip", pets_zip(pets), "application/zip")}, "data": {"name": "stolen"}},
        "/api/upload/images": {"data": {"dataset": "stolen", "label": "cats"}, "files": [("files", (image.name, image.read_bytes(), "image/jpeg"))]},
        "/api/advise": {"json": {"path": str(pets), "backbone": "efficientnet_lite0"}},
        "/api/train": {"json": {"path": str(pets), "backbone": "efficientnet_lite0", "epochs": 1}},
        "/api/resume": {"json": {"run": "x"}},
        "/api/cancel": {"data": {"submit": "1"}},  # a plain cross-origin form post
        "/api/compare": {"json": {"runs": ["a", "b"]}},
        "/api/predict": {"data": {"run": "x"}, "files": [("files", (image.name, image.read_bytes(), "image/jpeg"))]},
    }


def nothing_happened(c, app, tmp_path: Path) -> None:
    project = tmp_path / "project"
    assert list((project / "datasets").iterdir()) == [] and list((project / "runs").iterdir()) == []
    assert not (project / "compare.html").exists()
    assert app.state.runner.snapshot()["status"] == "idle"  # no advice, training or resume was started


def refused(response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert "\n" not in message and words in message


def test_every_post_route_is_in_the_attack_list(setup):
    _, app, tmp_path = setup
    posts = {r.path for r in app.routes if "POST" in getattr(r, "methods", ())}
    assert posts == set(attacks(tmp_path))  # a new POST route must be added to the attacks below


# -- DNS rebinding: a foreign Host ---------------------------------------------------------------


@pytest.mark.parametrize("host", ["attacker.example:8765", "attacker.example", "127.0.0.1.attacker.example:8765", "", "a:b:c", "[::1"])
def test_a_foreign_host_is_refused_even_for_reading(setup, host):
    c, app, tmp_path = setup
    for method, path in (("GET", "/api/browse"), ("GET", "/"), ("GET", "/api/runs"), ("GET", "/api/job")):
        refused(c.request(method, path, headers={"Host": host}), 421, "not an address this server is served under")
    token = {TOKEN_HEADER: app.state.token}  # even with the token (it could have leaked): the Host decides first
    for path, body in attacks(tmp_path).items():
        refused(c.post(path, headers={"Host": host, **token}, **body), 421, "DNS-rebinding")
    nothing_happened(c, app, tmp_path)


def test_serve_answers_its_own_address_and_the_loopback_names_only(tmp_path, monkeypatch):
    import headstart.ui

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = []
    monkeypatch.setattr(headstart.ui.uvicorn, "run", lambda app, **kw: served.append(app))
    headstart.ui.serve(allowed=[tmp_path], project=tmp_path / "project", host="127.0.0.1", port=port)
    c = testclient.TestClient(served[0])
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert c.get("/api/browse", headers={"Host": host}).status_code == 200, host
    for host in (f"attacker.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1", "testserver", f"0.0.0.0:{port}"):
        refused(c.get("/api/browse", headers={"Host": host}), 421, "not an address")


def test_the_default_hosts_are_loopback_only_and_wildcard_binds_add_ip_literals_and_this_machines_names(tmp_path):
    c = testclient.TestClient(create_app(allowed=[tmp_path], project=tmp_path / "project"))
    assert c.get("/api/job", headers={"Host": "localhost:1234"}).status_code == 200
    assert c.get("/api/job").status_code == 421  # TestClient's own "testserver" is not served unless a test asks
    guard = Guard(None, hosts=served_hosts("0.0.0.0", 8765), token="t")
    for host in ("192.168.1.5:8765", "[fe80::1]:8765", f"{socket.gethostname()}:8765", "127.0.0.1:8765"):
        assert guard.host_allowed(host), host
    for host in ("attacker.example:8765", "192.168.1.5:8766", "192.168.1.5"):
        assert not guard.host_allowed(host), host
    assert Guard(None, hosts=served_hosts("::1", 80), token="t").host_allowed("[::1]")  # no port in Host: http's 80
    assert split_host("[::1]:8765") == ("[::1]", 8765) and split_host("::1") is None and split_host("h:x") is None


# -- cross-site requests: a foreign Origin, Sec-Fetch-Site, no token -----------------------------------------


@pytest.mark.parametrize("route", ["/api/upload/zip", "/api/upload/images", "/api/predict", "/api/cancel", "/api/train", "/api/dataset"])
@pytest.mark.parametrize("origin", [EVIL, "null", "http://testserver.evil.example", "http://localhost:8765"])
def test_a_foreign_origin_is_refused_with_or_without_the_token(setup, route, origin):
    c, app, tmp_path = setup
    body = attacks(tmp_path)[route]
    for token in ({TOKEN_HEADER: app.state.token}, {}):
        refused(c.post(route, headers={"Origin": origin, **token}, **body), 403, "another web page")
    nothing_happened(c, app, tmp_path)


def test_cross_site_fetches_are_refused_but_following_a_link_is_not(setup):
    c, app, tmp_path = setup
    refused(c.get("/api/browse", headers={"Origin": EVIL}), 403, "another web page")
    cross = {"Sec-Fetch-Site": "cross-site"}
    refused(c.get("/api/browse", headers={**cross, "Sec-Fetch-Mode": "no-cors"}), 403, "another web site")
    refused(c.post("/api/upload/zip", headers={**cross, TOKEN_HEADER: app.state.token}, **attacks(tmp_path)["/api/upload/zip"]), 403, "another web site")
    refused(c.post("/api/cancel", headers={**cross, "Sec-Fetch-Mode": "navigate", TOKEN_HEADER: app.state.token}), 403, "another web site")
    assert c.get("/", headers={**cross, "Sec-Fetch-Mode": "navigate"}).status_code == 200  # a link to the page from elsewhere: nothing readable leaks
    nothing_happened(c, app, tmp_path)


@pytest.mark.parametrize("token", [None, "", "wrong", "x" * 43])
def test_every_post_route_needs_the_session_token(setup, token):
    c, app, tmp_path = setup
    headers = {} if token is None else {TOKEN_HEADER: token}
    for path, body in attacks(tmp_path).items():
        for same_origin in ({}, {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}):  # the page's own origin still needs it
            refused(c.post(path, headers={**headers, **same_origin}, **body), 403, "session token")
    nothing_happened(c, app, tmp_path)


def test_the_page_carries_its_token_and_sends_it_on_every_request(setup, tmp_path):
    c, app, _ = setup
    page = c.get("/").text
    assert f'<meta name="headstart-token" content="{app.state.token}">' in page
    assert page.count("fetch(") == 1 and '"X-Headstart-Token": TOKEN' in page and "XMLHttpRequest" not in page  # one request helper, and it sends it
    other = create_app(allowed=[tmp_path], project=tmp_path / "other", hosts=("testserver",))
    assert len(app.state.token) >= 40 and other.state.token != app.state.token  # random per app: a restart makes a new one


def test_the_right_host_origin_and_token_are_answered(setup):
    c, app, tmp_path = setup
    own = {TOKEN_HEADER: app.state.token, "Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    data = c.post("/api/upload/zip", headers=own, **attacks(tmp_path)["/api/upload/zip"]).json()
    assert data["classes"] == ["cats", "dogs"] and (tmp_path / "project" / "datasets" / "stolen").is_dir()
    refused(c.post("/api/cancel", headers=own), 400, "nothing is running")  # the route itself answered
    assert c.get("/api/browse", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200  # reading needs no token


def test_a_refused_request_is_answered_without_reading_its_body():
    """The check runs before the route: the ASGI ``receive`` (the upload's bytes) is never called."""
    async def app(scope, receive, send):
        raise AssertionError("the route ran")

    async def receive():
        raise AssertionError("the body was read")

    guard = Guard(app, hosts=("testserver",), token="secret")
    for headers in ([(b"host", b"evil.example")], [(b"host", b"testserver"), (b"origin", EVIL.encode())], [(b"host", b"testserver")]):
        sent: list[dict] = []

        async def send(message, sent=sent):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/api/upload/zip", "headers": [*headers, (b"content-length", str(2 * 1024**3).encode())]}
        asyncio.run(guard(scope, receive, send))
        assert sent[0]["status"] in (403, 421) and sent[-1]["body"].startswith(b'{"error": ')
