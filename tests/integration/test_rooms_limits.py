"""Every SPEC §3.3 error over a real socket, with the connection usable after it, and the
limits of SPEC §1, §3.4 and §6 (frame size, binary frames, flooding, room size); on one
node and on two (tests/deployment.py)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from callroom_testing import (
    Client,
    TokenFactory,
    http_call,
    join_admitted,
    join_room,
    refused,
    room_url,
    settle,
    wait_until,
)
from deployment import DeployFactory, Deployment, current_room


async def room_with_roles(nodes: Deployment, make_token: TokenFactory) -> dict[str, Client]:
    """alice host, bob participant, wendy waiting; everything settled."""
    alice, _ = await join_room(nodes, make_token("alice", "Alice"))
    bob, _ = await join_admitted(alice, nodes, make_token("bob", "Bob"))
    wendy, _ = await join_room(nodes, make_token("wendy", "Wendy"))
    await alice.expect("room_state")
    await settle(alice, bob, wendy)
    return {"alice": alice, "bob": bob, "wendy": wendy}


async def assert_still_usable(client: Client) -> None:
    await client.send("ping")
    assert await client.next() == {"event": "pong", "payload": {}}


# (who sends, raw frame, code, event echoed, a word the message must contain)
ERRORS: list[tuple[str, str, str, str | None, str]] = [
    ("bob", "{not json", "invalid_json", None, ""),
    ("bob", "[1, 2]", "invalid_json", None, ""),
    ("bob", '{"payload": {}}', "invalid_json", None, "event"),
    ("bob", '{"event": 5}', "invalid_json", None, "event"),
    ("bob", '{"event": "add_chat", "payload": {"chatContent": NaN}}', "invalid_json", None, ""),
    ("bob", '{"event": "ping", "event": "ping"}', "invalid_json", None, ""),
    ("bob", '{"event": "fly_to_the_moon"}', "unknown_event", "fly_to_the_moon", ""),
    ("bob", '{"event": "room_state", "payload": {}}', "unknown_event", "room_state", ""),
    ("bob", '{"event": "pong"}', "unknown_event", "pong", ""),
    ("bob", '{"event": "connect"}', "unknown_event", "connect", ""),
    ("bob", '{"event": "<script>alert(1)</script>"}', "unknown_event", None, ""),
    ("bob", '{"event": "add_chat", "payload": []}', "invalid_payload", "add_chat", "payload"),
    (
        "bob",
        '{"event": "add_chat", "payload": {"chatContent": 5}}',
        "invalid_payload",
        "add_chat",
        "chatContent",
    ),
    (
        "alice",
        '{"event": "accept_waiting", "payload": {}}',
        "invalid_payload",
        "accept_waiting",
        "clientId",
    ),
    (
        "alice",
        '{"event": "kick_participant", "payload": {"clientId": "bob", "ban": 1}}',
        "invalid_payload",
        "kick_participant",
        "ban",
    ),
    (
        "bob",
        '{"event": "recents_chat", "payload": {"limit": "5"}}',
        "invalid_payload",
        "recents_chat",
        "limit",
    ),
    (
        "bob",
        '{"event": "kick_participant", "payload": {"clientId": "alice"}}',
        "forbidden",
        "kick_participant",
        "",
    ),
    ("bob", '{"event": "lock_room"}', "forbidden", "lock_room", ""),
    # An alias is answered under the name sent (docs/protocol.md: error.event).
    ("bob", '{"event": "waiting_request"}', "forbidden", "waiting_request", ""),
    ("wendy", '{"event": "recents_chat"}', "forbidden", "recents_chat", ""),
    ("wendy", '{"event": "raise_hand"}', "forbidden", "raise_hand", ""),
    (
        "wendy",
        '{"event": "candidate", "payload": {"targetClientId": "alice", "candidate": ""}}',
        "forbidden",
        "candidate",
        "",
    ),
    (
        "alice",
        '{"event": "delete_chat", "payload": {"chatId": "no-such-message"}}',
        "not_found",
        "delete_chat",
        "",
    ),
    (
        "alice",
        '{"event": "accept_waiting", "payload": {"clientId": "bob"}}',  # admitted already
        "not_found",
        "accept_waiting",
        "",
    ),
    (
        "alice",
        '{"event": "promote_host", "payload": {"clientId": "wendy"}}',  # waiting
        "not_found",
        "promote_host",
        "",
    ),
    (
        "bob",
        '{"event": "answer", "payload": {"targetClientId": "wendy", "sdp": "v", "type": "answer"}}',
        "target_not_found",
        "answer",
        "",
    ),
]


@pytest.mark.parametrize(
    ("sender", "frame", "code", "event", "word"),
    ERRORS,
    ids=[f"{code}-{i}" for i, (_, _, code, _, _) in enumerate(ERRORS)],
)
async def test_rejected_frame_gets_its_error_and_the_connection_stays_usable(
    deploy: DeployFactory,
    make_token: TokenFactory,
    sender: str,
    frame: str,
    code: str,
    event: str | None,
    word: str,
) -> None:
    nodes = await deploy()
    clients = await room_with_roles(nodes, make_token)
    client = clients[sender]
    await client.send_raw(frame)
    reply = await client.next()
    assert reply["event"] == "error"
    assert set(reply["payload"]) == {"code", "message", "event"}
    assert reply["payload"]["code"] == code
    assert reply["payload"]["event"] == event
    assert word in reply["payload"]["message"]
    assert reply["payload"]["message"]
    await assert_still_usable(client)
    # Nothing reached anyone else, and the room is unchanged.
    for name, other in clients.items():
        if name != sender:
            assert await other.drain() == [], name
    room = await current_room(nodes)
    assert {cid: m.role.value for cid, m in room.members.items()} == {
        "alice": "host",
        "bob": "participant",
        "wendy": "waiting",
    }


async def test_limit_reached_when_the_screen_share_slots_are_full(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(MAX_SCREENSHARES=2)
    alice, _ = await join_room(nodes, make_token("alice"))
    members = [(await join_admitted(alice, nodes, make_token(f"m{i}")))[0] for i in range(3)]
    await alice.send("accept_screenshare", {"clientId": "m0"})
    await alice.send("accept_screenshare", {"clientId": "m1"})
    await alice.send("accept_screenshare", {"clientId": "m2"})
    error = await alice.expect("error")
    assert (error["code"], error["event"]) == ("limit_reached", "accept_screenshare")
    await assert_still_usable(alice)
    roles = {cid: m.role.value for cid, m in (await current_room(nodes)).members.items()}
    assert roles == {"alice": "host", "m0": "screenshare", "m1": "screenshare", "m2": "participant"}
    await settle(*members)


async def test_rate_limited_frames_are_dropped_and_the_connection_recovers(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(RATE_LIMIT_PER_SECOND=1, RATE_LIMIT_BURST=2)
    alice, _ = await join_room(nodes, make_token("alice"))
    for i in range(3):
        await alice.send("add_chat", {"chatContent": f"burst {i}"})
    frames = [await alice.next() for _ in range(3)]
    assert [f["event"] for f in frames] == ["add_chat", "add_chat", "error"]
    assert frames[2]["payload"]["code"] == "rate_limited"
    assert frames[2]["payload"]["event"] is None
    limited_at = time.monotonic()
    path = "/api/v1/rooms/zoom/room-1/messages"
    _, page, _ = await http_call(nodes, "GET", path, make_token("alice"))
    assert [m["chatContent"] for m in page["messages"]] == ["burst 0", "burst 1"]  # dropped

    # The bucket refills at RATE_LIMIT_PER_SECOND: a second later one more frame fits.
    await wait_until(lambda: time.monotonic() > limited_at + 1.1)
    await assert_still_usable(alice)


async def test_flooding_on_after_rate_limited_is_closed_1008(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(RATE_LIMIT_PER_SECOND=1, RATE_LIMIT_BURST=2)
    alice, _ = await join_room(nodes, make_token("alice"))
    bob, _ = await join_room(nodes, make_token("bob"))  # a bystander, waiting
    for _ in range(5):
        await alice.send("ping")
    seen: list[dict[str, Any]] = []
    while len(seen) < 4:
        frame = await alice.next()
        if frame["event"] in ("pong", "error"):  # not the host's lobby news
            seen.append(frame)
    assert [f["event"] for f in seen] == ["pong", "pong", "error", "error"]
    assert {f["payload"]["code"] for f in seen[2:]} == {"rate_limited"}
    assert await alice.closed_with() == 1008
    assert await bob.drain() is not None  # others are not affected


async def test_frame_over_max_message_bytes_is_closed_1009(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(MAX_MESSAGE_BYTES=1024, CHAT_MAX_LENGTH=5000)
    alice, _ = await join_room(nodes, make_token("alice"))
    fits = json.dumps({"event": "add_chat", "payload": {"chatContent": "x" * 900}})
    assert len(fits) <= 1024
    await alice.send_raw(fits)
    assert len((await alice.expect("add_chat"))["chatContent"]) == 900  # positive control

    await alice.send("add_chat", {"chatContent": "x" * 1100})
    assert await alice.closed_with() == 1009


async def test_binary_frame_is_closed_1003(deploy: DeployFactory, make_token: TokenFactory) -> None:
    nodes = await deploy()
    alice, _ = await join_room(nodes, make_token("alice"))
    await assert_still_usable(alice)
    await alice.send_raw(json.dumps({"event": "ping"}).encode())
    assert await alice.closed_with() == 1003


async def test_room_full_is_409_before_the_upgrade_waiting_members_included(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(MAX_ROOM_SIZE=2)
    _alice, _ = await join_room(nodes, make_token("alice"))
    waiting, _ = await join_room(nodes, make_token("wendy"))
    status, body = await refused(room_url(nodes, make_token("carol")))
    assert (status, body["error"]) == (409, "room_full")
    status, body = await refused(room_url(nodes, make_token("hank", roles=["host"])))
    assert (status, body["error"]) == (409, "room_full")
    # A takeover is no new member: it is let in.
    alice2, state = await join_room(nodes, make_token("alice"))
    assert state["role"] == "host"
    # Room made: a place is free again.
    await waiting.close()

    async def wendy_gone() -> bool:
        return len((await current_room(nodes)).members) == 1

    await wait_until(wendy_gone)
    carol, state = await join_room(nodes, make_token("carol"))
    assert state["role"] == "waiting"
    await carol.close()
    await alice2.close()


async def test_missing_or_null_payload_reads_as_empty(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, _ = await join_room(nodes, make_token("alice"))
    for frame in ('{"event": "ping"}', '{"event": "ping", "payload": null}'):
        await alice.send_raw(frame)
        assert await alice.next() == {"event": "pong", "payload": {}}
    await alice.send_raw('{"event": "raise_hand", "payload": null}')
    assert (await alice.expect("raise_hand"))["clientId"] == "alice"
