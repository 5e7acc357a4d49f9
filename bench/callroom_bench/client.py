"""What the load generator sends, in each server's wire protocol.

The generator itself is bench/node/generator.mjs (``callroom_bench.generator`` drives
it); this module builds what it is given: every connection's URL and the frames its
senders send. A timed frame holds the marker ``~t`` followed by a 19-digit send time in
the chat content or the ICE candidate; the generator finds it on the receive path without
decoding JSON and fills it in on the send path without encoding any.

Three wire protocols are spoken (``Protocol``): callroom itself (SPEC §1, a JWT in the
query), the bare relay peers (same envelope, identity from ``?clientId=``) and Socket.IO
(a raw Engine.IO v4 client: ``0{..}`` open, ``40`` connect, ``42[event,data]`` events,
``2``/``3`` ping/pong), so one generator drives every server in the comparison.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from urllib.parse import quote

import orjson

MARK = b"~t"
"""Precedes the send time in every timed message; never appears elsewhere in a frame."""
STAMP_DIGITS = 19


class Protocol(StrEnum):
    """How to address and frame messages for a server."""

    CALLROOM = "callroom"
    RAW = "raw"
    SOCKETIO = "socketio"


def encode(protocol: Protocol, event: str, payload: dict[str, Any]) -> bytes:
    """One client frame in the protocol's envelope."""
    if protocol is Protocol.SOCKETIO:
        return b"42" + orjson.dumps([event, payload])
    return orjson.dumps({"event": event, "payload": payload})


def split_template(frame: bytes) -> tuple[bytes, bytes]:
    """Split a frame built with a zero stamp into (prefix, suffix) around the stamp.

    The generator then builds each frame as ``prefix + stamp + suffix``: no JSON
    encoding per message.
    """
    start = frame.index(MARK) + len(MARK)
    return frame[:start], frame[start + STAMP_DIGITS :]


def timed_text(pad: int, filler: str) -> str:
    """A string holding the marker, a zero stamp and ``pad`` filler characters."""
    return "~t" + "0" * STAMP_DIGITS + "|" + filler * max(pad, 0)


def room_url(protocol: Protocol, base: str, room: str, client_id: str, token: str | None) -> str:
    """The WebSocket URL at which ``client_id`` joins ``room`` (kind ``zoom``)."""
    base = base.rstrip("/")
    if protocol is Protocol.SOCKETIO:
        return f"{base}/socket.io/?EIO=4&transport=websocket&room={room}&clientId={client_id}"
    if protocol is Protocol.RAW:
        return f"{base}/ws/zoom/{room}?clientId={client_id}&name={client_id}"
    return f"{base}/ws/zoom/{room}?token={quote(token or '')}"
