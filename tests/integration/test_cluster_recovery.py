"""Many nodes when Redis misbehaves (SPEC §6, §7): the subscriber's connection breaks,
Redis comes back as another process that lost the rooms."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from callroom.room.keys import RoomKey
from callroom_testing import TokenFactory, join_admitted, join_room, wait_until


async def kill_subscriber(redis_url: str, node: Any) -> None:
    """Close the node's subscriber connection from Redis' side (CLIENT KILL by name)."""
    client = Redis.from_url(redis_url)
    try:
        name = f"callroom-sub:{node.hub.node_id}"
        clients = await client.client_list()
        ids = [c["id"] for c in clients if c.get("name") == name]
        assert ids, f"no Redis connection named {name}"
        for client_id in ids:
            await client.execute_command("CLIENT", "KILL", "ID", client_id)
    finally:
        await client.aclose()


async def test_a_broken_subscriber_reconnects_and_the_room_goes_on(
    start_cluster: Any, make_token: TokenFactory, redis_url: str
) -> None:
    one, two = await start_cluster()
    alice, _ = await join_room(one, make_token("alice", "Alice"))
    bob, _ = await join_admitted(alice, two, make_token("bob", "Bob"))
    await kill_subscriber(redis_url, two)
    await wait_until(lambda: not two.hub.bus.up)
    await wait_until(lambda: two.hub.bus.up)
    # Subscribed again to the room: alice's chat (published by node one) reaches bob.
    await alice.send("add_chat", {"chatContent": "still here?", "chatId": "m1"})
    assert (await bob.expect("add_chat"))["chatId"] == "m1"
    await bob.send("raise_hand")
    assert (await alice.expect("raise_hand"))["clientId"] == "bob"


async def test_an_update_missed_while_disconnected_is_read_back(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """A change of the record that node two did not hear (its replica is behind) is
    carried out by ``resync``: its member removed meanwhile is closed."""
    one, two = await start_cluster()
    alice, _ = await join_room(one, make_token("alice", "Alice"))
    bob, _ = await join_admitted(alice, two, make_token("bob", "Bob"))
    key = "zoom:room-1"
    # Node two stops hearing the room; bob's place is then taken by a newer session.
    two.hub.bus._channels.pop(key)
    carol_as_bob, state = await join_room(one, make_token("bob", "Bob"))
    assert state["role"] == "participant"
    assert bob.ws.close_code is None  # node two did not hear the takeover
    await two.hub.resync(False)
    assert await bob.closed_with() == 4009
    await carol_as_bob.close()


async def test_redis_that_lost_the_rooms_gets_them_written_back(
    start_cluster: Any, make_token: TokenFactory, redis_url: str
) -> None:
    """Redis restarted empty (another run id): the node writes its replica back, roles
    included, and the meeting goes on: the host stays host, a joiner waits or is
    admitted into the same room, not a new one."""
    (one,) = await start_cluster(1)
    alice, _ = await join_room(one, make_token("alice", "Alice"))
    client = Redis.from_url(redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    await one.hub.resync(True)
    bob, _ = await join_admitted(alice, one, make_token("bob", "Bob"))
    room = await one.hub.find_room(RoomKey("zoom:room-1"))
    assert room is not None
    assert room.members["alice"].role.value == "host"
    assert room.members["bob"].role.value == "participant"
    assert alice.ws.close_code is None
    await bob.close()
    await alice.close()


async def test_a_chat_whose_echo_never_comes_back_is_answered_and_its_retry_reaches_everyone(
    start_cluster: Any, make_token: TokenFactory, monkeypatch: Any
) -> None:
    """Many nodes: a sender's add is answered by its own broadcast coming back. If it
    never does (the subscriber lost it), the sender still gets an answer in time
    (``unavailable``, not confirmed), and its retry with the same chatId goes to every
    member, not only to the sender."""
    from callroom.runtime import chat as runtime_chat

    monkeypatch.setattr(runtime_chat, "ECHO_TIMEOUT_SECONDS", 0.2)
    one, two = await start_cluster()
    alice, _ = await join_room(one, make_token("alice", "Alice"))
    bob, _ = await join_admitted(alice, two, make_token("bob", "Bob"))
    hub = one.hub
    heard = hub.on_delivery

    def deaf_to_own_echoes(key: Any, delivery: Any) -> None:
        if not delivery.tag:
            heard(key, delivery)

    monkeypatch.setattr(hub, "on_delivery", deaf_to_own_echoes)
    await alice.send("add_chat", {"chatContent": "lost echo", "chatId": "m1"})
    assert (await bob.expect("add_chat"))["chatId"] == "m1"  # the others got it
    error = await alice.expect("error")
    assert (error["code"], error["event"]) == ("unavailable", "add_chat")
    assert "not confirmed" in error["message"]
    monkeypatch.setattr(hub, "on_delivery", heard)
    await alice.send("add_chat", {"chatContent": "lost echo", "chatId": "m1"})
    assert (await alice.expect("add_chat"))["chatId"] == "m1"
    assert (await bob.expect("add_chat"))["chatId"] == "m1"  # the retry went to everyone
