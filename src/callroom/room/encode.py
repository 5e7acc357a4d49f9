"""Encode server frames (SPEC §3, §3.2): ``{"event": ..., "payload": {...}}`` as strict JSON.

A broadcast is encoded once and the same text goes to every recipient (DESIGN "Encode
once"). orjson writes strict JSON: a float NaN/Infinity becomes ``null``, and anything it
cannot write exactly raises ``orjson.JSONEncodeError`` (a ``TypeError``) instead of sending
a frame a client would reject — non-str keys, ints beyond 64 bits, strings holding lone
surrogates (e.g. a token name claim with ``"\\ud800"``: sanitise such input where it
enters), nesting deeper than 254.

``encode_bytes`` skips the decode/encode round trip of ``encode`` when the transport takes
UTF-8 bytes (aiohttp 3.14's ``WebSocketResponse.send_frame(data, WSMsgType.TEXT)``, or a
pre-built frame: ``send_str`` itself encodes the str to bytes again). What each way costs:
docs/performance.md, "Micro-measurements".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, TypeAlias

import orjson

from callroom.errors import ErrorCode
from callroom.room.events import Event
from callroom.room.payloads import ErrorPayload

__all__ = [
    "PONG_FRAME",
    "PONG_FRAME_BYTES",
    "encode",
    "encode_bytes",
    "encode_split_bytes",
    "encode_tail",
    "error_frame",
]

Payload: TypeAlias = Mapping[str, object]
"""A frame's payload: one of ``callroom.room.payloads.ServerPayload`` (a TypedDict is a
``Mapping``), or a payload the node builds itself (the chat events) until it is typed too.
A ``Mapping`` rather than ``dict``: a TypedDict is not a ``dict[str, ...]`` to mypy."""


def encode_bytes(event: str, payload: Payload) -> bytes:
    """The UTF-8 text of the frame ``{"event": event, "payload": payload}``."""
    return orjson.dumps({"event": event, "payload": payload})


def encode_tail(tail: Payload) -> bytes:
    """The JSON of the entries a frame ends with, for ``encode_split_bytes``."""
    return orjson.dumps(tail)


def encode_split_bytes(event: str, head: Payload, tail_json: bytes) -> bytes:
    """``encode_bytes(event, {**head, **tail})``, with ``tail`` already encoded.

    ``tail_json`` is ``encode_tail(tail)``, made once for every frame that ends with the
    same entries (``room_state``'s lists of one view class). ``head`` and ``tail`` must be
    non-empty and share no key; the bytes are then the same as the one-piece encoding.
    """
    return b"".join(
        (
            b'{"event":',
            orjson.dumps(event),
            b',"payload":',
            orjson.dumps(head)[:-1],
            b",",
            tail_json[1:],
            b"}",
        )
    )


def encode(event: str, payload: Payload) -> str:
    """The text of the frame ``{"event": event, "payload": payload}``."""
    return orjson.dumps({"event": event, "payload": payload}).decode()


def error_frame(code: ErrorCode, message: str, event: str | None) -> str:
    """An ``error`` frame (SPEC §3.2): ``{"code", "message", "event": str or null}``.

    ``event`` must be a name the server trusts (``ProtocolError.event`` from the protocol
    layer is one): the frame goes back to the sender as is.
    """
    payload: ErrorPayload = {"code": code.value, "message": message, "event": event}
    return encode(Event.ERROR, payload)


PONG_FRAME: Final[str] = encode(Event.PONG, {})
"""The reply to ``ping`` (SPEC §3.1), built once."""

PONG_FRAME_BYTES: Final[bytes] = PONG_FRAME.encode()
