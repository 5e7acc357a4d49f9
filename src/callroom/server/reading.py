"""Reading a member's frames: aiohttp's frame parser and queue, with a fast lane.

aiohttp's WebSocket reader (its compiled parser) puts each parsed frame into a queue,
and something must take it out with ``await queue.read()``: per frame a future, a task
wake-up and a coroutine round trip, about a sixth of the main thread when relaying
candidates (docs/performance.md, finding 12). Most frames need none of that: a
candidate, an answer or a raised hand is decoded, checked and relayed without waiting
for anything.

``InlineQueue`` is aiohttp's queue with a fast lane. While its owner (the member's
``MemberSocket``, server/member_socket.py) has no frame of the member pending, each new
text frame is first offered to it, in the socket's ``data_received`` callback; the
member's session either finishes the frame there and says so, or the frame is queued
and the owner starts a task that takes the queued frames in order (a frame that must
wait: a token refresh, a history read or deletion, anything but another chat message
behind a chat message the store has not committed yet; a control frame; any frame while
frames are queued). So frames of one member are still handled in the order they were
sent (SPEC §3.2): the fast lane is open only when nothing of that member is pending.

This reaches into aiohttp's WebSocket internals (the ``WebSocketDataQueue`` and
``WebSocketReader`` types): pyproject pins aiohttp to the 3.14 series, and
tests/integration/test_reading.py fails if the fast lane stops being used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import WSMessage, WSMsgType
from aiohttp._websocket.models import WSMessageTextBytes
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader

from callroom.errors import ConnectionFailed
from callroom.server.inbound import FrameGate

# Told that the member's bytes broke the protocol (``Session.stream_failed``).
Failed = Callable[[ConnectionFailed], None]

# What a text message over the member's rate becomes as it arrives (``FrameBudget``): its
# payload is let go at once, and its place in the member's order is kept, so its
# ``rate_limited`` answer comes after the answers of the frames sent before it.
DROPPED = WSMessage(WSMsgType.TEXT, "", None)


class QueueOwner(Protocol):
    """What the queue needs of its owner (``MemberSocket``)."""

    _reading_paused: bool  # aiohttp's flow control reads it (``pause_reading`` above a limit)

    def charge(self, size: int) -> bool: ...

    def offer(self, text: str | None) -> bool: ...

    def wake(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class InlineQueue(WebSocketDataQueue):
    """aiohttp's frame queue, with frames offered to its owner while nothing is pending."""

    __slots__ = ("owner",)  # no __dict__: one per idle connection too

    def __init__(self, owner: QueueOwner, limit: int, *, loop: Any) -> None:
        super().__init__(owner, limit, loop=loop)  # type: ignore[arg-type]
        self.owner: QueueOwner | None = owner

    def feed_data(self, data: WSMessage | WSMessageTextBytes, size: int) -> None:
        owner = self.owner
        if owner is None:  # the socket has ended
            return
        if data.type is WSMsgType.TEXT:
            # Charged as it arrives (server/inbound.py), before it waits for anything.
            if not owner.charge(size):
                data, size = DROPPED, 0
            if not self._buffer and owner.offer(None if data is DROPPED else data.data):
                return
        # Queued: the lane stays closed until the owner's task has taken this frame.
        super().feed_data(data, size)
        owner.wake()

    def set_exception(self, exc: BaseException, *args: Any) -> None:
        super().set_exception(exc, *args)
        if self.owner is not None:
            self.owner.wake()


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
        self._failed: Failed | None = failed

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        gate = self._gate
        if gate is None:
            return False, b""
        try:
            gate.feed(data)
        except ConnectionFailed as exc:  # an unmasked frame
            failed = self._failed
            self.stop()
            if failed is not None:
                failed(exc)
            return False, b""
        result: tuple[bool, bytes] = self._parser.feed_data(data)
        return result

    def stop(self) -> None:
        """Parse nothing more; let go of the callback (and the cycle through it)."""
        self._gate = None
        self._failed = None
