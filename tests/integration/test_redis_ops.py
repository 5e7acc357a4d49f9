"""Redis in production (SPEC §9): REDIS_PREFIX isolates deployments sharing one Redis,
and the link's metrics move when the link breaks, publishes fail or nodes conflict."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from callroom.room.keys import RoomKey
from callroom.room.model import Effects
from callroom.room.placement import Change
from callroom.room.record import RoomRecord
from callroom_testing import (
    TokenFactory,
    http_call,
    join_room,
    metric_value,
    wait_until,
)


async def test_another_prefix_on_the_same_redis_sees_nothing_of_the_first(
    start_node: Any, redis_url: str, make_token: TokenFactory
) -> None:
    alpha = await start_node(REDIS_URL=redis_url, REDIS_PREFIX="alpha")
    beta = await start_node(REDIS_URL=redis_url, REDIS_PREFIX="beta")
    alice, state_a = await join_room(alpha, make_token("alice", "Alice"), room="same")
    bob, state_b = await join_room(beta, make_token("bob", "Bob"), room="same")
    # Same room id, two rooms: each joiner is alone, and host of its own.
    assert (state_a["role"], state_b["role"]) == ("host", "host")
    assert [m["clientId"] for m in state_b["hosts"]] == ["bob"]
    assert state_b["participants"] == []
    await alice.send("add_chat", {"chatContent": "only alpha hears this"})
    assert (await alice.expect("add_chat"))["chatContent"] == "only alpha hears this"
    assert "add_chat" not in [f["event"] for f in await bob.drain()]
    admin = make_token("root", roles=["admin"])
    status, body, _ = await http_call(beta, "GET", "/api/v1/rooms", admin)
    assert status == 200
    assert [(r["roomId"], r["members"]) for r in body["rooms"]] == [("same", 1)]

    redis = Redis.from_url(redis_url)
    try:
        keys = {k.decode() for k in await redis.keys("*")}
        channels = {c.decode() for c in await redis.pubsub_channels()}
    finally:
        await redis.aclose()
    assert "alpha:{zoom:same}:room" in keys
    assert "beta:{zoom:same}:room" in keys
    assert all(k.startswith(("alpha:", "beta:")) for k in keys), keys
    # Pub/sub channels ignore database numbers: only the prefix keeps them apart.
    assert "alpha:{zoom:same}:bus" in channels
    assert "beta:{zoom:same}:bus" in channels
    assert not [c for c in channels if c.startswith("callroom:")], channels
    await alice.close()
    await bob.close()


async def _kill(redis_url: str, name: str) -> None:
    """Close a node's Redis connection from Redis' side (CLIENT KILL by its name)."""
    client = Redis.from_url(redis_url)
    try:
        ids = [c["id"] for c in await client.client_list() if c.get("name") == name]
        assert ids, f"no Redis connection named {name}"
        for client_id in ids:
            await client.execute_command("CLIENT", "KILL", "ID", client_id)
    finally:
        await client.aclose()


async def metric(node: Any, name: str) -> float:
    return await metric_value(node, name)


async def test_redis_link_up_reconnects_and_publish_failures(
    start_cluster: Any, redis_url: str, make_token: TokenFactory
) -> None:
    (node,) = await start_cluster(1)
    await wait_until(lambda: _at_least(node, "callroom_redis_up", 1))
    assert await metric(node, "callroom_redis_reconnects_total") == 0
    alice, _ = await join_room(node, make_token("alice", "Alice"))

    # The subscriber's connection is cut: the node connects again.
    await _kill(redis_url, f"callroom-sub:{node.hub.node_id}")
    await wait_until(lambda: _at_least(node, "callroom_redis_reconnects_total", 1))
    await wait_until(lambda: _at_least(node, "callroom_redis_up", 1))

    # The rooms connection is cut: the next publish (this chat message's broadcast) is
    # lost with it, and the connection after it is a reconnect.
    assert await metric(node, "callroom_redis_publish_failures_total") == 0
    reconnects = await metric(node, "callroom_redis_reconnects_total")
    await _kill(redis_url, f"callroom-rooms:{node.hub.node_id}")
    await alice.send("add_chat", {"chatContent": "lost in transit"})
    await wait_until(lambda: _at_least(node, "callroom_redis_publish_failures_total", 1))
    await alice.send("raise_hand")  # a room command: goes through a new connection
    await alice.expect("raise_hand")
    assert await metric(node, "callroom_redis_reconnects_total") == reconnects + 1
    await alice.close()


async def test_concurrent_changes_from_two_nodes_count_cas_retries(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    one, two = await start_cluster(2)
    alice, _ = await join_room(one, make_token("alice", "Alice"))

    def rewrite(record: RoomRecord | None) -> Change | None:
        assert record is not None
        return Change(record, Effects())  # the same record, a new version

    # Both nodes read the same version at once; one of each pair writes first.
    for _ in range(5):
        await asyncio.gather(
            one.hub.transitions.run(RoomKey("zoom:room-1"), rewrite),
            two.hub.transitions.run(RoomKey("zoom:room-1"), rewrite),
        )
    retries = await metric(one, "callroom_redis_cas_retries_total") + await metric(
        two, "callroom_redis_cas_retries_total"
    )
    assert retries >= 1
    await alice.close()


async def test_a_node_whose_redis_is_down_reports_it(start_node: Any) -> None:
    node = await start_node(REDIS_URL="redis://127.0.0.1:1/0")
    status, text, _ = await http_call(node, "GET", "/metrics")
    assert status == 200
    assert "callroom_redis_up 0.0" in text
    assert 'callroom_ready{part="bus"} 0.0' in text


async def _at_least(node: Any, name: str, value: float) -> bool:
    return await metric(node, name) >= value
