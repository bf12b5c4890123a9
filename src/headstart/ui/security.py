"""Who may use the page: the Host check, the Origin check and the per-session token.

The threat: the server listens on this machine (by default), but every web page open in the user's
browser can send requests to it. Two attacks follow. **DNS rebinding**: a page on
``attacker.example`` re-points its own name at 127.0.0.1, becomes same-origin with the server and
can read its answers (folder listings, reports) and start jobs; its requests still carry
``Host: attacker.example:PORT``, so answering only the names the server is served under stops it.
**Cross-site requests**: any page may post a form or a multipart upload to ``http://127.0.0.1:PORT``
without reading the answer (disk-filling uploads, training, predictions, cancel); a browser marks
such a request with ``Origin`` or ``Sec-Fetch-Site: cross-site``, and it cannot know the random
token the served page carries (reading the page would need the same origin).

:class:`Guard` is a plain ASGI middleware, so it answers before the route runs and before the body
is read: a refused 2 GB upload is never received, let alone stored. Its rules, in order:

1. ``Host`` must be one the server is served under (:func:`served_hosts`): else 421;
2. an ``Origin`` header, when present, must be ``http://`` (or ``https://``) + that host: else 403;
3. ``Sec-Fetch-Site: cross-site`` is refused except for a plain navigation (a link to a report
   followed from elsewhere reads nothing the other site can see): else 403;
4. every request but ``GET``/``HEAD`` must carry the session token in ``X-Headstart-Token``: else 403.

Reading requests (the page, ``/api/browse``, reports) need no token, since report pages open in new
tabs; every request that writes, trains, cancels or runs a model does.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
from collections.abc import Iterable
from typing import Any

TOKEN_HEADER = "X-Headstart-Token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD = ("0.0.0.0", "::", "")  # binds on every address: the page is reached under this machine's addresses and names
READING = ("GET", "HEAD")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _bracket(host: str) -> str:
    """An IPv6 address as it appears in a Host header (``[::1]``); anything else unchanged, lower case."""
    host = host.strip().lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def split_host(value: str) -> tuple[str, int | None] | None:
    """``Host`` header -> (name, port); ``None`` when it is not a well-formed host."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value.partition("]")
        name += "]"
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:]
    elif value.count(":") > 1:
        return None  # an IPv6 address must be bracketed
    else:
        name, _, port = value.partition(":")
    if not name or name == "[]":
        return None
    if port == "":
        return name, None
    return (name, int(port)) if port.isdigit() else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def served_hosts(host: str, port: int, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The ``Host`` values :func:`~headstart.ui.server.serve` answers when listening on ``host:port``.

    The loopback forms and ``host`` itself, with the port; on a wildcard bind (``0.0.0.0``, ``::``)
    also this machine's names (its host name and fully qualified name) and ``*ip`` (any IP literal:
    a browser only sends one when the user typed that address, so DNS rebinding cannot produce it).
    ``extra`` adds names the user reaches the machine by.
    """
    names = [*LOOPBACK_NAMES, _bracket(host), *(_bracket(e) for e in extra)]
    if host in WILDCARD:
        names += [_bracket(n) for n in {socket.gethostname(), socket.getfqdn()} if n]
        names.append("*ip")
    return tuple(dict.fromkeys(f"{n}:{port}" for n in names if n and n not in WILDCARD))


class Guard:
    """ASGI middleware enforcing the module's four rules (see its docstring) before any route runs.

    ``hosts`` entries are ``name:port`` (that port only), ``name`` (any port) or ``*ip:port``
    (any IP literal on that port, for wildcard binds).
    """

    def __init__(self, app: Any, *, hosts: Iterable[str], token: str) -> None:
        self.app = app
        self.token = token
        self.hosts: set[tuple[str, int | None]] = set()
        for entry in hosts:
            parsed = split_host(_bracket(entry) if entry.count(":") > 1 and not entry.startswith("[") else entry)
            if parsed is None:
                raise ValueError(f"{entry!r}: not a host name (name, name:port or [ipv6]:port)")
            self.hosts.add(parsed)

    def host_allowed(self, value: str) -> bool:
        parsed = split_host(value)
        if parsed is None:
            return False
        name, port = parsed
        port = 80 if port is None else port  # a browser leaves out http's default port
        return (name, port) in self.hosts or (name, None) in self.hosts or (_is_ip(name) and ("*ip", port) in self.hosts)

    def refusal(self, scope: dict[str, Any]) -> tuple[int, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if not self.host_allowed(host):
            return 421, (f"Host {host!r} is not an address this server is served under; open the address `headstart ui` printed "
                         "(a page under another name may be a DNS-rebinding attack)")  # fmt: skip
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in (f"http://{host.lower()}", f"https://{host.lower()}"):  # https: behind a TLS proxy
            return 403, f"requests from another web page ({origin}) are refused; use the page `headstart ui` serves"
        method = scope.get("method", "GET")
        if headers.get("sec-fetch-site") == "cross-site" and not (method in READING and headers.get("sec-fetch-mode") == "navigate"):
            return 403, "requests from another web site are refused; use the page `headstart ui` serves"
        if method not in READING and not secrets.compare_digest(headers.get(TOKEN_HEADER.lower(), "").encode(), self.token.encode()):
            return 403, f"this request lacks the page's session token ({TOKEN_HEADER}); reload the page `headstart ui` serves (a restart makes a new token)"
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refused = self.refusal(scope)
            if refused is not None:  # answered without reading the body: nothing of it is stored
                status, message = refused
                body = json.dumps({"error": message}).encode()
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        elif scope["type"] == "websocket":  # the app has no websockets; refuse rather than route one
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)
