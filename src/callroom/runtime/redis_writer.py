"""Room commands to Redis in call order, pipelined over one connection (SPEC §7).

Loads, compare-and-sets and publishes of rooms go through one ``CommandWriter``: whatever
is queued while the previous batch is in flight goes out as the next batch, one round
trip. A member's chat message published before its next command is therefore seen by
every node before that command's update: the room's channel carries everything in the
order the node called Redis. redis-py's ``Pipeline`` did the same at several times the
CPU per command (docs/performance.md, "Many nodes").

On a Redis Cluster (``redis_cluster.py``) there is one ``CommandWriter`` per primary:
a room's keys and channels share one slot, so its commands still go through one writer
in call order. A command a shard redirects (``MOVED``/``ASK``) is handed back to the
router (``redirect``), which sends it on to the right shard ahead of anything of that
slot called later; a connection lost tells the router (``down``) to read the map again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection

from callroom.errors import StoreUnavailable
from callroom.metrics import RedisMetrics

log = structlog.get_logger(__name__)

WRITE_BATCH = 512
PUBLISHES = frozenset({"PUBLISH", "SPUBLISH"})
WRITE_TIMEOUT_SECONDS = 5.0  # a batch's write and replies; then Redis counts as down
REDIS_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    OSError,
    redis_errors.ClusterError,  # a cluster without a primary for a slot (a failover)
    redis_errors.RedisClusterException,
    redis_errors.TryAgainError,
)


# The client of the store's, bus's and liveness's other commands (not room commands).
RedisClient = Redis | RedisCluster


class Writer(Protocol):
    """What the store, bus and liveness use of their ordered writer: one Redis's
    ``CommandWriter`` or a cluster's router (``redis_cluster.ClusterWriter``)."""

    @property
    def sharded(self) -> bool:
        """A cluster: SPUBLISH and SSUBSCRIBE, no cross-slot rooms index."""

    def call(self, *args: Any, answer: bool = True) -> asyncio.Future[Any] | None: ...

    def publish(
        self, channel: bytes, message: bytes, *, answer: bool
    ) -> asyncio.Future[Any] | None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class Command:
    name: str
    packed: bytes  # the command in RESP
    future: asyncio.Future[Any] | None
    slot: int = -1  # on a cluster: the slot it goes to
    redirects: int = 0


# A cluster's router takes the commands a shard redirected, in order; returns those it
# could not send on (they fail).
Redirect = Callable[["CommandWriter", list[tuple[Command, redis_errors.AskError]]], list[Command]]


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
class CommandWriter:
    """Room commands, in call order, pipelined over one connection.

    Whatever is queued while a batch is in flight goes out as the next batch: one write
    of the commands packed here, then their replies read in order (hiredis parses them).
    """

    pool: ConnectionPool
    metrics: RedisMetrics | None = None
    queue: deque[Command] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    connection: AbstractConnection | None = None
    in_flight: list[Command] = field(default_factory=list)
    dropped: bool = False  # a connection was lost: the next one is a reconnect
    redirect: Redirect | None = None  # on a cluster (module docstring)
    down: Callable[[], None] | None = None  # on a cluster: told when the connection fails
    sharded = False  # one Redis: PUBLISH and SUBSCRIBE, the global rooms index

    def publish(
        self, channel: bytes, message: bytes, *, answer: bool
    ) -> asyncio.Future[Any] | None:
        return self.call_packed("PUBLISH", pack_publish(channel, message), answer=answer)

    def enqueue(self, command: Command) -> None:
        self.queue.append(command)
        self.wake.set()

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
        self.queue.append(Command(name, packed, future))
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

    async def _send(self, batch: list[Command]) -> None:
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
            fail_all(batch)
            if self.down is not None:
                self.down()
            return
        bounced: list[tuple[Command, redis_errors.AskError]] = []
        for command, result in zip(batch, results, strict=True):
            future = command.future
            if isinstance(result, Exception):
                if self.redirect is not None and isinstance(result, redis_errors.AskError):
                    bounced.append((command, result))  # MOVED is an AskError too
                    continue
                log.warning("redis_command_failed", command=command.name, error=str(result))
                self._count_lost((command,))
                if future is not None and not future.done():
                    future.set_exception(StoreUnavailable("redis"))
            elif future is not None and not future.done():
                future.set_result(result)
        if bounced and self.redirect is not None:
            failed = self.redirect(self, bounced)
            self._count_lost(failed)
            fail_all(failed)

    def _count_lost(self, commands: Iterable[Command]) -> None:
        """``callroom_redis_publish_failures_total``: chat messages, signals, deliveries
        that Redis did not take (their senders were answered already)."""
        if self.metrics is not None:
            lost = sum(1 for command in commands if command.name in PUBLISHES)
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
        fail_all(self.in_flight)
        fail_all(self.queue)
        self.queue.clear()
        await self._drop_connection()


def fail_all(commands: Iterable[Command]) -> None:
    for command in commands:
        if command.future is not None and not command.future.done():
            command.future.set_exception(StoreUnavailable("redis"))
