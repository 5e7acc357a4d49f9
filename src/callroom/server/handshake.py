"""Checks made before the WebSocket upgrade (SPEC §1); each refusal is a HandshakeRefused.

Order: draining/capacity, path, Origin, per-IP limits, token, room rules. The token is
read from the ``token`` query parameter or ``Authorization: Bearer``; it never appears
in a log line or an error message.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from callroom.errors import HandshakeCode, HandshakeRefused
from callroom.server.http_common import CLIENT_KEY

if TYPE_CHECKING:
    from aiohttp import web

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


def check_origin(request: web.Request, allowed: tuple[str, ...]) -> None:
    """A browser's Origin must be allowed (scheme + host + port); no Origin is fine."""
    origin = request.headers.get("Origin")
    if origin is None or origin_allowed(origin, allowed):
        return
    raise HandshakeRefused(HandshakeCode.ORIGIN_NOT_ALLOWED, "this Origin is not allowed")


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    return "*" in allowed or origin.lower().rstrip("/") in allowed


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
