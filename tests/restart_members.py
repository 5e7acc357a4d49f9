"""Members of a meeting that live through a Redis restart (issue 18 acceptance,
tests/integration/test_redis_restart.py): real WebSocket clients that keep every frame,
rejoin like the web client, and keep a ledger of their chat messages.

**Rejoining.** When the server closes a member with a code after which the web client
reconnects (``callroom-client.js`` ``shouldReconnect``: below 4000 and not one of 1000,
1002, 1003, 1008, 1009; 1001 above all, docs/protocol.md "Close codes"), the member
connects again to the same node (to the next of its ``fallbacks`` once that node
refuses TCP connections: it died), retrying a refusal of 429 or 503 (or a refused TCP
connection) with a growing backoff, like the web client, within ``REJOIN_SECONDS``.
Every chat message of its closed connections that no echo acknowledged is then sent
again with the same chatId, as SPEC §3.1 allows (a safe retry).

**The ledger.** A member numbers its messages (chatId ``<clientId>-<n>``) and keeps, per
connection, which chatIds it sent, which were acknowledged (its own ``add_chat`` echo
came back on that connection) and how many ``error`` frames named ``add_chat``. The
server's answers to one member's adds may come back out of order across nodes (an
error is sent at once, an echo comes back through Redis), and an ``error`` carries no
chatId, so a connection is settled when every add it sent was echoed or matched by an
``add_chat`` error: ``Link.unanswered``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from callroom_testing import room_url

if TYPE_CHECKING:
    from callroom.server.node import Node

FINAL_CLOSE_CODES = frozenset({1000, 1002, 1003, 1008, 1009})  # and every 4xxx
RETRIED_REFUSALS = frozenset({429, 503})  # busy or unavailable: the web client retries
REJOIN_SECONDS = 15.0
OPEN_SECONDS = 5.0
ADMITTED = frozenset({"participant", "screenshare", "host"})

Payload = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Received:
    """One frame a member received, on its connection number ``link``."""

    event: str
    payload: Payload
    link: int
    at: float


@dataclass(slots=True)
class Link:
    """One WebSocket connection of a member, from its ``room_state`` to its close."""

    index: int
    ws: ClientConnection
    opened_at: float
    room_state: Payload  # the latest one received on this connection
    sent: list[str] = field(default_factory=list)  # event names, in order
    adds: list[str] = field(default_factory=list)  # chatIds sent with add_chat
    acked: set[str] = field(default_factory=set)
    add_errors: int = 0  # ``error`` frames with event "add_chat"
    closed: bool = False
    close_code: int | None = None

    @property
    def unanswered(self) -> int:
        return len(self.adds) - len(self.acked) - self.add_errors


class Member:
    """One member (one token) of one room, on one node."""

    def __init__(self, node: Node, token: str, client_id: str, room: str) -> None:
        self.node = node
        # Where to rejoin when the node refuses TCP connections (it died): the web
        # client behind a load balancer lands on another node.
        self.fallbacks: list[Any] = []
        self.token = token
        self.client_id = client_id
        self.room = room
        self.links: list[Link] = []
        self.received: list[Received] = []
        self.chat_counts: Counter[str] = Counter()  # chatId → times received live
        self.refusals: list[int] = []  # statuses of refused rejoins (0: no connection)
        self.problems: list[str] = []  # what broke the protocol (a first frame, ...)
        self.retries = 0
        self.gone = False  # closed for good: a final code, or no rejoin in time
        self._numbered = 0
        self._leaving = False
        self._tick = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    # -- state ----------------------------------------------------------------------

    @property
    def link(self) -> Link:
        return self.links[-1]

    @property
    def connected(self) -> bool:
        return bool(self.links) and not self.link.closed

    @property
    def role(self) -> str | None:
        """The role in the latest ``room_state`` of the open connection."""
        return str(self.link.room_state.get("role")) if self.connected else None

    @property
    def admitted(self) -> bool:
        return self.role in ADMITTED

    def mark(self) -> int:
        """Where the frames received from now on start (for ``wait_event``)."""
        return len(self.received)

    def acknowledged(self) -> set[str]:
        return set().union(*(link.acked for link in self.links))

    def unacked_of_closed_links(self) -> list[str]:
        """chatIds sent on a closed connection and acknowledged on none: to send again."""
        acked = self.acknowledged()
        pending: dict[str, None] = {}
        for link in self.links:
            for chat_id in link.adds:
                if link.closed and chat_id not in acked:
                    pending[chat_id] = None
                else:
                    pending.pop(chat_id, None)  # sent again on a later connection
        return list(pending)

    # -- sending --------------------------------------------------------------------

    async def join(self) -> Payload:
        """The first connection; its ``room_state``."""
        await self._open()
        self._reader = asyncio.create_task(self._read())
        return self.link.room_state

    async def send(self, event: str, payload: Payload | None = None) -> bool:
        """Send one frame on the open connection; False when it is closed."""
        if not self.connected:
            return False
        link = self.link
        link.sent.append(event)
        try:
            await link.ws.send(json.dumps({"event": event, "payload": payload or {}}))
        except ConnectionClosed:
            return False
        return True

    def next_chat_id(self) -> str:
        self._numbered += 1
        return f"{self.client_id}-{self._numbered:05d}"

    async def chat(self, chat_id: str) -> None:
        """Send ``add_chat`` with ``chat_id`` (numbered: its number is its content)."""
        if self.connected:
            self.link.adds.append(chat_id)
            await self.send("add_chat", {"chatContent": f"#{chat_id}", "chatId": chat_id})

    async def leave(self) -> None:
        """Close with 1000 (a leave), stop rejoining, wait for the reader."""
        self._leaving = True
        if self.connected:
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await self.link.ws.close(1000)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader, OPEN_SECONDS)

    # -- waiting (on frames and state, with a deadline; never on time alone) ----------

    async def changed(self, timeout: float) -> None:
        """Until this member receives a frame, is closed or rejoins, at most ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tick.wait(), timeout)

    async def wait_until(self, holds: Callable[[Member], bool], timeout: float) -> bool:
        """Until ``holds(self)``; whether it did within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not holds(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await self.changed(remaining)
        return True

    async def wait_event(
        self,
        event: str,
        since: int,
        timeout: float,
        where: Callable[[Payload], bool] | None = None,
    ) -> Payload | None:
        """The first frame ``event`` (matching ``where``) received since ``since``; None
        if none came within ``timeout`` (or an ``error`` answered instead: see
        ``answered``)."""
        found: list[Payload] = []

        def seen() -> bool:
            for frame in self.received[since:]:
                if frame.event == event and (where is None or where(frame.payload)):
                    found.append(frame.payload)
                    return True
            return False

        await self.wait_until(lambda m: seen() or m.gone, timeout)
        return found[0] if found else None

    async def answered(self, sent: str, answer: str, since: int, timeout: float) -> Received | None:
        """The answer to a frame ``sent`` since ``since``: the frame ``answer``, or an
        ``error`` naming ``sent`` (or naming nothing), whichever comes first (None:
        neither within ``timeout``)."""
        found: list[Received] = []

        def seen() -> bool:
            for frame in self.received[since:]:
                if frame.event == answer or (
                    frame.event == "error" and frame.payload.get("event") in (sent, None)
                ):
                    found.append(frame)
                    return True
            return False

        await self.wait_until(lambda m: seen() or m.gone, timeout)
        return found[0] if found else None

    # -- the connection ---------------------------------------------------------------

    def _changed(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    async def _open(self) -> None:
        ws = await connect(
            room_url(self.node, self.token, self.room),
            open_timeout=OPEN_SECONDS,
            close_timeout=2,
            max_size=2**22,
        )
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), OPEN_SECONDS))
        except BaseException:
            await ws.close()
            raise
        if first.get("event") != "room_state":  # SPEC §1: the first frame is room_state
            self.problems.append(f"first frame of a connection: {first}")
        payload = first.get("payload") or {}
        link = Link(len(self.links), ws, time.monotonic(), payload)
        self.links.append(link)
        self.received.append(Received("room_state", payload, link.index, link.opened_at))
        self._changed()

    async def _read(self) -> None:
        try:
            while True:
                link = self.link
                with contextlib.suppress(ConnectionClosed):
                    async for raw in link.ws:
                        self._take(link, raw)
                link.closed = True
                link.close_code = link.ws.close_code
                self._changed()
                code = link.close_code or 1006
                if self._leaving or code in FINAL_CLOSE_CODES or code >= 4000:
                    break
                if not await self._rejoin():
                    break
        except Exception as exc:  # a broken test client must show, not hang the test
            self.problems.append(f"reader failed: {exc!r}")
        finally:
            self.gone = True
            self._changed()

    def _take(self, link: Link, raw: str | bytes) -> None:
        frame = json.loads(raw)
        event: str = frame["event"]
        payload: Payload = frame.get("payload") or {}
        self.received.append(Received(event, payload, link.index, time.monotonic()))
        if event == "room_state":
            link.room_state = payload
        elif event == "add_chat":
            chat_id = payload["chatId"]
            self.chat_counts[chat_id] += 1
            if payload.get("clientId") == self.client_id and chat_id in link.adds:
                link.acked.add(chat_id)
        elif event == "error" and payload.get("event") == "add_chat":
            link.add_errors += 1
        self._changed()

    async def _rejoin(self) -> bool:
        """Connect again (the web client's policy), then send the unacknowledged chat
        messages again with their chatIds. False: no connection within the deadline,
        or a refusal the web client would not retry."""
        deadline = time.monotonic() + REJOIN_SECONDS
        backoff = 0.05
        while not self._leaving and time.monotonic() < deadline:
            try:
                await self._open()
            except InvalidStatus as exc:
                status = exc.response.status_code
                self.refusals.append(status)
                if status not in RETRIED_REFUSALS:
                    return False
            except OSError:
                self.refusals.append(0)
                if self.fallbacks:
                    self.node = self.fallbacks.pop(0)
            except (InvalidHandshake, TimeoutError, ConnectionClosed):
                self.refusals.append(0)
            else:
                for chat_id in self.unacked_of_closed_links():
                    self.retries += 1
                    await self.chat(chat_id)
                return True
            await asyncio.sleep(backoff)  # the client's backoff policy, not a wait for state
            backoff = min(2 * backoff, 0.5)
        return False


async def chatter(member: Member, stop: asyncio.Event, *, window: int, pace: float) -> None:
    """Chat traffic of one member until ``stop``: numbered messages, at most ``window``
    unanswered at a time and one per ``pace`` seconds (a busy meeting, not a flood),
    while the member is connected and admitted."""
    while not stop.is_set():
        if member.gone:
            return
        if member.admitted and member.link.unanswered < window:
            await member.chat(member.next_chat_id())
            await asyncio.sleep(pace)  # the traffic's rate, not a wait for state
        else:
            await member.changed(pace)


async def busy_chat(
    talkers: list[Member], stop: asyncio.Event, *, window: int, pace: float, warmup: int, burst: int
) -> list[asyncio.Task[None]]:
    """The chat traffic before a fault: every talker's ``chatter`` started, awaited until
    each has ``warmup`` messages acknowledged, then ``burst`` more sent by each at once,
    in flight when the fault lands. The traffic's tasks, to gather once ``stop`` is set."""
    traffic = [asyncio.create_task(chatter(m, stop, window=window, pace=pace)) for m in talkers]
    warmed = await asyncio.gather(
        *(m.wait_until(lambda m: len(m.acknowledged()) >= warmup, 10) for m in talkers)
    )
    assert all(warmed), "the chat traffic before the kill"
    for member in talkers:
        for _ in range(burst):
            await member.chat(member.next_chat_id())
    return traffic


@dataclass
class Findings:
    """The acceptance points of one scenario: each checked, every failure kept, so one
    run names every point that does not hold (not only the first)."""

    failures: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what happened, to read a failure by

    def note(self, text: str) -> None:
        self.notes.append(text)

    def check(self, name: str, ok: bool, detail: object = "") -> bool:
        if ok:
            self.passed.append(name)
        else:
            self.failures.append(f"{name}: {detail}" if detail != "" else name)
        return ok

    def verdict(self) -> None:
        report = "\n- ".join(self.failures)
        context = "\n  ".join(self.notes)
        assert not self.failures, f"points that do not hold:\n- {report}\nrun:\n  {context}"
