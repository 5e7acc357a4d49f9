"""Server-to-client WebSocket text frames, built once per broadcast (DESIGN "Encode once").

Server frames are never masked (RFC 6455 §5.1) and callroom negotiates no compression,
so one broadcast is the same bytes for every recipient: the node builds the frame once
and writes it to each recipient's transport without an await per recipient.
"""

from __future__ import annotations

import struct

_OPCODE_TEXT = 0x1
_OPCODE_CLOSE = 0x8
_OPCODE_PING = 0x9
_OPCODE_PONG = 0xA
_FIN = 0x80

# The heartbeat's ping (SPEC §3.4): no payload, the same two bytes for every connection.
PING_FRAME = bytes((_FIN | _OPCODE_PING, 0))


def text_frame(data: bytes) -> bytes:
    """The complete unmasked, unfragmented WebSocket text frame carrying UTF-8 ``data``."""
    length = len(data)
    first = _FIN | _OPCODE_TEXT
    if length < 126:
        return struct.pack("!BB", first, length) + data
    if length < 65536:
        return struct.pack("!BBH", first, 126, length) + data
    return struct.pack("!BBQ", first, 127, length) + data


def pong_frame(payload: bytes) -> bytes:
    """The pong answering a client's ping: its payload echoed (RFC 6455 §5.5.3).

    A control frame carries at most 125 bytes (§5.5); the reader refuses longer pings.
    """
    return struct.pack("!BB", _FIN | _OPCODE_PONG, len(payload)) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and ``reason`` (RFC 6455 §5.5.1); a control frame
    carries at most 125 bytes, so the reason is cut to 123 bytes of UTF-8."""
    text = reason.encode()[:123].decode(errors="ignore").encode()  # whole characters only
    payload = struct.pack("!H", code) + text
    return struct.pack("!BB", _FIN | _OPCODE_CLOSE, len(payload)) + payload
