"""Faults of a real Redis Cluster during a meeting (issue 19 acceptance; SPEC §6, §7, §9).

Each test starts a cluster of its own (``tests/redis_cluster.py``; the suite's shared
cluster stays whole), two callroom nodes on ``redis+cluster://``, and the meeting of the
Redis-restart tests (``tests/restart_scenario.py``: alice the host, bob with his hand
raised, carol sharing her screen, dan, erin waiting; everyone admitted chatting, a
burst in flight at the kill). Then:

- **failover**: the primary serving the meeting's slot is killed (SIGKILL); its replica
  is promoted. Meanwhile a room on another shard chats on, untouched. Afterwards every
  check of the restart scenario holds: every acknowledged message in the history and
  received by everyone, none twice, one host, every member with its role.
- **restart empty, no replica**: a cluster of primaries only; the meeting's primary is
  killed and started again empty (its ``nodes.conf`` kept, so it serves its slots
  again): the room is written back from the nodes' replicas as on one Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from callroom_testing import Client, TokenFactory, join_admitted, join_room
from redis_cluster import ClusterNode, RedisTestCluster
from restart_meeting import ROOM, Meeting
from restart_members import Member
from restart_scenario import SETTINGS, restart_during_meeting

if TYPE_CHECKING:
    from callroom.server.node import Node

NodeStarter = Callable[..., Awaitable[Any]]
PROBE_SECONDS = 1.0  # a chat message of the other shard's room, there and back


def slot_of_room(room: str) -> int:
    from callroom.runtime.redis_keys import RedisKeys
    from callroom.runtime.redis_slots import slot_of

    return slot_of(RedisKeys().room_hash(f"zoom:{room}"))


@dataclass
class OtherRoom:
    """Two members of a room whose slot another primary serves."""

    room: str
    host: Client
    guest: Client
    probes: list[float] = field(default_factory=list)  # seconds, one chat round trip

    async def probe(self) -> None:
        began = time.monotonic()
        await self.host.send("add_chat", {"chatContent": f"probe {len(self.probes)}"})
        await self.guest.expect("add_chat", timeout=PROBE_SECONDS)
        await self.host.expect("add_chat", timeout=PROBE_SECONDS)
        self.probes.append(time.monotonic() - began)


@dataclass
class PrimaryFailover:
    """``kill9``: the primary of the meeting's slot; ``restart``: a chat round in the
    other shard's room while it is down, then its replica's promotion awaited."""

    cluster: RedisTestCluster
    other: OtherRoom | None = None
    killed: ClusterNode | None = None
    down_while_probed: bool = False
    failover_seconds: float = 0.0

    async def kill9(self) -> None:
        self.killed = self.cluster.primary_of(slot_of_room(ROOM))
        await self.cluster.kill9(self.killed)

    async def restart(self) -> None:
        assert self.killed is not None
        if self.other is not None:
            await self.other.probe()
            self.down_while_probed = self.cluster.primary_of(slot_of_room(ROOM)) is self.killed
        self.failover_seconds = await self.cluster.wait_failover(self.killed, slot_of_room(ROOM))


@dataclass
class PrimaryRestartEmpty:
    """``kill9``: the primary of the meeting's slot (no replica); ``restart``: the same
    node, empty."""

    cluster: RedisTestCluster
    killed: ClusterNode | None = None

    async def kill9(self) -> None:
        self.killed = self.cluster.primary_of(slot_of_room(ROOM))
        await self.cluster.kill9(self.killed)

    async def restart(self) -> None:
        assert self.killed is not None
        await self.cluster.restart(self.killed)


async def own_cluster(tmp_path: Path, replicas: int) -> RedisTestCluster:
    cluster = RedisTestCluster(tmp_path / "cluster", replicas=replicas)
    await asyncio.to_thread(cluster.start)
    return cluster


async def two_nodes(start_node: NodeStarter, url: str, tmp_path: Path) -> list[Node]:
    return [
        cast(
            "Node",
            await start_node(
                REDIS_URL=url, DATABASE_URL=f"sqlite:///{tmp_path}/faults.db", **SETTINGS
            ),
        )
        for _ in range(2)
    ]


async def other_shard_room(nodes: list[Node], make_token: TokenFactory) -> OtherRoom:
    """A room served by another primary than the meeting's, its host on one node and
    its guest on the other."""
    cluster_slot = slot_of_room(ROOM)
    room = next(
        f"other-{n}" for n in range(1000) if abs(slot_of_room(f"other-{n}") - cluster_slot) > 6000
    )
    host, _ = await join_room(nodes[0], make_token("olga", "Olga"), room)
    guest, _ = await join_admitted(host, nodes[1], make_token("piet", "Piet"), room)
    await host.drain()
    return OtherRoom(room, host, guest)


async def test_primary_killed_during_a_busy_meeting_fails_over_and_the_meeting_goes_on(
    start_node: NodeStarter, people: list[Member], make_token: TokenFactory, tmp_path: Path
) -> None:
    cluster = await own_cluster(tmp_path, replicas=1)
    try:
        nodes = await two_nodes(start_node, cluster.url, tmp_path)
        outage = PrimaryFailover(cluster)
        outage.other = await other_shard_room(nodes, make_token)
        other_primary = cluster.primary_of(slot_of_room(outage.other.room))
        assert other_primary is not cluster.primary_of(slot_of_room(ROOM))
        meeting = Meeting(nodes, outage, make_token, people)
        findings = await restart_during_meeting(meeting, busy=True)
        findings.note(f"failover took {outage.failover_seconds:.1f} s")
        findings.check(
            "the other shard's room chatted while the meeting's shard was down",
            outage.down_while_probed and len(outage.other.probes) == 1,
            f"probes {outage.other.probes}, shard still down: {outage.down_while_probed}",
        )
        await outage.other.probe()  # and after
        print("\n".join(findings.notes))  # the figures of docs/operations.md (-s shows them)
        findings.verdict()
        await outage.other.host.close()
        await outage.other.guest.close()
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_primary_restarted_empty_without_a_replica_gets_the_room_written_back(
    start_node: NodeStarter, people: list[Member], make_token: TokenFactory, tmp_path: Path
) -> None:
    cluster = await own_cluster(tmp_path, replicas=0)
    try:
        nodes = await two_nodes(start_node, cluster.url, tmp_path)
        meeting = Meeting(nodes, PrimaryRestartEmpty(cluster), make_token, people)
        findings = await restart_during_meeting(meeting, busy=True)
        print("\n".join(findings.notes))  # the figures of docs/operations.md (-s shows them)
        findings.verdict()
    finally:
        await asyncio.to_thread(cluster.stop)


@dataclass
class Heard:
    """A bus listener that keeps what it hears."""

    updates: list[int] = field(default_factory=list)  # versions
    deliveries: list[bytes] = field(default_factory=list)
    reconnects: list[tuple[bool, list[str] | None]] = field(default_factory=list)

    def on_update(self, key: Any, update: Any) -> None:
        self.updates.append(update.version)

    def on_delivery(self, key: Any, delivery: Any) -> None:
        self.deliveries.append(delivery.text)

    def on_reconnect(self, restarted: bool, keys: Any = None) -> None:
        self.reconnects.append((restarted, None if keys is None else sorted(keys)))


async def test_a_slot_resharded_under_a_room_is_followed_by_commands_and_subscription(
    tmp_path: Path,
) -> None:
    """A room's slot migrated to another primary while its node holds it: a command on
    the moved key is answered through ``ASK``, later ones through ``MOVED`` (the map is
    read again), and the subscription follows the slot (the shard drops it with
    ``sunsubscribe``; it is made again on the new primary and the room resynced)."""
    from redis import Redis
    from redis.asyncio import RedisCluster

    from callroom.room import core
    from callroom.room.keys import room_key
    from callroom.room.model import Effects
    from callroom.room.record import RoomRecord
    from callroom.runtime.bus_sharded import ShardedRoomBus
    from callroom.runtime.messages import Delivery, update_of
    from callroom.runtime.redis_cluster import ClusterWriter
    from callroom.runtime.redis_keys import RedisKeys
    from callroom.runtime.redis_slots import SlotMap, node_url, slot_of
    from callroom.runtime.store_redis import RedisRoomStore
    from callroom_testing import wait_until

    cluster = await own_cluster(tmp_path, replicas=0)
    keys, key = RedisKeys("reshard"), room_key("zoom", "moving")
    slot = slot_of(keys.room_hash(key))
    slots = SlotMap(cluster.url)
    writer = ClusterWriter(slots, client_name="test")
    redis = RedisCluster.from_url(node_url(cluster.url), require_full_coverage=False)
    store = RedisRoomStore(writer, redis, keys)
    bus = ShardedRoomBus(cluster.url, "n1", slots=slots, writer=writer, redis=redis, keys=keys)
    heard = Heard()
    bus.listen(heard)
    await store.start()
    await bus.start()
    try:
        await wait_until(lambda: bus.up)
        await bus.subscribe(key)
        record = RoomRecord(core.new_room("zoom", "moving", 0))
        assert await store.commit(key, 0, update_of(1, record, Effects(), None))
        await wait_until(lambda: heard.updates == [1])

        source = cluster.primary_of(slot)
        target = next(n for n in cluster.nodes if n is not source)

        def call(node: ClusterNode, *args: Any) -> Any:
            with Redis(host="127.0.0.1", port=node.port) as client:
                return client.execute_command(*args)

        source_id, target_id = call(source, "CLUSTER", "MYID"), call(target, "CLUSTER", "MYID")
        call(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        call(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        call(source, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", keys.room_hash(key))
        assert (await store.load(key))[0] == 1  # ASK: ASKING, then the command, on target

        for node in cluster.nodes:  # the migration ends: target serves the slot
            call(node, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        channel = keys.room_channel(key).encode()
        await wait_until(lambda: (True, [key]) in heard.reconnects)  # resynced, and
        await wait_until(lambda: channel in call(target, "PUBSUB", "SHARDCHANNELS"))  # there
        assert await store.commit(key, 1, update_of(2, record, Effects(), None))  # MOVED
        assert slots.owner(slot) == target.address
        await wait_until(lambda: heard.updates[-1:] == [2])
        bus.publish(key, Delivery(("alice",), b'{"after":"moved"}'))
        await wait_until(lambda: heard.deliveries == [b'{"after":"moved"}'])
    finally:
        await bus.close()
        await store.close()
        await asyncio.to_thread(cluster.stop)
