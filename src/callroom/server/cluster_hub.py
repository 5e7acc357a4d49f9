"""The hub of a node among many (SPEC §7): rooms kept in Redis, frames over room channels.

With ``REDIS_URL`` set, a room is one record in Redis (``callroom.cluster.wire.Shared``:
the core's ``Room``, which session holds each member's place, who owns each reconnect
grace timer). Any node may change it:

1. **Transition.** Read the record and its version, run the pure core on it (the same
   ``core`` functions as on one node), and compare-and-set the next version; the same
   Lua script publishes the *update* (new record, effects with every frame encoded once,
   the session that joined) on the room's channel. A conflict reads again and reruns.
   One node runs one transition of a room at a time (a lock per room), so conflicts only
   come from other nodes.
2. **Delivery.** Every node holding members of the room is subscribed to its channel.
   It keeps the latest record as a replica (``rooms``, read by chat and signaling) and
   carries out the update's effects for the members whose sockets it holds. The node
   that ran the transition does the same when its own update comes back: one order for
   everyone, the channel's.
3. **No state change, one frame** (chat, ``delete_chat``, signaling): checked against
   the replica, then published as a *delivery* on the channel, behind every room command
   this node called before (``callroom.cluster.link``'s writer keeps call order).

Commands that change the room therefore wait for Redis: they run in the member's receive
loop (``awaiting_commands``), in the order of its frames. ``ping`` and signaling still
run at once.

**Joining.** The node subscribes to the room's channel first (confirmed), then runs the
join; the connection is installed when the join's update comes back, with its
``room_state`` first, so every later frame of the room reaches it, none before. A user
joining on one node while its older session is on another: the update names the new
session, and the node holding the old one closes it with 4009.

**Leaving, dropping, grace.** A socket that ends runs a leave or a drop (SPEC §2); a
drop of an admitted member records a grace deadline owned by this node, whose timer
then removes the member unless it came back. Redis being down meanwhile: the transition
is retried until it goes through (bounded).

**Liveness.** Every node refreshes a key with a time to live of
``HEARTBEAT_INTERVAL_SECONDS`` every third of it, and looks for nodes whose key expired.
One of the living claims each dead node and *sweeps* it: in every room the dead node
held, its sessions are dropped (so its admitted members keep their place for the grace,
owned now by the sweeper, and its waiting members go at once) and its grace timers are
taken over. A node that dies is therefore swept within 4/3 of the interval, inside the
2x interval of SPEC §7. A node that stops cleanly deletes its key first, so it is swept
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

import structlog

from callroom.cluster.link import REDIS_ERRORS, RedisLink, finish
from callroom.cluster.wire import (
    Delivery,
    Shared,
    close_action,
    decode_message,
    delivery_message,
    dump_shared,
    load_shared,
    session_node,
    update_message,
)
from callroom.errors import (
    CloseCode,
    ErrorCode,
    HandshakeCode,
    HandshakeRefused,
    ProtocolError,
    StoreUnavailable,
)
from callroom.room import core
from callroom.room.commands import AddChat, Command, DeleteChat, Ping, Signal
from callroom.room.encode import encode_bytes, encode_split_bytes
from callroom.room.model import Effects, Identity, Room, Send
from callroom.server.audit import audit_command
from callroom.server.connection import Connection, is_leave
from callroom.server.framing import text_frame
from callroom.server.hub import AWAITING_COMMANDS, PONG_BYTES, Hub, _deliver, now_ms

if TYPE_CHECKING:
    from callroom.auth.verifier import TokenVerifier
    from callroom.chat.base import AddFuture, ChatHistory
    from callroom.config import Settings
    from callroom.metrics import Metrics

log = structlog.get_logger(__name__)

CAS_ATTEMPTS = 50
ECHO_TIMEOUT_SECONDS = 5.0  # a join's own update not back by then: refused, undone
RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 8.0, 16.0, 16.0)

# Commands that change nothing of the room: checked against the replica, run at once.
_AT_ONCE: frozenset[type[Command]] = frozenset({Ping, Signal})


def new_node_id() -> str:
    """A node id nobody else has: host name, process id and 48 random bits."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"{host[:40]}-{os.getpid()}-{secrets.token_hex(6)}"


@dataclass(slots=True)
class Change:
    """What a transition decided: the record to write and the effects to publish."""

    shared: Shared
    effects: Effects
    joined: tuple[str, str] | None = None
    version: int = 0  # set once written


Decide = Callable[[Shared | None], Change | None]


@dataclass(slots=True)
class _Pending:
    """A join whose update has not come back yet."""

    conn: Connection
    echo: asyncio.Future[None]


@dataclass(slots=True)
class _RoomLocks:
    """One transition of a room at a time on this node; a lock exists while in use."""

    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> Any:
        lock = self.locks.get(key)
        if lock is None:
            lock = self.locks[key] = asyncio.Lock()
        self.users[key] = self.users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self.users[key] -= 1
            if not self.users[key]:
                del self.users[key]
                del self.locks[key]


class ClusterHub(Hub):
    """Rooms shared with the other nodes through Redis (SPEC §7)."""

    # Every command that changes the room waits for Redis (module docstring).
    awaiting_commands = AWAITING_COMMANDS | frozenset(
        t for t in get_args(Command) if t not in _AT_ONCE and t is not AddChat
    )

    def __init__(
        self,
        settings: Settings,
        history: ChatHistory,
        verifier: TokenVerifier,
        metrics: Metrics,
        *,
        node_id: str | None = None,
    ) -> None:
        super().__init__(settings, history, verifier, metrics)
        assert settings.REDIS_URL is not None
        self.node_id = node_id or new_node_id()
        self.link = RedisLink(
            settings.REDIS_URL,
            self.node_id,
            on_message=self.on_message,
            on_resync=self.resync,
            prefix=settings.REDIS_PREFIX,
            metrics=metrics.redis,
        )
        self.shared: dict[str, Shared] = {}  # replicas of the rooms this node is in
        self.versions: dict[str, int] = {}
        self._pending: dict[str, _Pending] = {}  # session → join awaiting its update
        self._locks = _RoomLocks()
        self._tasks: set[asyncio.Task[None]] = set()
        self._liveness: asyncio.Task[None] | None = None
        # Callers waiting until this node's replica of a room reached a version.
        self._catching_up: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}

    # -- life -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.link.start()
        self._liveness = asyncio.create_task(self._liveness_loop())

    async def stop(self) -> None:
        """After the sockets closed: finish the transitions under way (bounded by the
        node's grace), say goodbye (the others sweep this node's places at once)."""
        if self._liveness is not None:
            await finish(self._liveness)  # not a bare cancel(): see link.finish
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.settings.SHUTDOWN_GRACE_SECONDS / 4)
        for task in list(self._tasks):
            await finish(task)  # a retrying leave or grace may sit in a Redis command
        # The graces this node owns are taken over by the node that sweeps it.
        for timer in self._grace.values():
            timer.cancel()
        self._grace.clear()
        with contextlib.suppress(*REDIS_ERRORS):
            await asyncio.wait_for(self.link.goodbye(), timeout=1)
        await self.link.close()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def session_of(self, conn: Connection) -> str:
        return f"{self.node_id}/{conn.conn_id}"

    async def ready(self) -> bool:
        return await self.link.ping()

    # -- transitions ----------------------------------------------------------------

    async def transition(self, key: str, decide: Decide) -> Change | None:
        """Run ``decide`` on the room's record and write what it returns, atomically
        (compare-and-set on the version, retried on conflict). ``decide`` may raise to
        refuse (nothing is written) or return None (nothing to write). The change's
        ``version`` is the one written."""
        async with self._locks.hold(key):
            for _ in range(CAS_ATTEMPTS):
                version, record = await self.link.load(key)
                change = decide(None if record is None else load_shared(record))
                if change is None:
                    return None
                shared = change.shared
                room = shared.room
                # Places of members gone (kicked, denied, left) are freed with them.
                for cid in [c for c in shared.sessions if c not in room.members]:
                    del shared.sessions[cid]
                for cid in [c for c in shared.graces if c not in room.members]:
                    del shared.graces[cid]
                closed = change.effects.room_closed
                message = update_message(
                    version + 1, None if closed else shared, change.effects, change.joined
                )
                written = None if closed else dump_shared(shared)
                if await self.link.cas(key, version, written, message):
                    change.version = version + 1
                    if record is None and not closed:  # the room is new
                        self.link.index_room(key, open_=True)
                        self.metrics.rooms_created.inc()
                    if closed:
                        self.link.index_room(key, open_=False)
                        self.metrics.rooms_closed.inc()
                    return change
                if self.metrics.redis is not None:  # another node changed the room first
                    self.metrics.redis.cas_retries.inc()
        log.warning("room_transition_contended", room=key, attempts=CAS_ATTEMPTS)
        raise StoreUnavailable("redis")

    async def _retrying(self, key: str, decide: Decide) -> Change | None:
        """A transition that must happen (a leave, a grace, a sweep): retried while Redis
        is down, for about a minute."""
        for delay in (*RETRY_DELAYS, None):
            try:
                return await self.transition(key, decide)
            except StoreUnavailable:
                if delay is None:
                    log.error("room_transition_given_up", room=key)
                    return None
                await asyncio.sleep(delay)
        return None  # pragma: no cover - the loop returns

    # -- the room's channel ---------------------------------------------------------

    def on_message(self, key: str, data: bytes) -> None:
        """A message on the channel of a room this node is subscribed to."""
        message = decode_message(data)
        if isinstance(message, Delivery):
            self.metrics.messages_sent.inc(
                _deliver(self.sessions.get(key, {}), message.recipients, text_frame(message.frame))
            )
            return
        fresh = message.version > self.versions.get(key, 0)
        shared = message.shared
        if fresh:
            self.versions[key] = message.version
            self._caught_up(key, message.version)
            if shared is not None:
                self.shared[key] = shared
                self.rooms[key] = shared.room
                self.metrics.rooms_active.set(len(self.rooms))
        sessions = self.sessions.setdefault(key, {})
        if message.joined is not None:
            self._joined(key, sessions, *message.joined)
        sent = 0
        for action in message.actions:
            tag = action[0]
            if tag == "s":
                sent += _deliver(sessions, action[1], text_frame(action[2].encode()))
            elif tag == "v":
                target = sessions.get(action[1])
                if target is not None:
                    tail = message.tails[action[3]]
                    target.send(text_frame(encode_split_bytes("room_state", action[2], tail)))
                    sent += 1
            else:
                close = close_action(action)
                target = sessions.pop(close.client_id, None)
                if target is not None:
                    target.detached = True
                    target.close(close.code, close.reason)  # counted at its end
        if sent:
            self.metrics.messages_sent.inc(sent)
        if fresh and shared is None:
            self._closed(key)
        elif fresh and shared is not None:
            self._reconcile(key, shared)
            if not self.sessions.get(key):
                self._release(key)

    def _caught_up(self, key: str, version: int) -> None:
        waiting = self._catching_up.get(key)
        if not waiting:
            return
        still = []
        for wanted, future in waiting:
            if wanted <= version:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((wanted, future))
        if still:
            self._catching_up[key] = still
        else:
            del self._catching_up[key]

    async def _seen(self, key: str, version: int) -> None:
        """Wait (at most ``ECHO_TIMEOUT_SECONDS``) until this node has carried out the
        room's update ``version``: a member's next frame then meets the room as its
        command left it, as on one node (e.g. a signal to the member just admitted)."""
        if self.versions.get(key, 0) >= version or key not in self.shared:
            return
        future = asyncio.get_running_loop().create_future()
        self._catching_up.setdefault(key, []).append((version, future))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, ECHO_TIMEOUT_SECONDS)

    def _joined(self, key: str, sessions: dict[str, Connection], cid: str, session: str) -> None:
        """A session took ``cid``'s place: install it if it is ours; close an older one
        of ours (SPEC §2: one session per user and room, the older closed with 4009)."""
        old = sessions.get(cid)
        if old is not None and self.session_of(old) != session:
            del sessions[cid]
            old.detached = True
            old.close(CloseCode.REPLACED, "session replaced")
        pending = self._pending.pop(session, None)
        if pending is None:
            return
        conn = pending.conn
        sessions[cid] = conn
        self.connections.add(conn)
        self.idle.clear()
        grace = self._grace.pop((key, cid), None)
        if grace is not None:
            grace.cancel()
        self.schedule_expiry(conn, conn.identity.expires_at)
        if not pending.echo.done():
            pending.echo.set_result(None)

    def _reconcile(self, key: str, shared: Shared) -> None:
        """Close our sockets whose place the record no longer gives them (taken by a
        newer session, or swept while this node could not reach Redis); stop the grace
        timers the record no longer gives us (the member came back, maybe elsewhere)."""
        for timer_key in [k for k in self._grace if k[0] == key]:
            owner = shared.graces.get(timer_key[1])
            if owner is None or owner[0] != self.node_id:
                self._grace.pop(timer_key).cancel()
        sessions = self.sessions.get(key, {})
        for cid, conn in list(sessions.items()):
            holder = shared.sessions.get(cid)
            if holder != self.session_of(conn):
                del sessions[cid]
                conn.detached = True
                if holder is None:
                    conn.close(CloseCode.GOING_AWAY, "session lost: reconnect")
                else:
                    conn.close(CloseCode.REPLACED, "session replaced")

    def _closed(self, key: str) -> None:
        """The room is gone (its members were closed by the update): forget it here."""
        for conn in self.sessions.pop(key, {}).values():
            conn.detached = True
        for timer in [k for k in self._grace if k[0] == key]:
            self._grace.pop(timer).cancel()
        self._drop_replica(key)
        self.history.invalidate(key)
        self._release(key)

    def _drop_replica(self, key: str) -> None:
        for _, future in self._catching_up.pop(key, []):
            if not future.done():
                future.set_result(None)  # nothing more of this room will be seen here
        self.rooms.pop(key, None)
        self.shared.pop(key, None)
        self.versions.pop(key, None)
        self.metrics.rooms_active.set(len(self.rooms))

    def _release(self, key: str) -> None:
        """Stop hearing a room once this node holds nothing of it: no socket, no join
        under way, no grace timer."""
        if self.sessions.get(key):
            return
        if any(p.conn.room_key == key for p in self._pending.values()):
            return
        if any(k == key for k, _ in self._grace):
            return
        self.sessions.pop(key, None)
        self._drop_replica(key)
        self.link.unsubscribe(key)
        self.link.hold_room(key, held=False)

    async def resync(self, restarted: bool) -> None:
        """After the subscriber reconnected: read every room held again (updates may
        have been missed) and act on what changed. ``restarted``: Redis is another
        process now (its run id changed): what it holds is the truth even where its
        versions are lower than the replicas' (it may have restarted empty)."""
        for key in list(self.shared):
            try:
                version, record = await self.link.load(key)
            except StoreUnavailable:
                return
            if version <= self.versions.get(key, 0) and not restarted:
                continue  # nothing missed, or newer updates already carried out
            self.versions[key] = version
            if record is None:
                for conn in self.sessions.get(key, {}).values():
                    conn.close(CloseCode.GOING_AWAY, "room state lost: reconnect")
                self._closed(key)
                continue
            shared = load_shared(record)
            self.shared[key] = shared
            self.rooms[key] = shared.room
            self._reconcile(key, shared)

    # -- membership -----------------------------------------------------------------

    async def precheck(self, kind: str, room_id: str, identity: Identity) -> None:
        key = f"{kind}:{room_id}"
        room = self.rooms.get(key)
        if room is None:
            try:
                _, record = await self.link.load(key)
            except StoreUnavailable:
                raise _unavailable() from None
            room = None if record is None else load_shared(record).room
        core.check_join(room, identity, self.rules)

    async def enter(self, conn: Connection) -> None:
        key = conn.room_key
        cid = conn.client_id
        session = self.session_of(conn)
        identity = conn.identity
        pending = _Pending(conn, asyncio.get_running_loop().create_future())
        self._pending[session] = pending

        def decide(shared: Shared | None) -> Change:
            if shared is None:
                shared = Shared(core.new_room(conn.kind, conn.room_id, now_ms()), {}, {})
            effects = core.join(shared.room, identity, self.rules)  # may refuse
            shared.sessions[cid] = session
            shared.graces.pop(cid, None)
            return Change(shared, effects, joined=(cid, session))

        committed = False
        try:
            await self.link.subscribe(key)
            await self.transition(key, decide)
            committed = True
            self.link.hold_room(key, held=True)
            await asyncio.wait_for(asyncio.shield(pending.echo), ECHO_TIMEOUT_SECONDS)
        except HandshakeRefused:
            self._pending.pop(session, None)
            self._release(key)
            raise
        except (StoreUnavailable, TimeoutError):
            self._pending.pop(session, None)
            if committed:  # in the record but not here: give the place back
                self._spawn(self._depart(key, cid, session, leave=True))
            self._release(key)
            raise _unavailable() from None

    def ended(self, conn: Connection, client_close_code: int | None) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self.idle.set()
        if conn.expiry_handle is not None:
            conn.expiry_handle.cancel()
        key = conn.room_key
        if conn.detached:
            self._release(key)
            return
        sessions = self.sessions.get(key)
        if sessions is not None and sessions.get(conn.client_id) is conn:
            del sessions[conn.client_id]
        leave = is_leave(client_close_code)
        self._spawn(self._depart(key, conn.client_id, self.session_of(conn), leave=leave))

    async def _depart(self, key: str, cid: str, session: str, *, leave: bool) -> None:
        """A leave or a drop of the member whose place ``session`` holds (SPEC §2)."""
        grace_ms = int(self.settings.RECONNECT_GRACE_SECONDS * 1000)

        def decide(shared: Shared | None) -> Change | None:
            if shared is None or shared.sessions.get(cid) != session:
                return None  # replaced meanwhile, or already gone
            del shared.sessions[cid]
            room = shared.room
            if leave:
                return Change(shared, core.leave(room, cid))
            effects = core.drop(room, cid)
            member = room.members.get(cid)
            if member is not None and not member.connected:
                shared.graces[cid] = (self.node_id, now_ms() + grace_ms)
            return Change(shared, effects)

        change = await self._retrying(key, decide)
        if change is not None:
            self._own_graces(key, change.shared)
        self._release(key)

    def _own_graces(self, key: str, shared: Shared) -> None:
        """Start a timer for every grace of the room this node owns and does not time."""
        for cid, (owner, until_ms) in shared.graces.items():
            if owner == self.node_id and (key, cid) not in self._grace:
                delay = max(0.0, until_ms / 1000 - time.time())
                self._grace[(key, cid)] = asyncio.get_running_loop().call_later(
                    delay, self._grace_over, key, cid
                )
                self.link.hold_room(key, held=True)

    def _grace_over(self, key: str, cid: str) -> None:
        self._spawn(self._expire(key, cid))

    async def _expire(self, key: str, cid: str) -> None:
        def decide(shared: Shared | None) -> Change | None:
            if shared is None or shared.graces.get(cid, ("", 0))[0] != self.node_id:
                return None
            del shared.graces[cid]
            return Change(shared, core.grace_expired(shared.room, cid))

        try:
            await self._retrying(key, decide)
        finally:
            self._grace.pop((key, cid), None)
            self._release(key)

    # -- commands -------------------------------------------------------------------

    def run_now(self, conn: Connection, command: Command) -> None:
        """``ping``, or signaling checked against the replica (SPEC §3.1: to the target
        only), published to the target's node behind this member's earlier frames."""
        if type(command) is Ping:
            conn.send(PONG_BYTES)
            return
        key = conn.room_key
        effects = core.handle(self._room(conn), conn.client_id, command, self.rules)
        self._require_channel(core.event_name(command))
        sessions = self.shared[key].sessions
        for action in effects.actions:
            if isinstance(action, Send):
                # To the nodes holding the recipients only (a signal has one): the
                # others would read and drop it.
                message = delivery_message(
                    action.recipients, encode_bytes(action.event, action.payload)
                )
                nodes = {session_node(sessions[r]) for r in action.recipients if r in sessions}
                for node_id in nodes:
                    self.link.publish_to_node(node_id, key, message)

    async def run_awaiting(self, conn: Connection, command: Command) -> None:
        if type(command) in AWAITING_COMMANDS:
            if type(command) is DeleteChat:
                self._require_channel("delete_chat")
            await super().run_awaiting(conn, command)
            return
        self._room(conn)  # this session is still in the room
        cid = conn.client_id
        session = self.session_of(conn)

        def decide(shared: Shared | None) -> Change:
            if shared is None or shared.sessions.get(cid) != session:
                raise ProtocolError(ErrorCode.FORBIDDEN, "you are no longer in this room")
            return Change(shared, core.handle(shared.room, cid, command, self.rules))

        try:
            change = await self.transition(conn.room_key, decide)
        except StoreUnavailable:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                "the room state is unavailable; nothing was done, retry later",
                core.event_name(command),
            ) from None
        if change is not None:
            audit_command(cid, conn.room_key, command)  # SPEC §9: it took effect
            await self._seen(conn.room_key, change.version)

    def broadcast(self, key: str, recipients: tuple[str, ...], text: bytes) -> None:
        self.link.publish(key, delivery_message(recipients, text))

    def submit_chat(self, conn: Connection, command: AddChat) -> AddFuture:
        self._require_channel("add_chat")
        return super().submit_chat(conn, command)

    def _require_channel(self, event: str) -> None:
        """Refuse a chat message, a deletion or a signal while the room's channel is down.

        With the subscriber disconnected from Redis, a chat message would be stored (a
        deletion done) but its broadcast, the sender's own answer included, never heard
        back, and a signal dropped: the sender would get no answer at all. SPEC §3.3
        ``unavailable`` instead: nothing is done, the sender retries later (a chat retry
        with the same chatId is safe)."""
        if not self.link.subscribed:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                "the room state is unavailable; nothing was done, retry later",
                event,
            )

    # -- the admin API --------------------------------------------------------------

    async def find_room(self, key: str) -> Room | None:
        _, record = await self.link.load(key)
        return None if record is None else load_shared(record).room

    async def all_rooms(self) -> list[Room]:
        keys = await self.link.open_rooms()
        records = await self.link.load_many(keys)
        return [load_shared(record).room for record in records if record is not None]

    async def end(self, key: str) -> bool:
        def decide(shared: Shared | None) -> Change | None:
            if shared is None:
                return None
            return Change(shared, core.end_room(shared.room))

        return await self.transition(key, decide) is not None

    # -- liveness -------------------------------------------------------------------

    async def _liveness_loop(self) -> None:
        interval = self.settings.HEARTBEAT_INTERVAL_SECONDS
        while True:
            try:
                await self.link.beat(interval)
                for dead in await self.link.dead_nodes():
                    if await self.link.claim(dead, max(30.0, 4 * interval)):
                        await self.sweep(dead)
            except (*REDIS_ERRORS, StoreUnavailable) as exc:
                log.warning("liveness_failed", error=str(exc))
            await asyncio.sleep(interval / 3)

    async def sweep(self, dead: str) -> None:
        """Take over what a dead node held (SPEC §7): its members are dropped, its grace
        timers are ours now."""
        grace_ms = int(self.settings.RECONNECT_GRACE_SECONDS * 1000)

        def decide(shared: Shared | None) -> Change | None:
            if shared is None:
                return None
            room = shared.room
            effects = Effects()
            changed = False
            for cid, session in list(shared.sessions.items()):
                if session_node(session) != dead:
                    continue
                changed = True
                del shared.sessions[cid]
                dropped = core.drop(room, cid)
                effects.actions.extend(dropped.actions)
                effects.room_closed = effects.room_closed or dropped.room_closed
                member = room.members.get(cid)
                if member is not None and not member.connected:
                    shared.graces[cid] = (self.node_id, now_ms() + grace_ms)
            for cid, (owner, until_ms) in list(shared.graces.items()):
                if owner == dead:
                    changed = True
                    shared.graces[cid] = (self.node_id, until_ms)
            return Change(shared, effects) if changed else None

        rooms = await self.link.rooms_of(dead)
        for key in rooms:
            change = await self.transition(key, decide)
            if change is not None and not change.effects.room_closed:
                self._own_graces(key, change.shared)
        await self.link.forget(dead)
        log.info("node_swept", dead=dead, rooms=len(rooms))


def _unavailable() -> HandshakeRefused:
    return HandshakeRefused(HandshakeCode.UNAVAILABLE, "the room state is unavailable, retry later")


__all__ = ["ClusterHub", "new_node_id"]
