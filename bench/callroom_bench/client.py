"""The load generator's WebSocket client: picows, one process, minimal work per frame.

Every connection is a ``Connection`` listener sharing one ``Recorder``. On the receive
path a frame is not JSON-decoded: the generator looks for its own marker ``~t`` followed
by the 19-digit send time (``time.monotonic_ns`` of this process) that it embedded in the
chat content or the ICE candidate, and appends ``now - sent`` to an ``array``. Only the
rare frames without a marker (room_state, connect, error, ...) are looked at further.

Three wire protocols are spoken (``Protocol``): callroom itself (SPEC §1, a JWT in the
query), the bare relay peers (same envelope, identity from ``?clientId=``) and Socket.IO
(a raw Engine.IO v4 client: ``0{..}`` open, ``40`` connect, ``42[event,data]`` events,
``2``/``3`` ping/pong), so one generator drives every server in the comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from time import monotonic_ns
from typing import Any, cast
from urllib.parse import quote

import orjson
from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSHandshakeError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from callroom_bench.stats import new_samples

MARK = b"~t"
"""Precedes the send time in every timed message; never appears elsewhere in a frame."""
STAMP_DIGITS = 19
_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE


class Protocol(StrEnum):
    """How to address and frame messages for a server."""

    CALLROOM = "callroom"
    RAW = "raw"
    SOCKETIO = "socketio"


def stamp(ns: int) -> bytes:
    return b"%019d" % ns


def encode(protocol: Protocol, event: str, payload: dict[str, Any]) -> bytes:
    """One client frame in the protocol's envelope."""
    if protocol is Protocol.SOCKETIO:
        return b"42" + orjson.dumps([event, payload])
    return orjson.dumps({"event": event, "payload": payload})


def split_template(frame: bytes) -> tuple[bytes, bytes]:
    """Split a frame built with a zero stamp into (prefix, suffix) around the stamp.

    The send path then builds each frame as ``prefix + stamp(ns) + suffix``: no JSON
    encoding per message.
    """
    start = frame.index(MARK) + len(MARK)
    return frame[:start], frame[start + STAMP_DIGITS :]


def timed_text(pad: int, filler: str) -> str:
    """A string holding the marker, a zero stamp and ``pad`` filler characters."""
    return "~t" + "0" * STAMP_DIGITS + "|" + filler * max(pad, 0)


class Recorder:
    """Counters shared by every connection of one run; written on the hot path."""

    def __init__(self) -> None:
        self.latencies = new_samples()
        self.last_rx_ns = 0
        self.errors: Counter[str] = Counter()
        self.closing = False

    def reset_samples(self) -> None:
        self.latencies = new_samples()


def _error_code(body: bytes, engineio: bool) -> str | None:
    """The ``code`` of an ``error`` event, or None when the frame is some other event."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "unparseable_frame"
    if engineio and isinstance(message, list) and len(message) == 2:
        event, payload = message
    elif isinstance(message, dict):
        event, payload = message.get("event"), message.get("payload")
    else:
        return "unparseable_frame"
    if event != "error":
        return None
    code = payload.get("code") if isinstance(payload, dict) else None
    return f"error:{code}"


class Connection(WSListener):
    """One generator connection. Resolves ``joined`` with the time of the first room_state."""

    def __init__(self, recorder: Recorder, engineio: bool, joined: asyncio.Future[int]) -> None:
        super().__init__()
        self.recorder = recorder
        self.engineio = engineio
        self.joined = joined
        self.transport: WSTransport | None = None
        self.join_ns = 0
        self.closed_by_server = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # The hot path: a timed message. Only text frames carry the marker (a ping is
        # answered by picows itself), so the frame type is looked at only when it's absent.
        data = frame.get_payload_as_bytes()
        index = data.find(MARK)
        if index >= 0:
            now = monotonic_ns()
            recorder = self.recorder
            recorder.last_rx_ns = now
            recorder.latencies.append(now - int(data[index + 2 : index + 2 + STAMP_DIGITS]))
            return
        msg_type = frame.msg_type
        if msg_type == _TEXT:
            now = self.recorder.last_rx_ns = monotonic_ns()
            self._on_control(transport, data, now)
        elif msg_type == _CLOSE:
            self._on_close(transport, frame)

    def _on_control(self, transport: WSTransport, data: bytes, now: int) -> None:
        body = data
        if self.engineio:
            kind = data[:2]
            if data == b"2":  # Engine.IO ping
                transport.send(_TEXT, b"3")
                return
            if kind[:1] == b"0":  # open: connect to the default namespace
                transport.send(_TEXT, b"40")
                return
            if kind != b"42":  # "40{sid}" connected; anything else is a failure
                if kind != b"40":
                    self.recorder.errors[f"engineio:{data[:2].decode(errors='replace')}"] += 1
                return
            body = data[2:]
        if not self.joined.done():
            if b'"room_state"' in body:
                self.joined.set_result(now)
            else:
                self.recorder.errors["first_frame_not_room_state"] += 1
            return
        if b'"error"' in body:
            code = _error_code(body, self.engineio)
            if code is not None:
                self.recorder.errors[code] += 1

    def _on_close(self, transport: WSTransport, frame: WSFrame) -> None:
        self.closed_by_server = True
        code = frame.get_close_code()
        if not self.recorder.closing:
            self.recorder.errors[f"closed:{code.value}"] += 1
        transport.send_close(code)
        transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        joined = self.joined
        if not joined.done():
            joined.set_exception(ConnectionError("closed before room_state"))
        # A join given up on (timeout) is counted by connect_all, not as a drop.
        elif not (joined.cancelled() or self.recorder.closing or self.closed_by_server):
            self.recorder.errors["dropped"] += 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, WSHandshakeError) and exc.response is not None:
        return f"connect:http_{int(exc.response.status)}"
    if isinstance(exc, TimeoutError):
        return "connect:timeout"
    return f"connect:{type(exc).__name__}"


async def connect(url: str, recorder: Recorder, engineio: bool, limit_s: float) -> Connection:
    """Open one connection and wait for its first ``room_state``; sets ``join_ns``."""
    joined: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    started = monotonic_ns()
    _, listener = await ws_connect(
        lambda: Connection(recorder, engineio, joined),
        url,
        websocket_handshake_timeout=limit_s,
        # uvloop's own create_connection costs the generator about a quarter less CPU
        # per join than aiofastnet's (measured); the data path is the same.
        use_aiofastnet=False,
    )
    connection = cast(Connection, listener)
    try:
        connection.join_ns = await asyncio.wait_for(joined, limit_s) - started
    except BaseException:
        assert connection.transport is not None
        connection.transport.disconnect()
        raise
    return connection


async def connect_all(
    urls: list[str],
    recorder: Recorder,
    engineio: bool,
    concurrency: int,
    advance: Callable[[], None],
    limit_s: float = 30.0,
) -> list[Connection | None]:
    """Connect ``urls`` with at most ``concurrency`` handshakes in flight.

    A connection that fails is ``None`` at its index and counted in ``recorder.errors``.
    """
    connections: list[Connection | None] = [None] * len(urls)
    pending = iter(range(len(urls)))

    async def worker() -> None:
        for index in pending:
            try:
                connections[index] = await connect(urls[index], recorder, engineio, limit_s)
            except (WSError, OSError, TimeoutError, ConnectionError) as exc:
                recorder.errors[_describe(exc)] += 1
            advance()

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(urls))))))
    return connections


async def close_all(connections: list[Connection | None], recorder: Recorder) -> None:
    """Leave (close code 1000, SPEC §2) on every open connection and wait for the ends."""
    recorder.closing = True
    transports = [c.transport for c in connections if c is not None and c.transport is not None]
    for transport in transports:
        transport.send_close(WSCloseCode.OK)
        transport.disconnect()
    waits = [transport.wait_disconnected() for transport in transports]
    with contextlib.suppress(TimeoutError):  # a server that never closes is its problem
        await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 30)


def room_url(protocol: Protocol, base: str, room: str, client_id: str, token: str | None) -> str:
    """The WebSocket URL at which ``client_id`` joins ``room`` (kind ``zoom``)."""
    base = base.rstrip("/")
    if protocol is Protocol.SOCKETIO:
        return f"{base}/socket.io/?EIO=4&transport=websocket&room={room}&clientId={client_id}"
    if protocol is Protocol.RAW:
        return f"{base}/ws/zoom/{room}?clientId={client_id}&name={client_id}"
    return f"{base}/ws/zoom/{room}?token={quote(token or '')}"
