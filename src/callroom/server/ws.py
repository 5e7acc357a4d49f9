"""The WebSocket endpoint ``/ws/{kind}/{roomId}`` (SPEC §1, §3).

Every refusal happens before the upgrade, as an HTTP error with the JSON body of SPEC §1.
After the upgrade the first frame is ``room_state`` (queued by the join, flushed by
``Connection.attach``). Then one loop per connection reads frames in order; a rejected
frame gets an ``error`` event and the connection stays open (SPEC §3.2).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog
from aiohttp import WSMsgType, web

from callroom.errors import CloseCode, ErrorCode, HandshakeCode, HandshakeRefused, ProtocolError
from callroom.room import core
from callroom.room.commands import AddChat
from callroom.room.encode import error_frame
from callroom.room.protocol import CLIENT_EVENTS, canonical_event, decode
from callroom.server.connection import Connection
from callroom.server.framing import pong_frame, text_frame
from callroom.server.handshake import check_origin, check_path, client_ip, ws_token
from callroom.server.http_common import NODE_KEY, json_error

if TYPE_CHECKING:
    from callroom.server.node import Node

log = structlog.get_logger(__name__)

# add_chat commands of one connection that may wait for the store at once; at this many
# its next frames are left in the socket until the oldest is stored (backpressure).
PIPELINED_ADDS = 64


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    settings = node.settings
    kind = request.match_info["kind"]
    room_id = request.match_info["room_id"]
    ip = client_ip(request)
    try:
        if node.draining:
            raise HandshakeRefused(HandshakeCode.UNAVAILABLE, "the server is shutting down")
        if len(node.hub.connections) >= settings.MAX_CONNECTIONS:
            raise HandshakeRefused(HandshakeCode.UNAVAILABLE, "the server is full")
        check_path(kind, room_id)
        check_origin(request, settings.ALLOWED_ORIGINS)
        if not node.limiter.admit(ip):
            raise HandshakeRefused(
                HandshakeCode.TOO_MANY_CONNECTIONS, "too many connections from this address"
            )
        identity = await node.authenticate(ws_token(request))
        node.hub.check_join(kind, room_id, identity)
        # No aiohttp heartbeat and no autoping: the node's Heartbeat pings (SPEC §3.4)
        # and the receive loop answers pings (server/heartbeat.py says why).
        ws = web.WebSocketResponse(
            compress=False,
            autoping=False,
            max_msg_size=settings.MAX_MESSAGE_BYTES,
            timeout=5.0,
        )
        # Checked last, so a plain GET of the same URL tells a browser client why its
        # upgrade would be refused (browsers hide the handshake status from scripts).
        if not ws.can_prepare(request).ok:
            raise HandshakeRefused(HandshakeCode.BAD_REQUEST, "expected a WebSocket upgrade")
        conn = Connection(
            ws,
            identity,
            kind,
            room_id,
            ip,
            rate_per_second=settings.RATE_LIMIT_PER_SECOND,
            burst=settings.RATE_LIMIT_BURST,
            max_buffer=node.max_buffer,
            outbox=node.outbox,
            slow_counter=node.metrics.slow_consumers,
        )
        node.hub.join(conn)  # re-checks the room rules: the token check awaited
    except HandshakeRefused as exc:
        node.metrics.handshake_refusals.labels(code=exc.code.value).inc()
        return json_error(exc.code, exc.message)

    node.limiter.opened(ip)
    node.metrics.ws_connections.inc()
    structlog.contextvars.bind_contextvars(
        conn_id=conn.conn_id, room=room_id, kind=kind, client_id=conn.client_id
    )
    client_code: int | None = None
    try:
        await ws.prepare(request)
        transport = request.transport
        if transport is not None:
            conn.attach(transport)
        await conn.finish_pending_close()
        log.info("ws_connected")
        client_code = await _receive_loop(node, conn)
    finally:
        node.limiter.closed(ip)
        node.metrics.ws_connections.dec()
        node.hub.ended(conn, client_code)
        log.info("ws_closed", client_code=client_code, server_code=conn.on_close_code)
        structlog.contextvars.unbind_contextvars("conn_id", "room", "kind", "client_id")
        _drop_traceback(ws)
    return ws


def _drop_traceback(ws: web.WebSocketResponse) -> None:
    """Let reference counting free a socket that ended in an error.

    aiohttp keeps the error (``ws.exception()``); its traceback holds the frames of
    ``receive`` and ``close``, which hold ``ws``: a cycle that only a full collection
    would free, and the node makes those rare (docs/architecture.md "Heartbeat").
    """
    error: BaseException | None = ws.exception()
    while error is not None:
        error.__traceback__ = None
        error = error.__context__


async def _receive_loop(node: Node, conn: Connection) -> int | None:
    """Read frames until the socket ends; return the client's close code, if it sent one.

    A code the client sends back after the server started closing is an echo, not a
    leave (SPEC §2), so it is reported as None. The member's chat messages still in
    flight finish before the end is reported: its last messages reach the room before
    its ``disconnect``.
    """
    ws = conn.ws
    while True:
        msg = await ws.receive()
        conn.alive = True  # any frame answers the heartbeat
        kind = msg.type
        if kind is WSMsgType.TEXT:
            await on_text(node, conn, msg.data)
            continue
        if kind is WSMsgType.PONG:
            continue
        if kind is WSMsgType.PING:
            conn.send(pong_frame(msg.data))
            continue
        if conn.adds:
            await conn.settle()
        if kind is WSMsgType.BINARY:
            conn.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
        elif kind is WSMsgType.CLOSE:
            return None if conn.closing else int(msg.data)
        else:  # CLOSING, CLOSED, ERROR (e.g. a frame over MAX_MESSAGE_BYTES: 1009 sent)
            return None


async def on_text(node: Node, conn: Connection, data: str) -> None:
    """Handle one text frame: rate limit, decode, run, answer errors (SPEC §3).

    A valid ``add_chat`` runs as a task of its own while the next frames are read
    (``Connection.pipeline``); everything else first waits for those, so every answer
    and effect keeps the order of the member's frames. (The common path stays inline:
    it runs for every frame.)
    """
    metrics = node.metrics
    if not conn.rate.take():
        if conn.adds:
            await conn.settle()
        metrics.handler_errors.labels(event="unknown", code=ErrorCode.RATE_LIMITED.value).inc()
        if not conn.violations.take():
            conn.close(CloseCode.POLICY_VIOLATION, "message flood")
            return
        conn.send(_error(ErrorCode.RATE_LIMITED, "too many messages: this one was dropped", None))
        return
    started = time.perf_counter()
    label = "unknown"
    try:
        command = decode(data, node.protocol_limits)
        if type(command) is AddChat:
            conn.pipeline(asyncio.create_task(_add_chat(node, conn, command, started)))
            if len(conn.adds) >= PIPELINED_ADDS:
                await conn.settle_oldest()  # stop reading this member until the store catches up
            return
        if conn.adds:
            await conn.settle()  # the member's earlier messages come first
        label = canonical_event(core.event_name(command))
        await node.hub.handle(conn, command)
    except ProtocolError as exc:
        if conn.adds:
            await conn.settle()  # a refused frame is answered in its turn, too
        label = _refused(node, conn, exc, label)
    except Exception:
        if conn.adds:
            await conn.settle()
        label = _failed(node, conn, label)
    metrics.received_by_event[label].inc()
    metrics.message_seconds.observe(time.perf_counter() - started)


async def _add_chat(node: Node, conn: Connection, command: AddChat, started: float) -> None:
    """A pipelined ``add_chat`` (``on_text``): run it, answer a refusal or a failure."""
    label = "add_chat"
    try:
        await node.hub.handle(conn, command)
    except ProtocolError as exc:
        label = _refused(node, conn, exc, label)
    except Exception:
        label = _failed(node, conn, label)
    node.metrics.received_by_event[label].inc()
    node.metrics.message_seconds.observe(time.perf_counter() - started)


def _refused(node: Node, conn: Connection, exc: ProtocolError, label: str) -> str:
    """Answer a refused frame with its ``error`` event; the frame's metric label."""
    if exc.event is not None and exc.event in CLIENT_EVENTS:
        label = canonical_event(exc.event)
    node.metrics.handler_errors.labels(event=label, code=exc.code.value).inc()
    conn.send(_error(exc.code, exc.message, exc.event))
    return label


def _failed(node: Node, conn: Connection, label: str) -> str:
    """Answer a frame whose handling failed unexpectedly (a bug): nothing was done."""
    log.exception("handler_failed", frame_event=label)
    node.metrics.handler_errors.labels(event=label, code=ErrorCode.UNAVAILABLE.value).inc()
    conn.send(_error(ErrorCode.UNAVAILABLE, "internal error: nothing was done", None))
    return label


def _error(code: ErrorCode, message: str, event: str | None) -> bytes:
    return text_frame(error_frame(code, message, event).encode())
