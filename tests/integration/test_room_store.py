"""The room store and bus ports, both backends side by side (callroom.runtime.ports).

The same contract tests run over the memory pair (one node) and the Redis pair (many
nodes, the tests' own Redis database): versions, compare-and-set with the update
published, closing, the open-room index, and the write-back after a loss.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field

import pytest
from redis.asyncio import ConnectionPool, Redis, RedisCluster

from callroom.metrics import Metrics
from callroom.room import core
from callroom.room.keys import RoomKey, room_key
from callroom.room.model import Effects, Identity, RoomRules
from callroom.room.record import RoomRecord
from callroom.runtime.bus_redis import RedisRoomBus
from callroom.runtime.bus_sharded import ShardedRoomBus
from callroom.runtime.memory import MemoryRoomBus, MemoryRoomStore
from callroom.runtime.messages import Delivery, Update, update_of
from callroom.runtime.ports import RoomBus, RoomStore
from callroom.runtime.redis_cluster import ClusterWriter
from callroom.runtime.redis_keys import RedisKeys
from callroom.runtime.redis_slots import SlotMap, node_url
from callroom.runtime.redis_writer import CommandWriter
from callroom.runtime.store_redis import RESTORE_STEP, RedisRoomStore
from callroom_testing import flush_test_redis, wait_until


@dataclass
class Heard:
    """A bus listener that keeps what it hears."""

    updates: list[tuple[RoomKey, Update]] = field(default_factory=list)
    deliveries: list[tuple[RoomKey, Delivery]] = field(default_factory=list)
    reconnects: list[bool] = field(default_factory=list)

    def on_update(self, key: RoomKey, update: Update) -> None:
        self.updates.append((key, update))

    def on_delivery(self, key: RoomKey, delivery: Delivery) -> None:
        self.deliveries.append((key, delivery))

    def on_reconnect(self, restarted: bool, keys: Collection[RoomKey] | None = None) -> None:
        self.reconnects.append(restarted)


@dataclass
class Backend:
    store: RoomStore
    bus: RoomBus
    heard: Heard
    immediate: bool  # the bus hands messages over in the same turn


@pytest.fixture(params=["memory", "redis", "redis_cluster"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    heard = Heard()
    if request.param == "memory":
        memory_bus = MemoryRoomBus()
        memory_bus.listen(heard)
        yield Backend(MemoryRoomStore(memory_bus), memory_bus, heard, immediate=True)
        return
    if request.param == "redis_cluster":
        async for backend in cluster_backend(request.getfixturevalue("cluster_url"), heard):
            yield backend
        return
    url = await flush_test_redis()
    keys = RedisKeys(f"test-{uuid.uuid4().hex[:8]}")
    redis = Redis.from_url(url)
    metrics = Metrics(redis=True)
    writer = CommandWriter(ConnectionPool.from_url(url), metrics.redis)
    store = RedisRoomStore(writer, redis, keys)
    bus = RedisRoomBus(url, "node-a", writer=writer, redis=redis, keys=keys, metrics=metrics.redis)
    async for running in _running(store, bus, heard):
        yield running


async def cluster_backend(url: str, heard: Heard) -> AsyncIterator[Backend]:
    """The Redis pair over the suite's Redis Cluster, as ``build.py`` wires it."""
    keys = RedisKeys(f"test-{uuid.uuid4().hex[:8]}")
    slots = SlotMap(url, socket_connect_timeout=2)
    redis = RedisCluster.from_url(node_url(url), require_full_coverage=False)
    metrics = Metrics(redis=True)
    writer = ClusterWriter(slots, client_name="test", metrics=metrics.redis)
    store = RedisRoomStore(writer, redis, keys)
    bus = ShardedRoomBus(
        url, "node-a", slots=slots, writer=writer, redis=redis, keys=keys, metrics=metrics.redis
    )
    async for running in _running(store, bus, heard):
        yield running


KEY = room_key("zoom", "store-1")


async def _running(
    store: RedisRoomStore, bus: RedisRoomBus | ShardedRoomBus, heard: Heard
) -> AsyncIterator[Backend]:
    """A Redis store and bus started, up, and closed when the test is done."""
    bus.listen(heard)
    await store.start()
    await bus.start()
    await wait_until(lambda: bus.up)
    try:
        yield Backend(store, bus, heard, immediate=False)
    finally:
        await bus.close()
        await store.close()


def a_record(*names: str) -> RoomRecord:
    room = core.new_room("zoom", "store-1", 0)
    record = RoomRecord(room)
    for name in names:
        core.join(room, Identity(name, name.title()), RoomRules(lobby_enabled=False))
        record.sessions[name] = f"node-a/{name}"
    return record


def updates_of(backend: Backend, key: RoomKey) -> Callable[[], list[Update]]:
    return lambda: [update for k, update in backend.heard.updates if k == key]


async def test_a_room_without_a_record_is_at_version_zero(backend: Backend) -> None:
    assert await backend.store.load(KEY) == (0, None)
    assert await backend.store.open_rooms() == []


async def test_a_commit_writes_the_next_version_and_publishes_its_update(backend: Backend) -> None:
    await backend.bus.subscribe(KEY)
    record = a_record("alice")
    first = update_of(1, record, Effects(), ("alice", "node-a/alice"))
    assert await backend.store.commit(KEY, 0, first)
    version, loaded = await backend.store.load(KEY)
    assert version == 1
    assert loaded == record
    assert await backend.store.open_rooms() == [KEY]
    await wait_until(lambda: len(updates_of(backend, KEY)()) == 1)
    heard = updates_of(backend, KEY)()[0]
    assert (heard.version, heard.record, heard.joined) == (1, record, ("alice", "node-a/alice"))


async def test_a_commit_on_a_stale_version_writes_nothing(backend: Backend) -> None:
    await backend.bus.subscribe(KEY)
    assert await backend.store.commit(KEY, 0, update_of(1, a_record("alice"), Effects(), None))
    assert not await backend.store.commit(KEY, 0, update_of(1, a_record("bob"), Effects(), None))
    version, loaded = await backend.store.load(KEY)
    assert version == 1
    assert loaded is not None
    assert list(loaded.room.members) == ["alice"]


async def test_a_closed_room_leaves_the_index(backend: Backend) -> None:
    await backend.bus.subscribe(KEY)
    assert await backend.store.commit(KEY, 0, update_of(1, a_record("alice"), Effects(), None))
    closing = Effects(room_closed=True)
    assert await backend.store.commit(KEY, 1, update_of(2, None, closing, None))
    assert (await backend.store.load(KEY))[1] is None
    assert await backend.store.open_rooms() == []
    await wait_until(lambda: len(updates_of(backend, KEY)()) == 2)
    assert updates_of(backend, KEY)()[-1].record is None


async def test_deliveries_reach_the_room_and_the_node_in_order(backend: Backend) -> None:
    await backend.bus.subscribe(KEY)
    for n in range(3):
        backend.bus.publish(KEY, Delivery(("alice",), b'{"n":%d}' % n))
    backend.bus.publish_to_node("node-a", KEY, Delivery(("bob",), b'{"n":3}'))
    await wait_until(lambda: len(backend.heard.deliveries) == 4)
    assert [d.text for _, d in backend.heard.deliveries] == [
        b'{"n":0}',
        b'{"n":1}',
        b'{"n":2}',
        b'{"n":3}',
    ]


async def test_restore_writes_a_lost_room_back_above_any_version_it_had(
    backend: Backend,
) -> None:
    """A store that lost the room takes the replica back; one that did not, refuses."""
    await backend.bus.subscribe(KEY)
    record = a_record("alice", "bob")
    if backend.immediate:
        # One node's records live as long as the process: nothing to write back.
        assert not await backend.store.restore(KEY, 7, record)
        return
    assert await backend.store.restore(KEY, 7, record)  # the store has no record
    version, loaded = await backend.store.load(KEY)
    assert (version, loaded) == (7 + RESTORE_STEP, record)
    assert await backend.store.open_rooms() == [KEY]
    # An older replica (another node's, behind) does not replace the fresher one...
    assert not await backend.store.restore(KEY, 5, a_record("alice"))
    # ...but a fresher one replaces an older write-back not changed since.
    assert await backend.store.restore(KEY, 9, a_record("carol"))
    version, loaded = await backend.store.load(KEY)
    assert version == 9 + RESTORE_STEP
    assert loaded is not None
    assert list(loaded.room.members) == ["carol"]
    # Once the room moved on from the write-back, a replica is never written over it.
    update = update_of(version + 1, loaded, Effects(), None)
    assert await backend.store.commit(KEY, version, update)
    assert not await backend.store.restore(KEY, 9, record)
    await wait_until(lambda: len(updates_of(backend, KEY)()) == 3)


async def test_a_room_created_during_the_outage_is_replaced_by_the_write_back(
    backend: Backend,
) -> None:
    """A joiner opened a new room on the empty store before the nodes holding the real
    one wrote it back: the write-back wins (its version is above the new room's)."""
    assert await backend.store.commit(KEY, 0, update_of(1, a_record("mallory"), Effects(), None))
    written = await backend.store.restore(KEY, 40, a_record("alice", "bob"))
    _, loaded = await backend.store.load(KEY)
    assert loaded is not None
    if backend.immediate:  # one node never loses a room: its record is the truth
        assert not written
        assert list(loaded.room.members) == ["mallory"]
    else:
        assert written
        assert list(loaded.room.members) == ["alice", "bob"]
