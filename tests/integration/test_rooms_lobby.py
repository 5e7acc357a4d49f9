"""The waiting room over real sockets (SPEC §2 joining, §3.1 lobby rows, §3.2 waiting view),
on one node and on two (tests/deployment.py)."""

from __future__ import annotations

import pytest

from callroom_testing import (
    TokenFactory,
    events,
    ids,
    join_admitted,
    join_room,
    settle,
)
from deployment import DeployFactory, current_room, room_gone

# Issue 19: these run over the suite's Redis Cluster too (conftest.py).
pytestmark = pytest.mark.on_redis_cluster

# SPEC §3.2: everything a waiting member may ever receive.
WAITING_MAY_RECEIVE = {"room_state", "accept_waiting", "deny_waiting", "pong", "error"}


async def test_stranger_waits_alone_until_the_host_admits_it(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, alice_state = await join_room(nodes, make_token("alice", "Alice"))
    assert alice_state["role"] == "host"
    assert ids(alice_state["hosts"]) == ["alice"]

    bob, bob_state = await join_room(nodes, make_token("bob", "Bob"))
    assert bob_state["role"] == "waiting"
    assert bob_state["waitingUsers"] == [{"clientId": "bob", "displayName": "Bob"}]
    for key in ("hosts", "participants", "handsRaised", "sharingScreen"):
        assert bob_state[key] == [], key
    assert bob_state["media"] == {}

    # The host hears the knock, and its room_state lists the waiting member.
    assert await alice.expect("waiting_request") == {"clientId": "bob", "displayName": "Bob"}
    host_view = await alice.expect("room_state")
    assert ids(host_view["waitingUsers"]) == ["bob"]

    await alice.send("accept_waiting", {"clientId": "bob"})
    bob_frames = [await bob.next(), await bob.next()]
    assert events(bob_frames) == ["accept_waiting", "room_state"]
    assert bob_frames[0]["payload"] == {"clientId": "bob", "displayName": "Bob"}
    admitted = bob_frames[1]["payload"]
    assert admitted["role"] == "participant"
    assert ids(admitted["hosts"]) == ["alice"]
    assert ids(admitted["participants"]) == ["bob"]
    assert admitted["waitingUsers"] == []

    alice_frames = await alice.drain()
    assert events(alice_frames) == ["accept_waiting", "connect", "room_state"]
    assert alice_frames[1]["payload"] == {"clientId": "bob", "displayName": "Bob"}
    assert alice_frames[2]["payload"]["waitingUsers"] == []
    assert ids(alice_frames[2]["payload"]["participants"]) == ["bob"]


async def test_lobby_disabled_lets_strangers_straight_in(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(LOBBY_ENABLED=False)
    alice, _ = await join_room(nodes, make_token("alice"))
    bob, bob_state = await join_room(nodes, make_token("bob", "Bob"))
    assert bob_state["role"] == "participant"
    assert ids(bob_state["hosts"]) == ["alice"]
    assert await alice.expect("connect") == {"clientId": "bob", "displayName": "Bob"}
    await alice.close()
    await bob.close()


async def test_token_host_and_admin_skip_the_waiting_room_as_hosts(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, _ = await join_room(nodes, make_token("alice"))
    _, stranger = await join_room(nodes, make_token("sam"))
    _, moderator = await join_room(nodes, make_token("mod", roles=["moderator"]))
    _, admin = await join_room(nodes, make_token("root", roles=["admin"]))
    _, by_permission = await join_room(nodes, make_token("perm", permissions=["rooms:host"]))
    assert stranger["role"] == "waiting"
    assert moderator["role"] == "host"
    assert admin["role"] == "host"
    assert by_permission["role"] == "host"
    await alice.close()


async def test_denied_member_gets_deny_then_4003_and_knocks_again_on_return(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, _ = await join_room(nodes, make_token("alice"))
    bob, _ = await join_room(nodes, make_token("bob", "Bob"))
    await alice.expect("waiting_request")
    await alice.drain()

    await alice.send("deny_waiting", {"clientId": "bob"})
    assert await bob.next() == {
        "event": "deny_waiting",
        "payload": {"clientId": "bob", "displayName": "Bob"},
    }
    assert await bob.closed_with() == 4003
    host_frames = await alice.drain()
    assert events(host_frames) == ["deny_waiting", "room_state"]
    assert host_frames[1]["payload"]["waitingUsers"] == []

    # A denial admits nothing: the same user back is a stranger again.
    bob2, again = await join_room(nodes, make_token("bob", "Bob"))
    assert again["role"] == "waiting"
    assert (await alice.expect("waiting_request"))["clientId"] == "bob"
    await bob2.close()


async def test_knock_and_its_alias_reach_the_hosts_only(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, _ = await join_room(nodes, make_token("alice"))
    bob, _ = await join_admitted(alice, nodes, make_token("bob"))
    carol, _ = await join_room(nodes, make_token("carol", "Carol"))
    await alice.expect("room_state")  # carol entered the lobby
    await settle(alice, bob)

    await carol.send("request_waiting")
    assert await alice.expect("waiting_request") == {"clientId": "carol", "displayName": "Carol"}
    await carol.send("waiting_request")
    assert await alice.expect("waiting_request") == {"clientId": "carol", "displayName": "Carol"}
    assert await carol.drain() == []  # no echo to the knocker
    assert "waiting_request" not in events(await bob.drain())

    # An admitted member has nothing to knock for.
    await bob.send("request_waiting")
    error = await bob.expect("error")
    assert (error["code"], error["event"]) == ("forbidden", "request_waiting")


async def test_waiting_member_receives_nothing_of_the_meeting(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, _ = await join_room(nodes, make_token("alice", "Alice"))
    bob, _ = await join_admitted(alice, nodes, make_token("bob", "Bob"))
    carol, carol_state = await join_room(nodes, make_token("carol", "Carol"))
    assert carol_state["role"] == "waiting"
    await settle(alice, bob)

    # The meeting goes on while carol waits: chat, hands, media, every kind of signaling,
    # screen sharing, role changes, lock, and people joining (admitted and waiting).
    await bob.send("add_chat", {"chatContent": "secret agenda"})
    await bob.expect("add_chat")
    await bob.send("raise_hand")
    await bob.expect("raise_hand")
    await bob.send("set_media_state", {"audio": True, "video": False})
    await bob.expect("media_state")
    await bob.send("offer", {"targetClientId": "alice", "sdp": "v=0 offer", "type": "offer"})
    assert (await alice.expect("offer"))["clientId"] == "bob"
    await alice.send("answer", {"targetClientId": "bob", "sdp": "v=0 answer", "type": "answer"})
    await alice.send("candidate", {"targetClientId": "bob", "candidate": "candidate:1"})
    await alice.send("renegotiate", {"targetClientId": "bob", "reason": "new track"})
    await bob.expect("renegotiate")
    await bob.send("request_screenshare")
    await alice.expect("request_screenshare")
    await alice.send("accept_screenshare", {"clientId": "bob"})
    await bob.expect("accept_screenshare")
    await alice.send("stop_screenshare", {"clientId": "bob"})
    await alice.send("promote_host", {"clientId": "bob"})
    await alice.send("demote_host", {"clientId": "bob"})
    await alice.send("lock_room")
    await bob.expect("room_locked")
    await alice.send("unlock_room")
    await bob.expect("room_unlocked")
    dave, _ = await join_admitted(alice, nodes, make_token("dave", "Dave"))  # admitted
    erin, _ = await join_room(nodes, make_token("erin", "Erin"))  # waits too
    await alice.expect("waiting_request")
    _hank, hank_state = await join_room(nodes, make_token("hank", roles=["host"]))
    assert hank_state["role"] == "host"
    await dave.close()  # a leave: the admitted get disconnect
    await alice.expect("disconnect")
    await carol.send("add_chat", {"chatContent": "let me in"})  # refused

    # Positive control: the admitted members did get the meeting.
    bob_seen = set(events(await bob.drain()))
    assert {"connect", "disconnect", "room_state"} <= bob_seen

    carol_frames = await carol.drain()
    assert {frame["event"] for frame in carol_frames} <= WAITING_MAY_RECEIVE, carol_frames
    assert [f["payload"]["code"] for f in carol_frames if f["event"] == "error"] == ["forbidden"]
    for frame in carol_frames:
        if frame["event"] == "room_state":
            state = frame["payload"]
            assert state["role"] == "waiting"
            assert state["waitingUsers"] == [{"clientId": "carol", "displayName": "Carol"}]
            for key in ("hosts", "participants", "handsRaised", "sharingScreen"):
                assert state[key] == [], key
            assert state["media"] == {}

    # Once admitted, the same socket sees the meeting.
    await alice.send("accept_waiting", {"clientId": "carol"})
    await carol.expect("accept_waiting")
    admitted = await carol.expect("room_state")
    assert set(ids(admitted["hosts"])) == {"alice", "hank"}
    assert ids(admitted["handsRaised"]) == ["bob"]
    assert admitted["media"] == {"bob": {"audio": True, "video": False}}
    await erin.close()


async def test_waiting_room_survives_the_last_admitted_member_leaving(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    """SPEC §2: with nobody admitted left, waiting members keep waiting; a returning
    remembered member is admitted and, by the handoff rule, becomes host."""
    nodes = await deploy()
    alice, _ = await join_room(nodes, make_token("alice"))
    bob, _ = await join_room(nodes, make_token("bob"))
    await alice.expect("waiting_request")
    await alice.close()  # leave: nobody admitted is left

    assert "accept_waiting" not in events(await bob.drain())
    assert (await current_room(nodes)).members["bob"].role == "waiting"

    alice2, back = await join_room(nodes, make_token("alice"))
    assert back["role"] == "host"
    assert ids(back["waitingUsers"]) == ["bob"]
    # A stranger arriving now still waits: the lobby never lets strangers in by default.
    carol, carol_state = await join_room(nodes, make_token("carol"))
    assert carol_state["role"] == "waiting"
    await alice2.close()
    await bob.close()
    await carol.close()


async def test_each_kind_is_its_own_namespace_of_rooms(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    zoom, _ = await join_room(nodes, make_token("alice"), room="a", kind="zoom")
    _, in_chat = await join_room(nodes, make_token("bob"), room="a", kind="chat")
    _, in_screenshare = await join_room(nodes, make_token("carol"), room="a", kind="screenshare")
    assert in_chat["role"] == "host"  # first of its own room, not a knock on zoom/a
    assert in_screenshare["role"] == "host"
    assert await zoom.drain() == []
    for key in ("zoom:a", "chat:a", "screenshare:a"):
        assert not await room_gone(nodes, key), key
