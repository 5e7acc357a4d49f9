"""Hostile clients against a real server process (SPEC §9 "Bounds before membership").

Each test starts `python -m callroom serve` and attacks it with raw sockets: a request
that never completes, a crowd of silent connections from one address, a header block too
large, a malformed request, a member that never reads, control and continuation frame
floods, expensive frames, an unmasked frame, and both sides of the size limit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from callroom_testing import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    TokenFactory,
    join_room,
    metric_value,
    open_client,
    room_url,
    wait_until,
)


class Server:
    """A `callroom serve` child process; its JSON log lines are read as they come, so
    the pipe never fills."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.logs: list[dict[str, Any]] = []
        self.url = ""
        self.port = 0
        self.sockets: list[asyncio.StreamWriter] = []  # raw members', closed at the end
        self._listening = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while raw := await self.proc.stderr.readline():
            try:
                line = json.loads(raw)
            except ValueError:  # not JSON: kept, and fails the test that looks at it
                line = {"event": "not_json", "raw": raw.decode(errors="replace")}
            self.logs.append(line)
            if line.get("event") == "listening":
                self.url = line["url"]
                self.port = urlsplit(self.url).port or 0
                self._listening.set()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.logs if line.get("event") == name]

    async def stop(self) -> None:
        for writer in self.sockets:
            writer.close()
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(Exception):
            await self._reader


StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start_server(jwks_server: JwksServer, tmp_path: Path) -> AsyncIterator[StartServer]:
    servers: list[Server] = []

    async def start(**settings: str) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH", "LOG_"))}
        env.update(
            AUTH_ISSUER=ISSUER,
            AUTH0_AUDIENCE=AUDIENCE,
            AUTH_JWKS_URL=jwks_server.url,
            DATABASE_URL="memory://",
            LOG_FORMAT="json",
        )
        env.update({"HANDSHAKE_TIMEOUT_SECONDS": "1", **settings})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callroom",
            "serve",
            "--port",
            "0",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        server = Server(proc)
        servers.append(server)
        try:
            await asyncio.wait_for(server._listening.wait(), 60)
        except TimeoutError:
            raise AssertionError(f"server did not start: {server.logs}") from None
        await wait_until(lambda: _ready(server), timeout=30)
        return server

    yield start
    for server in servers:
        await server.stop()


async def _ready(server: Server) -> bool:
    status, _ = await http_get(server, "/readyz")
    return status == 200


async def http_get(server: Server, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sent until it closed the connection (fails if it did not)."""
    received = b""
    deadline = time.monotonic() + within
    while chunk := await asyncio.wait_for(reader.read(65536), deadline - time.monotonic()):
        received += chunk
    return received


# -- Before the request is complete ----------------------------------------------------


async def test_a_silent_connection_is_closed_at_the_handshake_deadline(
    start_server: StartServer,
) -> None:
    server = await start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    opened = time.monotonic()
    assert await closed_by_server(reader, within=5) == b""
    assert time.monotonic() - opened >= 0.9  # closed by the deadline, not refused at once
    writer.close()
    assert (
        await metric_value(
            server, "callroom_pre_upgrade_closes_total", '{reason="handshake_timeout"}'
        )
        == 1
    )


async def test_trickled_headers_do_not_extend_the_deadline(start_server: StartServer) -> None:
    server = await start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    closed = asyncio.create_task(closed_by_server(reader, within=5))
    sent = 0
    while not closed.done() and sent < 100:  # a header byte every 50 ms (slowloris)
        with contextlib.suppress(ConnectionError):
            writer.write(b"X")
            await writer.drain()
        sent += 1
        await asyncio.wait([closed], timeout=0.05)
    assert await closed == b""
    assert sent < 60  # closed about one second in, well before the trickle ended
    writer.close()


async def test_a_complete_request_is_served_and_kept_alive_no_longer_than_the_bound(
    start_server: StartServer,
) -> None:
    server = await start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await asyncio.wait_for(reader.readuntil(b"}"), 5)
    assert first.startswith(b"HTTP/1.1 200")
    assert await closed_by_server(reader, within=5) == b""  # idle keep-alive: closed too
    writer.close()


async def test_a_request_body_that_does_not_arrive_in_time_gets_408(
    start_server: StartServer,
) -> None:
    server = await start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"DELETE /api/v1/rooms/zoom/r HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
    response = await closed_by_server(reader, within=5)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert json.loads(body)["error"] == "request_timeout"
    writer.close()


async def test_unfinished_connections_of_one_address_are_capped_members_are_not(
    start_server: StartServer, make_token: TokenFactory
) -> None:
    server = await start_server(
        MAX_CONNECTIONS_PER_IP="3", LOBBY_ENABLED="false", HANDSHAKE_TIMEOUT_SECONDS="30"
    )
    members = [(await join_room(server, make_token(f"u{i}")))[0] for i in range(3)]
    silent = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    refusal = await closed_by_server(reader, within=5)
    head, _, body = refusal.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429")
    assert json.loads(body)["error"] == "too_many_connections"
    writer.close()
    # The three members held no place: the three connections before it were let in.
    for silent_reader, silent_writer in silent:
        silent_writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await closed_by_server(silent_reader, within=5)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        silent_writer.close()
    await wait_until(lambda: _answers_health(server))  # their places came free
    for member in members:  # and the members were not disturbed
        await member.send("ping")
        await member.expect("pong")
        await member.close()


async def test_a_trusted_proxy_is_not_capped_as_one_address(start_server: StartServer) -> None:
    server = await start_server(MAX_CONNECTIONS_PER_IP="2", TRUSTED_PROXIES="127.0.0.1/32")
    silent = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(4)]
    assert await _answers_health(server)  # a fifth connection of the proxy is served
    for _, writer in silent:
        writer.close()


async def _answers_health(server: Server) -> bool:
    with contextlib.suppress(Exception):
        status, _ = await http_get(server, "/healthz")
        return status == 200
    return False


async def test_a_request_head_over_the_bound_is_refused_431(start_server: StartServer) -> None:
    server = await start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    for i in range(10):  # 10 lines of 4 KiB, each within the per-line bound, never ended
        writer.write(b"X-Filler-%d: %s\r\n" % (i, b"a" * 4096))
    response = await closed_by_server(reader, within=5)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431")
    assert json.loads(body)["error"] == "bad_request"
    writer.close()


async def test_a_malformed_request_gets_json_400_echoing_nothing_logged_at_info(
    start_server: StartServer,
) -> None:
    server = await start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nX-Secret: " + b"s3cr3t" * 2000 + b"\r\n\r\n")
    response = await closed_by_server(reader, within=5)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400"
    assert b"application/json" in head
    assert json.loads(body) == {"error": "bad_request", "message": "malformed HTTP request"}
    assert b"s3cr3t" not in response
    writer.close()
    await wait_until(lambda: bool(server.events("connection_refused")))
    [line] = server.events("connection_refused")
    assert line["reason"] == "malformed_request"
    assert line["level"] == "info"
    assert "exception" not in line
    assert "s3cr3t" not in json.dumps(line)
    assert not [entry for entry in server.logs if entry.get("level") == "error"]


async def test_malformed_request_lines_are_throttled_and_the_rest_counted(
    start_server: StartServer,
) -> None:
    server = await start_server()

    async def malformed() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await closed_by_server(reader, within=5)
        writer.close()

    await asyncio.gather(*(malformed() for _ in range(30)))  # sent at once
    assert (
        await metric_value(
            server, "callroom_pre_upgrade_closes_total", '{reason="malformed_request"}'
        )
        == 30
    )
    await wait_until(lambda: bool(server.events("refusals_suppressed")))
    logged = len(server.events("connection_refused"))
    suppressed = sum(line["suppressed"] for line in server.events("refusals_suppressed"))
    assert logged <= 20  # 10 a second per reason
    assert logged + suppressed == 30


# -- A raw WebSocket member ---------------------------------------------------------------


class RawMember:
    """A member's WebSocket over a plain socket: frames built by hand (masked or not),
    and a receive buffer as small as the test wants."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def join(cls, server: Server, token: str, *, rcvbuf: int | None = None) -> RawMember:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        limit = 2**16 if rcvbuf is None else 1024
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws/zoom/room-1?token={token} HTTP/1.1\r\nHost: x\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        server.sockets.append(writer)
        return cls(reader, writer)

    def send(self, opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> None:
        self.writer.write(frame(opcode, payload, fin=fin, mask=mask))

    async def next_frame(self, timeout: float = 5) -> tuple[int, bytes]:
        first, second = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    async def close_code(self, timeout: float = 5) -> int:
        """Read until the server's close frame; its code."""
        deadline = time.monotonic() + timeout
        while True:
            opcode, payload = await self.next_frame(deadline - time.monotonic())
            if opcode == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code

    async def next_event(self) -> dict[str, Any]:
        while True:
            opcode, payload = await self.next_frame()
            if opcode == 0x1:
                event: dict[str, Any] = json.loads(payload)
                return event


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def text(event: str, payload: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"event": event, "payload": payload or {}}).encode()


TEXT, CONTINUATION, PING = 0x1, 0x0, 0x9


# -- Members that do not read, or flood --------------------------------------------------


async def test_a_member_that_never_reads_is_removed_while_the_others_chat_on(
    start_server: StartServer, make_token: TokenFactory
) -> None:
    server = await start_server(
        LOBBY_ENABLED="false",
        RECONNECT_GRACE_SECONDS="0",
        RATE_LIMIT_PER_SECOND="100000",
        RATE_LIMIT_BURST="100000",
        MAX_SDP_BYTES="60000",
    )
    alice, _ = await join_room(server, make_token("alice", "Alice"))
    carol, _ = await join_room(server, make_token("carol", "Carol"))
    bob = await RawMember.join(server, make_token("bob", "Bob"), rcvbuf=4096)
    await alice.expect("connect")
    offer = {"targetClientId": "bob", "type": "offer", "sdp": "v" * 59000}
    for _ in range(150):  # ~9 MB towards bob, who reads nothing
        await alice.send("offer", offer)
    gone = await carol.expect("disconnect", timeout=15)
    assert gone["clientId"] == "bob"
    [closed] = server.events("slow_consumer_closed")
    assert closed["client_id"] == "bob"  # the member closed, not the sender
    assert await metric_value(server, "callroom_ws_close_aborts_total") >= 1
    await wait_until(lambda: _connections(server, 2))
    await alice.send("add_chat", {"chatContent": "still here"})
    assert (await carol.expect("add_chat"))["chatContent"] == "still here"
    bob.writer.close()


async def _connections(server: Server, count: int) -> bool:
    return await metric_value(server, "callroom_ws_connections") == count


async def test_a_ping_flood_is_closed_1008_a_few_pings_are_answered(
    start_server: StartServer, make_token: TokenFactory
) -> None:
    server = await start_server()
    member = await RawMember.join(server, make_token("alice"))
    assert (await member.next_event())["event"] == "room_state"
    for _ in range(5):
        member.send(PING, b"hi")
    for _ in range(5):
        opcode, payload = await member.next_frame()
        assert (opcode, payload) == (0xA, b"hi")  # a few pings: answered with pongs
    member.writer.write(b"".join(frame(PING, b"x") for _ in range(500)))
    assert await member.close_code() == 1008


async def test_a_flood_of_empty_continuation_frames_is_closed_1008(
    start_server: StartServer, make_token: TokenFactory
) -> None:
    server = await start_server()
    member = await RawMember.join(server, make_token("alice"))
    assert (await member.next_event())["event"] == "room_state"
    member.send(TEXT, b"", fin=False)
    member.writer.write(b"".join(frame(CONTINUATION, b"", fin=False) for _ in range(500)))
    assert await member.close_code() == 1008


async def test_frames_are_charged_by_size_so_big_frames_hit_the_limit_sooner(
    start_server: StartServer, make_token: TokenFactory
) -> None:
    server = await start_server(LOBBY_ENABLED="false")
    big = await RawMember.join(server, make_token("big"))
    assert (await big.next_event())["event"] == "room_state"
    padded = text("ping", {"pad": "p" * 60_000})  # 8 tokens of the burst of 40
    big.writer.write(b"".join(frame(TEXT, padded) for _ in range(10)))
    answers = [(await big.next_event())["event"] for _ in range(10)]
    assert answers.count("error") == 5  # 5 x 8 tokens spent, the next 5 refused
    small = await RawMember.join(server, make_token("small"))
    assert (await small.next_event())["event"] == "room_state"
    small.writer.write(b"".join(frame(TEXT, text("ping")) for _ in range(30)))
    assert [(await small.next_event())["event"] for _ in range(30)] == ["pong"] * 30


async def test_expensive_frames_of_others_do_not_make_a_quiet_member_look_abusive(
    start_server: StartServer, make_token: TokenFactory
) -> None:
    server = await start_server(LOBBY_ENABLED="false", MAX_CONNECTIONS_PER_IP="100")
    attackers = [await RawMember.join(server, make_token(f"a{i}")) for i in range(20)]
    quiet, _ = await join_room(server, make_token("quiet"))
    heavy = frame(TEXT, text("ping", {"pad": "p" * 63_000}))
    answers: list[str] = []
    for _ in range(20):  # 2 s: every attacker 19 heavy frames a second, quiet 10 pings
        for attacker in attackers:
            attacker.writer.write(heavy)
        await quiet.send("ping")
        answers.append((await quiet.next(timeout=10))["event"])
        await asyncio.sleep(0.1)  # pacing the senders, not synchronising
    assert answers == ["pong"] * 20
    refused = await metric_value(
        server, "callroom_handler_errors_total", '{event="unknown",code="rate_limited"}'
    )
    assert refused > 0  # the attackers, charged by size, were refused
    for attacker in attackers:
        attacker.writer.close()


# -- RFC 6455 framing --------------------------------------------------------------------


async def test_an_unmasked_client_frame_is_closed_1002(
    start_server: StartServer, make_token: TokenFactory
) -> None:
    server = await start_server()
    member = await RawMember.join(server, make_token("alice"))
    assert (await member.next_event())["event"] == "room_state"
    member.send(TEXT, text("ping"), mask=False)
    assert await member.close_code() == 1002


@pytest.mark.parametrize(("size", "closed"), [(65536, False), (65537, True)])
async def test_max_message_bytes_is_the_largest_message_accepted(
    start_server: StartServer, make_token: TokenFactory, size: int, closed: bool
) -> None:
    server = await start_server()
    client = await open_client(room_url(server, make_token("alice")))
    assert (await client.next())["event"] == "room_state"
    empty = len(text("ping", {"pad": ""}))
    message = text("ping", {"pad": "p" * (size - empty)})
    assert len(message) == size
    await client.send_raw(message.decode())
    if closed:
        assert await client.closed_with() == 1009
    else:
        assert (await client.next())["event"] == "pong"
        await client.close()
