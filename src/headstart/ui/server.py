"""Serving the app: a clear line when the port is taken, a warning off loopback, then uvicorn until Ctrl-C.

The app answers only the Host names it is served under (:func:`~headstart.ui.security.served_hosts`
of ``host`` and ``port``): the loopback forms and ``--host`` with the port.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from headstart.errors import Unavailable
from headstart.ui.app import create_app
from headstart.ui.security import served_hosts
from headstart.ui.uploads import MAX_UNPACKED

DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_for(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    *,
    allowed: Sequence[str | Path] = (".",),
    project: str | Path = "headstart-project",
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    max_unpacked: int = MAX_UNPACKED,
    open_browser: bool = False,
) -> None:
    """Start the web app and block until Ctrl-C (see :func:`create_app`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:  # a clear line instead of uvicorn's log when the port is taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise Unavailable(f"cannot listen on {host}:{port} ({error.strerror}); pass another --port") from None
    app = create_app(allowed=allowed, project=project, max_unpacked=max_unpacked, hosts=served_hosts(host, port))
    if not is_loopback(host):
        print(f"warning: --host {host} lets every machine that can reach this one use the page (read the allowed folders, upload, train); "
              "there is no login. Use it only on a network you trust.", file=sys.stderr)  # fmt: skip
    url = url_for(host, port)
    print(f"headstart ui: open {url} in a web browser (Ctrl-C stops it)\n  reads: {', '.join(str(r) for r in app.state.allowed)}\n  keeps uploads and runs in: {app.state.project}")
    if open_browser:
        import webbrowser

        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")
