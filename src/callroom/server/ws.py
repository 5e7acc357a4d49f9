"""The WebSocket endpoint ``/ws/{kind}/{roomId}`` (SPEC §1, §3): a thin adapter.

Before the upgrade: the checks of SPEC §1, each refusal raised and answered by
``http_answers`` (an HTTP status and the JSON body). After it: the member's
``Connection`` (the runtime's peer: frames out, closes) and ``Session`` (frames in:
rate limit, decoding, the lane, answers in order; server/session.py) are wired to
aiohttp. ``room_state`` is the first frame (queued by the join, flushed by
``Connection.attach``). Then each text frame goes to the session, either in the socket's
callback (``Session.take_inline``, the fast lane of ``server/reading.py``) or from the
receive loop below; control frames are dispatched by the loop.
"""

from __future__ import annotations

import contextvars
import functools
import time

import structlog
from aiohttp import WebSocketError, WSMsgType, web

from callroom.errors import CallroomError, CloseCode, HandshakeCode, HandshakeRefused
from callroom.server.access import STARTED_KEY, record
from callroom.server.connection import CLOSE_TIMEOUT_SECONDS, Connection
from callroom.server.guard import GuardedRequestHandler
from callroom.server.handshake import check_origin, check_path, client_ip, ws_token
from callroom.server.http_answers import error_response, http_answer
from callroom.server.reading import DROPPED, InlineWebSocketResponse
from callroom.server.session import Session
from callroom.server.state import STATE_KEY, AppState

log = structlog.get_logger(__name__)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    settings = state.settings
    kind = request.match_info["kind"]
    room_id = request.match_info["room_id"]
    ip = client_ip(request)
    try:
        if state.draining:
            raise HandshakeRefused(HandshakeCode.UNAVAILABLE, "the server is shutting down")
        if len(state.hub.connections) >= settings.MAX_CONNECTIONS:
            raise HandshakeRefused(HandshakeCode.UNAVAILABLE, "the server is full")
        check_path(kind, room_id)
        check_origin(request, settings)
        if not state.limiter.admit(ip):
            raise HandshakeRefused(
                HandshakeCode.TOO_MANY_CONNECTIONS, "too many connections from this address"
            )
        identity = await state.authenticate(ws_token(request))
        await state.hub.precheck(kind, room_id, identity)
        # No aiohttp heartbeat and no autoping: the node's Heartbeat pings (SPEC §3.4)
        # and the session answers pings (server/heartbeat.py says why).
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
            max_buffer=state.max_buffer,
            outbox=state.outbox,
            slow_counter=state.metrics.slow_consumers,
            close_aborts=state.metrics.close_aborts,
        )
        session = Session(
            conn,
            state.hub,
            limits=state.protocol_limits,
            rate_per_second=settings.RATE_LIMIT_PER_SECOND,
            burst=settings.RATE_LIMIT_BURST,
            metrics=state.metrics,
        )
        ws.attach(session)
        await state.hub.enter(conn)  # re-checks the room rules: the checks above awaited
    except CallroomError as exc:
        answer = http_answer(exc)
        if answer is None:  # not a refusal (a bug): aiohttp's 500
            raise
        state.metrics.handshake_refusals.labels(code=answer.code).inc()
        record(state, request, answer.status, event="ws_handshake", reason=answer.code)
        return error_response(answer)

    state.limiter.opened(ip)
    state.metrics.ws_connections.inc()
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
        state.metrics.join_seconds.observe(time.perf_counter() - request[STARTED_KEY])
        record(state, request, 101, event="ws_handshake", conn_id=conn.conn_id)
        await conn.finish_pending_close()
        log.info("ws_connected", client=ip)
        # The lane runs in a copy of this task's context: its log bindings (conn_id, room).
        # (mypy does not follow ``Context.run``'s *args through ``partial``.)
        run_in_context = contextvars.copy_context().run
        ws.offer_frames(functools.partial(run_in_context, session.take_inline))  # type: ignore[call-arg]
        client_code = await _receive_loop(conn, session)
    finally:
        ws.stop_offering()
        _ended(state, conn, client_code)
        _drop_traceback(ws)
    return ws


async def _receive_loop(conn: Connection, session: Session[Connection]) -> int | None:
    """Hand the member's frames to its session until the socket ends; return the
    client's close code, if it sent one (not an echo of the server's close, SPEC §2)."""
    ws = conn.ws
    while True:
        msg = await ws.receive()
        conn.alive = True  # any frame answers the heartbeat
        kind = msg.type
        if kind is WSMsgType.TEXT:
            await session.receive_text(None if msg is DROPPED else msg.data)
        elif kind is WSMsgType.PING:
            session.ping_received(msg.data)
        elif kind is WSMsgType.BINARY:
            await session.binary_received()
        elif kind is WSMsgType.CLOSE:
            return await session.close_received(int(msg.data))
        elif kind is not WSMsgType.PONG:
            # CLOSING, CLOSED, ERROR (e.g. a frame over MAX_MESSAGE_BYTES: 1009 sent).
            await session.settle()  # the member's last messages reach the room first
            return None


def _ended(state: AppState, conn: Connection, client_code: int | None) -> None:
    """The socket is gone: the room is told, the close is counted and logged."""
    state.limiter.closed(conn.ip)
    state.metrics.ws_connections.dec()
    state.hub.ended(conn, client_code)
    server_code = _server_close_code(conn, client_code)
    if server_code is not None:
        state.metrics.closes.labels(code=str(server_code)).inc()
    log.info("ws_closed", client_code=client_code, server_code=server_code)
    structlog.contextvars.unbind_contextvars("conn_id", "room", "kind", "client_id")


# Closes aiohttp starts itself when a client breaks the protocol (RFC 6455 §7.4.1).
_PROTOCOL_CLOSES = frozenset(
    {CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_DATA, CloseCode.MESSAGE_TOO_BIG}
)


def _server_close_code(conn: Connection, client_code: int | None) -> int | None:
    """The code the server closed ``conn`` with (None: the client closed, or vanished).

    Counted once here, at the socket's end, for every cause (SPEC §3.4; 1006 for a
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
