"""The WebSocket upgrade of ``/ws/{kind}/{roomId}``, answered by callroom itself (RFC 6455 §4.2).

aiohttp's ``WebSocketResponse.prepare`` checked the request a second time, built the 101
through its response machinery (a header multidict, ``Date``, ``Server``, a payload
writer) and set up a reader and a queue that the member's socket never used: about a
tenth of a join's CPU (docs/performance.md, "The join path"). The member's socket
(server/member_socket.py) reads its frames itself, so the handshake needs only the
checks below and one write.

The checks are aiohttp's (``WebSocketResponse._handshake``), so what is refused did not
change: no ``Upgrade: websocket``, no ``upgrade`` in ``Connection``, a version other than
13 (or the drafts 7 and 8 that aiohttp also accepted), a key that is not 16 bytes of
base64. No subprotocol is offered and no extension is negotiated (no
permessage-deflate: docs/protocol.md).
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from aiohttp.web_request import BaseRequest

# RFC 6455 §1.3: appended to the client's key before hashing.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_VERSIONS = frozenset({"13", "8", "7"})
_HEAD = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"


def accept_key(request: BaseRequest) -> bytes | None:
    """The ``Sec-WebSocket-Accept`` value of a valid upgrade request; None otherwise."""
    headers = request.headers
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        return None
    # Every Connection line counts (a proxy may add its own): RFC 9110 §7.6.1.
    tokens = ",".join(headers.getall("Connection", ())).lower().split(",")
    if "upgrade" not in (token.strip() for token in tokens):
        return None
    if headers.get("Sec-WebSocket-Version", "") not in _VERSIONS:
        return None
    key = headers.get("Sec-WebSocket-Key")
    if not key:
        return None
    try:
        if len(base64.b64decode(key)) != 16:
            return None
    except ValueError:  # not base64 (binascii.Error), or not even ASCII
        return None
    # SHA-1 is what RFC 6455 §4.2.2 names: a handshake check, not a security function.
    digest = hashlib.sha1(key.encode() + _GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest)


def switching_protocols(accept: bytes) -> bytes:
    """The 101 answer (RFC 6455 §4.2.2), nothing more."""
    return b"%bSec-WebSocket-Accept: %b\r\n\r\n" % (_HEAD, accept)


class HandedOver(web.StreamResponse):
    """What the handler returns once the socket is the member's: the 101 was written by
    the handler, so aiohttp writes nothing more (and the socket is no longer its own)."""

    async def prepare(self, request: BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None
