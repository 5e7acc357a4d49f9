"""One member's WebSocket as the runtime sees it (the ``Peer`` of ``callroom.runtime.peer``):
frames out without an await per frame, bounded buffering, bounded closes.

What comes in is the session's (``server/session.py``); this is the way out.

Outgoing frames (``framing.text_frame`` bytes, built once per broadcast) are collected
per connection during one turn of the event loop and written with one
``transport.write`` at its end (``OutBox``): a burst of events to a member (a join sends
``connect`` and ``room_state``; a busy room sends several chats per turn) costs one system
call, not one per frame. The transport's write buffer is the bounded outgoing queue:
when a consumer cannot keep up and its buffer passes ``max_buffer`` bytes, the
connection is closed (1013, "try again later") rather than allowed to grow memory
without bound (DESIGN "Backpressure").
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING

import structlog

from callroom.errors import CloseCode
from callroom.logs import NODE_ID
from callroom.room.keys import room_key
from callroom.server.framing import close_frame

if TYPE_CHECKING:
    from prometheus_client import Counter

    from callroom.room.model import Identity
    from callroom.runtime.peer import Peer

log = structlog.get_logger(__name__)

FLUSH_EARLY_FRAMES = 16  # frames queued in one loop turn before they are written at once
# How long a close may take once its close frame is queued: the peer must take what is
# buffered and answer the close frame by then, or the socket is aborted (SPEC §9: a close
# never waits on a peer that does not read). Within SPEC's "at once" (one second).
CLOSE_TIMEOUT_SECONDS = 1.0
_ids = itertools.count(1)


class OutBox:
    """Connections with frames waiting; written out once per event-loop turn."""

    __slots__ = ("_pending", "_scheduled")

    def __init__(self) -> None:
        self._pending: list[Connection] = []
        self._scheduled = False

    def mark(self, conn: Connection) -> None:
        self._pending.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for conn in pending:
            conn.flush()


class Connection:
    """A member's socket in a room, as the node sees it."""

    __slots__ = (
        "__weakref__",
        "_close_timer",
        "_gone",
        "_out",
        "_transport",
        "alive",
        "client_id",
        "close_aborts",
        "closing",
        "conn_id",
        "detached",
        "expiry_handle",
        "identity",
        "ip",
        "kind",
        "max_buffer",
        "on_close_code",
        "outbox",
        "room_id",
        "room_key",
        "slow_counter",
    )

    def __init__(
        self,
        identity: Identity,
        kind: str,
        room_id: str,
        ip: str,
        *,
        max_buffer: int,
        outbox: OutBox,
        slow_counter: Counter | None = None,
        close_aborts: Counter | None = None,
    ) -> None:
        self.identity = identity
        self.client_id = identity.client_id
        self.kind = kind
        self.room_id = room_id
        self.room_key = room_key(kind, room_id)
        self.ip = ip
        # Unique across nodes (SPEC §9): the process's node id, then a number.
        self.conn_id = f"{NODE_ID}-c{next(_ids)}"
        self.max_buffer = max_buffer
        self.slow_counter = slow_counter
        self.outbox = outbox
        self.close_aborts = close_aborts
        self._transport: asyncio.Transport | None = None
        self._gone = False  # the socket is lost: nothing more is queued for it
        # Frames not yet written: queued before the upgrade, or during this loop turn.
        self._out: list[bytes] = []
        # Aborts the socket if a close has not ended it in time (``CLOSE_TIMEOUT_SECONDS``).
        self._close_timer: asyncio.TimerHandle | None = None
        self.closing = False
        # True once the room core no longer counts this socket as the member's session
        # (kicked, denied, ended, or replaced by a newer connection): its end changes
        # nothing in the room.
        self.detached = False
        self.on_close_code: int | None = None
        self.expiry_handle: asyncio.TimerHandle | None = None
        # Set by every frame received, cleared by each heartbeat ping (server/heartbeat.py).
        self.alive = True

    def attach(self, transport: asyncio.Transport, head: bytes = b"") -> None:
        """The upgrade is done: write ``head`` (the 101) and what was queued
        (``room_state`` first, SPEC §1) in one system call, and carry out a close that
        was asked for before the upgrade."""
        self._transport = transport
        if head:
            self._out.insert(0, head)
        self.flush()
        if self.closing and self.on_close_code is not None and self._close_timer is None:
            self._send_close(self.on_close_code, "")

    def send(self, frame: bytes) -> None:
        """Queue one complete frame for the end of this loop turn; never awaits."""
        if self.closing or self._gone:
            return
        out = self._out
        if not out and self._transport is not None:
            self.outbox.mark(self)
        out.append(frame)
        if len(out) >= FLUSH_EARLY_FRAMES:
            self.flush()  # a long burst goes out now: the queue stays small

    def flush(self) -> None:
        """Write the queued frames with one system call; close a consumer that lags."""
        out = self._out
        transport = self._transport
        if not out or transport is None:
            return
        self._out = []
        if transport.is_closing():
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        if transport.get_write_buffer_size() > self.max_buffer and not self.closing:
            # Named explicitly: this runs in the context of whoever sent the frame.
            log.warning(
                "slow_consumer_closed",
                conn_id=self.conn_id,
                client_id=self.client_id,
                room=self.room_id,
                kind=self.kind,
                buffered=transport.get_write_buffer_size(),
            )
            if self.slow_counter is not None:
                self.slow_counter.inc()
            self.close(CloseCode.TRY_AGAIN_LATER, "slow consumer")

    def close(self, code: int, reason: str = "") -> None:
        """Close with ``code`` (SPEC §3.4); idempotent, never awaits.

        The close frame goes out after the frames sent before it; the socket is closed
        when the peer answers it, or aborted ``CLOSE_TIMEOUT_SECONDS`` later (SPEC §9: a
        close never waits on a peer that does not read). Before the upgrade the close is
        carried out by ``attach``.
        """
        if self.closing:
            return
        self.flush()  # frames sent before the close go out before the close frame
        self._mark_closing(code)
        if self._transport is not None:
            self._send_close(code, reason)

    def close_received(self) -> None:
        """The peer's close frame was read: answer it (RFC 6455 §5.5.1) unless it answers
        ours, then close the socket. Not a close by the server: no code is kept."""
        transport = self._transport
        if transport is None:
            return
        if not self.closing:
            self.flush()
            self.closing = True
            self._cancel_expiry()
            transport.write(close_frame(CloseCode.NORMAL))
            self._arm_close_timer()
        transport.close()

    def protocol_failed(self, code: int) -> None:
        """The peer's bytes broke the protocol (RFC 6455 §7.4.1): close with ``code`` and
        read nothing more."""
        self.close(code, "")
        if self._transport is not None:
            self._transport.close()

    def abort(self, code: int) -> bool:
        """Drop the socket at once, without a close handshake (a peer that went silent).

        ``transport.abort``, not ``close``: a dead peer may never drain what is buffered.
        Before the upgrade there is no socket to drop yet (False); the next heartbeat
        comes back to it.
        """
        transport = self._transport
        if self.closing or transport is None:
            return False
        self._mark_closing(code)
        transport.abort()
        return True

    def lost(self) -> None:
        """The socket is gone: no timer of it stays, and nothing more is queued for it."""
        self._gone = True
        self._out = []
        self._transport = None  # no cycle transport -> protocol -> connection -> transport
        self._cancel_expiry()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    def _mark_closing(self, code: int) -> None:
        """No more frames out, the close code kept for the log, no expiry close later."""
        self.closing = True
        self.on_close_code = int(code)
        self._cancel_expiry()

    def _cancel_expiry(self) -> None:
        if self.expiry_handle is not None:
            self.expiry_handle.cancel()
            self.expiry_handle = None

    def _send_close(self, code: int, reason: str) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(close_frame(code, reason))
        self._arm_close_timer()

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and not self._gone:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(CLOSE_TIMEOUT_SECONDS, self._close_timed_out)

    def _close_timed_out(self) -> None:
        """The peer neither answered the close nor took what is buffered: a closed
        transport would still wait to flush its buffer; only an abort lets it go."""
        self._close_timer = None
        transport = self._transport
        if transport is None or self._gone:
            return
        log.info(
            "close_aborted",
            conn_id=self.conn_id,
            client_id=self.client_id,
            code=self.on_close_code,
            buffered=transport.get_write_buffer_size(),
        )
        transport.abort()
        if self.close_aborts is not None:
            self.close_aborts.inc()


def is_leave(client_close_code: int | None) -> bool:
    """SPEC §2: a member that closes with 1000 has left; any other end is a drop."""
    return client_close_code == CloseCode.NORMAL


if TYPE_CHECKING:

    def _satisfies_peer(conn: Connection) -> Peer:
        return conn  # mypy: a Connection is the runtime's Peer
