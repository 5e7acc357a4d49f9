"""The hub: one room runtime for one node and for many (SPEC §2, §3, §7).

Rooms are records in a ``RoomStore``, their messages travel on a ``RoomBus``
(``runtime/ports.py``: memory for one node, Redis for many). A change is a transition
(``runtime/transitions.py``: a pure ``room/placement.py`` function inside a
compare-and-set that publishes its update); every node hearing the room applies the
update to its replica and its sockets (``runtime/local.py``): one order, the bus's. On
one node the store and bus never wait, so joins, commands and departures run in the
caller's turn (``at_once``). A join's session is installed when its update comes back
(``room_state`` first); after the bus reconnects, ``runtime/resync.py`` brings every
room held here back in step. docs/architecture.md walks a chat message and an offer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from callroom.errors import (
    CloseCode,
    HandshakeRefused,
    StoreUnavailable,
)
from callroom.room import core, placement
from callroom.room.commands import AddChat, Command
from callroom.room.keys import RoomKey, room_key
from callroom.room.model import Identity, Room, RoomRules
from callroom.room.record import RoomRecord, session_id
from callroom.runtime.chat import RoomChat
from callroom.runtime.commands import RoomCommands
from callroom.runtime.graces import Clock, GraceTimers, LoopClock
from callroom.runtime.local import LocalSessions
from callroom.runtime.messages import Delivery, Update
from callroom.runtime.peer import Peer, schedule_expiry
from callroom.runtime.ports import Liveness, RoomBus, RoomStore
from callroom.runtime.refusals import join_unavailable
from callroom.runtime.replicas import Replicas
from callroom.runtime.resync import Resync
from callroom.runtime.tasks import finish
from callroom.runtime.transitions import Committed, Decide, Transitions

if TYPE_CHECKING:
    from callroom.auth.verifier import TokenVerifier
    from callroom.chat.base import AddFuture, ChatHistory
    from callroom.config import Settings
    from callroom.metrics import Metrics

log = structlog.get_logger(__name__)

ECHO_TIMEOUT_SECONDS = 5.0  # a join's own update not back by then: refused, undone


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class PendingJoin:
    """A join whose update has not come back yet."""

    peer: Peer
    echo: asyncio.Future[None] | None  # None on one node: the update comes back at once


class Hub:
    """The rooms of this node, over a room store and a room bus."""

    def __init__(
        self,
        settings: Settings,
        history: ChatHistory,
        verifier: TokenVerifier,
        metrics: Metrics,
        *,
        node_id: str,
        store: RoomStore,
        bus: RoomBus,
        liveness: Liveness,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.history = history
        self.verifier = verifier
        self.metrics = metrics
        self.node_id = node_id
        self.store = store
        self.bus = bus
        self.liveness = liveness
        self.rules = RoomRules(
            lobby_enabled=settings.LOBBY_ENABLED,
            max_room_size=settings.MAX_ROOM_SIZE,
            max_screenshares=settings.MAX_SCREENSHARES,
        )
        self.local = LocalSessions(metrics)
        self.replicas = Replicas(metrics)
        self.transitions = Transitions(store, metrics)
        self.graces = GraceTimers(clock or LoopClock(), node_id, self._grace_over)
        # A store that never waits (one node) runs room commands and departures in the
        # frame's own turn; otherwise they wait for the store.
        self.at_once = self.transitions.immediate
        chat_parts = (history, verifier, bus, self.replicas, self.schedule_expiry)
        self.chat = RoomChat(*chat_parts, node_id=node_id, immediate=self.at_once)
        self.resyncer = Resync(
            store, self.replicas, self.local, liveness, follow=self.follow, lost=self.on_closed
        )
        self.commands = RoomCommands(
            node_id,
            self.rules,
            replicas=self.replicas,
            transitions=self.transitions,
            bus=bus,
            chat=self.chat,
            resync=self.resyncer,
            at_once=self.at_once,
        )
        # The commands the WebSocket module runs in the member's task.
        self.awaiting_commands = self.commands.awaiting
        self._pending: dict[str, PendingJoin] = {}  # session → join awaiting its update
        self._tasks: set[asyncio.Task[None]] = set()
        bus.listen(self)

    # -- views for the node, the admin API and the tests -------------------------------

    @property
    def connections(self) -> set[Peer]:
        return self.local.connections

    @property
    def idle(self) -> asyncio.Event:
        return self.local.idle

    @property
    def sessions(self) -> dict[RoomKey, dict[str, Peer]]:
        return self.local.by_room

    @property
    def rooms(self) -> dict[RoomKey, Room]:
        """The rooms this node holds a replica of (every open room, on one node)."""
        return self.replicas.rooms()

    @property
    def pending_joins(self) -> dict[str, PendingJoin]:  # by session
        return self._pending

    def session_of(self, peer: Peer) -> str:
        return session_id(self.node_id, peer.conn_id)

    # -- life -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.start()
        await self.bus.start()
        await self.liveness.start()

    async def stop(self) -> None:
        """After the sockets closed: finish the transitions under way (bounded by the
        node's grace), say goodbye (the others sweep this node's places at once)."""
        await self.resyncer.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.settings.SHUTDOWN_GRACE_SECONDS / 4)
        for task in list(self._tasks):
            await finish(task)  # a retrying leave or grace may sit in a Redis command
        # The graces this node owns are taken over by the node that sweeps it.
        self.graces.cancel_all()
        await self.liveness.stop()
        await self.bus.close()
        await self.store.close()

    async def ready(self) -> bool:
        """Whether the rooms can be used (``/readyz`` "bus" otherwise): the bus answers
        and every room held here is back in the store after a reconnect."""
        return not self.resyncer.running and await self.bus.ready()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the bus --------------------------------------------------------------------

    def on_update(self, key: RoomKey, update: Update) -> None:
        """A transition of a room this node hears: replica, joins, frames, closes."""
        fresh = self.replicas.advance(key, update)
        if update.joined is not None:
            self._joined(key, *update.joined)
        self.local.carry_out(key, update)
        if not fresh:
            return
        record = update.record
        if record is None:
            self.on_closed(key)
        elif self.at_once:  # one node: no other node takes places over; a member back
            self.graces.follow(key, record)  # from its grace stops its timer
        else:
            self.follow(key, record)

    def on_delivery(self, key: RoomKey, delivery: Delivery) -> None:
        self.local.deliver(key, delivery.recipients, delivery.text)
        if delivery.tag:  # a chat broadcast; this node's own answers its sender's add
            self.chat.echoed(delivery.tag)

    def on_reconnect(self, restarted: bool, keys: Collection[RoomKey] | None = None) -> None:
        self.resyncer.begin(restarted, keys)

    async def resync(self, restarted: bool) -> None:  # now, and wait for it
        self.resyncer.begin(restarted)
        await self.resyncer.wait()

    def follow(self, key: RoomKey, record: RoomRecord) -> None:
        """Act on the room's latest record: close sockets it no longer gives a place,
        time the graces it gives this node, stop hearing the room if nothing is left."""
        self.local.reconcile(key, record, self.node_id)
        if self.graces.follow(key, record):
            self.liveness.hold_room(key, held=True)
        self.release(key)

    def _joined(self, key: RoomKey, cid: str, session: str) -> None:
        """A session took ``cid``'s place: install it if it is ours; close an older one
        of ours (SPEC §2: one session per user and room, the older closed with 4009)."""
        old = self.local.of(key).get(cid)
        if old is not None and self.session_of(old) != session:
            del self.local.by_room[key][cid]
            old.detached = True
            old.close(CloseCode.REPLACED, "session replaced")
        pending = self._pending.pop(session, None)
        if pending is None:
            return
        peer = pending.peer
        self.local.install(key, peer)
        self.schedule_expiry(peer, peer.identity.expires_at)
        if pending.echo is not None and not pending.echo.done():
            pending.echo.set_result(None)

    def on_closed(self, key: RoomKey) -> None:
        """The room is gone (its members were closed by the update): forget it here."""
        self.local.detach_room(key)
        self.graces.cancel_room(key)
        self.replicas.drop(key)
        self.history.invalidate(key)
        self.chat.forget_room(key)
        self.release(key)

    def release(self, key: RoomKey) -> None:
        """Stop hearing a room once this node holds nothing of it: no socket, no join
        under way, no grace timer, no write-back pending."""
        if self.local.of(key) or self.graces.held(key) or self.resyncer.holds(key):
            return
        if any(p.peer.room_key == key for p in self._pending.values()):
            return
        self.local.by_room.pop(key, None)
        self.replicas.drop(key)
        self.bus.unsubscribe(key)
        self.liveness.hold_room(key, held=False)

    # -- membership -----------------------------------------------------------------

    async def precheck(self, kind: str, room_id: str, identity: Identity) -> None:
        """Refuse before the upgrade (SPEC §1: banned, room_locked, room_full)."""
        key = room_key(kind, room_id)
        self._require_settled(key)
        room = self.replicas.room(key)
        if room is None:
            try:
                _, record = await self.store.load(key)
            except StoreUnavailable:
                raise join_unavailable() from None
            room = None if record is None else record.room
        core.check_join(room, identity, self.rules)

    def _require_settled(self, key: RoomKey) -> None:
        if self.resyncer.holds(key):
            raise join_unavailable()  # being written back: a join now would open a new room

    async def enter(self, peer: Peer) -> None:
        """Add ``peer`` as the member's session; its ``room_state`` is queued first.

        Re-checks the room's rules (HandshakeRefused): the checks before awaited."""
        key = peer.room_key
        session = self.session_of(peer)
        identity = peer.identity
        echo = None if self.at_once else asyncio.get_running_loop().create_future()
        pending = self._pending[session] = PendingJoin(peer, echo)
        rules = self.rules

        def decide(record: RoomRecord | None) -> placement.Change:
            return placement.join(
                record, peer.kind, peer.room_id, identity, session, rules, now_ms()
            )

        committed = False
        try:
            if self.at_once:  # one node: the join's update is carried out in this call
                self.transitions.run_at_once(key, decide)
                return
            self._require_settled(key)
            await self.bus.subscribe(key)
            await self.transitions.run(key, decide)
            committed = True
            self.liveness.hold_room(key, held=True)
            assert pending.echo is not None
            if not pending.echo.done():
                await asyncio.wait_for(asyncio.shield(pending.echo), ECHO_TIMEOUT_SECONDS)
        except HandshakeRefused:
            self._pending.pop(session, None)
            self.release(key)
            raise
        except (StoreUnavailable, TimeoutError):
            self._pending.pop(session, None)
            if committed:  # in the record but not here: give the place back
                self.spawn(self._depart(key, self._departure(peer.client_id, session, leave=True)))
            self.release(key)
            raise join_unavailable() from None

    def ended(self, peer: Peer, client_close_code: int | None) -> None:
        """The socket is gone: a leave (client 1000) or a drop (anything else, SPEC §2)."""
        self.local.forget(peer)
        if peer.expiry_handle is not None:
            peer.expiry_handle.cancel()
        key = peer.room_key
        if peer.detached:
            self.release(key)
            return
        leave = client_close_code == CloseCode.NORMAL
        decide = self._departure(peer.client_id, self.session_of(peer), leave=leave)
        if self.at_once:
            self.own_graces(key, self.transitions.run_at_once(key, decide))
            self.release(key)
        else:
            self.spawn(self._depart(key, decide))

    def _departure(self, cid: str, session: str, *, leave: bool) -> Decide:
        until = now_ms() + int(self.settings.RECONNECT_GRACE_SECONDS * 1000)
        node_id = self.node_id

        def decide(record: RoomRecord | None) -> placement.Change | None:
            return placement.depart(
                record, cid, session, leave=leave, node_id=node_id, grace_until_ms=until
            )

        return decide

    async def _depart(self, key: RoomKey, decide: Decide) -> None:
        await self.resyncer.settled(key)  # a leave must meet the room's record
        self.own_graces(key, await self.transitions.retrying(key, decide))
        self.release(key)

    def own_graces(self, key: RoomKey, committed: Committed | None) -> None:
        """Time the graces a transition gave this node now, not when its update comes
        back: the room may no longer be heard here by then."""
        if committed is None or committed.change.effects.room_closed:
            return
        if self.graces.follow(key, committed.change.record):
            self.liveness.hold_room(key, held=True)

    def _grace_over(self, key: RoomKey, cid: str) -> None:
        self.spawn(self._expire(key, cid))

    async def _expire(self, key: RoomKey, cid: str) -> None:
        node_id = self.node_id
        try:
            await self.resyncer.settled(key)
            await self.transitions.retrying(
                key, lambda record: placement.expire_grace(record, cid, node_id)
            )
        finally:
            self.graces.done(key, cid)
            self.release(key)

    def schedule_expiry(self, peer: Peer, expires_at: float) -> None:
        schedule_expiry(peer, expires_at, self.settings.AUTH_LEEWAY_SECONDS)

    # -- commands (``callroom.runtime.commands``, ``callroom.runtime.chat``) -----------

    def run_now(self, peer: Peer, command: Command) -> None:
        self.commands.run_now(peer, command)

    async def run_awaiting(self, peer: Peer, command: Command) -> None:
        await self.commands.run_awaiting(peer, command)

    def submit_chat(self, peer: Peer, command: AddChat) -> AddFuture:
        return self.chat.submit(peer, command)

    def chat_stored(self, peer: Peer, done: AddFuture) -> None:
        self.chat.stored(peer, done)

    # -- the admin API (SPEC §4) ----------------------------------------------------

    async def find_room(self, key: RoomKey) -> Room | None:
        """The open room ``key`` as the store holds it (read it, do not change it)."""
        _, record = await self.store.load(key)
        return None if record is None else record.room

    async def all_rooms(self) -> list[Room]:
        records = await self.store.load_many(await self.store.open_rooms())
        return [record.room for record in records if record is not None]

    async def end(self, key: RoomKey) -> bool:
        """End a room (SPEC §4 DELETE): every member closed 4005; False when there is
        no such room."""
        return await self.transitions.run(key, placement.end) is not None

    # -- the sweep of dead nodes (SPEC §7) -------------------------------------------

    async def sweep(self, dead: str, keys: list[RoomKey]) -> None:
        """Take over what a dead node held: its members are dropped, its grace timers are
        ours now."""
        until = now_ms() + int(self.settings.RECONNECT_GRACE_SECONDS * 1000)
        node_id = self.node_id
        for key in keys:
            committed = await self.transitions.run(
                key, lambda record: placement.sweep(record, dead, node_id, until)
            )
            self.own_graces(key, committed)
        log.info("node_swept", dead=dead, rooms=len(keys))
