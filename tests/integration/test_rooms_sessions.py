"""Sessions over real sockets (SPEC §2): leave vs drop, reconnect grace, takeover, role
memory, host handoff, token expiry and refresh_token; on one node and on two
(tests/deployment.py: there a member's reconnection goes through the other node)."""

from __future__ import annotations

import time

import aiohttp
import jwt
import pytest

from callroom_testing import (
    Client,
    TokenFactory,
    events,
    ids,
    join_room,
    meeting,
    metric_value,
    room_url,
    settle,
    wait_until,
)
from deployment import DeployFactory, connected, current_room, dropped

# Issue 19: these run over the suite's Redis Cluster too (conftest.py).
pytestmark = pytest.mark.on_redis_cluster


async def drop(client: Client, how: str) -> None:
    """End a connection without leaving: a reloading tab (1001) or a lost network."""
    if how == "close_1001":
        await client.close(1001)
    else:
        client.ws.transport.abort()


async def test_leave_with_1000_is_seen_by_the_others_at_once(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(RECONNECT_GRACE_SECONDS=30)
    alice, bob, carol = await meeting(nodes, make_token, "bob", "carol")
    await bob.close(1000)
    for member in (alice, carol):
        assert await member.expect("disconnect", timeout=1.0) == {
            "clientId": "bob",
            "displayName": "Bob",
        }
        assert ids((await member.expect("room_state", timeout=1.0))["participants"]) == ["carol"]
    assert "bob" not in (await current_room(nodes)).members


@pytest.mark.parametrize("how", ["close_1001", "abort"])
async def test_drop_is_unseen_and_a_reconnect_within_the_grace_gets_the_same_role(
    deploy: DeployFactory, make_token: TokenFactory, how: str
) -> None:
    nodes = await deploy(RECONNECT_GRACE_SECONDS=1)
    alice, bob, carol = await meeting(nodes, make_token, "bob", "carol")
    await alice.send("promote_host", {"clientId": "bob"})
    assert (await bob.expect("room_state"))["role"] == "host"
    await settle(alice, bob, carol)

    await drop(bob, how)
    await wait_until(lambda: dropped(nodes, "bob"))
    assert await alice.drain() == []
    assert await carol.drain() == []
    assert (await current_room(nodes)).members["bob"].role == "host"  # its place is kept

    bob2, state = await join_room(nodes, make_token("bob", "Bob"))
    assert state["role"] == "host"
    assert set(ids(state["hosts"])) == {"alice", "bob"}
    assert await connected(nodes, "bob")
    # The grace timer was cancelled: past its end, still nobody saw bob leave.
    dropped_at = time.monotonic()
    await wait_until(lambda: time.monotonic() > dropped_at + 1.3)
    assert await alice.drain() == []
    assert await carol.drain() == []
    # Positive control: the reconnected socket is bob's session, acting as host.
    await bob2.send("lock_room")
    assert await carol.expect("room_locked") == {}


async def test_dropped_member_is_removed_when_the_grace_ends(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    grace = 0.5
    nodes = await deploy(RECONNECT_GRACE_SECONDS=grace)
    alice, bob = await meeting(nodes, make_token, "bob")
    bob.ws.transport.abort()
    dropped_at = time.monotonic()
    await wait_until(lambda: dropped(nodes, "bob"))
    assert await alice.drain() == []  # nothing during the grace

    assert await alice.expect("disconnect", timeout=grace + 3) == {
        "clientId": "bob",
        "displayName": "Bob",
    }
    assert time.monotonic() - dropped_at >= grace - 0.05
    assert (await alice.expect("room_state"))["participants"] == []
    assert "bob" not in (await current_room(nodes)).members

    # Gone for good, but remembered: back later, bob skips the waiting room.
    bob2, state = await join_room(nodes, make_token("bob", "Bob"))
    assert state["role"] == "participant"
    assert await alice.expect("connect") == {"clientId": "bob", "displayName": "Bob"}
    await bob2.close()


async def test_last_host_dropping_hands_over_only_after_the_grace(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(RECONNECT_GRACE_SECONDS=0.5)
    alice, bob = await meeting(nodes, make_token, "bob")
    alice.ws.transport.abort()
    await wait_until(lambda: dropped(nodes, "alice"))
    assert await bob.drain() == []
    assert (await current_room(nodes)).members["bob"].role == "participant"
    assert await bob.expect("disconnect", timeout=3) == {
        "clientId": "alice",
        "displayName": "Alice",
    }
    state = await bob.expect("room_state")
    assert (state["role"], ids(state["hosts"])) == ("host", ["bob"])


@pytest.mark.parametrize("how", ["close_1001", "abort"])
async def test_waiting_member_that_drops_is_removed_at_once(
    deploy: DeployFactory, make_token: TokenFactory, how: str
) -> None:
    nodes = await deploy(RECONNECT_GRACE_SECONDS=30)
    alice, _ = await join_room(nodes, make_token("alice"))
    bob, _ = await join_room(nodes, make_token("bob"))
    await alice.expect("waiting_request")
    assert ids((await alice.expect("room_state"))["waitingUsers"]) == ["bob"]

    await drop(bob, how)
    state = await alice.expect("room_state", timeout=1.0)
    assert state["waitingUsers"] == []
    assert "bob" not in (await current_room(nodes)).members


async def test_second_connection_takes_the_session_over_and_the_first_is_closed_4009(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob, carol = await meeting(nodes, make_token, "bob", "carol")
    await alice.send("promote_host", {"clientId": "bob"})
    await settle(alice, bob, carol)

    bob2, state = await join_room(nodes, make_token("bob", "Bob"))
    assert state["role"] == "host"
    assert await bob.closed_with() == 4009
    assert await alice.drain() == []  # no disconnect, no connect
    assert await carol.drain() == []
    assert await connected(nodes, "bob")  # the old socket's end changed nothing

    # Positive control: the new socket is the session.
    await bob2.send("add_chat", {"chatContent": "moved tabs"})
    assert (await carol.expect("add_chat"))["chatContent"] == "moved tabs"
    await carol.send("renegotiate", {"targetClientId": "bob"})
    assert (await bob2.expect("renegotiate"))["clientId"] == "carol"


async def test_admitted_user_who_left_comes_back_without_knocking_and_hosts_as_hosts(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob, carol = await meeting(nodes, make_token, "bob", "carol")
    await alice.send("promote_host", {"clientId": "carol"})
    await settle(alice, bob, carol)

    await bob.close()
    await carol.close()
    await alice.expect("disconnect")
    await alice.expect("disconnect")
    await alice.drain()

    bob2, bob_state = await join_room(nodes, make_token("bob", "Bob"))
    assert bob_state["role"] == "participant"
    carol2, carol_state = await join_room(nodes, make_token("carol", "Carol"))
    assert carol_state["role"] == "host"
    frames = await alice.drain()
    assert "waiting_request" not in events(frames)
    assert [f["payload"]["clientId"] for f in frames if f["event"] == "connect"] == [
        "bob",
        "carol",
    ]

    # A demotion turns the remembered host into a remembered participant.
    await alice.send("demote_host", {"clientId": "carol"})
    assert (await carol2.expect("room_state"))["role"] == "participant"
    await carol2.close()
    await alice.expect("disconnect")
    carol3, carol_state = await join_room(nodes, make_token("carol", "Carol"))
    assert carol_state["role"] == "participant"
    for client in (bob2, carol3):
        await client.close()


async def test_earliest_admitted_member_becomes_host_when_the_last_host_leaves(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, _ = await join_room(nodes, make_token("alice", "Alice"))
    bob, _ = await join_room(nodes, make_token("bob", "Bob"))  # joins first ...
    carol, _ = await join_room(nodes, make_token("carol", "Carol"))
    dave, _ = await join_room(nodes, make_token("dave", "Dave"))
    for sub in ("carol", "bob", "dave"):  # ... but carol is admitted first
        await alice.send("accept_waiting", {"clientId": sub})

    async def dave_admitted() -> bool:
        return (await current_room(nodes)).members["dave"].role == "participant"

    await wait_until(dave_admitted)
    await settle(alice, bob, carol, dave)

    await alice.close()
    for member in (bob, carol, dave):
        assert (await member.expect("disconnect"))["clientId"] == "alice"
        state = await member.expect("room_state")
        assert ids(state["hosts"]) == ["carol"]
        assert ids(state["participants"]) == ["bob", "dave"]
    assert carol.received[-1]["payload"]["role"] == "host"
    await carol.send("lock_room")  # the heir acts as host
    assert await bob.expect("room_locked") == {}


async def test_refresh_token_extends_the_session_and_without_it_4001_at_exp(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(AUTH_LEEWAY_SECONDS=0, LOBBY_ENABLED=False)
    short = make_token("alice", ttl=3)
    exp = jwt.decode(short, options={"verify_signature": False})["exp"]
    alice, _ = await join_room(nodes, short)
    bob, _ = await join_room(nodes, make_token("bob", ttl=3))
    await alice.expect("connect")
    await alice.drain()

    await alice.send("refresh_token", {"token": make_token("alice", ttl=3600)})
    assert await alice.drain() == []  # success is silent

    await wait_until(lambda: time.time() > exp + 0.5, timeout=5)
    assert await bob.closed_with(timeout=2) == 4001
    # alice outlived its first token: still served.
    await alice.send("raise_hand")
    assert (await alice.expect("raise_hand"))["clientId"] == "alice"
    assert await connected(nodes, "alice")


async def test_refused_refresh_is_invalid_payload_and_the_old_expiry_stands(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(AUTH_LEEWAY_SECONDS=0)
    short = make_token("alice", ttl=3)
    exp = jwt.decode(short, options={"verify_signature": False})["exp"]
    alice, _ = await join_room(nodes, short)

    for token in (
        make_token("mallory", ttl=3600),  # another sub
        make_token("alice", ttl=-60),  # expired
        make_token("alice", exp=exp),  # not later than the current one
        "not-a-jwt",
    ):
        await alice.send("refresh_token", {"token": token})
        error = await alice.expect("error")
        assert (error["code"], error["event"]) == ("invalid_payload", "refresh_token")
        assert "token" in error["message"]
        assert token not in error["message"]
    await alice.send("refresh_token", {})
    assert (await alice.expect("error"))["code"] == "invalid_payload"

    await wait_until(lambda: time.time() > exp - 0.5, timeout=5)
    assert await alice.closed_with(timeout=3) == 4001


async def test_handoff_counts_admission_in_the_current_stay(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob, carol = await meeting(nodes, make_token, "bob", "carol")
    await bob.close()  # bob leaves and comes back: admitted again, after carol
    await alice.expect("disconnect")
    bob2, state = await join_room(nodes, make_token("bob", "Bob"))
    assert state["role"] == "participant"
    await settle(alice, bob2, carol)

    await alice.close()
    state = await carol.expect("room_state")
    assert (state["role"], ids(state["hosts"])) == ("host", ["carol"])
    assert ids((await bob2.expect("room_state"))["hosts"]) == ["carol"]


async def test_screen_share_survives_a_reconnect_but_is_not_remembered_after_the_grace(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(RECONNECT_GRACE_SECONDS=0.5)
    alice, bob = await meeting(nodes, make_token, "bob")
    await alice.send("accept_screenshare", {"clientId": "bob"})
    assert (await bob.expect("room_state"))["role"] == "screenshare"
    await settle(alice, bob)

    bob.ws.transport.abort()
    await wait_until(lambda: dropped(nodes, "bob"))
    bob2, state = await join_room(nodes, make_token("bob", "Bob"))
    assert state["role"] == "screenshare"  # within the grace: as it was
    assert ids(state["sharingScreen"]) == ["bob"]

    bob2.ws.transport.abort()
    assert (await alice.expect("disconnect", timeout=3))["clientId"] == "bob"
    bob3, state = await join_room(nodes, make_token("bob", "Bob"))
    assert state["role"] == "participant"  # remembered as admitted, not as sharing
    assert state["sharingScreen"] == []
    await bob3.close()


async def test_heartbeat_closes_a_peer_that_stops_answering_pings(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    interval = 0.3
    nodes = await deploy(HEARTBEAT_INTERVAL_SECONDS=interval, RECONNECT_GRACE_SECONDS=30)
    alice, _ = await join_room(nodes, make_token("alice"))  # answers pings (websockets does)
    async with aiohttp.ClientSession() as http:
        mute = await http.ws_connect(room_url(nodes, make_token("bob")), autoping=False)
        opened_at = time.monotonic()
        assert (await mute.receive_json())["event"] == "room_state"
        await alice.expect("waiting_request")
        assert ids((await alice.expect("room_state"))["waitingUsers"]) == ["bob"]
        seen = []
        while (message := await mute.receive(timeout=5)).type not in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
        ):
            seen.append(message.type)
        closed_after = time.monotonic() - opened_at
    assert aiohttp.WSMsgType.PING in seen  # it was pinged ...
    # ... then given up: one interval after the ping it did not answer (SPEC §3.4).
    assert interval - 0.1 <= closed_after <= 2 * interval + 1.0
    # A waiting member that is dropped leaves the lobby at once.
    assert (await alice.expect("room_state", timeout=1.0))["waitingUsers"] == []
    # The member that answers its pings is still served, several intervals later.
    assert await alice.drain() == []
    assert await connected(nodes, "alice")
    # The close is counted by the node bob was on.
    bob_node = nodes.node_of("bob")
    assert await metric_value(bob_node, "callroom_ws_closes_total", '{code="1006"}') == 1


async def test_a_member_dropping_again_after_a_reconnect_gets_a_whole_new_grace(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    """The first grace's timer stops when the member is back (SPEC §2): a second drop
    later keeps the place for a whole grace from that drop, not until the first one's
    end."""
    grace = 1.0
    nodes = await deploy(RECONNECT_GRACE_SECONDS=grace)
    alice, bob = await meeting(nodes, make_token, "bob")
    bob.ws.transport.abort()
    first_drop = time.monotonic()
    await wait_until(lambda: dropped(nodes, "bob"))
    bob2, state = await join_room(nodes, make_token("bob", "Bob"))
    assert state["role"] == "participant"
    await wait_until(lambda: time.monotonic() > first_drop + grace / 2)
    bob2.ws.transport.abort()
    second_drop = time.monotonic()
    await wait_until(lambda: dropped(nodes, "bob"))
    assert await alice.expect("disconnect", timeout=grace + 3) == {
        "clientId": "bob",
        "displayName": "Bob",
    }
    assert time.monotonic() - second_drop >= grace - 0.05  # not at the first grace's end
