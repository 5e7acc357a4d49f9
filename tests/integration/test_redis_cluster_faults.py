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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

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


@pytest.fixture
async def people() -> AsyncIterator[list[Member]]:
    members: list[Member] = []
    yield members
    await asyncio.gather(*(member.leave() for member in members))


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
