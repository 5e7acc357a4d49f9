"""One member's frames in, in order: the session, without sockets (sans-I/O).

Like python-websockets' protocol object, the session does no I/O and knows nothing of
aiohttp. The WebSocket adapter (``server/ws.py``, ``server/reading.py``) hands it the
member's frames as they are parsed, and the session answers through the member's peer
(``send`` a frame, ``close`` with a code) and the runtime (the hub). It owns:

- **rate limiting** (SPEC §6, §9): the member's ``FrameBudget`` (``server/inbound.py``),
  charged as each frame arrives (the adapter calls ``budget.message`` and
  ``frame_arrived`` in the socket's callback); a text frame over the rate is dropped
  there and answered ``rate_limited`` in its turn, and a sender that keeps flooding is
  closed with 1008;
- **decoding**: ``room.protocol.decode`` into a typed command, once per frame;
- **the lane**: ``take_inline`` finishes a frame at once, in the socket's callback, when
  it waits for nothing and nothing of the member is pending; every other frame goes
  through the member's task (``receive_text``), which awaits what must be
  awaited (docs/architecture.md "How a frame travels");
- **answers in order** (SPEC §3.2): an ``add_chat`` is handed to the store while the
  next frames are read (``adds``, docs/architecture.md "Chat pipelining"); the adds are
  answered oldest first, and every other frame first waits for the adds before it;
- **errors**: every exception a frame raises is answered as ``ws_answers.ws_answer``
  says; a bug is logged and answered ``unavailable``; nothing is raised to the adapter.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, cast

import structlog

from callroom.errors import CallroomError, CloseCode, ConnectionFailed, ErrorCode, ProtocolError
from callroom.room.commands import AddChat, Command, event_name
from callroom.room.protocol import CLIENT_EVENTS, ProtocolLimits, canonical_event, decode
from callroom.server.framing import pong_frame
from callroom.server.inbound import FrameBudget
from callroom.server.ws_answers import CloseAnswer, ws_answer

if TYPE_CHECKING:
    from callroom.chat.base import AddFuture
    from callroom.metrics import Metrics

log = structlog.get_logger(__name__)

# add_chat commands of one member that may wait for the store at once; at this many the
# member's task stops taking its frames until the oldest is stored (backpressure).
PIPELINED_ADDS = 64

# The answer to a text frame dropped for being over the member's rate, encoded once.
_OVER_RATE = ProtocolError(ErrorCode.RATE_LIMITED, "too many messages: this one was dropped")
_OVER_RATE_FRAME = ws_answer(_OVER_RATE).frame()

# What the intake made of a text frame: its command, the exception refusing it, or None
# for a frame dropped on arrival for being over the member's rate.
Intake = Command | Exception | None


class Member(Protocol):
    """What the session needs of its member's peer (``server/connection.Connection``)."""

    alive: bool  # set by any frame; the heartbeat clears it (server/heartbeat.py)

    @property
    def closing(self) -> bool: ...

    def send(self, frame: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


P = TypeVar("P", bound=Member)
P_contra = TypeVar("P_contra", bound=Member, contravariant=True)


class Runtime(Protocol[P_contra]):
    """What the session needs of the runtime: the hub's command interface."""

    @property
    def awaiting_commands(self) -> frozenset[type[Command]]:
        """The commands ``run_awaiting`` runs; every other one but ``add_chat`` runs at
        once with ``run_now``."""

    def run_now(self, peer: P_contra, command: Command, /) -> None: ...

    async def run_awaiting(self, peer: P_contra, command: Command, /) -> None: ...

    def submit_chat(self, peer: P_contra, command: AddChat, /) -> AddFuture: ...

    def chat_stored(self, peer: P_contra, done: AddFuture, /) -> None: ...


class Session(Generic[P]):
    """One member's session: its frames in, in order (module docstring)."""

    __slots__ = ("adds", "awaiting", "budget", "handoff", "limits", "metrics", "peer", "runtime")

    def __init__(
        self,
        peer: P,
        runtime: Runtime[P],
        *,
        limits: ProtocolLimits,
        rate_per_second: float,
        burst: int,
        metrics: Metrics,
    ) -> None:
        self.peer = peer
        self.runtime = runtime
        self.limits = limits
        self.metrics = metrics
        self.awaiting = runtime.awaiting_commands
        # SPEC §6: RATE_LIMIT_PER_SECOND / RATE_LIMIT_BURST per connection, charged by
        # cost as frames arrive; flooding on after rate_limited errors closes with 1008.
        self.budget = FrameBudget(rate_per_second, burst)
        # The member's add_chat commands still waiting for the store, oldest first, each
        # with its frame's start time (for the handling-time metric). A list, not a
        # deque: most members never have one in flight.
        self.adds: list[tuple[AddFuture, float]] = []
        # What ``take_inline`` found in a frame it left to the member's task (the intake
        # and its start time): the loop takes that same frame next.
        self.handoff: tuple[Intake, float] | None = None

    # -- frames as they arrive (the socket's callback) ------------------------------

    def frame_arrived(self) -> None:
        """A control or continuation frame arrived: over the rate it counts as refused,
        and a sender that keeps on is closed like a text flood (SPEC §9)."""
        budget = self.budget
        if not budget.frame() and not budget.tolerate():
            self.peer.close(CloseCode.POLICY_VIOLATION, "frame flood")

    def stream_failed(self, exc: ConnectionFailed) -> None:
        """The member's bytes broke the protocol (an unmasked frame): closed (SPEC §9)."""
        self._refuse(exc, None, "unknown")

    def take_inline(self, text: str | None) -> bool:
        """Finish a text frame now if nothing must wait; False leaves it to the loop.

        Offered only while the member's task waits with nothing queued
        (``server/reading.py``); ``text`` is None for a frame dropped over the rate. The
        frame is taken in (decoded) at once; if its command waits for nothing, and no
        chat message of the member is still waiting for the store, it is finished here
        (an ``add_chat`` joins the pipeline). Otherwise what the intake found is kept
        (``handoff``) for the member's task, which takes this same frame next.
        """
        peer = self.peer
        if peer.closing:
            return False
        peer.alive = True  # any frame answers the heartbeat
        started = time.perf_counter()
        taken = None if text is None else self._intake(text)
        if type(taken) is AddChat:
            if len(self.adds) < PIPELINED_ADDS - 1:  # no backpressure wait needed after it
                self._pipeline_add(taken, started)
                return True
        elif not self.adds and type(taken) not in self.awaiting:
            self._finish(taken, started)
            return True
        self.handoff = (taken, started)
        return False

    # -- frames from the member's task, in order ---------------------------------------

    async def receive_text(self, text: str | None) -> None:
        """Handle one text frame in the member's task (None: dropped over the rate).

        A valid ``add_chat`` is handed to the store while the next frames are read;
        everything else first waits for those, so every answer and effect keeps the
        order of the member's frames.
        """
        handoff = self.handoff
        if handoff is None:
            started = time.perf_counter()
            taken = None if text is None else self._intake(text)
        else:  # ``take_inline`` took this frame in already
            self.handoff = None
            taken, started = handoff
        if type(taken) is AddChat:
            self._pipeline_add(taken, started)
            if len(self.adds) >= PIPELINED_ADDS:
                await self.settle_oldest()  # stop reading this member until the store catches up
            return
        if self.adds:
            await self.settle()  # the member's earlier messages come first
        if type(taken) in self.awaiting:
            await self._run_awaiting(cast(Command, taken), started)
        else:
            self._finish(taken, started)

    def ping_received(self, payload: bytes) -> None:
        """A client's ping: its pong (RFC 6455 §5.5.3), in the order of the frames."""
        self.peer.send(pong_frame(payload))

    async def binary_received(self) -> None:
        """SPEC §3.4: a binary frame closes with 1003, after the answers before it."""
        await self.settle()
        self.peer.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")

    async def close_received(self, code: int) -> int | None:
        """The client's close frame: its code once the member's chat messages in flight
        are answered (they reach the room before its ``disconnect``); None when it is
        the echo of the server's own close (not a leave, SPEC §2)."""
        await self.settle()
        return None if self.peer.closing else code

    async def settle(self) -> None:
        """Return once every ``add_chat`` started before this call is answered."""
        if self.adds:
            await asyncio.wait([add for add, _ in self.adds])

    async def settle_oldest(self) -> None:
        """Return once the oldest ``add_chat`` in flight is answered (backpressure)."""
        if self.adds:
            await asyncio.wait([self.adds[0][0]])

    # -- handling ---------------------------------------------------------------------

    def _intake(self, text: str) -> Intake:
        """Decode: the frame's command, or why it is refused."""
        try:
            return decode(text, self.limits)
        except ProtocolError as exc:
            return exc
        except Exception as exc:  # a bug in decoding: answered, never raised to the reader
            log.exception("decode_failed")
            return exc

    def _finish(self, taken: Intake, started: float) -> None:
        """Answer a frame whose handling waits for nothing: run it, or say why not."""
        if taken is None:
            self._over_rate()
            return
        label = "unknown"
        if isinstance(taken, Exception):
            label = self._refuse(taken, None, label)
        else:
            name = None
            try:
                name = event_name(taken)
                label = canonical_event(name)
                self.runtime.run_now(self.peer, taken)
            except Exception as exc:  # never raised into aiohttp's reader or the loop
                label = self._failed(exc, name, label)
        self._counted(label, started)

    def _over_rate(self) -> None:
        """A frame dropped over the rate (SPEC §6): ``rate_limited``, or 1008 for a
        sender that keeps flooding (SPEC §3.4)."""
        self.metrics.handler_errors.labels(event="unknown", code=_OVER_RATE.code.value).inc()
        if not self.budget.tolerate():
            self.peer.close(CloseCode.POLICY_VIOLATION, "message flood")
        else:
            self.peer.send(_OVER_RATE_FRAME)

    def _pipeline_add(self, command: AddChat, started: float) -> None:
        """Start storing a chat message; ``_answer_adds`` answers it once it is stored.

        No task per message: the store's future is kept in ``adds`` until it is answered
        (docs/architecture.md "Chat pipelining"). An add refused before it reaches the
        store is answered at once, or, behind adds of the member still in flight, in its
        turn after theirs.
        """
        stored: AddFuture
        try:
            stored = self.runtime.submit_chat(self.peer, command)
        except Exception as exc:  # a room rule, or a bug: answered either way, in order
            stored = asyncio.get_running_loop().create_future()
            stored.set_exception(exc)
            if not self.adds:
                self._answer(stored, started)
                return
        self.adds.append((stored, started))
        stored.add_done_callback(self._answer_adds)

    def _answer_adds(self, _done: object) -> None:
        """Answer the member's adds that are done, oldest first, up to the first still in
        flight: however the store's answers arrive, the adds are answered in the order
        of the member's frames (SPEC §3.2)."""
        adds = self.adds
        while adds and adds[0][0].done():
            stored, started = adds.pop(0)
            self._answer(stored, started)

    def _answer(self, stored: AddFuture, started: float) -> None:
        """Broadcast a stored chat message, or answer why it was not stored."""
        label = "add_chat"
        try:
            self.runtime.chat_stored(self.peer, stored)
        except Exception as exc:  # never raised into the event loop's callback runner
            label = self._failed(exc, label, label)
        self._counted(label, started)

    async def _run_awaiting(self, command: Command, started: float) -> None:
        """Run a command that waits for the store or the identity provider."""
        label = "unknown"
        name = None
        try:
            name = event_name(command)
            label = canonical_event(name)
            await self.runtime.run_awaiting(self.peer, command)
        except Exception as exc:
            label = self._failed(exc, name, label)
        self._counted(label, started)

    def _counted(self, label: str, started: float) -> None:
        metrics = self.metrics
        metrics.received_by_event[label].inc()
        metrics.message_seconds.observe(time.perf_counter() - started)

    def _failed(self, exc: Exception, event: str | None, label: str) -> str:
        """Answer ``exc`` raised handling a frame of ``event``; a bug is logged first
        (called in the ``except`` block, so the line carries the traceback)."""
        if not isinstance(exc, CallroomError):
            log.exception("handler_failed", frame_event=label)
        return self._refuse(exc, event, label)

    def _refuse(self, exc: BaseException, event: str | None, label: str) -> str:
        """Carry out what ``ws_answer`` makes of ``exc``; the frame's metric label."""
        answer = ws_answer(exc, event)
        if isinstance(answer, CloseAnswer):
            self.peer.close(answer.code, answer.reason)
            return label
        if answer.event is not None and answer.event in CLIENT_EVENTS:
            label = canonical_event(answer.event)
        self.metrics.handler_errors.labels(event=label, code=answer.code.value).inc()
        self.peer.send(answer.frame())
        return label
