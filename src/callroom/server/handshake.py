"""Checks made before the WebSocket upgrade (SPEC §1); each refusal is a HandshakeRefused.

Order: draining/capacity, path, Origin, per-IP limits, token, room rules. The token is
read from the ``token`` query parameter or ``Authorization: Bearer``; it never appears
in a log line or an error message.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from callroom.errors import HandshakeCode, HandshakeRefused
from callroom.server.state import CLIENT_KEY

if TYPE_CHECKING:
    from aiohttp import web

    from callroom.config import Settings

KINDS = frozenset({"zoom", "screenshare", "chat"})
ROOM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_path(kind: str, room_id: str) -> None:
    if kind not in KINDS:
        raise HandshakeRefused(
            HandshakeCode.BAD_REQUEST, "unknown kind: use zoom, screenshare or chat"
        )
    if not ROOM_ID_RE.match(room_id):
        raise HandshakeRefused(
            HandshakeCode.BAD_REQUEST, "roomId must be 1-64 characters of A-Z a-z 0-9 _ -"
        )


def check_origin(request: web.Request, settings: Settings) -> None:
    """A browser's Origin must be allowed (SPEC §1, §9); no Origin is fine."""
    origin = request.headers.get("Origin")
    if origin is None or origin_permitted(request, origin, settings):
        return
    raise HandshakeRefused(HandshakeCode.ORIGIN_NOT_ALLOWED, "this Origin is not allowed")


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    return "*" in allowed or origin.lower().rstrip("/") in allowed


def origin_permitted(request: web.Request, origin: str, settings: Settings) -> bool:
    """SPEC §9: ``ALLOWED_ORIGINS``, the server's own origin (the page it serves at ``/``),
    and under ``--dev`` with ``ALLOWED_ORIGINS`` unset any loopback origin."""
    if origin_allowed(origin, settings.ALLOWED_ORIGINS):
        return True
    parsed = _parse_origin(origin)
    if parsed is None:
        return False
    scheme, host, port = parsed
    if (host, port) == _own_host(request, scheme):
        return True
    dev_loopback = settings.DEV_MODE and "ALLOWED_ORIGINS" not in settings.model_fields_set
    return dev_loopback and host in _LOOPBACK_HOSTS


_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


def _parse_origin(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an ``http(s)://host[:port]`` origin; None for anything else
    (``null``, other schemes, a path)."""
    scheme, sep, rest = origin.lower().partition("://")
    if not sep or scheme not in _DEFAULT_PORTS or not rest or "/" in rest or "@" in rest:
        return None
    return _split_host(rest, _DEFAULT_PORTS[scheme], scheme)


def _split_host(value: str, default_port: int, scheme: str) -> tuple[str, str, int] | None:
    host, port_text = value, ""
    if value.startswith("["):  # an IPv6 literal keeps its brackets, as in the Origin
        end = value.find("]")
        if end < 0:
            return None
        host, port_text = value[: end + 1], value[end + 1 :].removeprefix(":")
    elif ":" in value:
        host, _, port_text = value.partition(":")
    if not host or (port_text and not port_text.isdigit()):
        return None
    return scheme, host, int(port_text) if port_text else default_port


def _own_host(request: web.Request, scheme: str) -> tuple[str, int] | None:
    """The server's own host and port as the browser addressed it (the ``Host`` header).

    Its scheme is the request's own, or ``https`` in front of a plain one: behind a
    TLS-terminating proxy the page's origin is ``https://host`` while the upgrade reaches
    callroom over plain HTTP. Scripts cannot forge ``Origin``, so a page whose origin has
    the very host the browser sent the upgrade to is the page callroom served.
    """
    header = request.headers.get("Host")
    if not header or scheme not in (request.scheme, "https"):
        return None
    parsed = _split_host(header.lower(), _DEFAULT_PORTS[scheme], scheme)
    return None if parsed is None else (parsed[1], parsed[2])


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def ws_token(request: web.Request) -> str | None:
    """SPEC §1: query parameter ``token``, or the ``Authorization: Bearer`` header."""
    token = request.query.get("token")
    if token:
        return token
    return bearer_token(request)


def client_ip(request: web.Request) -> str:
    """The client's address (SPEC §9): the access middleware worked it out from the peer
    and, behind ``TRUSTED_PROXIES``, their forwarded headers."""
    return request.get(CLIENT_KEY) or request.remote or "unknown"
