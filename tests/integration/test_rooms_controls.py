"""Hands, screen share, media and host controls over real sockets (SPEC §3.1), on one node
and on two (tests/deployment.py)."""

from __future__ import annotations

import pytest

from callroom_testing import (
    TokenFactory,
    events,
    ids,
    join_admitted,
    join_room,
    meeting,
    refused,
    room_url,
    settle,
    wait_until,
)
from deployment import DeployFactory, current_room, room_gone

# Issue 19: these run over the suite's Redis Cluster too (conftest.py).
pytestmark = pytest.mark.on_redis_cluster


async def test_hands_queue_in_order_and_are_lowered_by_owner_or_host(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob, carol = await meeting(nodes, make_token, "bob", "carol")

    carol_info = {"clientId": "carol", "displayName": "Carol"}
    await carol.send("raise_hand", {"clientId": "alice", "displayName": "Alice"})  # spoof
    # carol's hand is up before bob raises his: two members' frames have no order of
    # their own (on two nodes they race to Redis), the queue's is the order of raising.
    assert await carol.expect("raise_hand") == carol_info
    await bob.send("raise_hand")
    for member in (alice, bob, carol):
        if member is not carol:
            assert await member.expect("raise_hand") == carol_info
        assert await member.expect("raise_hand") == {"clientId": "bob", "displayName": "Bob"}
    await bob.send("raise_hand")  # already raised: a no-op, nothing sent
    assert await bob.drain() == []
    assert await alice.drain() == []

    # The queue order shows in room_state (a newcomer makes the host's view change).
    dave, _ = await join_room(nodes, make_token("dave"))
    host_view = await alice.expect("room_state")
    assert ids(host_view["handsRaised"]) == ["carol", "bob"]

    await bob.send("lower_hand", {"clientId": "carol"})  # not a host: not someone else's
    error = await bob.expect("error")
    assert (error["code"], error["event"]) == ("forbidden", "lower_hand")

    await carol.send("lower_hand", {"clientId": "carol"})  # naming oneself = nobody
    for member in (alice, bob, carol):
        assert await member.expect("lower_hand") == {"clientId": "carol", "displayName": "Carol"}
    await carol.send("lower_hand")  # not raised: nothing happens, nothing is sent
    assert await carol.drain() == []

    await alice.send("lower_hand", {"clientId": "bob"})  # a host lowers another's hand
    for member in (alice, bob, carol):
        assert await member.expect("lower_hand") == {"clientId": "bob", "displayName": "Bob"}
    assert "raise_hand" not in events(await dave.drain())  # waiting: nothing of hands


async def test_screen_share_request_accept_limit_deny_and_stop(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(MAX_SCREENSHARES=1)
    alice, bob, carol = await meeting(nodes, make_token, "bob", "carol")
    bob_info = {"clientId": "bob", "displayName": "Bob"}
    carol_info = {"clientId": "carol", "displayName": "Carol"}

    await bob.send("request_screenshare")
    assert await alice.expect("request_screenshare") == bob_info
    assert "request_screenshare" not in events(await carol.drain())  # hosts only

    await alice.send("accept_screenshare", {"clientId": "bob"})
    assert await bob.expect("accept_screenshare") == bob_info
    assert (await bob.expect("room_state"))["role"] == "screenshare"
    assert await alice.expect("accept_screenshare") == bob_info
    for member in (alice, carol):
        state = await member.expect("room_state")
        assert ids(state["sharingScreen"]) == ["bob"]
        assert "bob" not in ids(state["participants"])
    assert "accept_screenshare" not in events(await carol.drain())  # member and hosts only

    # The limit: one sharer already.
    await carol.send("request_screenshare")
    assert await alice.expect("request_screenshare") == carol_info
    await alice.send("accept_screenshare", {"clientId": "carol"})
    error = await alice.expect("error")
    assert (error["code"], error["event"]) == ("limit_reached", "accept_screenshare")
    assert await alice.drain() == []  # still usable
    assert "room_state" not in events(await carol.drain())

    await alice.send("deny_screenshare", {"clientId": "carol"})
    assert await carol.expect("deny_screenshare") == carol_info
    assert await alice.expect("deny_screenshare") == carol_info
    assert "deny_screenshare" not in events(await bob.drain())

    # A sharer may ask for nothing more; a participant may not stop someone else's share.
    await bob.send("request_screenshare")
    assert (await bob.expect("error"))["code"] == "forbidden"
    await carol.send("stop_screenshare", {"clientId": "bob"})
    assert (await carol.expect("error"))["code"] == "forbidden"
    await carol.send("stop_screenshare")  # not sharing
    assert (await carol.expect("error"))["code"] == "forbidden"

    await bob.send("stop_screenshare")  # the sharer stops itself
    for member in (alice, bob, carol):
        state = await member.expect("room_state")
        assert state["sharingScreen"] == []
        assert "bob" in ids(state["participants"])

    # The slot is free again; a host stops someone else's share.
    await alice.send("accept_screenshare", {"clientId": "carol"})
    assert (await carol.expect("room_state"))["role"] == "screenshare"
    await alice.send("stop_screenshare", {"clientId": "carol"})
    await alice.expect("room_state")
    assert (await carol.expect("room_state"))["role"] == "participant"
    await alice.send("stop_screenshare", {"clientId": "carol"})  # not sharing any more
    error = await alice.expect("error")
    assert (error["code"], error["event"]) == ("not_found", "stop_screenshare")


async def test_media_state_reaches_the_admitted_and_shows_in_room_state(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob = await meeting(nodes, make_token, "bob")
    await bob.send("set_media_state", {"audio": True, "clientId": "alice"})
    expected = {"clientId": "bob", "displayName": "Bob", "audio": True, "video": False}
    assert await alice.expect("media_state") == expected
    assert await bob.expect("media_state") == expected
    await bob.send("set_media_state", {"video": True})  # audio kept
    assert (await alice.expect("media_state"))["audio"] is True

    await bob.send("set_media_state", {"audio": 1})  # strict types
    error = await bob.expect("error")
    assert error["code"] == "invalid_payload"
    assert "audio" in error["message"]

    # A member admitted later learns everyone's media from its room_state.
    _, carol_state = await join_admitted(alice, nodes, make_token("carol"))
    assert carol_state["media"] == {"bob": {"audio": True, "video": True}}


async def test_promoted_member_acts_as_host_and_demoted_one_no_longer_does(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob, carol = await meeting(nodes, make_token, "bob", "carol")

    await bob.send("accept_waiting", {"clientId": "x"})  # not a host yet
    assert (await bob.expect("error"))["code"] == "forbidden"

    await alice.send("promote_host", {"clientId": "bob"})
    for member in (alice, bob, carol):
        state = await member.expect("room_state")
        assert ids(state["hosts"]) == ["alice", "bob"]
        assert ids(state["participants"]) == ["carol"]
    assert bob.received[-1]["payload"]["role"] == "host"

    await alice.send("promote_host", {"clientId": "bob"})  # already a host
    error = await alice.expect("error")
    assert (error["code"], error["event"]) == ("not_found", "promote_host")

    await bob.send("demote_host", {"clientId": "alice"})
    for member in (alice, bob, carol):
        state = await member.expect("room_state")
        assert ids(state["hosts"]) == ["bob"]
        assert ids(state["participants"]) == ["alice", "carol"]
    assert alice.received[-1]["payload"]["role"] == "participant"

    await alice.send("lock_room")  # no longer a host
    assert (await alice.expect("error"))["code"] == "forbidden"
    await bob.send("demote_host", {"clientId": "bob"})  # oneself
    error = await bob.expect("error")
    assert error["code"] == "invalid_payload"
    assert "clientId" in error["message"]
    await bob.send("demote_host", {"clientId": "carol"})  # not a host
    assert (await bob.expect("error"))["code"] == "not_found"


async def test_locked_room_refuses_strangers_but_not_token_hosts_or_remembered_members(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob = await meeting(nodes, make_token, "bob")
    waiting, _ = await join_room(nodes, make_token("wendy"))
    await settle(alice, bob)

    await alice.send("lock_room")
    assert await alice.expect("room_locked") == {}
    assert await bob.expect("room_locked") == {}
    assert "room_locked" not in events(await waiting.drain())

    status, body = await refused(room_url(nodes, make_token("mallory")))
    assert (status, body["error"]) == (403, "room_locked")

    hank, hank_state = await join_room(nodes, make_token("hank", roles=["host"]))
    assert hank_state["role"] == "host"
    assert hank_state["locked"] is True

    await bob.close()  # leaves; the room remembers bob was admitted
    await alice.expect("disconnect")
    bob2, bob_state = await join_room(nodes, make_token("bob"))
    assert bob_state["role"] == "participant"

    await alice.send("unlock_room")
    assert await bob2.expect("room_unlocked") == {}
    mallory, mallory_state = await join_room(nodes, make_token("mallory"))
    assert mallory_state["role"] == "waiting"
    assert mallory_state["locked"] is False
    for client in (hank, bob2, mallory, waiting, alice):
        await client.close()


async def test_kick_closes_4004_and_the_kicked_user_knocks_again(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob, carol = await meeting(nodes, make_token, "bob", "carol")

    await carol.send("kick_participant", {"clientId": "bob"})  # not a host
    assert (await carol.expect("error"))["code"] == "forbidden"
    await alice.send("kick_participant", {"clientId": "alice"})
    assert (await alice.expect("error"))["code"] == "invalid_payload"

    await alice.send("kick_participant", {"clientId": "bob"})
    assert await bob.closed_with() == 4004
    for member in (alice, carol):
        assert await member.expect("disconnect") == {"clientId": "bob", "displayName": "Bob"}
        assert ids((await member.expect("room_state"))["participants"]) == ["carol"]

    bob2, again = await join_room(nodes, make_token("bob", "Bob"))
    assert again["role"] == "waiting"  # the kick erased the room's memory of bob
    assert (await alice.expect("waiting_request"))["clientId"] == "bob"
    assert ids((await alice.expect("room_state"))["waitingUsers"]) == ["bob"]

    # A waiting member can be kicked too: closed 4004, the admitted see no disconnect.
    await alice.send("kick_participant", {"clientId": "bob"})
    assert await bob2.closed_with() == 4004
    assert "disconnect" not in events(await carol.drain())
    host_frames = await alice.drain()
    assert events(host_frames) == ["room_state"]
    assert host_frames[0]["payload"]["waitingUsers"] == []


async def test_ban_refuses_the_user_whatever_its_token_until_unbanned(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob = await meeting(nodes, make_token, "bob")

    await alice.send("kick_participant", {"clientId": "bob", "ban": True})
    assert await bob.closed_with() == 4004
    await alice.expect("disconnect")

    for token in (
        make_token("bob"),
        make_token("bob", roles=["host"]),
        make_token("bob", roles=["admin"]),
    ):
        status, body = await refused(room_url(nodes, token))
        assert (status, body["error"]) == (403, "banned")
    # Other rooms are not affected.
    elsewhere, _ = await join_room(nodes, make_token("bob"), room="room-2")
    await elsewhere.close()

    await alice.send("unban_participant", {"clientId": "nobody"})
    error = await alice.expect("error")
    assert (error["code"], error["event"]) == ("not_found", "unban_participant")

    await alice.send("unban_participant", {"clientId": "bob"})
    assert await alice.expect("unban_participant") == {"clientId": "bob"}
    bob2, state = await join_room(nodes, make_token("bob"))
    assert state["role"] == "waiting"
    await bob2.close()


async def test_host_may_not_kick_or_ban_an_admin(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, _ = await join_room(nodes, make_token("alice"))
    root, root_state = await join_room(nodes, make_token("root", roles=["admin"]))
    assert root_state["role"] == "host"
    await alice.send("demote_host", {"clientId": "root"})
    assert (await alice.expect("error"))["code"] == "forbidden"
    await alice.send("kick_participant", {"clientId": "root", "ban": True})
    error = await alice.expect("error")
    assert (error["code"], error["event"]) == ("forbidden", "kick_participant")
    assert await root.drain() is not None  # still connected
    room = await current_room(nodes)
    assert "root" in room.members
    assert "root" not in room.banned

    # The admin may kick the host.
    await root.send("kick_participant", {"clientId": "alice"})
    assert await alice.closed_with() == 4004


async def test_end_room_closes_everyone_4005_and_the_room_is_gone(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob = await meeting(nodes, make_token, "bob")
    waiting, _ = await join_room(nodes, make_token("wendy"))
    await alice.expect("room_state")

    await bob.send("end_room")  # a participant may not
    assert (await bob.expect("error"))["code"] == "forbidden"
    assert not await room_gone(nodes)

    await alice.send("end_room")
    for client in (alice, bob, waiting):
        assert await client.closed_with() == 4005
    await wait_until(lambda: room_gone(nodes))

    # A new room of that name starts afresh: the first member is host.
    again, state = await join_room(nodes, make_token("wendy"))
    assert state["role"] == "host"
    await again.close()
