"""Live protocol fuzzing (issue 21): hypothesis frames over real WebSockets to a running
node, while other members are connected (SPEC §3, §3.3, §3.4).

A node (in this process, on a real 127.0.0.1 socket, SQLite chat store) holds one room:
alice hosts, bob is a participant, and mallory, the fuzzer, is a participant or waits in
the lobby. Hypothesis draws lists of frames (tests/fuzz_frames.py: valid, near-valid and
hostile, down to bytes that are not UTF-8, frames over the size limit, "compressed"
frames nobody negotiated, unknown opcodes) and mallory writes them on her socket.
For every frame:

- a frame that must end the connection is closed with its code (SPEC §3.4: 1003 binary,
  1009 too large; RFC 6455's 1002 and 1007, docs/protocol.md); mallory then connects
  again;
- any other frame keeps the connection open and gets what the oracle says (an ``error``
  with the right code and ``event``, or the answers of the room's rules: never
  ``unavailable``, which would be a server fault), checked up to mallory's next ``pong``;
  every frame the server sends is a strict JSON object with a known event, and a waiting
  mallory receives only what SPEC §3.2 lets the lobby see;
- after each example alice and bob are still connected and answer a ping (nobody else
  is dropped), and no log line of level error or above was written (no unhandled
  exception, no ``handler_failed``);
- at the end the node still serves (``/healthz``), and a handshake fuzzer never gets a
  5xx.

Hypothesis needs a synchronous test, so the node and the members live on an event loop
of their own in a thread (``LoopThread``); each example runs there to its end.

Examples per test: ``CALLROOM_FUZZ_EXAMPLES`` (default 60, a few seconds in
``make test``); the figures of docs/security.md come from
``CALLROOM_FUZZ_EXAMPLES=2000 pytest -s tests/integration/test_fuzz_live.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from callroom_testing import (
    AUDIENCE,
    ISSUER,
    Client,
    JwksServer,
    SigningKey,
    TokenFactory,
    join_room,
)
from fuzz_frames import (
    ERROR_CODES,
    SERVER_EVENTS,
    WAITING_MAY_RECEIVE,
    WireFrame,
    frames,
    judge,
    text_message,
)
from log_lines import LogLines
from loop_thread import LoopThread

EXAMPLES = int(os.environ.get("CALLROOM_FUZZ_EXAMPLES", "60"))
ANSWER_SECONDS = 10.0  # a frame's answers, a close, a reconnection
# No keepalive pings of the clients: websockets draws their payloads from ``random`` in
# the loop's thread, which hypothesis takes for a strategy using global randomness.
QUIET_CLIENT: dict[str, Any] = {"ping_interval": None}


@dataclass
class Figures:
    """What was tried: the counts docs/security.md quotes."""

    examples: int = 0
    frames: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0


class LiveRoom:
    """The node and its room: alice (host), bob (participant), mallory (the fuzzer)."""

    def __init__(self, tmp: Path, role: str) -> None:
        self.tmp = tmp
        self.role = role
        self.key = SigningKey.generate("fuzz-key")
        self.make_token = TokenFactory(self.key)
        self.jwks = JwksServer([self.key])
        self.node: Any = None
        self.alice: Client | None = None
        self.bob: Client | None = None
        self.mallory: Client | None = None
        self.figures = Figures()

    async def start(self) -> None:
        from callroom.config import Settings
        from callroom.server.node import Node

        await self.jwks.start()
        settings = Settings(
            _env_file=None,
            AUTH_ISSUER=ISSUER,
            AUTH0_AUDIENCE=AUDIENCE,
            AUTH_JWKS_URL=self.jwks.url,
            HOST="127.0.0.1",
            PORT=0,
            DATABASE_URL=f"sqlite:///{self.tmp}/fuzz.db",
            SHUTDOWN_GRACE_SECONDS=3,
            # Far above what the fuzzer sends: nothing here is about the rate limit
            # (tests/integration/test_hostile_clients.py is), so rate_limited is a fault.
            RATE_LIMIT_PER_SECOND=100_000,
            RATE_LIMIT_BURST=100_000,
            MAX_CONNECTIONS_PER_IP=1000,
        )
        self.node = Node(settings)
        await self.node.start()
        self.alice, _ = await join_room(
            self.node, self.make_token("alice", "Alice"), **QUIET_CLIENT
        )
        self.bob = await self._admitted("bob")
        if self.role == "participant":
            self.mallory = await self._admitted("mallory")
        else:
            self.mallory = await self._waiting()
        await self.alice.drain()
        await self.bob.drain()

    async def stop(self) -> None:
        for client in (self.mallory, self.bob, self.alice):
            if client is not None:
                await client.close()
        if self.node is not None:
            await self.node.stop()
        await self.jwks.stop()

    async def _admitted(self, name: str) -> Client:
        assert self.alice is not None
        client, state = await join_room(
            self.node, self.make_token(name, name.title()), **QUIET_CLIENT
        )
        if state["role"] == "waiting":
            await self.alice.expect("waiting_request")
            await self.alice.send("accept_waiting", {"clientId": name})
            await client.expect("accept_waiting")
            state = await client.expect("room_state")
        assert state["role"] == "participant", state
        return client

    async def _waiting(self) -> Client:
        assert self.alice is not None
        client, state = await join_room(
            self.node, self.make_token("mallory", "Mallory"), **QUIET_CLIENT
        )
        assert state["role"] == "waiting", state
        await self.alice.expect("waiting_request")
        return client

    async def reconnect(self) -> None:
        """mallory back after a close: her role again (a drop keeps an admitted member's
        place, SPEC §2; a waiting member knocks again)."""
        self.figures.reconnects += 1
        if self.role == "participant":
            client, state = await join_room(
                self.node, self.make_token("mallory", "Mallory"), **QUIET_CLIENT
            )
            assert state["role"] == "participant", state
            self.mallory = client
        else:
            self.mallory = await self._waiting()

    # -- one example -----------------------------------------------------------------

    async def play(self, inputs: list[WireFrame]) -> None:
        assert self.mallory is not None
        self.figures.examples += 1
        for frame in inputs:
            self.figures.frames[frame.kind.split("/")[0]] += 1
            if self.mallory.ws.close_code is not None:
                await self.reconnect()
            self.mallory.ws.transport.write(frame.wire)
            if frame.close is not None:
                await self._closed(frame)
            else:
                await self._answered(frame)
        await self._bystanders()

    async def _closed(self, frame: WireFrame) -> None:
        assert self.mallory is not None
        frames = []
        try:
            while True:
                frames.append(await self.mallory.next(ANSWER_SECONDS))
        except ConnectionClosed:
            pass
        code = self.mallory.ws.close_code
        self.figures.closes[code or 0] += 1
        assert code == frame.close, f"{frame}: closed with {code}, frames {frames[:3]}"
        for received in frames:
            self._sound(received)

    async def _answered(self, frame: WireFrame) -> None:
        """Up to the pong that follows the frame: its answers, checked."""
        assert self.mallory is not None
        assert frame.text is not None
        verdict = judge(frame.text)
        await self.mallory.send("ping")
        answers: list[dict[str, Any]] = []
        pongs = 0
        try:
            while pongs < verdict.pongs + 1:
                received = await self.mallory.next(ANSWER_SECONDS)
                self._sound(received)
                pongs += received["event"] == "pong"
                answers.append(received)
        except ConnectionClosed:
            raise AssertionError(
                f"{frame}: connection closed {self.mallory.ws.close_code}, "
                f"expected it open; answers {answers[:5]}"
            ) from None
        errors = [a["payload"] for a in answers if a["event"] == "error"]
        for error in errors:
            self.figures.errors[error["code"]] += 1
        if verdict.must is not None:
            assert [(e["code"], e["event"]) for e in errors] == [(verdict.must, verdict.event)], (
                f"{frame}: expected one {verdict.must} naming {verdict.event!r}, got {errors}"
            )
            return
        for error in errors:
            assert error["code"] in verdict.may, f"{frame}: {error}"
            assert error["event"] == verdict.event, f"{frame}: {error}"

    def _sound(self, received: dict[str, Any]) -> None:
        """A frame the server sent mallory: an object with a known event and an object
        payload; an error is well formed; the lobby sees only what it may."""
        event = received.get("event")
        assert event in SERVER_EVENTS, received
        assert isinstance(received.get("payload"), dict), received
        if event == "error":
            payload = received["payload"]
            assert payload["code"] in ERROR_CODES, received
            assert isinstance(payload["message"], str), received
            assert payload["message"], received
            assert payload["event"] is None or isinstance(payload["event"], str), received
        if self.role == "waiting":
            assert event in WAITING_MAY_RECEIVE, f"the lobby received {received}"

    async def _bystanders(self) -> None:
        """alice and bob still connected, answered, sent only sound frames."""
        for name, client in (("alice", self.alice), ("bob", self.bob)):
            assert client is not None
            assert client.ws.close_code is None, f"{name} was dropped: {client.ws.close_code}"
            for received in await client.drain():
                assert received.get("event") in SERVER_EVENTS, (name, received)
                assert isinstance(received.get("payload"), dict), (name, received)
                assert received["event"] != "error", (name, received)


@pytest.fixture(scope="module", params=["participant", "waiting"])
def live(
    request: pytest.FixtureRequest,
    loop_thread: LoopThread,
    log_lines: LogLines,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveRoom]:
    room = LiveRoom(tmp_path_factory.mktemp("fuzz"), request.param)
    loop_thread.run(room.start())
    yield room
    loop_thread.run(room.stop())
    print(f"\nfuzz ({room.role}): {room.figures}")


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(inputs=st.lists(frames(), min_size=1, max_size=4))
def test_fuzzed_frames_get_an_error_or_their_close_and_hurt_nobody_else(
    live: LiveRoom, loop_thread: LoopThread, log_lines: LogLines, inputs: list[WireFrame]
) -> None:
    since = len(log_lines.lines)
    loop_thread.run(live.play(inputs))
    assert not log_lines.errors(since), log_lines.errors(since)


def test_the_fuzzed_node_still_serves_and_logged_no_error(
    live: LiveRoom, loop_thread: LoopThread, log_lines: LogLines
) -> None:
    """After the fuzzing (module-scoped node: it ran just before): alive, ready, the
    room intact, every kind of input tried, nothing logged at error level."""

    async def check() -> None:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/readyz"):
                async with http.get(f"{live.node.url}{path}") as resp:
                    assert resp.status == 200, path
        # A plain, valid chat message still goes round the room.
        if live.mallory is None or live.mallory.ws.close_code is not None:
            await live.reconnect()
        assert live.alice is not None
        assert live.bob is not None
        await live.alice.send("add_chat", {"chatContent": "still here", "chatId": "after-fuzz"})
        for client in (live.alice, live.bob):
            assert (await client.expect("add_chat"))["chatId"] == "after-fuzz"

    loop_thread.run(check())
    assert live.figures.examples >= 1
    assert not log_lines.errors(), log_lines.errors()


# -- the handshake: never a 5xx --------------------------------------------------------

_segments = st.text(max_size=80) | st.sampled_from(["zoom", "chat", "screenshare", "a" * 65])


@FUZZ
@given(
    kind=_segments,
    room=_segments,
    token=st.sampled_from(["valid", "expired", "none"]) | st.text(max_size=300),
    origin=st.none() | st.sampled_from(["http://localhost:3000", "null", "http://evil"]),
    upgrade=st.booleans(),
)
def test_fuzzed_handshakes_are_answered_never_with_a_5xx(
    live: LiveRoom,
    loop_thread: LoopThread,
    log_lines: LogLines,
    kind: str,
    room: str,
    token: str,
    origin: str | None,
    upgrade: bool,
) -> None:
    """Any path, token, origin, with or without an upgrade: a SPEC §1 status (or 404 for
    a path that is not /ws/{kind}/{roomId}), never a 5xx; a refusal has the JSON body."""
    if token == "valid":
        token = live.make_token("hs-user", "Hs")
    elif token == "expired":
        token = live.make_token("hs-user", ttl=-100)
    since = len(log_lines.lines)

    async def attempt() -> tuple[int, bytes]:
        path = f"/ws/{quote(kind, safe='')}/{quote(room, safe='')}?token={quote(token)}"
        head = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
        if not upgrade:
            head.append("Connection: close")
        else:
            head += [
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            ]
        if origin is not None:
            head.append(f"Origin: {origin}")
        reader, writer = await asyncio.open_connection("127.0.0.1", live.node.port)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            async with asyncio.timeout(ANSWER_SECONDS):
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                return status, await reader.readexactly(length)
        finally:
            writer.close()

    status, body = loop_thread.run(attempt())
    assert status < 500, (status, body)
    assert status in (101, 400, 401, 403, 404, 409), (status, body)
    if status not in (101, 404):
        answer = json.loads(body)
        assert set(answer) == {"error", "message"}, answer
    assert not log_lines.errors(since), log_lines.errors(since)
    if status == 101:  # a member joined: let it go, and wait until the node saw it go
        loop_thread.run(_gone(live, "hs-user"))


async def _gone(live: LiveRoom, client_id: str) -> None:
    deadline = time.monotonic() + ANSWER_SECONDS
    while any(conn.client_id == client_id for conn in live.node.hub.connections):
        assert time.monotonic() < deadline, "the handshake fuzzer's member never left"
        await asyncio.sleep(0.01)  # polling a state with a deadline


def test_the_oracle_knows_the_protocol() -> None:
    """The fuzzer's oracle (tests/fuzz_frames.py) against SPEC §3.3's own examples."""
    assert judge('{"event": "ping"}').pongs == 1
    assert judge('{"event": "ping", "payload": null}').pongs == 1
    assert judge("[]").must == "invalid_json"
    assert judge('{"event": "ping", "payload": {"x": NaN}}').must == "invalid_json"
    assert judge('{"event": "ping", "event": "ping"}').must == "invalid_json"
    assert judge('{"event": "ping", "payload": {"x": 1e400}}').must == "invalid_json"
    assert judge('{"event": "ping", "payload": {"x": "\\ud800"}}').must == "invalid_json"
    unknown = judge('{"event": "room_state"}')
    assert (unknown.must, unknown.event) == ("unknown_event", "room_state")
    assert judge('{"event": "no such name!"}').event is None
    assert judge('{"event": "raise_hand", "payload": 3}').must == "invalid_payload"
    assert judge('{"event": "raise_hand"}').must is None
    assert text_message("t", "x" * 65537).close == 1009
    assert text_message("t", "x" * 65536).close is None
