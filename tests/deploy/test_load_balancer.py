"""deploy/nginx.conf for real: Debian's nginx, on loopback, with the committed file (the
upstream servers, the listen ports and the certificate paths substituted) in front of
two real callroom nodes sharing one Redis (issue 15, SPEC §7, §9).

Members of one room connect through nginx from addresses of their own (127.0.0.11,
.12, ... all on loopback), land on both nodes (round-robin, no stickiness: each node's
hub says whom it holds), and hold one meeting: admission, chat, signaling.

The client address: between nginx and each node sits a transparent TCP relay (``Tap``)
that keeps the head of every HTTP request it passes on, so the test reads exactly the
bytes the node reads; with the nodes trusting the proxy (``TRUSTED_PROXIES``), each
node then takes the member's own address as the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import re
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from deploy_support import NGINX_CONF, nginx_upstream_servers, tool

from callroom_testing import (
    Client,
    TokenFactory,
    join_room,
    open_client,
    settle,
    wait_until,
)

ROOM = "room-1"
MEMBERS = {"alice": "127.0.0.11", "bob": "127.0.0.12", "carol": "127.0.0.13", "dave": "127.0.0.14"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"deploy/nginx.conf no longer has exactly one {old!r}"
    return text.replace(old, new)


def nginx_conf_for(
    upstream_ports: list[int], port: int, tls: tuple[int, Path, Path] | None = None
) -> str:
    """deploy/nginx.conf with loopback ports for its upstream servers and its listen
    port; with ``tls`` (port, certificate, key), its ``#tls:`` lines enabled."""
    text = NGINX_CONF.read_text()
    servers = nginx_upstream_servers(text)
    assert len(servers) == len(upstream_ports)
    for server, upstream in zip(servers, upstream_ports, strict=True):
        text = replace_once(text, f"server {server} ", f"server 127.0.0.1:{upstream} ")
    text = replace_once(text, "listen 80;", f"listen 127.0.0.1:{port};")
    if tls is not None:
        tls_port, cert, key = tls
        text = re.sub(r"^(\s*)#tls: ", r"\1", text, flags=re.MULTILINE)
        text = replace_once(text, "listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;")
        text = replace_once(text, "/etc/nginx/tls/tls.crt", str(cert))
        text = replace_once(text, "/etc/nginx/tls/tls.key", str(key))
    return text


@dataclass
class Tap:
    """A TCP relay in front of one node keeping every request head it passes on (until a
    connection is upgraded: WebSocket frames follow). Bytes are passed on unchanged."""

    upstream: int
    port: int = 0
    heads: list[str] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()  # each relay then ends on its own
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    def upgrades(self) -> list[dict[str, str]]:
        """The WebSocket upgrade requests: request line and headers (lower-case names)."""
        found = []
        for head in self.heads:
            request_line, *lines = head.split("\r\n")
            headers = {"request": request_line}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("upgrade", "").lower() == "websocket":
                found.append(headers)
        return found

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers |= {writer, up_writer}

        async def requests() -> None:
            buffer = b""
            scanning = True
            with contextlib.suppress(OSError, ConnectionError):
                while data := await reader.read(65536):
                    if scanning:
                        buffer += data
                        while scanning and b"\r\n\r\n" in buffer:
                            head, _, buffer = buffer.partition(b"\r\n\r\n")
                            self.heads.append(head.decode("latin-1"))
                            scanning = b"upgrade: websocket" not in head.lower()
                    up_writer.write(data)
                    await up_writer.drain()
            up_writer.close()

        async def responses() -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await up_reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        try:
            await asyncio.gather(requests(), responses())
        finally:
            self._tasks.discard(task)
            self._writers -= {writer, up_writer}


@dataclass
class Nginx:
    """Debian's nginx running deploy/nginx.conf in a prefix directory of its own."""

    process: subprocess.Popen[bytes]
    port: int
    access_log: Path
    error_log: Path
    tls_port: int = 0

    def access_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line]


NginxFactory = Callable[..., Awaitable[Nginx]]


async def listening(port: int, process: subprocess.Popen[bytes], errors: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited {process.returncode}: {errors.read_text()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError("nginx is not listening") from None
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return


@pytest.fixture
async def start_nginx(tmp_path: Path) -> AsyncIterator[NginxFactory]:
    binary = tool("nginx")
    started: list[Nginx] = []

    async def factory(upstream_ports: list[int], tls: tuple[Path, Path] | None = None) -> Nginx:
        prefix = tmp_path / f"nginx-{len(started)}"
        prefix.mkdir()
        port = free_port()
        tls_port = free_port() if tls else 0
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf_for(upstream_ports, port, (tls_port, *tls) if tls else None))
        access_log, error_log = prefix / "stdout.log", prefix / "stderr.log"
        with access_log.open("wb") as out, error_log.open("wb") as err:
            process = subprocess.Popen(
                [
                    binary,
                    "-p",
                    f"{prefix}/",
                    "-c",
                    str(conf),
                    "-e",
                    str(error_log),
                    "-g",
                    f"daemon off; pid {prefix}/nginx.pid;",
                ],
                stdout=out,
                stderr=err,
            )
        nginx = Nginx(process, port, access_log, error_log, tls_port)
        started.append(nginx)
        await listening(port, process, error_log)
        if tls_port:
            await listening(tls_port, process, error_log)
        return nginx

    yield factory
    for nginx in started:
        nginx.process.send_signal(signal.SIGTERM)  # nginx's fast shutdown
        try:
            nginx.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            nginx.process.kill()
            nginx.process.wait()
        errors = nginx.error_log.read_text()
        assert not re.search(r"\[(emerg|alert|crit)\]", errors), errors


@pytest.fixture
async def cluster_behind_taps(start_cluster: Any) -> AsyncIterator[tuple[list[Any], list[Tap]]]:
    # nginx and the taps reach the nodes from 127.0.0.1: the proxy the nodes trust.
    nodes = await start_cluster(2, TRUSTED_PROXIES="127.0.0.1/32")
    taps = [Tap(node.port) for node in nodes]
    for tap in taps:
        await tap.start()
    yield nodes, taps
    for tap in taps:
        await tap.stop()


def holders(nodes: list[Any]) -> list[set[str]]:
    """Whom each node holds a connection of (its hub's connections)."""
    return [{conn.client_id for conn in node.hub.connections} for node in nodes]


def via(port: int) -> SimpleNamespace:
    """The load balancer where the room helpers expect a node (they use ``.port``)."""
    return SimpleNamespace(port=port)


async def test_one_meeting_through_nginx_on_both_nodes(
    cluster_behind_taps: tuple[list[Any], list[Tap]],
    start_nginx: NginxFactory,
    make_token: TokenFactory,
) -> None:
    nodes, taps = cluster_behind_taps
    nginx = await start_nginx([tap.port for tap in taps])
    lb = via(nginx.port)
    tokens = {sub: make_token(sub, sub.title()) for sub in MEMBERS}

    def source(sub: str) -> dict[str, Any]:
        return {"local_addr": (MEMBERS[sub], 0)}

    alice, state = await join_room(lb, tokens["alice"], ROOM, **source("alice"))
    assert state["role"] == "host"
    members: dict[str, Client] = {"alice": alice}
    for sub in ("bob", "carol", "dave"):
        extra: dict[str, Any] = {}
        if sub == "carol":  # what a client claims is kept, the real address appended
            extra = {"additional_headers": {"X-Forwarded-For": "203.0.113.9"}}
        client, _ = await join_room(lb, tokens[sub], ROOM, **source(sub), **extra)
        knock = await alice.expect("waiting_request")
        assert knock["clientId"] == sub
        await alice.send("accept_waiting", {"clientId": sub})
        await client.expect("accept_waiting")
        assert (await client.expect("room_state"))["role"] == "participant"
        members[sub] = client
    await settle(*members.values())

    # Round-robin, no stickiness: the members are spread over both nodes.
    held = holders(nodes)
    assert held[0], held
    assert held[1], held
    assert held[0] | held[1] == set(MEMBERS)
    assert not held[0] & held[1]

    # One meeting across the nodes: chat reaches everyone, signaling its target only.
    await members["bob"].send("add_chat", {"chatContent": "hello through nginx"})
    for sub, client in members.items():
        chat = await client.expect("add_chat")
        assert (chat["clientId"], chat["chatContent"]) == ("bob", "hello through nginx"), sub
    a_node_one, a_node_two = sorted(held[0])[0], sorted(held[1])[0]
    offer = {"sdp": "v=0\r\n", "type": "offer"}
    await members[a_node_one].send("offer", {**offer, "targetClientId": a_node_two})
    got = await members[a_node_two].expect("offer")
    assert (got["clientId"], got["sdp"]) == (a_node_one, offer["sdp"])
    await members[a_node_two].send("candidate", {"targetClientId": a_node_one, "candidate": "c1"})
    assert (await members[a_node_one].expect("candidate"))["clientId"] == a_node_two
    for sub, client in members.items():
        frames = await client.drain()
        assert [f["event"] for f in frames if f["event"] in ("offer", "candidate")] == [], sub

    # The handshake's client address reached the node holding each member.
    for index, tap in enumerate(taps):
        upgrades = tap.upgrades()
        assert len(upgrades) == len(held[index])
        for request in upgrades:
            assert request["request"].startswith(f"GET /ws/zoom/{ROOM}?token=")
            address = request["x-real-ip"]
            sub = next(s for s, a in MEMBERS.items() if a == address)
            assert sub in held[index], (sub, index)
            claimed = "203.0.113.9, " if sub == "carol" else ""
            assert request["x-forwarded-for"] == f"{claimed}{address}"
            assert request["forwarded"] == f"for={address};proto=http"
            assert ipaddress.ip_address(address).is_loopback
    # ... and the node took it as the member's address (TRUSTED_PROXIES, SPEC §9), not
    # the proxy's, nor what carol's client claimed.
    for node in nodes:
        for conn in node.hub.connections:
            assert conn.ip == MEMBERS[conn.client_id], conn.client_id

    # HTTP through the balancer; the metrics are not for the public.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{nginx.port}/healthz") as response:
            assert response.status == 200
        async with http.get(f"http://127.0.0.1:{nginx.port}/metrics") as response:
            assert response.status == 404

    # The access log: one line per WebSocket (written when it ends), with the client
    # address and the path, never the query string that carries the token.
    for client in members.values():
        await client.close()
    await wait_until(lambda: len([x for x in nginx.access_lines() if x["status"] == 101]) == 4)
    log = nginx.access_log.read_text()
    assert "token" not in log
    assert not any(token in log for token in tokens.values())
    upgrades = [line for line in nginx.access_lines() if line["status"] == 101]
    assert sorted(line["client"] for line in upgrades) == sorted(MEMBERS.values())
    assert {line["path"] for line in upgrades} == {f"/ws/zoom/{ROOM}"}


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_block_serves_wss_and_sends_plain_http_to_https(
    cluster_behind_taps: tuple[list[Any], list[Tap]],
    start_nginx: NginxFactory,
    make_token: TokenFactory,
    tmp_path: Path,
) -> None:
    """The `#tls:` lines enabled (docs/deploy.md): wss:// works across both nodes, and a
    plain request is redirected to https (wss only in production)."""
    nodes, taps = cluster_behind_taps
    cert, key = self_signed(tmp_path)
    nginx = await start_nginx([tap.port for tap in taps], tls=(cert, key))
    context = ssl.create_default_context(cafile=str(cert))

    def url(sub: str) -> str:
        token = make_token(sub, sub.title())
        return f"wss://127.0.0.1:{nginx.tls_port}/ws/zoom/{ROOM}?token={token}"

    alice = await open_client(url("alice"), ssl=context)
    assert (await alice.expect("room_state"))["role"] == "host"
    bob = await open_client(url("bob"), ssl=context)
    assert (await bob.expect("room_state"))["role"] == "waiting"
    await alice.expect("waiting_request")
    await alice.send("accept_waiting", {"clientId": "bob"})
    assert (await bob.expect("room_state"))["role"] == "participant"
    await bob.send("add_chat", {"chatContent": "over wss"})
    assert (await alice.expect("add_chat"))["chatContent"] == "over wss"
    held = holders(nodes)
    assert held[0], held
    assert held[1], held
    for tap in taps:
        for request in tap.upgrades():
            assert request["x-forwarded-proto"] == "https"
            assert request["forwarded"] == "for=127.0.0.1;proto=https"

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{nginx.port}/healthz", allow_redirects=False) as response,
    ):
        assert response.status == 301
        assert response.headers["Location"] == "https://127.0.0.1/healthz"
    await alice.close()
    await bob.close()


async def test_refusals_pass_through_unchanged(
    cluster_behind_taps: tuple[list[Any], list[Tap]], start_nginx: NginxFactory
) -> None:
    """A refusal before the upgrade reaches the client as the node sent it (SPEC §1)."""
    _, taps = cluster_behind_taps
    nginx = await start_nginx([tap.port for tap in taps])
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with aiohttp.ClientSession() as http:
        for path, status, code in (
            (f"/ws/zoom/{ROOM}", 401, "unauthorized"),
            ("/ws/nope/room", 400, "bad_request"),
        ):
            async with http.get(f"http://127.0.0.1:{nginx.port}{path}", headers=upgrade) as resp:
                assert resp.status == status, path
                assert (await resp.json())["error"] == code, path
