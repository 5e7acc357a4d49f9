"""The node's Redis connections (SPEC §7): shared room records, room channels, liveness.

**Keys.** Every key and channel starts with ``REDIS_PREFIX`` (default ``callroom``, shown
as ``P`` here; SPEC §9: deployments sharing one Redis must not see each other, and
pub/sub ignores database numbers). Every key of one room carries the room's hash tag
(``{kind:roomId}``), so the design holds on a Redis Cluster (SPEC §7): ``P:{k}:room`` is
a hash with the record's version ``v`` and the record ``s`` (``callroom.cluster.wire``),
and ``P:{k}:bus`` is its channel. Across rooms: ``P:rooms`` (the set of open rooms, for
the admin API), ``P:nodes`` (node ids), ``P:node:<id>`` (a node's liveness, with a time
to live), ``P:node:<id>:rooms`` (rooms where a node holds sessions or grace timers, for
the sweep after it dies), ``P:node:<id>:bus`` (deliveries to one node) and
``P:sweep:<id>`` (the claim on a dead node's sweep).

**Order.** Room commands (loads, compare-and-sets, deliveries) go through one connection
in the order they were called (``_Writer``): whatever is queued while the previous batch
is in flight goes in one pipeline, one round trip. A member's chat message published
before its next command is therefore seen by every node before that command's update:
the room's channel carries everything in the order the nodes called Redis.

**Compare-and-set.** ``cas`` is one Lua script: if the room's version is the one the
transition read, write the new record and publish the update on the room's channel; so
the channel carries the updates in version order, each exactly once.

**The subscriber** is its own connection: SUBSCRIBE and UNSUBSCRIBE as the node gains and
loses members in a room, and a reader task that hands every message to the hub. When the
connection breaks it reconnects, subscribes again and asks the hub to reload every room
it holds (messages sent meanwhile are lost, the records are not).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection

from callroom.errors import StoreUnavailable
from callroom.metrics import RedisMetrics

log = structlog.get_logger(__name__)

PREFIX = "callroom"
ROOMS_INDEX = f"{PREFIX}:rooms"
NODES = f"{PREFIX}:nodes"
# A closed room's record keeps its version for a day, so versions never repeat for a
# key while a node may still hold an old replica; then it expires.
CLOSED_RECORD_MS = 86_400_000
WRITE_BATCH = 512
WRITE_TIMEOUT_SECONDS = 5.0  # a batch's write and replies; then Redis counts as down
SUBSCRIBE_TIMEOUT_SECONDS = 5.0
RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)  # then 2 s between attempts (SPEC §6: 10 s)
REDIS_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)

# KEYS[1] room hash; ARGV: expected version, new version, record ('' = closed), channel,
# message. The version of a missing room is 0.
CAS_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'v') or '0'
if current ~= ARGV[1] then return 0 end
if ARGV[3] == '' then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', '')
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
  redis.call('PERSIST', KEYS[1])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""


def room_hash(key: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:{{{key}}}:room"


def room_channel(key: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:{{{key}}}:bus"


def node_channel(node_id: str, prefix: str = PREFIX) -> str:
    """The channel of deliveries addressed to one node (signaling: one recipient)."""
    return f"{prefix}:node:{node_id}:bus"


def node_key(node_id: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:node:{node_id}"


def node_rooms_key(node_id: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:node:{node_id}:rooms"


async def finish(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for its end, cancelling it again while it runs on.

    One ``cancel()`` is not enough: redis-py's socket timeout (an ``asyncio.wait_for`` on
    Python 3.11) swallows a cancellation that lands as a command completes, and the task
    carries on. A liveness loop would then beat forever: the stopping node would wait
    for it until its shutdown grace ran out and never say goodbye (the others would
    take it for alive and keep its members' places)."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.05)
    if not task.cancelled():
        task.exception()  # retrieved: the task's own end, nothing left to report


@dataclass(slots=True)
class _Command:
    name: str
    packed: bytes  # the command in RESP
    future: asyncio.Future[Any] | None


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP, the Redis protocol: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = arg
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


def pack_publish(channel: bytes, message: bytes) -> bytes:
    """``pack(("PUBLISH", channel, message))`` in one step: the command of every chat
    message and signal."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(channel),
        channel,
        len(message),
        message,
    )


@dataclass(slots=True)
class _Writer:
    """Room commands, in call order, pipelined over one connection.

    Whatever is queued while a batch is in flight goes out as the next batch: one write
    of the commands packed here, then their replies read in order (hiredis parses them).
    redis-py's ``Pipeline`` did the same at several times the CPU per command
    (docs/performance.md, "Many nodes").
    """

    pool: ConnectionPool
    metrics: RedisMetrics | None = None
    queue: deque[_Command] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    connection: AbstractConnection | None = None
    in_flight: list[_Command] = field(default_factory=list)
    dropped: bool = False  # a connection was lost: the next one is a reconnect

    def call(self, *args: Any, answer: bool = True) -> asyncio.Future[Any] | None:
        return self.call_packed(args[0], pack(args), answer=answer)

    def call_packed(
        self, name: str, packed: bytes, *, answer: bool = True
    ) -> asyncio.Future[Any] | None:
        if self.closed:  # the node stops: a publish is dropped, a question fails
            if answer:
                raise StoreUnavailable("redis")
            return None
        future = asyncio.get_running_loop().create_future() if answer else None
        self.queue.append(_Command(name, packed, future))
        self.wake.set()
        return future

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                count = min(len(self.queue), WRITE_BATCH)
                self.in_flight = [self.queue.popleft() for _ in range(count)]
                await self._send(self.in_flight)
                self.in_flight = []

    async def _send(self, batch: list[_Command]) -> None:
        results: list[Any] = []
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                connection = self.connection
                if connection is None:
                    connection = self.pool.make_connection()  # type: ignore[no-untyped-call]
                    await connection.connect()
                    self.connection = connection
                    if self.dropped and self.metrics is not None:
                        self.metrics.reconnects.inc()
                    self.dropped = False
                packed = b"".join([command.packed for command in batch])
                await connection.send_packed_command(packed, check_health=False)
                for _ in batch:
                    try:
                        results.append(await connection.read_response(disable_decoding=True))
                    except redis_errors.ResponseError as exc:  # this command's own error
                        results.append(exc)
        except (*REDIS_ERRORS, TimeoutError) as exc:
            log.warning("redis_write_failed", error=str(exc), commands=len(batch))
            await self._drop_connection()
            self.dropped = True
            self._count_lost(batch)
            _fail(batch)
            return
        for command, result in zip(batch, results, strict=True):
            future = command.future
            if isinstance(result, Exception):
                log.warning("redis_command_failed", command=command.name, error=str(result))
                self._count_lost((command,))
                if future is not None and not future.done():
                    future.set_exception(StoreUnavailable("redis"))
            elif future is not None and not future.done():
                future.set_result(result)

    def _count_lost(self, commands: Iterable[_Command]) -> None:
        """``callroom_redis_publish_failures_total``: chat messages, signals, deliveries
        that Redis did not take (their senders were answered already)."""
        if self.metrics is not None:
            lost = sum(1 for command in commands if command.name == "PUBLISH")
            if lost:
                self.metrics.publish_failures.inc(lost)

    async def _drop_connection(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)

    async def close(self) -> None:
        """The link closes: every command queued or in flight fails, every later one too."""
        self.closed = True
        _fail(self.in_flight)
        _fail(self.queue)
        self.queue.clear()
        await self._drop_connection()


def _fail(commands: Iterable[_Command]) -> None:
    for command in commands:
        if command.future is not None and not command.future.done():
            command.future.set_exception(StoreUnavailable("redis"))


class RedisLink:
    """Everything the node says to Redis and hears from it."""

    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        on_message: Callable[[str, bytes], None],
        on_resync: Callable[[bool], Awaitable[None]],
        prefix: str = PREFIX,
        metrics: RedisMetrics | None = None,
    ) -> None:
        self.node_id = node_id
        self.prefix = prefix
        self._metrics = metrics
        self._rooms_index = f"{prefix}:rooms"
        self._nodes = f"{prefix}:nodes"
        # Named connections: `CLIENT LIST` tells an operator which node holds which.
        self._redis: Redis = Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, client_name=f"callroom:{node_id}"
        )
        self._sub_pool: ConnectionPool = ConnectionPool.from_url(
            url, socket_connect_timeout=2, client_name=f"callroom-sub:{node_id}"
        )
        self._writer = _Writer(
            ConnectionPool.from_url(
                url, socket_connect_timeout=2, client_name=f"callroom-rooms:{node_id}"
            ),
            metrics,
        )
        self._on_message = on_message
        self._on_resync = on_resync
        self._sub: AbstractConnection | None = None
        self._sub_lock = asyncio.Lock()
        self._channels: dict[str, asyncio.Future[None]] = {}  # key → subscribe confirmed
        self._keys: dict[bytes, str] = {}  # room channel → room key, for every subscribed
        self._own_channel = node_channel(node_id, prefix).encode()
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()  # UNSUBSCRIBEs being sent
        self.subscribed = False  # the subscriber connection is up
        self._run_id: str | None = None  # of the Redis process last connected to
        if metrics is not None:
            metrics.up.set_function(lambda: float(self.subscribed))

    # -- life -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer and the subscriber; Redis being down does not stop this."""
        self._tasks.append(asyncio.create_task(self._writer.run()))
        self._tasks.append(asyncio.create_task(self._subscriber()))

    async def close(self) -> None:
        for task in [*self._tasks, *self._sends]:
            await finish(task)
        self._tasks.clear()
        await self._writer.close()
        for future in self._channels.values():
            if not future.done():
                future.set_exception(StoreUnavailable("redis"))
        if self._sub is not None:
            await self._sub.disconnect()
        await self._sub_pool.aclose()
        await self._redis.aclose()

    async def ping(self) -> bool:
        """Whether Redis answers and the subscriber is connected (``/readyz``)."""
        try:
            await asyncio.wait_for(self._redis.ping(), timeout=2)
        except (*REDIS_ERRORS, TimeoutError):
            return False
        return self.subscribed

    # -- rooms ----------------------------------------------------------------------

    async def load(self, key: str) -> tuple[int, bytes | None]:
        """The room's version and record (None: no open room)."""
        future = self._writer.call("HMGET", room_hash(key, self.prefix), "v", "s")
        assert future is not None
        version, record = await future
        return int(version or 0), (record or None)

    async def load_many(self, keys: list[str]) -> list[bytes | None]:
        futures = [self._writer.call("HGET", room_hash(key, self.prefix), "s") for key in keys]
        return [(await future) or None for future in futures if future is not None]

    async def cas(self, key: str, expected: int, record: bytes | None, message: bytes) -> bool:
        """Write the room's next version if it is still at ``expected``; publish ``message``
        with it. ``record`` None closes the room."""
        future = self._writer.call(
            "EVAL",
            CAS_SCRIPT,
            1,
            room_hash(key, self.prefix),
            expected,
            expected + 1,
            b"" if record is None else record,
            room_channel(key, self.prefix),
            message,
            CLOSED_RECORD_MS,
        )
        assert future is not None
        return bool(await future)

    def publish(self, key: str, message: bytes) -> None:
        """Publish on the room's channel, after every room command called before."""
        channel = room_channel(key, self.prefix).encode()
        self._writer.call_packed("PUBLISH", pack_publish(channel, message), answer=False)

    def publish_to_node(self, node_id: str, key: str, message: bytes) -> None:
        """Publish a message of room ``key`` to one node only, after every room command
        called before. It reaches that node in order with the room's channel: both are
        heard on its one subscriber connection, in the order Redis ran the publishes."""
        addressed = key.encode() + b"\x00" + message
        packed = pack_publish(node_channel(node_id, self.prefix).encode(), addressed)
        self._writer.call_packed("PUBLISH", packed, answer=False)

    def index_room(self, key: str, *, open_: bool) -> None:
        self._writer.call("SADD" if open_ else "SREM", self._rooms_index, key, answer=False)

    async def _members(self, name: str) -> set[bytes]:
        members: set[bytes] = await self._redis.execute_command("SMEMBERS", name)  # type: ignore[no-untyped-call]
        return members

    async def open_rooms(self) -> list[str]:
        try:
            members = await self._members(self._rooms_index)
        except REDIS_ERRORS:
            raise StoreUnavailable("redis") from None
        return sorted(m.decode() for m in members)

    # -- the subscriber -------------------------------------------------------------

    async def subscribe(self, key: str) -> None:
        """Hear the room's channel; returns once Redis confirmed the subscription.

        StoreUnavailable when the subscriber is not connected or Redis does not confirm
        within ``SUBSCRIBE_TIMEOUT_SECONDS``."""
        if not self.subscribed:
            raise StoreUnavailable("redis")
        confirmed = self._channels.get(key)
        if confirmed is None:
            confirmed = self._channels[key] = asyncio.get_running_loop().create_future()
            self._keys[room_channel(key, self.prefix).encode()] = key
            await self._send_sub("SUBSCRIBE", key)
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT_SECONDS)
        except TimeoutError:
            raise StoreUnavailable("redis") from None

    def unsubscribe(self, key: str) -> None:
        """Stop hearing the room's channel: at once for this node (its messages are no
        longer handed over), and for Redis behind every SUBSCRIBE sent before, so a
        subscribe called after this one is sent after it."""
        future = self._channels.pop(key, None)
        if future is None:
            return
        del self._keys[room_channel(key, self.prefix).encode()]
        if not future.done():
            future.set_exception(StoreUnavailable("redis"))
            future.exception()  # retrieved: a waiter, if any, gets it through its shield
        task = asyncio.create_task(self._send_sub("UNSUBSCRIBE", key))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send_sub(self, command: str, key: str) -> None:
        async with self._sub_lock:
            sub = self._sub
            if sub is None:
                return  # the subscriber subscribes every channel when it connects
            with contextlib.suppress(*REDIS_ERRORS):
                await sub.send_command(command, room_channel(key, self.prefix))

    async def _subscriber(self) -> None:
        attempt = 0
        while True:
            try:
                reconnect = self._run_id is not None
                restarted = await self._connect_subscriber()
                attempt = 0
                if reconnect and self._metrics is not None:
                    self._metrics.reconnects.inc()
                await self._on_resync(restarted)
                await self._read()
            except REDIS_ERRORS as exc:
                log.warning("redis_subscriber_down", error=str(exc))
            self.subscribed = False
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.disconnect()
                self._sub = None
            await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
            attempt += 1

    async def _connect_subscriber(self) -> bool:
        """Connect and subscribe every channel; whether Redis restarted since the last
        connection (another run id: whatever it held may be gone)."""
        info = await self._redis.info("server")
        run_id = str(info.get("run_id", ""))
        restarted = self._run_id is not None and run_id != self._run_id
        self._run_id = run_id
        sub = self._sub_pool.make_connection()  # type: ignore[no-untyped-call]
        await sub.connect()
        async with self._sub_lock:
            self._sub = sub
            await sub.send_command("SUBSCRIBE", self._own_channel)
            for key in list(self._channels):
                await sub.send_command("SUBSCRIBE", room_channel(key, self.prefix))
            self.subscribed = True
        log.info("redis_subscriber_connected", restarted=restarted)
        return restarted

    async def _read(self) -> None:
        sub = self._sub
        assert sub is not None
        keys = self._keys
        own = self._own_channel
        while True:
            response = await sub.read_response(disable_decoding=True)
            kind, channel = response[0], response[1]
            if kind == b"message":
                data = response[2]
                if channel == own:  # b"<room key>\x00<message>"
                    name, _, data = data.partition(b"\x00")
                    key: str | None = name.decode()
                else:
                    key = keys.get(channel)
                if key is not None and key in self._channels:  # a room this node holds
                    try:
                        self._on_message(key, data)
                    except Exception:  # a bad message must not stop the node hearing
                        log.exception("bus_message_failed", room=key)
            elif kind == b"subscribe":
                confirmed = self._channels.get(keys.get(channel, ""))
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)

    # -- liveness -------------------------------------------------------------------

    async def beat(self, ttl_seconds: float) -> None:
        """Say this node lives for ``ttl_seconds`` more."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(node_key(self.node_id, self.prefix), "1", px=int(ttl_seconds * 1000))
            pipe.sadd(self._nodes, self.node_id)
            await pipe.execute()

    async def goodbye(self) -> None:
        """This node stops: its liveness key goes at once, so others take over at their
        next sweep (its rooms stay listed for them)."""
        await self._redis.delete(node_key(self.node_id, self.prefix))

    async def dead_nodes(self) -> list[str]:
        nodes = sorted(n.decode() for n in await self._members(self._nodes))
        others = [n for n in nodes if n != self.node_id]
        if not others:
            return []
        alive = await self._redis.mget([node_key(n, self.prefix) for n in others])
        return [n for n, mark in zip(others, alive, strict=True) if mark is None]

    async def claim(self, dead: str, ttl_seconds: float) -> bool:
        """Take the sweep of a dead node; one node gets it."""
        lock = f"{self.prefix}:sweep:{dead}"
        return bool(await self._redis.set(lock, self.node_id, nx=True, px=int(ttl_seconds * 1000)))

    async def rooms_of(self, node_id: str) -> list[str]:
        return sorted(k.decode() for k in await self._members(node_rooms_key(node_id, self.prefix)))

    async def forget(self, node_id: str) -> None:
        """A swept node is gone for good."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(node_rooms_key(node_id, self.prefix))
            pipe.srem(self._nodes, node_id)
            await pipe.execute()

    def hold_room(self, key: str, *, held: bool) -> None:
        """Record (or forget) that this node holds sessions or timers in ``key``."""
        command = "SADD" if held else "SREM"
        self._writer.call(command, node_rooms_key(self.node_id, self.prefix), key, answer=False)
