"""A member's socket after the upgrade: the transport's protocol, handed over by aiohttp.

aiohttp answers the handshake (server/ws.py); then the transport is given to a
``MemberSocket`` (``transport.set_protocol``) and aiohttp's request, response, request
handler and both of its tasks end. What a connection holds from then on is this object,
aiohttp's compiled frame parser and its queue (server/reading.py), the member's
``Connection`` and ``Session``, and the transport: no task, no coroutine frame, no HTTP
request while the member is idle (docs/architecture.md "After the upgrade").

Frames in: each chunk goes through the ``FrameGate`` and aiohttp's parser; a text frame
is offered to the session's fast lane while nothing of the member is pending
(``Session.take_inline``); every other frame is queued, and a task is started that takes
the queued frames in order and ends when the queue is empty (``_drain``: the same steps
as aiohttp's receive loop had, SPEC §3.2 order kept).

The end: the socket is lost (the peer closed it, the server's close was answered or
aborted, the heartbeat gave up); the frames still queued are handled, the member's chat
messages in flight are answered, then ``on_end`` tells the room (server/ws.py).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import WebSocketError, WSMsgType
from aiohttp._websocket.reader import WebSocketReader
from aiohttp.helpers import DEFAULT_CHUNK_SIZE

from callroom.errors import CloseCode, ConnectionFailed
from callroom.server.inbound import FrameGate
from callroom.server.reading import DROPPED, GatedReader, InlineQueue

if TYPE_CHECKING:
    from callroom.server.connection import Connection
    from callroom.server.session import Session

# Told the client's close code (None: no close frame of the client's, or the answer to
# the server's own close) once the member's socket has ended.
OnEnd = Callable[["Connection", "int | None"], None]


class MemberSocket(asyncio.Protocol):
    """The transport's protocol once a member's upgrade is done (module docstring)."""

    __slots__ = (
        "__weakref__",
        "_client_code",
        "_conn",
        "_context",
        "_drain",
        "_failed",
        "_lost",
        "_on_end",
        "_parser",
        "_queue",
        "_reading_paused",
        "_session",
        "_transport",
    )

    def __init__(
        self,
        conn: Connection,
        session: Session[Connection],
        *,
        max_msg_size: int,
        on_end: OnEnd,
        context: contextvars.Context,
    ) -> None:
        self._conn = conn
        self._session = session
        self._on_end: OnEnd | None = on_end
        # The member's log bindings (conn_id, room): frames and the end run in them.
        self._context = context
        self._transport: asyncio.Transport | None = None
        self._drain: asyncio.Task[None] | None = None
        self._client_code: int | None = None
        self._failed = False  # the parser failed (a protocol error), answered once
        self._lost = False
        self._reading_paused = False
        loop = asyncio.get_running_loop()
        self._queue = InlineQueue(self, DEFAULT_CHUNK_SIZE, loop=loop)
        parser = WebSocketReader(self._queue, max_msg_size, compress=False, decode_text=True)
        self._parser = GatedReader(parser, FrameGate(session.frame_arrived), self._stream_failed)

    def take_over(self, transport: asyncio.Transport, tail: bytes, head: bytes) -> None:
        """Become the transport's protocol; ``tail``: the member's bytes aiohttp read
        after the request; ``head``: the 101, written with ``room_state`` after it (the
        first frame, SPEC §1)."""
        self._transport = transport
        transport.set_protocol(self)
        self._conn.attach(transport, head)
        if tail:
            self.data_received(tail)

    # -- the transport's callbacks -------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._context.run(self._parser.feed_data, data)

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = True
        self._transport = None
        self._conn.lost()
        self.wake()

    def pause_reading(self) -> None:
        """aiohttp's queue holds too much: stop reading until the task takes it."""
        if self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()

    # -- the queue's owner (server/reading.py) -------------------------------------

    def charge(self, size: int) -> bool:
        self._conn.alive = True  # any frame answers the heartbeat
        return self._session.budget.message(size)

    def offer(self, text: str | None) -> bool:
        """The fast lane: open only while no frame of the member is pending."""
        return self._drain is None and self._session.take_inline(text)

    def wake(self) -> None:
        """Frames are queued, or the socket ended: make sure the task runs."""
        if self._drain is None and self._on_end is not None:
            loop = asyncio.get_running_loop()
            self._drain = loop.create_task(self._run(), context=self._context)

    # -- the task, only while something is pending ---------------------------------

    async def _run(self) -> None:
        try:
            await self._take_queued()
        finally:
            self._drain = None
        if self._lost and self._on_end is not None:
            await self._session.settle()  # the member's last messages reach the room first
            self._end()

    async def _take_queued(self) -> None:
        """Hand the queued frames to the session, in order, until none is left."""
        queue = self._queue
        conn = self._conn
        session = self._session
        while queue._buffer:
            msg = await queue.read()
            conn.alive = True  # any frame answers the heartbeat
            kind = msg.type
            if kind is WSMsgType.TEXT:
                await session.receive_text(None if msg is DROPPED else msg.data)
            elif kind is WSMsgType.PING:
                session.ping_received(msg.data)
            elif kind is WSMsgType.BINARY:
                await session.binary_received()
            elif kind is WSMsgType.CLOSE:
                self._client_code = await session.close_received(int(msg.data))
                conn.close_received()
        error = queue.exception()
        if error is not None and not self._failed:
            # A frame over MAX_MESSAGE_BYTES (1009), invalid UTF-8 (1007), a broken frame
            # (1002): closed with that code, after the answers before it.
            self._failed = True
            await session.settle()
            code = error.code if isinstance(error, WebSocketError) else CloseCode.PROTOCOL_ERROR
            conn.protocol_failed(code)

    def _stream_failed(self, exc: ConnectionFailed) -> None:
        """An unmasked frame: closed with 1002 (SPEC §9); nothing after it is read."""
        self._session.stream_failed(exc)
        if self._transport is not None:
            self._transport.close()

    def _end(self) -> None:
        on_end = self._on_end
        if on_end is None:
            return
        self._on_end = None
        # Break socket -> queue -> socket and socket -> parser -> socket: reference
        # counting frees an ended connection, no full collection needed (DESIGN
        # "Garbage collector").
        self._queue.owner = None
        self._queue._protocol = None  # type: ignore[assignment]
        self._parser.stop()
        on_end(self._conn, self._client_code)
