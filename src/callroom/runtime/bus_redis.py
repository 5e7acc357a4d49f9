"""The Redis room bus (SPEC §7): room channels, node channels, one subscriber connection.

Publishing goes through the node's ``CommandWriter`` (in call order with the store's
compare-and-sets). The subscriber is its own connection: SUBSCRIBE and UNSUBSCRIBE as
the node gains and loses rooms, and a reader task that hands every message to the hub.
When the connection breaks it reconnects, subscribes again and tells the hub
(``on_reconnect``), which reloads or writes back every room it holds: messages sent
meanwhile are lost, the records are not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection

from callroom.errors import StoreUnavailable
from callroom.metrics import RedisMetrics
from callroom.room.keys import RoomKey
from callroom.room.record import session_node
from callroom.runtime.messages import Delivery, Update
from callroom.runtime.ports import BusListener
from callroom.runtime.redis_keys import RedisKeys
from callroom.runtime.redis_writer import REDIS_ERRORS, RedisClient, Writer
from callroom.runtime.tasks import finish
from callroom.runtime.wire import dump_delivery, load_message

log = structlog.get_logger(__name__)

SUBSCRIBE_TIMEOUT_SECONDS = 5.0
RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)  # then 2 s between attempts (SPEC §6: 10 s)


class RedisRoomBus:
    """Everything this node hears from Redis, and the publishes of rooms."""

    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        writer: Writer,
        redis: RedisClient,
        keys: RedisKeys,
        metrics: RedisMetrics | None = None,
    ) -> None:
        self._writer = writer
        self._redis = redis
        self._keys = keys
        self._metrics = metrics
        self._sub_pool: ConnectionPool = ConnectionPool.from_url(
            url, socket_connect_timeout=2, client_name=f"callroom-sub:{node_id}"
        )
        self._listener: BusListener | None = None
        self._sub: AbstractConnection | None = None
        self._sub_lock = asyncio.Lock()
        self._channels: dict[RoomKey, asyncio.Future[None]] = {}  # key → confirmed
        self._keys_of: dict[bytes, RoomKey] = {}  # room channel → room key
        self._own_channel = keys.node_channel(node_id).encode()
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()  # UNSUBSCRIBEs being sent
        self._run_id: str | None = None  # of the Redis process last connected to
        self.up = False  # the subscriber connection is up
        if metrics is not None:
            metrics.up.set_function(lambda: float(self.up))

    def listen(self, listener: BusListener) -> None:
        self._listener = listener

    def hears(self, key: RoomKey) -> bool:
        return self.up

    async def start(self) -> None:
        """Start the subscriber; Redis being down does not stop this."""
        self._task = asyncio.create_task(self._subscriber())

    async def close(self) -> None:
        for task in [*([self._task] if self._task else []), *self._sends]:
            await finish(task)
        for future in self._channels.values():
            if not future.done():
                future.set_exception(StoreUnavailable("redis"))
                future.exception()
        if self._sub is not None:
            await self._sub.disconnect()
        await self._sub_pool.aclose()

    async def ready(self) -> bool:
        """Whether Redis answers and the subscriber is connected (``/readyz``)."""
        try:
            await asyncio.wait_for(self._redis.ping(), timeout=2)
        except (*REDIS_ERRORS, TimeoutError):
            return False
        return self.up

    # -- publishing -----------------------------------------------------------------

    def publish(
        self, key: RoomKey, delivery: Delivery, on_lost: Callable[[], None] | None = None
    ) -> None:
        channel = self._keys.room_channel(key).encode()
        future = self._writer.publish(channel, dump_delivery(delivery), answer=on_lost is not None)
        if on_lost is not None:
            if future is None:
                on_lost()
            else:
                future.add_done_callback(lambda done: _lost(done, on_lost))

    def publish_to_node(self, node_id: str, key: RoomKey, delivery: Delivery) -> None:
        """It reaches that node in order with the room's channel: both are heard on its
        one subscriber connection, in the order Redis ran the publishes."""
        addressed = key.encode() + b"\x00" + dump_delivery(delivery)
        self._writer.publish(self._keys.node_channel(node_id).encode(), addressed, answer=False)

    def publish_to_holders(
        self, key: RoomKey, delivery: Delivery, sessions: Mapping[str, str]
    ) -> None:
        """To the nodes holding the recipients only: the others would read and drop it."""
        recipients = delivery.recipients
        nodes = {session_node(sessions[r]) for r in recipients if r in sessions}
        for node_id in nodes:
            self.publish_to_node(node_id, key, delivery)

    # -- subscriptions --------------------------------------------------------------

    async def subscribe(self, key: RoomKey) -> None:
        """Returns once Redis confirmed the subscription; StoreUnavailable when the
        subscriber is not connected or Redis does not confirm in time."""
        if not self.up:
            raise StoreUnavailable("redis")
        confirmed = self._channels.get(key)
        if confirmed is None:
            confirmed = self._channels[key] = asyncio.get_running_loop().create_future()
            self._keys_of[self._keys.room_channel(key).encode()] = key
            await self._send_sub("SUBSCRIBE", key)
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT_SECONDS)
        except TimeoutError:
            raise StoreUnavailable("redis") from None

    def unsubscribe(self, key: RoomKey) -> None:
        """At once for this node (its messages are no longer handed over), and for Redis
        behind every SUBSCRIBE sent before."""
        future = self._channels.pop(key, None)
        if future is None:
            return
        del self._keys_of[self._keys.room_channel(key).encode()]
        if not future.done():
            future.set_exception(StoreUnavailable("redis"))
            future.exception()  # retrieved: a waiter, if any, gets it through its shield
        task = asyncio.create_task(self._send_sub("UNSUBSCRIBE", key))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send_sub(self, command: str, key: RoomKey) -> None:
        async with self._sub_lock:
            sub = self._sub
            if sub is None:
                return  # the subscriber subscribes every channel when it connects
            with contextlib.suppress(*REDIS_ERRORS):
                await sub.send_command(command, self._keys.room_channel(key))

    # -- the subscriber -------------------------------------------------------------

    async def _subscriber(self) -> None:
        attempt = 0
        while True:
            try:
                reconnect = self._run_id is not None
                restarted = await self._connect()
                attempt = 0
                if reconnect and self._metrics is not None:
                    self._metrics.reconnects.inc()
                if self._listener is not None:
                    # The hub resyncs in its own task while messages are read here:
                    # write-backs come back on the channels this connection hears.
                    self._listener.on_reconnect(restarted)
                await self._read()
            except REDIS_ERRORS as exc:
                log.warning("redis_subscriber_down", error=str(exc))
            self.up = False
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.disconnect()
                self._sub = None
            await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
            attempt += 1

    async def _connect(self) -> bool:
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
                await sub.send_command("SUBSCRIBE", self._keys.room_channel(key))
            self.up = True
        log.info("redis_subscriber_connected", restarted=restarted)
        return restarted

    async def _read(self) -> None:
        sub = self._sub
        assert sub is not None
        keys = self._keys_of
        own = self._own_channel
        while True:
            response: Any = await sub.read_response(disable_decoding=True)
            kind, channel = response[0], response[1]
            if kind == b"message":
                data = response[2]
                key: RoomKey | None
                if channel == own:  # b"<room key>\x00<message>"
                    name, _, data = data.partition(b"\x00")
                    key = RoomKey(name.decode())
                else:
                    key = keys.get(channel)
                if key is not None and key in self._channels:  # a room this node holds
                    self._hand_over(key, data)
            elif kind == b"subscribe":
                confirmed = self._channels.get(keys.get(channel, RoomKey("")))
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)

    def _hand_over(self, key: RoomKey, data: bytes) -> None:
        listener = self._listener
        assert listener is not None
        try:
            message = load_message(data)
            if isinstance(message, Update):
                listener.on_update(key, message)
            else:
                listener.on_delivery(key, message)
        except Exception:  # a bad message must not stop the node hearing
            log.exception("bus_message_failed", room=key)


def _lost(done: asyncio.Future[Any], on_lost: Callable[[], None]) -> None:
    if done.cancelled() or done.exception() is not None:
        on_lost()
