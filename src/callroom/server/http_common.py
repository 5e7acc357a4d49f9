"""Shared HTTP helpers: the app key for the node and the JSON error body (SPEC §1, §4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from callroom.errors import HANDSHAKE_STATUS, HandshakeCode

if TYPE_CHECKING:
    from callroom.server.node import Node

NODE_KEY: web.AppKey[Node] = web.AppKey("callroom_node")
# The client's address (SPEC §9: behind TRUSTED_PROXIES, from their forwarded headers),
# stored in each request by the access middleware (``callroom.server.access``).
CLIENT_KEY: web.RequestKey[str] = web.RequestKey("callroom_client", str)


# RFC 6750 §3: a 401 names the scheme the client must use. No ``error`` attribute: the
# JSON body's message says what was wrong, and the token itself is never echoed.
BEARER_CHALLENGE = 'Bearer realm="callroom"'


def json_error(code: HandshakeCode, message: str) -> web.Response:
    """``{"error": code, "message": text}`` with the status of the SPEC §1 table;
    every 401 (API or WebSocket handshake) carries ``WWW-Authenticate: Bearer``."""
    headers = {"WWW-Authenticate": BEARER_CHALLENGE} if code is HandshakeCode.UNAUTHORIZED else None
    return web.json_response(
        {"error": code.value, "message": message}, status=HANDSHAKE_STATUS[code], headers=headers
    )
