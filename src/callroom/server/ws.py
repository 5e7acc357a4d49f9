"""The WebSocket endpoint ``/ws/{kind}/{roomId}`` (SPEC §1, §3).

Every refusal happens before the upgrade, as an HTTP error with the JSON body of SPEC §1.
After the upgrade the first frame is ``room_state`` (queued by the join, flushed by
``Connection.attach``). Then a member's frames are handled in order, each either in the
socket's callback (``offer``, the fast lane of ``server/reading.py``, for a frame that
waits for nothing while nothing of the member is pending) or by the connection's receive
loop; a rejected frame gets an ``error`` event and the connection stays open (SPEC §3.2).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from typing import TYPE_CHECKING, Any, cast

import structlog
from aiohttp import WebSocketError, WSMessage, WSMsgType, web
from aiohttp._websocket.models import WSMessageTextBytes

from callroom.errors import CloseCode, ErrorCode, HandshakeCode, HandshakeRefused, ProtocolError
from callroom.room import core
from callroom.room.commands import AddChat, Command
from callroom.room.encode import error_frame
from callroom.room.protocol import CLIENT_EVENTS, canonical_event, decode
from callroom.server.access import STARTED_KEY, record
from callroom.server.connection import CLOSE_TIMEOUT_SECONDS, Connection
from callroom.server.framing import pong_frame, text_frame
from callroom.server.guard import GuardedRequestHandler
from callroom.server.handshake import check_origin, check_path, client_ip, ws_token
from callroom.server.http_common import NODE_KEY, json_error
from callroom.server.reading import DROPPED, InlineWebSocketResponse

if TYPE_CHECKING:
    from callroom.server.node import Node

log = structlog.get_logger(__name__)

# add_chat commands of one connection that may wait for the store at once; at this many
# its next frames are left in the socket until the oldest is stored (backpressure).
PIPELINED_ADDS = 64
INTERNAL_ERROR = "internal error: nothing was done"


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
        check_origin(request, settings)
        if not node.limiter.admit(ip):
            raise HandshakeRefused(
                HandshakeCode.TOO_MANY_CONNECTIONS, "too many connections from this address"
            )
        identity = await node.authenticate(ws_token(request))
        await node.hub.precheck(kind, room_id, identity)
        # No aiohttp heartbeat and no autoping: the node's Heartbeat pings (SPEC §3.4)
        # and the receive loop answers pings (server/heartbeat.py says why).
        ws = InlineWebSocketResponse(
            compress=False,
            autoping=False,
            # aiohttp refuses a message of ``max_msg_size`` bytes or more; SPEC §3.4 and
            # docs/protocol.md close only a message larger than MAX_MESSAGE_BYTES.
            max_msg_size=settings.MAX_MESSAGE_BYTES + 1,
            timeout=CLOSE_TIMEOUT_SECONDS,
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
            close_aborts=node.metrics.close_aborts,
        )
        ws.charge_to(conn.budget, conn.close)
        await node.hub.enter(conn)  # re-checks the room rules: the checks above awaited
    except HandshakeRefused as exc:
        node.metrics.handshake_refusals.labels(code=exc.code.value).inc()
        response = json_error(exc.code, exc.message)
        record(node, request, response.status, event="ws_handshake", reason=exc.code.value)
        return response

    node.limiter.opened(ip)
    node.metrics.ws_connections.inc()
    structlog.contextvars.bind_contextvars(
        conn_id=conn.conn_id, room=room_id, kind=kind, client_id=conn.client_id
    )
    client_code: int | None = None
    try:
        await ws.prepare(request)
        if isinstance(request.protocol, GuardedRequestHandler):
            request.protocol.became_member()  # no longer an unfinished connection (SPEC §9)
        transport = request.transport
        if transport is not None:
            conn.attach(transport)  # room_state goes out (SPEC §1: the first message)
        node.metrics.join_seconds.observe(time.perf_counter() - request[STARTED_KEY])
        record(node, request, 101, event="ws_handshake", conn_id=conn.conn_id)
        await conn.finish_pending_close()
        log.info("ws_connected", client=ip)
        # The lane runs in a copy of this task's context: its log bindings (conn_id, room).
        # (mypy does not follow ``Context.run``'s *args through ``partial``.)
        run_in_context = contextvars.copy_context().run
        ws.offer_frames(functools.partial(run_in_context, take_inline, node, conn))  # type: ignore[call-arg]
        client_code = await _receive_loop(node, conn)
    finally:
        ws.stop_offering()
        node.limiter.closed(ip)
        node.metrics.ws_connections.dec()
        node.hub.ended(conn, client_code)
        server_code = _server_close_code(conn, client_code)
        if server_code is not None:
            node.metrics.closes.labels(code=str(server_code)).inc()
        log.info("ws_closed", client_code=client_code, server_code=server_code)
        structlog.contextvars.unbind_contextvars("conn_id", "room", "kind", "client_id")
        _drop_traceback(ws)
    return ws


# Closes aiohttp starts itself when a client breaks the protocol (RFC 6455 §7.4.1):
# 1002 protocol error, 1007 invalid UTF-8, 1009 a frame over MAX_MESSAGE_BYTES.
_PROTOCOL_CLOSES = frozenset({1002, 1007, 1009})


def _server_close_code(conn: Connection, client_code: int | None) -> int | None:
    """The code the server closed ``conn`` with (None: the client closed, or vanished).

    Counted once here, at the socket's end, for every cause (SPEC §3.4 and 1006 for a
    heartbeat timeout, 1013 for a slow consumer)."""
    if conn.on_close_code is not None:
        return conn.on_close_code
    error = conn.ws.exception()
    if client_code is None and isinstance(error, WebSocketError):
        return error.code if error.code in _PROTOCOL_CLOSES else None
    return None


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
            await on_text(node, conn, None if msg is DROPPED else msg.data)
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


# What the intake made of a text frame: its command, the error refusing it, or None
# when it came over the member's rate limit (SPEC §6; charged on arrival, reading.py).
Intake = Command | ProtocolError | None


def take_inline(node: Node, conn: Connection, msg: WSMessage | WSMessageTextBytes) -> bool:
    """Handle a frame in the socket's callback if nothing must wait; False queues it.

    Offered only while the member's receive loop waits with nothing queued
    (``server/reading.py``). A text frame is taken in (rate limit, decode) at once; if its
    command waits for nothing, and no chat message of the member is still waiting for
    the store, it is finished here. Otherwise what the intake found is handed to the
    receive loop (``Connection.handoff``), which takes this same frame next.
    """
    if msg.type is not WSMsgType.TEXT or conn.closing:
        return False
    conn.alive = True  # any frame answers the heartbeat
    started = time.perf_counter()
    taken = None if msg is DROPPED else _intake(node, conn, msg.data)
    if type(taken) is AddChat:
        if len(conn.adds) < PIPELINED_ADDS - 1:  # no backpressure wait needed after it
            _pipeline_add(node, conn, taken, started)
            return True
    elif not conn.adds and type(taken) not in node.hub.awaiting_commands:
        _finish(node, conn, taken, started)
        return True
    conn.handoff = (taken, started)
    return False


async def on_text(node: Node, conn: Connection, data: str | None) -> None:
    """Handle one text frame from the receive loop: decode, run (SPEC §3); ``data`` is
    None for a frame dropped on arrival for being over the member's rate.

    A valid ``add_chat`` is handed to the store while the next frames are read
    (``Connection.pipeline``); everything else first waits for those, so every answer
    and effect keeps the order of the member's frames.
    """
    handoff = conn.handoff
    if handoff is None:
        started = time.perf_counter()
        taken = None if data is None else _intake(node, conn, data)
    else:  # ``offer`` took this frame in already
        conn.handoff = None
        taken, started = handoff
    if type(taken) is AddChat:
        _pipeline_add(node, conn, taken, started)
        if len(conn.adds) >= PIPELINED_ADDS:
            await conn.settle_oldest()  # stop reading this member until the store catches up
        return
    if conn.adds:
        await conn.settle()  # the member's earlier messages come first
    if type(taken) in node.hub.awaiting_commands:
        await _run_awaiting(node, conn, cast(Command, taken), started)
    else:
        _finish(node, conn, taken, started)


def _intake(node: Node, conn: Connection, data: str) -> Intake:
    """Decode: the frame's command, or why it is refused."""
    try:
        return decode(data, node.protocol_limits)
    except ProtocolError as exc:
        return exc
    except Exception:  # a bug in decoding: answered as internal, never raised to the reader
        log.exception("decode_failed")
        return ProtocolError(ErrorCode.UNAVAILABLE, INTERNAL_ERROR)


def _finish(node: Node, conn: Connection, taken: Intake, started: float) -> None:
    """Answer a frame whose handling waits for nothing: run it, or say why not."""
    metrics = node.metrics
    if taken is None:
        metrics.handler_errors.labels(event="unknown", code=ErrorCode.RATE_LIMITED.value).inc()
        if not conn.budget.tolerate():
            conn.close(CloseCode.POLICY_VIOLATION, "message flood")
            return
        conn.send(_error(ErrorCode.RATE_LIMITED, "too many messages: this one was dropped", None))
        return
    label = "unknown"
    if isinstance(taken, ProtocolError):
        label = _refused(node, conn, taken, label)
    else:
        try:
            label = canonical_event(core.event_name(taken))
            node.hub.run_now(conn, taken)
        except ProtocolError as exc:
            label = _refused(node, conn, exc, label)
        except Exception:  # never raised into aiohttp's reader (``offer``) or the loop
            label = _failed(node, conn, label)
    _counted(node, label, started)


def _pipeline_add(node: Node, conn: Connection, command: AddChat, started: float) -> None:
    """Start storing a chat message; ``_answer_adds`` answers it once the store is done.

    No task per message: the store's future is tracked by the connection (``pipeline``)
    until it is answered (docs/architecture.md "Chat pipelining"). An add refused before
    it reaches the store is answered at once, or, behind adds of the member still in
    flight, in its turn after theirs.
    """
    stored: asyncio.Future[Any]
    try:
        stored = node.hub.submit_chat(conn, command)
    except Exception as exc:  # a room rule (ProtocolError), or a bug: answered either way
        stored = asyncio.get_running_loop().create_future()
        stored.set_exception(exc)
        if not conn.adds:
            _answer(node, conn, stored, started)
            return
    conn.pipeline(stored, started)
    stored.add_done_callback(functools.partial(_answer_adds, node, conn))


def _answer_adds(node: Node, conn: Connection, _done: object) -> None:
    """Answer the member's adds that are done, oldest first, up to the first still in
    flight: however the store's answers arrive, the member's adds are answered in the
    order of its frames (SPEC §3.2)."""
    adds = conn.adds
    while adds and adds[0][0].done():
        stored, started = adds.pop(0)
        _answer(node, conn, stored, started)


def _answer(node: Node, conn: Connection, stored: asyncio.Future[Any], started: float) -> None:
    """Broadcast a stored chat message, or answer why it was not stored."""
    label = "add_chat"
    try:
        node.hub.chat_stored(conn, stored)
    except ProtocolError as exc:
        label = _refused(node, conn, exc, label)
    except Exception:  # never raised into the event loop's callback runner
        label = _failed(node, conn, label)
    _counted(node, label, started)


def _counted(node: Node, label: str, started: float) -> None:
    node.metrics.received_by_event[label].inc()
    node.metrics.message_seconds.observe(time.perf_counter() - started)


async def _run_awaiting(node: Node, conn: Connection, command: Command, started: float) -> None:
    """Run a command that waits for the store or the identity provider; answer errors."""
    label = "unknown"
    try:
        label = canonical_event(core.event_name(command))
        await node.hub.run_awaiting(conn, command)
    except ProtocolError as exc:
        label = _refused(node, conn, exc, label)
    except Exception:
        label = _failed(node, conn, label)
    _counted(node, label, started)


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
    conn.send(_error(ErrorCode.UNAVAILABLE, INTERNAL_ERROR, None))
    return label


def _error(code: ErrorCode, message: str, event: str | None) -> bytes:
    return text_frame(error_frame(code, message, event).encode())
