"""WebRTC signaling relay over real sockets (SPEC §3.1 offer/answer/candidate/renegotiate), on
one node and on two (tests/deployment.py)."""

from __future__ import annotations

from typing import Any

import pytest

from callroom_testing import Client, TokenFactory, join_admitted, join_room, settle
from deployment import DeployFactory, Deployment

# Issue 19: these run over the suite's Redis Cluster too (conftest.py).
pytestmark = pytest.mark.on_redis_cluster

SPOOF = {"clientId": "alice", "displayName": "Alice (host)"}

SIGNALS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # event, what the sender sends (besides targetClientId), what the target receives
    (
        "offer",
        {"sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", "type": "offer"},
        {"sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", "type": "offer"},
    ),
    ("answer", {"sdp": "v=0 answer", "type": "answer"}, {"sdp": "v=0 answer", "type": "answer"}),
    (
        "candidate",
        {"candidate": "candidate:1 1 UDP 2122252543 127.0.0.1 50000 typ host", "sdpMid": "0"},
        {
            "candidate": "candidate:1 1 UDP 2122252543 127.0.0.1 50000 typ host",
            "sdpMid": "0",
            "sdpMLineIndex": None,
        },
    ),
    (
        "candidate",  # end-of-candidates marker, with an index
        {"candidate": "", "sdpMid": None, "sdpMLineIndex": 0},
        {"candidate": "", "sdpMid": None, "sdpMLineIndex": 0},
    ),
    ("renegotiate", {"reason": "screen track added"}, {"reason": "screen track added"}),
    ("renegotiate", {}, {"reason": None}),
]


async def three_admitted(
    nodes: Deployment, make_token: TokenFactory
) -> tuple[Client, Client, Client]:
    alice, _ = await join_room(nodes, make_token("alice", "Alice"))
    bob, _ = await join_admitted(alice, nodes, make_token("bob", "Bob"))
    carol, _ = await join_admitted(alice, nodes, make_token("carol", "Carol"))
    await settle(alice, bob, carol)
    return alice, bob, carol


@pytest.mark.parametrize(("event", "sent", "relayed"), SIGNALS)
async def test_signal_reaches_only_its_target_with_the_sender_stamped(
    deploy: DeployFactory,
    make_token: TokenFactory,
    event: str,
    sent: dict[str, Any],
    relayed: dict[str, Any],
) -> None:
    nodes = await deploy()
    alice, bob, carol = await three_admitted(nodes, make_token)

    await bob.send(event, {**sent, **SPOOF, "targetClientId": "carol", "unknown": 1})
    frame = await carol.next()
    assert frame["event"] == event
    assert frame["payload"] == {
        **relayed,
        "targetClientId": "carol",
        "clientId": "bob",
        "displayName": "Bob",
    }
    assert await alice.drain() == []  # not the host, not anyone else
    assert await bob.drain() == []  # no echo to the sender


async def test_signal_to_anyone_but_another_admitted_member_is_target_not_found(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob, carol = await three_admitted(nodes, make_token)
    waiting, _ = await join_room(nodes, make_token("wendy"))
    await carol.close()  # left for good
    await bob.expect("disconnect")
    await settle(alice, bob)

    for target in ("wendy", "bob", "carol", "nobody"):
        await bob.send("offer", {"targetClientId": target, "sdp": "v=0", "type": "offer"})
        error = await bob.expect("error")
        assert (error["code"], error["event"]) == ("target_not_found", "offer"), target
        assert await bob.drain() == []  # still usable
    assert await alice.drain() == []
    assert await waiting.drain() == []

    # A waiting member may not signal at all.
    await waiting.send("offer", {"targetClientId": "alice", "sdp": "v=0", "type": "offer"})
    assert (await waiting.expect("error"))["code"] == "forbidden"
    assert await alice.drain() == []


@pytest.mark.parametrize(
    ("event", "payload", "field"),
    [
        ("offer", {"sdp": "v=0", "type": "answer"}, "type"),  # an answer relayed as offer
        ("offer", {"sdp": "v=0"}, "type"),
        ("answer", {"sdp": "", "type": "answer"}, "sdp"),
        ("offer", {"sdp": "x" * 201, "type": "offer"}, "sdp"),  # MAX_SDP_BYTES=200
        ("offer", {"sdp": "é" * 101, "type": "offer"}, "sdp"),  # 202 UTF-8 bytes
        ("candidate", {"candidate": 5}, "candidate"),
        ("candidate", {"candidate": "x" * 4097}, "candidate"),
        ("candidate", {"candidate": "c", "sdpMLineIndex": "0"}, "sdpMLineIndex"),
        ("candidate", {"candidate": "c", "sdpMLineIndex": -1}, "sdpMLineIndex"),
        ("candidate", {"candidate": "c", "sdpMid": 0}, "sdpMid"),
        ("renegotiate", {"reason": "r" * 257}, "reason"),
        ("renegotiate", {"targetClientId": None}, "targetClientId"),
        ("answer", {"targetClientId": 7, "sdp": "v=0", "type": "answer"}, "targetClientId"),
    ],
)
async def test_bad_signal_is_refused_naming_the_field_and_nothing_is_relayed(
    deploy: DeployFactory, make_token: TokenFactory, event: str, payload: dict[str, Any], field: str
) -> None:
    nodes = await deploy(MAX_SDP_BYTES=200)
    alice, _ = await join_room(nodes, make_token("alice"))
    bob, _ = await join_admitted(alice, nodes, make_token("bob"))
    await settle(alice, bob)

    await bob.send(event, {"targetClientId": "alice", **payload})
    error = await bob.expect("error")
    assert (error["code"], error["event"]) == ("invalid_payload", event)
    assert field in error["message"]
    assert await alice.drain() == []

    # Positive control: the largest allowed SDP goes through.
    await bob.send("offer", {"targetClientId": "alice", "sdp": "x" * 200, "type": "offer"})
    assert (await alice.expect("offer"))["sdp"] == "x" * 200
