"""The hub: one room runtime for one node and for many (SPEC §2, §3, §7).

Every room is a record in a ``RoomStore`` and every room's messages travel on a
``RoomBus`` (``callroom.runtime.ports``); the memory pair serves one node, the Redis
pair many. The hub runs the same three steps on either:

1. **Transition** (``callroom.runtime.transitions``): read the record, run a pure
   function of ``callroom.room.placement`` on it, compare-and-set the next version; the
   store publishes the update (every frame encoded once) on the room's bus.
2. **Apply**: every node hearing the room keeps the latest record as a replica (read by
   chat and signaling) and carries out the update's frames and closes for the members
   whose sockets it holds (``callroom.runtime.local``); the node that ran the transition
   too, when its own update comes back: one order for everyone, the bus's.
3. **No state change, one frame** (chat, ``delete_chat``, signaling): checked against the
   replica, then published as a ``Delivery``, behind every command this node ran before.

**Joining.** The hub subscribes to the room first (confirmed), then runs the join; the
session is installed when the join's update comes back, with its ``room_state`` first.
A member joining here while its older session is elsewhere: the update names the new
session and the node holding the old one closes it with 4009.

**Leaving, dropping, grace.** A socket that ends runs a leave or a drop (SPEC §2); a
drop of an admitted member records a grace owned by this node (``graces``), whose timer
then removes the member unless it came back. The store being down meanwhile: retried.

**The bus reconnecting** (Redis restarted, or the connection broke): ``resync`` reloads
every room held here, writing the replica back where the store lost it, until it
succeeds; readiness is 503 and joins to those rooms are refused meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

import structlog

from callroom.errors import (
    CloseCode,
    ErrorCode,
    HandshakeCode,
    HandshakeRefused,
    ProtocolError,
    StoreUnavailable,
)
from callroom.room import core, placement
from callroom.room.commands import AddChat, Command, Ping, Signal
from callroom.room.encode import PONG_FRAME_BYTES, encode_bytes
from callroom.room.keys import RoomKey, room_key
from callroom.room.model import Identity, Room, RoomRules, Send
from callroom.room.record import RoomRecord, session_id, session_node
from callroom.runtime.chat import AWAITED_CHAT_COMMANDS, RoomChat
from callroom.runtime.graces import Clock, GraceTimers, LoopClock
from callroom.runtime.local import LocalSessions
from callroom.runtime.messages import Delivery, Update
from callroom.runtime.peer import Peer
from callroom.runtime.ports import ImmediateRoomStore, Liveness, RoomBus, RoomStore
from callroom.runtime.replicas import Replicas
from callroom.runtime.resync import Resync
from callroom.runtime.transitions import Committed, Decide, Transitions
from callroom.server.audit import audit_command
from callroom.server.framing import text_frame

if TYPE_CHECKING:
    from callroom.auth.verifier import TokenVerifier
    from callroom.chat.base import AddFuture, ChatHistory
    from callroom.config import Settings
    from callroom.metrics import Metrics

log = structlog.get_logger(__name__)

PONG_BYTES = text_frame(PONG_FRAME_BYTES)
ECHO_TIMEOUT_SECONDS = 5.0  # a join's own update not back by then: refused, undone
# Commands that change nothing of the room: checked against the replica, run at once.
AT_ONCE: frozenset[type[Command]] = frozenset({Ping, Signal})


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class PendingJoin:
    """A join whose update has not come back yet."""

    peer: Peer
    echo: asyncio.Future[None]


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
        self.chat = RoomChat(self)
        self.resyncer = Resync(self)
        self._pending: dict[str, PendingJoin] = {}  # session → join awaiting its update
        self._tasks: set[asyncio.Task[None]] = set()
        bus.listen(self)
        # A store that never waits (one node) runs room commands and departures in the
        # frame's own turn; otherwise they wait for the store.
        self.at_once = isinstance(store, ImmediateRoomStore)
        # Commands the WebSocket module runs in the member's receive loop (they await
        # the store or the identity provider), in the order of its frames; every other
        # one runs at once (``run_now``), ``add_chat`` by ``submit_chat``.
        self.awaiting_commands: frozenset[type[Command]] = AWAITED_CHAT_COMMANDS | (
            frozenset()
            if self.at_once
            else frozenset(
                t for t in get_args(Command) if t not in AT_ONCE and t not in RoomChat.submitted
            )
        )

    # -- views kept for the admin API and the tests ------------------------------------

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
    def pending_joins(self) -> dict[str, PendingJoin]:
        """Joins whose update has not come back yet, by session."""
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
        self.resyncer.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.settings.SHUTDOWN_GRACE_SECONDS / 4)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
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
            return
        self.follow(key, record)

    def on_delivery(self, key: RoomKey, delivery: Delivery) -> None:
        self.local.deliver(key, delivery.recipients, delivery.text)

    def on_reconnect(self, restarted: bool) -> None:
        self.resyncer.begin(restarted)

    async def resync(self, restarted: bool) -> None:
        """Resync every room held here now, and wait for it (``callroom.runtime.resync``)."""
        self.resyncer.begin(restarted)
        await self.resyncer.wait()

    # The chat commands, started and finished by the WebSocket module.

    def submit_chat(self, peer: Peer, command: AddChat) -> AddFuture:
        return self.chat.submit(peer, command)

    def chat_stored(self, peer: Peer, done: AddFuture) -> None:
        self.chat.stored(peer, done)

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
        if not pending.echo.done():
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
                raise _unavailable() from None
            room = None if record is None else record.room
        core.check_join(room, identity, self.rules)

    def _require_settled(self, key: RoomKey) -> None:
        if self.resyncer.holds(key):
            raise _unavailable()  # being written back: a join now would open a new room

    async def enter(self, peer: Peer) -> None:
        """Add ``peer`` as the member's session; its ``room_state`` is queued first.

        Re-checks the room's rules (HandshakeRefused): the checks before awaited."""
        key = peer.room_key
        session = self.session_of(peer)
        identity = peer.identity
        pending = PendingJoin(peer, asyncio.get_running_loop().create_future())
        self._pending[session] = pending
        rules = self.rules

        def decide(record: RoomRecord | None) -> placement.Change:
            return placement.join(
                record, peer.kind, peer.room_id, identity, session, rules, now_ms()
            )

        committed = False
        try:
            self._require_settled(key)
            await self.bus.subscribe(key)
            await self.transitions.run(key, decide)
            committed = True
            self.liveness.hold_room(key, held=True)
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
            raise _unavailable() from None

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
        """SPEC §5: closed with 4001 when ``exp`` + leeway passes, unless refreshed."""
        if peer.expiry_handle is not None:
            peer.expiry_handle.cancel()
        delay = expires_at + self.settings.AUTH_LEEWAY_SECONDS - time.time()
        peer.expiry_handle = asyncio.get_running_loop().call_later(
            max(0.0, delay), peer.close, CloseCode.TOKEN_EXPIRED, "token expired"
        )

    # -- commands -------------------------------------------------------------------

    def room_of(self, peer: Peer, event: str | None = None) -> Room:
        """The room of ``peer``'s session, which must still hold its member's place."""
        room = self.replicas.room(peer.room_key)
        if room is None or peer.detached:
            # The room ended or this session was replaced while a frame was in flight.
            raise ProtocolError(ErrorCode.FORBIDDEN, "you are no longer in this room", event)
        return room

    def require_bus(self, event: str) -> None:
        """Refuse a chat message, a deletion or a signal while the bus is down: it would
        be stored (done) but its broadcast, the sender's answer included, never heard
        back. SPEC §3.3 ``unavailable`` instead: nothing is done, retry later."""
        if not self.bus.up:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                "the room state is unavailable; nothing was done, retry later",
                event,
            )

    def run_now(self, peer: Peer, command: Command) -> None:
        """``ping``, or signaling checked against the replica (SPEC §3.1: to the target
        only), published to the target's node behind this member's earlier frames."""
        if type(command) is Ping:
            peer.send(PONG_BYTES)
            return
        key = peer.room_key
        if type(command) not in AT_ONCE:  # a room command, on a store that never waits
            self._command_at_once(peer, command)
            return
        effects = core.handle(self.room_of(peer), peer.client_id, command, self.rules)
        self.require_bus(core.event_name(command))
        record = self.replicas.record(key)
        assert record is not None  # room_of found it
        sessions = record.sessions
        for action in effects.actions:
            if isinstance(action, Send):
                delivery = Delivery(action.recipients, encode_bytes(action.event, action.payload))
                nodes = {session_node(sessions[r]) for r in action.recipients if r in sessions}
                for node_id in nodes:
                    self.bus.publish_to_node(node_id, key, delivery)

    def _command_at_once(self, peer: Peer, command: Command) -> None:
        self.room_of(peer, core.event_name(command))
        cid = peer.client_id
        session = self.session_of(peer)
        rules = self.rules
        committed = self.transitions.run_at_once(
            peer.room_key, lambda record: placement.command(record, cid, session, command, rules)
        )
        if committed is not None:
            audit_command(cid, peer.room_key, command)  # SPEC §9: it took effect

    async def run_awaiting(self, peer: Peer, command: Command) -> None:
        """Run a command of ``awaiting_commands``; rule violations raise ProtocolError
        naming the command's event (SPEC §3.3)."""
        if type(command) in AWAITED_CHAT_COMMANDS:
            await self.chat.run(peer, command)
            return
        event = core.event_name(command)
        self.room_of(peer, event)  # this session is still in the room
        if self.resyncer.holds(peer.room_key):
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                "the room state is being restored; nothing was done, retry later",
                event,
            )
        cid = peer.client_id
        session = self.session_of(peer)
        rules = self.rules
        key = peer.room_key

        def decide(record: RoomRecord | None) -> placement.Change:
            return placement.command(record, cid, session, command, rules)

        try:
            committed = await self.transitions.run(key, decide)
        except StoreUnavailable:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                "the room state is unavailable; nothing was done, retry later",
                event,
            ) from None
        except ProtocolError as exc:
            if exc.event is None:
                exc.event = event
            raise
        if committed is not None:
            audit_command(cid, key, command)  # SPEC §9: it took effect
            await self.replicas.seen(key, committed.version)

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


def _unavailable() -> HandshakeRefused:
    return HandshakeRefused(HandshakeCode.UNAVAILABLE, "the room state is unavailable, retry later")
