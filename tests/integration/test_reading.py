"""Frames of an idle member are handled as they are read, and nothing changes order.

The fast lane (``server/reading.py``) finishes a frame inside the socket's data callback
when nothing of the member is queued and the frame waits for
nothing; every other frame goes to the receive loop, with what the fast lane already
found (rate limit and decoding done once).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog

from callroom.room.commands import Command
from callroom.room.protocol import decode as protocol_decode
from callroom.server import session as session_module
from callroom.server.connection import Connection
from callroom.server.member_socket import MemberSocket
from callroom.server.reading import InlineQueue
from callroom.server.session import Session
from callroom_testing import TokenFactory, meeting, metric_value


def candidate(target: str, text: str) -> dict[str, Any]:
    return {"targetClientId": target, "candidate": text, "sdpMid": "0", "sdpMLineIndex": 0}


@pytest.fixture
def loop_frames(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The text frames that reached the receive loop (``Session.receive_text``), in order."""
    seen: list[str] = []
    receive_text = Session.receive_text

    async def counting(session: Session[Connection], data: str) -> None:
        seen.append(json.loads(data)["event"])
        await receive_text(session, data)

    monkeypatch.setattr(Session, "receive_text", counting)
    return seen


async def test_frames_that_wait_for_nothing_skip_the_receive_loop(
    start_node: Any, make_token: TokenFactory, loop_frames: list[str]
) -> None:
    node = await start_node()
    alice, bob = await meeting(node, make_token, "bob")
    loop_frames.clear()  # the meeting's admissions came in before its members settled

    for n in range(3):
        await bob.send("candidate", candidate("alice", f"candidate:{n}"))
        relayed = await alice.expect("candidate")
        assert relayed["candidate"] == f"candidate:{n}"
    await bob.send("raise_hand")
    assert (await alice.expect("raise_hand"))["clientId"] == "bob"
    await bob.drain()  # a ping, answered by the fast lane too
    assert loop_frames == []

    # A history read waits for the store: the receive loop answers it.
    await bob.send("get_recent_chats")
    await bob.expect("get_recent_chats")
    assert loop_frames == ["get_recent_chats"]
    sockets = [conn._transport.get_protocol() for conn in node.hub.connections if conn._transport]
    assert len(sockets) == 2
    assert all(isinstance(socket, MemberSocket) for socket in sockets)
    assert all(isinstance(socket._queue, InlineQueue) for socket in sockets)


async def test_a_frame_handed_to_the_loop_is_rate_limited_and_decoded_once(
    start_node: Any, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await start_node(RATE_LIMIT_PER_SECOND=1, RATE_LIMIT_BURST=3)
    (alice,) = await meeting(node, make_token)  # settling it sent a ping: 2 tokens left
    decoded: list[str] = []
    decode = protocol_decode

    def counting(data: str, limits: Any) -> Command:
        decoded.append(data)
        return decode(data, limits)

    monkeypatch.setattr(session_module, "decode", counting)
    # Two history reads use the last two tokens, each taken once although the fast lane
    # took the frame in before the receive loop ran it.
    for _ in range(2):
        await alice.send("get_recent_chats")
        assert (await alice.expect("get_recent_chats"))["total"] == 0
    await alice.send("get_recent_chats")
    refused = await alice.expect("error")
    assert refused["code"] == "rate_limited"
    assert len(decoded) == 2


async def test_a_frame_finished_in_the_callback_runs_in_the_members_log_context(
    start_node: Any, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await start_node()
    alice, bob = await meeting(node, make_token, "bob")
    contexts: list[dict[str, Any]] = []
    run_now = node.hub.run_now

    def recording(conn: Connection, command: Command) -> None:
        contexts.append(structlog.contextvars.get_contextvars())
        run_now(conn, command)

    monkeypatch.setattr(node.hub, "run_now", recording)
    await bob.send("raise_hand")
    await alice.expect("raise_hand")

    bob_conn = node.hub.sessions["zoom:room-1"]["bob"]
    assert contexts == [
        {"conn_id": bob_conn.conn_id, "room": "room-1", "kind": "zoom", "client_id": "bob"}
    ]


async def test_a_bug_in_decoding_is_answered_and_the_socket_stays(
    start_node: Any, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await start_node()
    alice, bob = await meeting(node, make_token, "bob")

    def broken(data: str, limits: Any) -> Command:
        raise RuntimeError("a bug")

    monkeypatch.setattr(session_module, "decode", broken)
    await bob.send("raise_hand")
    refused = await bob.expect("error")
    assert refused == {
        "code": "unavailable",
        "message": "internal error: nothing was done",
        "event": None,
    }
    monkeypatch.undo()
    await bob.send("raise_hand")
    assert (await alice.expect("raise_hand"))["clientId"] == "bob"
    unknown = '{event="unknown",code="unavailable"}'
    assert await metric_value(node, "callroom_handler_errors_total", unknown) == 1


async def test_a_burst_behind_a_waiting_frame_keeps_its_order_past_the_queue_limit(
    start_node: Any, make_token: TokenFactory, loop_frames: list[str]
) -> None:
    """Frames queued behind a history read fill aiohttp's queue past its limit (the
    parser stalls and resumes as the loop drains it); all of them still go through the
    loop, in order, and the lane opens again once the queue is empty."""
    node = await start_node(RATE_LIMIT_PER_SECOND=1000, RATE_LIMIT_BURST=1000)
    alice, bob = await meeting(node, make_token, "bob")
    loop_frames.clear()
    sdp = "v=0\r\n" + "a=x-filler:" + "y" * 30_000 + "\r\n"  # ~30 KB: 20 > aiohttp's 512 KB
    offers = [
        json.dumps(
            {
                "event": "offer",
                "payload": {"targetClientId": "alice", "sdp": f"{n}{sdp}", "type": "offer"},
            }
        )
        for n in range(20)
    ]

    bob.send_burst('{"event": "get_recent_chats"}', *offers)

    assert (await bob.expect("get_recent_chats"))["total"] == 0
    relayed = [(await alice.expect("offer"))["sdp"].split("v=0")[0] for _ in offers]
    assert relayed == [str(n) for n in range(20)]
    assert loop_frames == ["get_recent_chats"] + ["offer"] * 20
    await bob.send("raise_hand")  # the queue is empty again: the lane is open
    await alice.expect("raise_hand")
    assert len(loop_frames) == 21
