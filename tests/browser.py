"""A real browser for the report tests: headless Chromium driven over the DevTools protocol on a pipe.

Why not Selenium or Playwright: both need a driver binary (chromedriver, or Playwright's own
browser build) that Debian's ``chromium`` package does not ship and that would be downloaded.
``chromium --remote-debugging-pipe`` speaks the same DevTools protocol those tools use, as
NUL-terminated JSON on file descriptors 3 (commands in) and 4 (replies and events out), so the
standard library is enough. Unlike ``--dump-dom``/``--screenshot`` one-shots, the protocol lets the
test ask the page itself whether each image decoded (``naturalWidth``) and collect every console
message, uncaught exception and network request while the page loads.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of an installed Chromium/Chrome, or None."""
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


class Chromium:
    """One headless browser process with one page; use as a context manager."""

    def __init__(self, binary: str, *, width: int = 1280, height: int = 900, timeout: float = 60.0) -> None:
        self.binary, self.width, self.height, self.timeout = binary, width, height, timeout
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._buffer = b""

    def __enter__(self) -> Chromium:
        self._profile = tempfile.TemporaryDirectory(prefix="headstart-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # in the child: the protocol lives on fds 3 (in) and 4 (out)
            read_end, write_end = os.dup(to_browser_r), os.dup(from_browser_w)
            for source, target in ((read_end, 3), (write_end, 4)):
                if source != target:
                    os.dup2(source, target)
                os.set_inheritable(target, True)  # dup2 onto itself would keep close-on-exec

        flags = [
            "--headless=new", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--hide-scrollbars", "--mute-audio",
            f"--user-data-dir={self._profile.name}", f"--window-size={self.width},{self.height}",
        ]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox (CI containers)
        self.process = subprocess.Popen(
            [self.binary, *flags, "about:blank"], preexec_fn=wire_pipes, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False}, session=True)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()

    # -- protocol ---------------------------------------------------------------------------
    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = False) -> dict[str, Any]:
        """Send one command and wait for its reply; events that arrive meanwhile go to :attr:`events`."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _receive(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer within {self.timeout:.0f} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def wait_for(self, method: str) -> dict[str, Any]:
        """Wait for the next event called ``method`` (also looking at events already received)."""
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            event = self._receive()
            if event.get("method") == method:
                return event
            self.events.append(event)

    # -- what the tests use ----------------------------------------------------------------
    def open(self, url: str) -> None:
        """Navigate and wait for the load event (every image decoded or failed by then)."""
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def images(self) -> list[dict[str, Any]]:
        """Every ``<img>`` with whether it finished loading and its decoded size."""
        return self.evaluate(
            "Array.from(document.images).map(i => ({alt: i.alt, src: i.src.slice(0, 48), complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight}))"
        )

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors seen so far."""
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                errors.append(params.get("exceptionDetails", {}).get("text", "exception"))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append(f"{params['entry'].get('source')}: {params['entry'].get('text')} {params['entry'].get('url', '')}".strip())
        return errors

    def requests(self) -> list[str]:
        """URLs the page requested, ``data:`` URIs left out (a self-contained page requests only itself)."""
        urls = (e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent")
        return [url for url in urls if not url.startswith("data:")]

    def screenshot(self, path: str | Path, *, full_page: bool = True) -> Path:
        """Save a PNG of the page (the whole scroll height with ``full_page``)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1})
        data = self.send("Page.captureScreenshot", params, session=True)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path
