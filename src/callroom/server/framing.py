"""Server-to-client WebSocket text frames, built once per broadcast (DESIGN "Encode once").

Server frames are never masked (RFC 6455 §5.1) and callroom negotiates no compression,
so one broadcast is the same bytes for every recipient: the node builds the frame once
and writes it to each recipient's transport without an await per recipient.
"""

from __future__ import annotations

import struct

_OPCODE_TEXT = 0x1
_FIN = 0x80


def text_frame(data: bytes) -> bytes:
    """The complete unmasked, unfragmented WebSocket text frame carrying UTF-8 ``data``."""
    length = len(data)
    first = _FIN | _OPCODE_TEXT
    if length < 126:
        return struct.pack("!BB", first, length) + data
    if length < 65536:
        return struct.pack("!BBH", first, 126, length) + data
    return struct.pack("!BBQ", first, 127, length) + data
