"""`callroom connect`, the WebSocket client the README's quick start uses: a real node, the
real command in a child process, frames in on stdin and out on stdout."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import pytest

from callroom.client import parse_line
from callroom_testing import TokenFactory, join_room

PYTHON = sys.executable


async def connect(url: str, token: str | None, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "CALLROOM_TOKEN"}
    if token is not None:
        env["CALLROOM_TOKEN"] = token  # the README's way: not on the command line
    return await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "callroom",
        "connect",
        url,
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def next_frame(proc: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
    """The payload of the next frame named ``event`` printed on stdout."""
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert line, "the client ended"
        frame: dict[str, Any] = json.loads(line)
        if frame["event"] == event:
            payload: dict[str, Any] = frame["payload"]
            return payload


async def send(proc: asyncio.subprocess.Process, line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line.encode() + b"\n")
    await proc.stdin.drain()


async def test_connect_prints_frames_sends_lines_and_leaves_at_end_of_input(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node()
    url = f"ws://127.0.0.1:{node.port}/ws/chat/quick-start"
    proc = await connect(url, make_token("alice", "Alice"))
    state = await next_frame(proc, "room_state")
    assert (state["clientId"], state["role"]) == ("alice", "host")

    bob, _ = await join_room(node, make_token("bob", "Bob", ["host"]), "quick-start", "chat")
    await send(proc, "not json {")  # refused locally, the session goes on
    await send(proc, "ping")  # the short form with no payload
    assert await next_frame(proc, "pong") == {}
    await send(proc, 'add_chat {"chatContent": "hello"}')
    assert (await next_frame(proc, "add_chat"))["chatContent"] == "hello"
    await send(proc, '{"event": "get_recent_chats", "payload": {"limit": 5}}')
    recent = await next_frame(proc, "get_recent_chats")
    assert [m["chatContent"] for m in recent["messages"]] == ["hello"]
    assert (recent["total"], recent["hasMore"]) == (1, False)

    assert proc.stdin is not None
    proc.stdin.close()  # end of input: a leave with 1000 (SPEC §2)
    assert proc.stderr is not None
    err = (await asyncio.wait_for(proc.stderr.read(), 10)).decode()
    assert await asyncio.wait_for(proc.wait(), 10) == 0, err
    assert err.startswith("callroom: not sent: "), err
    assert (await bob.expect("disconnect"))["clientId"] == "alice"  # left at once
    await bob.close()


async def test_connect_reports_a_close_by_the_server_and_exits_1(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node()
    alice, _ = await join_room(node, make_token("alice", "Alice"), "r")
    proc = await connect(f"ws://127.0.0.1:{node.port}/ws/zoom/r", make_token("bob", "Bob"))
    assert (await next_frame(proc, "room_state"))["role"] == "waiting"
    await alice.expect("waiting_request")
    await alice.send("deny_waiting", {"clientId": "bob"})
    assert await asyncio.wait_for(proc.wait(), 10) == 1
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    assert err == "callroom: closed by the server: 4003 (denied from the waiting room)\n"
    await alice.close()


async def test_connect_refused_is_one_line_with_the_status(start_node: Any) -> None:
    node = await start_node()
    proc = await connect(f"ws://127.0.0.1:{node.port}/ws/zoom/r", None, "--token", "not-a-jwt")
    assert await asyncio.wait_for(proc.wait(), 10) == 1
    assert proc.stderr is not None
    assert proc.stdout is not None
    assert (await proc.stderr.read()).decode() == "callroom: refused: HTTP 401\n"
    assert await proc.stdout.read() == b""


async def test_connect_to_nothing_says_so(unused_tcp_port: int) -> None:
    proc = await connect(f"ws://127.0.0.1:{unused_tcp_port}/ws/zoom/r", "t")
    assert await asyncio.wait_for(proc.wait(), 20) == 1
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    assert err.startswith(f"callroom: cannot connect to ws://127.0.0.1:{unused_tcp_port}/ws/zoom/r")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("line", "frame"),
    [
        ("ping", {"event": "ping", "payload": {}}),
        (' raise_hand  {"x": 1} ', {"event": "raise_hand", "payload": {"x": 1}}),
        ('{"event": "ping"}', {"event": "ping"}),
    ],
)
def test_a_line_is_a_frame_or_the_short_form(line: str, frame: dict[str, Any]) -> None:
    assert json.loads(parse_line(line)) == frame


@pytest.mark.parametrize("line", ['{"payload": {}}', '{"event": 1}', "add_chat [1]", "add_chat {"])
def test_a_line_that_is_no_frame_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_line(line)
