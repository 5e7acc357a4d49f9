"""Log lines of a real `callroom serve` process (SPEC §9 "Logs"; docs/operations.md):
access lines for HTTP requests and handshakes, refusals rate limited per reason, audit
lines for moderation and admin actions, the node id and version on every line.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callroom import __version__
from callroom_testing import (
    AUDIENCE,
    ISSUER,
    Client,
    JwksServer,
    TokenFactory,
    join_admitted,
    join_room,
    wait_until,
)


@dataclass
class Served:
    """A `callroom serve` child process and the JSON lines it wrote so far."""

    proc: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    url: str = ""
    port: int = 0

    async def read(self) -> None:
        assert self.proc.stderr is not None
        while raw := await self.proc.stderr.readline():
            text = raw.decode()
            self.raw.append(text)
            line = json.loads(text)  # LOG_FORMAT=json: every line one JSON object
            self.lines.append(line)
            if line["event"] == "listening":
                self.url = line["url"]
                self.port = int(self.url.rsplit(":", 1)[1])

    def where(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines
            if line["event"] == event and all(line.get(k) == v for k, v in fields.items())
        ]

    async def one(self, event: str, **fields: Any) -> dict[str, Any]:
        await wait_until(lambda: bool(self.where(event, **fields)), timeout=20)
        return self.where(event, **fields)[0]


@pytest.fixture
async def serve(jwks_server: JwksServer, tmp_path: Path) -> AsyncIterator[Any]:
    started: list[tuple[Served, asyncio.Task[None]]] = []

    async def run(**extra: str) -> Served:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH", "LOG_"))}
        env.update(
            AUTH_ISSUER=ISSUER,
            AUTH0_AUDIENCE=AUDIENCE,
            AUTH_JWKS_URL=jwks_server.url,
            DATABASE_URL=f"sqlite:///{tmp_path}/chat-{len(started)}.db",
            LOG_FORMAT="json",
            SHUTDOWN_GRACE_SECONDS="3",
            **extra,
        )
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "callroom", "serve", "--host", "127.0.0.1", "--port", "0"),
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        served = Served(proc)
        reader = asyncio.create_task(served.read())
        started.append((served, reader))
        await wait_until(lambda: bool(served.url) or reader.done(), timeout=60)
        assert served.url, "".join(served.raw)
        return served

    yield run
    for served, reader in started:
        if served.proc.returncode is None:
            served.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(served.proc.wait(), 10)
        await asyncio.wait_for(reader, 5)


async def _get(url: str, **headers: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        await resp.read()
        return resp.status


async def _ready(served: Served) -> bool:
    return await _get(f"{served.url}/readyz") == 200


async def test_access_audit_and_node_lines(serve: Any, make_token: TokenFactory) -> None:
    served = await serve(TRUSTED_PROXIES="127.0.0.1/32")
    node = served.where("listening")[0]["node"]
    behind = {"X-Forwarded-For": "203.0.113.7"}

    assert await _get(f"{served.url}/healthz", **behind) == 200
    line = await served.one("http_request", path="/healthz")
    assert (line["method"], line["status"], line["client"]) == ("GET", 200, "203.0.113.7")
    assert line["duration_ms"] >= 0

    secret = make_token("mallory")
    assert await _get(f"{served.url}/api/v1/rooms?token={secret}") == 401
    line = await served.one("http_request", path="/api/v1/rooms")
    assert (line["status"], line["reason"], line["client"]) == (401, "unauthorized", "127.0.0.1")

    alice_token = make_token("alice", "Alice")
    alice, _ = await join_room(served, alice_token, room="r1", additional_headers=behind)
    line = await served.one("ws_handshake", status=101, client="203.0.113.7")
    assert line["path"] == "/ws/zoom/r1"
    assert line["conn_id"].startswith(f"{node}-c")
    bob, _ = await join_admitted(alice, served, make_token("bob", "Bob"), room="r1")
    await _moderate(alice, bob)
    expired = make_token("eve", ttl=-120)
    assert await _get(f"{served.url}/ws/zoom/r1?token={expired}") == 401
    line = await served.one("ws_handshake", status=401)
    assert line["reason"] == "unauthorized"

    admin = make_token("root", roles=["admin"])
    async with (
        aiohttp.ClientSession() as http,
        http.delete(
            f"{served.url}/api/v1/rooms/zoom/r1", headers={"Authorization": f"Bearer {admin}"}
        ) as resp,
    ):
        assert resp.status == 200
    assert await alice.closed_with() == 4005
    await served.one("audit", action="end_room", actor="root", room="zoom:r1", via="api")
    for action, target in [
        ("admit", "bob"),
        ("promote", "bob"),
        ("demote", "bob"),
        ("lock", None),
        ("unlock", None),
        ("ban", "bob"),
    ]:
        line = await served.one("audit", action=action, target=target)
        assert (line["actor"], line["room"], line["via"]) == ("alice", "zoom:r1", "ws")

    served.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(served.proc.wait(), 10) == 0
    await wait_until(lambda: bool(served.where("shutdown_complete")))
    output = "".join(served.raw)
    for token in (secret, alice_token, expired, admin):
        assert token not in output
    for line in served.lines:
        assert (line["node"], line["version"]) == (node, __version__), line
    assert len(node) == 12
    conn_ids = {line["conn_id"] for line in served.lines if "conn_id" in line}
    assert len(conn_ids) == 2
    assert all(conn_id.startswith(f"{node}-c") for conn_id in conn_ids)


async def _moderate(alice: Client, bob: Client) -> None:
    """Host actions, each one done before the next (``drain``: answered in order)."""
    for event, payload in [
        ("promote_host", {"clientId": "bob"}),
        ("demote_host", {"clientId": "bob"}),
        ("lock_room", {}),
        ("unlock_room", {}),
    ]:
        await alice.send(event, payload)
        assert "error" not in [frame["event"] for frame in await alice.drain()], event
    await alice.send("kick_participant", {"clientId": "bob", "ban": True})
    assert await bob.closed_with() == 4004


async def test_a_flood_of_refusals_is_logged_at_a_bounded_rate(serve: Any) -> None:
    served = await serve()
    refusals = 60

    async def refuse(http: aiohttp.ClientSession) -> int:
        async with http.get(f"{served.url}/ws/nokind/r") as resp:
            return resp.status

    # All at once (far above 10 a second), on fewer sockets than an address may hold
    # unfinished (MAX_CONNECTIONS_PER_IP, server/guard.py).
    connector = aiohttp.TCPConnector(limit=20)
    async with aiohttp.ClientSession(connector=connector) as http:
        assert set(await asyncio.gather(*[refuse(http) for _ in range(refusals)])) == {400}
    reason = "ws_handshake:bad_request"

    def accounted() -> int:
        logged = served.where("ws_handshake", status=400, reason="bad_request")
        reports = served.where("refusals_suppressed", reason=reason)
        return len(logged) + sum(int(line["suppressed"]) for line in reports)

    # Every refusal is either logged or counted in a refusals_suppressed line.
    await wait_until(lambda: accounted() == refusals, timeout=20)
    assert served.where("refusals_suppressed", reason=reason)
    assert len(served.where("ws_handshake", status=400)) < refusals


async def test_a_node_on_redis_warns_about_sqlite_and_audits_across_nodes(
    serve: Any, redis_url: str, make_token: TokenFactory
) -> None:
    served = await serve(REDIS_URL=redis_url)
    warning = await served.one("redis_with_sqlite")
    assert warning["level"] == "warning"
    node = served.where("listening")[0]
    assert node["node_id"] == node["node"]  # the node's id in Redis is its log id
    await wait_until(lambda: _ready(served), timeout=20)  # the subscriber is connected
    alice, _ = await join_room(served, make_token("alice", "Alice"), room="r2")
    bob, _ = await join_admitted(alice, served, make_token("bob", "Bob"), room="r2")
    await alice.send("kick_participant", {"clientId": "bob"})
    assert await bob.closed_with() == 4004
    line = await served.one("audit", action="kick")
    assert (line["actor"], line["target"], line["room"]) == ("alice", "bob", "zoom:r2")
    await alice.close()
