"""The room bus on a Redis Cluster (SPEC §9): sharded pub/sub, one subscriber
connection per shard.

A room's channel ``P:{k}:bus`` and its deliveries to this node ``P:{k}:bus:<node>`` share
the room's slot: one ``SSUBSCRIBE`` on the connection to that slot's primary hears both,
in the order the shard ran the publishes (a signal after the update that admitted its
target arrives after it, as on one Redis). A message touches its slot's shard only.

Each shard's connection (a ``Link``) lives on its own:

- **Lost** (the primary killed, failing over): its rooms are marked for a resync, the
  slot map is read again, and every room whose slot another primary serves now moves to
  that primary's link; the link reconnects, 0.1 s to 2 s apart, while rooms are left.
- **Back, or moved**: the rooms are subscribed on the serving primary and the hub
  resyncs them (``on_reconnect(restarted, keys)``): restarted when the link is another
  process (another run id) or another node (a promoted replica may miss the last
  writes), so a primary restarted empty or replaced has its rooms written back from the
  nodes' replicas as one Redis restarted empty has (``resync.py``). Rooms of the other
  shards are not touched.
- **Resharding**: a shard that no longer serves a slot drops its subscribers
  (``sunsubscribe`` pushed) or answers ``MOVED``; the map is read again and the room is
  subscribed on its new primary, then resynced.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection

from callroom.errors import StoreUnavailable
from callroom.metrics import RedisMetrics
from callroom.room.keys import RoomKey
from callroom.runtime.bus_redis import RECONNECT_DELAYS, SUBSCRIBE_TIMEOUT_SECONDS, RedisRoomBus
from callroom.runtime.messages import Delivery
from callroom.runtime.redis_keys import RedisKeys
from callroom.runtime.redis_slots import Address, SlotMap, node_url, slot_of
from callroom.runtime.redis_writer import REDIS_ERRORS, RedisClient, Writer
from callroom.runtime.tasks import finish
from callroom.runtime.wire import dump_delivery

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class Link:
    """The subscriber connection to one primary, and the rooms heard through it."""

    address: Address
    pool: ConnectionPool
    keys: set[RoomKey] = field(default_factory=set)
    connection: AbstractConnection | None = None
    task: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    up: bool = False
    connected_once: bool = False
    run_id: str | None = None
    resync: set[RoomKey] = field(default_factory=set)  # to resync once subscribed here
    restarted: bool = False  # they come from another process
    dropped: set[RoomKey] = field(default_factory=set)  # unsubscribed by the shard


class ShardedRoomBus(RedisRoomBus):
    """The Redis bus with SSUBSCRIBE per shard (publishes go through the router)."""

    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        slots: SlotMap,
        writer: Writer,
        redis: RedisClient,
        keys: RedisKeys,
        metrics: RedisMetrics | None = None,
    ) -> None:
        super().__init__(
            node_url(url), node_id, writer=writer, redis=redis, keys=keys, metrics=metrics
        )
        self._node_id = node_id
        self._slots = slots
        self._links: dict[Address, Link] = {}
        self._link_of: dict[RoomKey, Link] = {}
        self._closed = False
        slots.listeners.append(self._rehome)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._first_map())

    async def _first_map(self) -> None:
        attempt = 0
        while not await self._slots.refresh():
            await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
            attempt += 1
        self._update_up()

    async def close(self) -> None:
        self._closed = True
        if self._rehome in self._slots.listeners:
            self._slots.listeners.remove(self._rehome)
        for link in list(self._links.values()):
            if link.task is not None:
                await finish(link.task)
            connection, link.connection = link.connection, None  # a send must not reopen it
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.disconnect()
            await link.pool.aclose()
        self._links.clear()
        await super().close()

    def hears(self, key: RoomKey) -> bool:
        link = self._link_of.get(key)
        if link is None:
            owner = self._slots.owner(slot_of(self._keys.room_channel(key)))
            link = None if owner is None else self._links.get(owner)
        return link is not None and link.up

    async def ready(self) -> bool:
        """Whether the map is known, every shard of a room held here is heard, and the
        liveness keys' primary answers (``/readyz``)."""
        if not self.up:
            return False
        try:
            answer = self._writer.call("EXISTS", self._keys.nodes)
            assert answer is not None
            await asyncio.wait_for(answer, timeout=2)
        except (StoreUnavailable, TimeoutError):
            return False
        return True

    def _update_up(self) -> None:
        self.up = self._slots.known and all(link.up for link in self._links.values() if link.keys)

    # -- publishing -----------------------------------------------------------------

    def publish_to_node(self, node_id: str, key: RoomKey, delivery: Delivery) -> None:
        """On the room's slot: in order with the room's channel (module docstring)."""
        channel = self._keys.room_node_channel(key, node_id).encode()
        self._writer.publish(channel, dump_delivery(delivery), answer=False)

    # -- subscriptions --------------------------------------------------------------

    def _names(self, key: RoomKey) -> tuple[bytes, bytes]:
        keys = self._keys
        return keys.room_channel(key).encode(), keys.room_node_channel(key, self._node_id).encode()

    async def subscribe(self, key: RoomKey) -> None:
        confirmed = self._channels.get(key)
        if confirmed is None:
            owner = self._slots.owner(slot_of(self._keys.room_channel(key)))
            if owner is None:
                self._slots.request_refresh()
                raise StoreUnavailable("redis")
            link = self._link_at(owner)
            if link.connected_once and not link.up:  # its shard is failing over
                raise StoreUnavailable("redis")
            confirmed = self._channels[key] = asyncio.get_running_loop().create_future()
            for name in self._names(key):
                self._keys_of[name] = key
            link.keys.add(key)
            self._link_of[key] = link
            await self._send(link, "SSUBSCRIBE", [key])
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT_SECONDS)
        except TimeoutError:
            raise StoreUnavailable("redis") from None

    def unsubscribe(self, key: RoomKey) -> None:
        future = self._channels.pop(key, None)
        if future is None:
            return
        for name in self._names(key):
            self._keys_of.pop(name, None)
        if not future.done():
            future.set_exception(StoreUnavailable("redis"))
            future.exception()
        link = self._link_of.pop(key)
        link.keys.discard(key)
        link.resync.discard(key)
        self._spawn(self._send(link, "SUNSUBSCRIBE", [key]))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, link: Link, command: str, keys: Collection[RoomKey]) -> None:
        async with link.lock:
            connection = link.connection
            if connection is None or self._closed:
                return  # the link subscribes all its rooms when it connects
            with contextlib.suppress(*REDIS_ERRORS):
                for key in keys:
                    await connection.send_command(command, *self._names(key))

    def _link_at(self, address: Address) -> Link:
        if self._closed:
            raise StoreUnavailable("redis")
        link = self._links.get(address)
        if link is None:
            pool = self._slots.pool(address, client_name=f"callroom-sub:{self._node_id}")
            link = self._links[address] = Link(address, pool)
            link.task = asyncio.create_task(self._run(link))
        return link

    # -- moving rooms between shards ------------------------------------------------

    def _rehome(self) -> None:
        """The map was read: rooms whose slot another primary serves move to its link;
        rooms the shard unsubscribed but still serves are subscribed again."""
        for link in list(self._links.values()):
            moved: dict[Address, list[RoomKey]] = {}
            for key in list(link.keys):
                owner = self._slots.owner(slot_of(self._keys.room_channel(key)))
                if owner is not None and owner != link.address:
                    moved.setdefault(owner, []).append(key)
            leaving = {key for keys in moved.values() for key in keys}
            again = sorted((link.dropped & link.keys) - leaving)
            link.dropped.clear()
            if again and link.up:
                self._spawn(self._resubscribe(link, again))
            for owner, keys in moved.items():
                target = self._link_at(owner)
                for key in keys:
                    link.keys.discard(key)
                    link.resync.discard(key)
                    target.keys.add(key)
                    target.resync.add(key)
                    self._link_of[key] = target
                target.restarted = True
                if target.up:
                    self._spawn(self._resubscribe(target, keys))
        self._update_up()

    async def _resubscribe(self, link: Link, keys: list[RoomKey]) -> None:
        await self._send(link, "SSUBSCRIBE", keys)
        link.resync.difference_update(keys)
        if self._listener is not None:
            self._listener.on_reconnect(True, keys)

    # -- one shard's subscriber -----------------------------------------------------

    async def _run(self, link: Link) -> None:
        attempt = 0
        while link.keys:
            try:
                await self._connect_link(link)
                attempt = 0
                await self._read_link(link)
            except REDIS_ERRORS as exc:
                log.warning(
                    "redis_shard_subscriber_down", shard=_name(link.address), error=str(exc)
                )
            link.up = False
            if link.connection is not None:
                with contextlib.suppress(Exception):
                    await link.connection.disconnect()
                link.connection = None
            self._update_up()
            if link.connected_once:
                link.resync |= link.keys  # what was published meanwhile is lost here
            await self._slots.refresh()  # a failover: the rooms move to the new primary
            await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
            attempt += 1
        if self._links.get(link.address) is link:
            del self._links[link.address]
        await link.pool.aclose()
        self._update_up()

    async def _connect_link(self, link: Link) -> None:
        connection = link.pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_SECONDS):
                await connection.connect()
                await connection.send_command("INFO", "server")
                info = await connection.read_response(disable_decoding=True)
        except BaseException:  # a failure or the bus closing: never left open
            await connection.disconnect(nowait=True)
            raise
        run_id = _run_id(info)
        restarted = link.restarted or (link.run_id is not None and run_id != link.run_id)
        link.run_id = run_id
        async with link.lock:
            link.connection = connection
            for key in sorted(link.keys):
                await connection.send_command("SSUBSCRIBE", *self._names(key))
            link.up = True
        reconnect = link.connected_once
        link.connected_once = True
        self._update_up()
        log.info("redis_shard_subscriber_connected", shard=_name(link.address), restarted=restarted)
        if reconnect and self._metrics is not None:
            self._metrics.reconnects.inc()
        resync = sorted(link.resync & link.keys)
        link.resync.clear()
        link.restarted = False
        if resync and self._listener is not None:
            self._listener.on_reconnect(restarted, resync)

    async def _read_link(self, link: Link) -> None:
        connection = link.connection
        assert connection is not None
        keys = self._keys_of
        while True:
            try:
                response: Any = await connection.read_response(disable_decoding=True)
            except redis_errors.AskError as exc:  # SSUBSCRIBE on a shard not serving it
                self._slots.moved(exc.slot_id, exc.node_addr)
                continue
            except redis_errors.ResponseError as exc:
                log.warning("redis_shard_subscriber_refused", error=str(exc))
                continue
            kind, channel = response[0], response[1]
            key = keys.get(channel)
            if kind == b"smessage":
                if key is not None and key in self._channels:
                    self._hand_over(key, response[2])
            elif kind == b"ssubscribe":
                confirmed = None if key is None else self._channels.get(key)
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)
            elif kind == b"sunsubscribe" and key is not None and key in link.keys:
                link.dropped.add(key)  # the shard gave the slot away (resharding)
                self._slots.request_refresh()


def _run_id(info: Any) -> str:
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("run_id:"):
            return line[len("run_id:") :].strip()
    return ""


def _name(address: Address) -> str:
    return f"{address[0]}:{address[1]}"
