"""Reading a member's frames in the socket's callback when its reader has nothing to do.

aiohttp hands each parsed frame to a queue, and the connection's task takes it out with
``await ws.receive()``: per frame a future, a task wake-up and a coroutine round trip,
about a sixth of the main thread when relaying candidates (docs/performance.md,
finding 12). Most frames need none of that: a candidate, an answer or a raised hand is
decoded, checked and relayed without waiting for anything.

``InlineQueue`` is aiohttp's queue with a fast lane. While the connection's task is
parked on an empty queue, each new text frame is first offered to a handler (the
member's ``Session.take_inline``, server/session.py), which runs in aiohttp's
``data_received`` callback. The handler either finishes the frame there and returns
True, or returns False, and the frame is queued for the task as before: a frame that
must wait (a token refresh, a history read or deletion, anything but another chat
message behind a chat message the store has not committed yet), a control frame, or
any frame while the task is busy or frames are queued. So
frames of one member are still handled in the order they were sent (SPEC §3.2): the
fast lane is open only when nothing of that member is pending, and it closes as soon
as one frame is queued, until the task has taken every queued frame.

This reaches into aiohttp's WebSocket internals (``WebSocketResponse._post_start``,
the ``WebSocketDataQueue`` type): pyproject pins aiohttp to the 3.14 series, and
tests/integration/test_reading.py fails if the fast lane stops being used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMessage, WSMsgType, web
from aiohttp._websocket.models import WSMessageTextBytes
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.helpers import DEFAULT_CHUNK_SIZE

from callroom.errors import ConnectionFailed
from callroom.server.inbound import FrameGate

if TYPE_CHECKING:
    from aiohttp.http_websocket import WebSocketWriter
    from aiohttp.web_request import BaseRequest

    from callroom.server.session import Session

# Offered a text frame's payload (None: dropped over the rate): True if it was handled,
# False to queue it for the connection's task.
FrameHandler = Callable[[str | None], bool]
# Charges a text message of that many payload bytes (``FrameBudget.message``); False:
# over the member's rate.
Charge = Callable[[int], bool]
# Told that the member's bytes broke the protocol (``Session.stream_failed``).
Failed = Callable[[ConnectionFailed], None]

# What a text message over the member's rate becomes as it arrives (``FrameBudget``): its
# payload is let go at once, and its place in the member's order is kept, so its
# ``rate_limited`` answer comes after the answers of the frames sent before it.
DROPPED = WSMessage(WSMsgType.TEXT, "", None)


class InlineQueue(WebSocketDataQueue):
    """aiohttp's frame queue, with frames offered to ``handler`` while the reader is parked."""

    __slots__ = ("charge", "handler", "parked")  # no __dict__: one per idle connection too

    def __init__(self, protocol: Any, limit: int, *, loop: Any, charge: Charge) -> None:
        super().__init__(protocol, limit, loop=loop)
        self.handler: FrameHandler | None = None
        self.charge = charge
        # True only while the connection's task waits on an empty queue (``read``). The
        # queue is then empty by construction: every frame comes through ``feed_data``,
        # which clears the flag before queueing.
        self.parked = False

    def feed_data(self, data: WSMessage | WSMessageTextBytes, size: int) -> None:
        if data.type is WSMsgType.TEXT:
            # Charged as it arrives (server/inbound.py), before it waits for anything.
            if not self.charge(size):
                data, size = DROPPED, 0
            handler = self.handler
            if (
                self.parked
                and handler is not None
                and handler(None if data is DROPPED else data.data)
            ):
                return
        # Queued: the lane closes until the task has taken this frame (module docstring).
        self.parked = False
        super().feed_data(data, size)

    async def read(self) -> Any:
        self.parked = not self._buffer
        try:
            return await super().read()
        finally:
            self.parked = False


class GatedReader:
    """aiohttp's frame parser behind a ``FrameGate``: every chunk of the member's bytes is
    first read for frame headers (masks, control and continuation frames), then parsed.

    After an unmasked frame nothing more is parsed: the session is told (it closes with
    1002, RFC 6455 §5.1, SPEC §9) and whatever the peer sends after it is ignored.
    """

    __slots__ = ("_failed", "_gate", "_parser")

    def __init__(self, parser: WebSocketReader, gate: FrameGate, failed: Failed) -> None:
        self._parser = parser
        self._gate: FrameGate | None = gate
        self._failed = failed

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        gate = self._gate
        if gate is None:
            return False, b""
        try:
            gate.feed(data)
        except ConnectionFailed as exc:  # an unmasked frame
            self._gate = None
            self._failed(exc)
            return False, b""
        result: tuple[bool, bytes] = self._parser.feed_data(data)
        return result

    def feed_eof(self) -> None:
        self._parser.feed_eof()


class InlineWebSocketResponse(web.WebSocketResponse):
    """A ``WebSocketResponse`` whose frames go to the member's session as they are parsed:
    charged to its budget as they arrive (server/inbound.py), and offered to its fast
    lane while its receive loop is parked."""

    _session: Session[Any] | None = None

    def attach(self, session: Session[Any]) -> None:
        """Feed the member's frames to ``session`` (call before ``prepare()``)."""
        self._session = session

    def _charge_frame(self) -> None:
        """A control or continuation frame arrived (``FrameGate``)."""
        session = self._session
        if session is not None:
            session.frame_arrived()

    def _stream_failed(self, exc: ConnectionFailed) -> None:
        session = self._session
        if session is not None:
            session.stream_failed(exc)

    def offer_frames(self, handler: FrameHandler) -> None:
        """From now on, offer each frame to ``handler`` before queueing it."""
        queue = self._reader
        assert isinstance(queue, InlineQueue), "call after prepare()"
        queue.handler = handler

    def stop_offering(self) -> None:
        """Offer no more frames (the receive loop ended). This also breaks the cycles
        response → queue → handler → session → connection → response (and response →
        session → ...), so reference counting frees a closed connection without a full
        collection."""
        queue = self._reader
        if isinstance(queue, InlineQueue):
            queue.handler = None
        self._session = None

    def _post_start(
        self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter
    ) -> None:
        # aiohttp 3.14's ``_post_start`` with ``InlineQueue`` in place of its queue. The
        # heartbeat is off (the node's Heartbeat pings), so there is no data callback.
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        loop = self._loop
        session = self._session
        assert loop is not None
        assert session is not None, "attach() a session first"
        self._reader = InlineQueue(
            request._protocol, DEFAULT_CHUNK_SIZE, loop=loop, charge=session.budget.message
        )
        self._parser = WebSocketReader(
            self._reader,
            self._max_msg_size,
            compress=bool(self._compress),
            decode_text=self._decode_text,
        )
        gated = GatedReader(self._parser, FrameGate(self._charge_frame), self._stream_failed)
        callback = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(gated, data_received_cb=callback)  # type: ignore[arg-type]
        request.protocol.keep_alive(False)
