"""The WebSocket endpoint ``/ws/{kind}/{roomId}`` (SPEC §1, §3): a thin adapter.

Before the upgrade: the checks of SPEC §1, each refusal raised and answered by
``http_answers`` (an HTTP status and the JSON body). The upgrade is checked and its 101
written here (server/upgrade.py). Then the socket is handed to the
member's ``MemberSocket`` (server/member_socket.py) with its ``Connection`` (the
runtime's peer: frames out, closes) and ``Session`` (frames in: rate limit, decoding,
the lane, answers in order; server/session.py), and the handler returns: aiohttp's
request and tasks end, the connection lives on in callbacks. ``room_state`` is the first
frame (queued by the join, flushed when the socket is taken over).
"""

from __future__ import annotations

import contextvars
import functools
import time

import structlog
from aiohttp import web

from callroom.errors import CallroomError, HandshakeCode, HandshakeRefused
from callroom.server.access import STARTED_KEY, record
from callroom.server.connection import Connection
from callroom.server.guard import GuardedRequestHandler
from callroom.server.handshake import check_origin, check_path, client_ip, ws_token
from callroom.server.http_answers import error_response, http_answer
from callroom.server.member_socket import MemberSocket
from callroom.server.session import Session
from callroom.server.state import STATE_KEY, AppState
from callroom.server.upgrade import HandedOver, accept_key, switching_protocols

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
        # Checked last, so a plain GET of the same URL tells a browser client why its
        # upgrade would be refused (browsers hide the handshake status from scripts).
        accept = accept_key(request)
        if accept is None:
            raise HandshakeRefused(HandshakeCode.BAD_REQUEST, "expected a WebSocket upgrade")
        conn = Connection(
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
    # The member's frames and its end run in a context of their own: its log bindings.
    context = contextvars.copy_context()
    bindings = {"conn_id": conn.conn_id, "room": room_id, "kind": kind, "client_id": conn.client_id}
    context.run(structlog.contextvars.bind_contextvars, **bindings)
    member = MemberSocket(
        conn,
        session,
        # aiohttp refuses a message of ``max_msg_size`` bytes or more; SPEC §3.4 and
        # docs/protocol.md close only a message larger than MAX_MESSAGE_BYTES.
        max_msg_size=settings.MAX_MESSAGE_BYTES + 1,
        on_end=functools.partial(_ended, state),
        context=context,
    )
    transport = request.transport
    protocol = request.protocol
    if (
        transport is None
        or transport.is_closing()
        or not isinstance(protocol, GuardedRequestHandler)
    ):  # the socket went away while the checks awaited
        context.run(_ended, state, conn, None)
        return HandedOver(status=101)
    member.take_over(transport, protocol.hand_off(), switching_protocols(accept))
    state.metrics.join_seconds.observe(time.perf_counter() - request[STARTED_KEY])
    record(state, request, 101, event="ws_handshake", conn_id=conn.conn_id)
    context.run(log.info, "ws_connected", client=ip)
    return HandedOver(status=101)


def _ended(state: AppState, conn: Connection, client_code: int | None) -> None:
    """The socket is gone: the room is told, the close is counted and logged."""
    state.limiter.closed(conn.ip)
    state.metrics.ws_connections.dec()
    state.hub.ended(conn, client_code)
    # The code the server closed with (SPEC §3.4: 1006 for a heartbeat timeout, 1013 for
    # a slow consumer, 1009/1007/1002 for a client that broke the protocol, ...); None
    # when the client closed, or vanished.
    server_code = conn.on_close_code
    if server_code is not None:
        state.metrics.closes.labels(code=str(server_code)).inc()
    log.info("ws_closed", client_code=client_code, server_code=server_code)
