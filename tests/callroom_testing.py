"""Test support: a real JWKS over HTTP, real tokens, real servers, a tiny real client.

No fakes here: the JWKS is served by an aiohttp server on 127.0.0.1, tokens are RS256
JWTs signed with keys generated in the test, the node listens on a free port, and the
client speaks WebSocket through the `websockets` package.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import ClientConnection, connect

from deployment import BARRIER_EVENT, Barrier, Deployment

ISSUER = "https://issuer.callroom.test/"
AUDIENCE = "callroom-test"


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid or uuid.uuid4().hex[:12], key)

    def jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key())
        )
        data.update(kid=self.kid, alg="RS256", use="sig")
        return data


@dataclass
class JwksServer:
    """A real identity provider's key endpoint on 127.0.0.1."""

    keys: list[SigningKey]
    up: bool = True
    requests: int = 0
    url: str = ""
    runner: web.AppRunner | None = None
    port: int = 0  # 0: any free port; a restart after ``stop`` keeps the first one

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    async def stop(self) -> None:
        """Down for real: the port refuses connections until ``start`` again."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _jwks(self, _request: web.Request) -> web.Response:
        self.requests += 1
        if not self.up:
            return web.json_response({"error": "down"}, status=503)
        return web.json_response({"keys": [k.jwk() for k in self.keys]})


@dataclass
class TokenFactory:
    key: SigningKey
    issuer: str = ISSUER
    audience: str = AUDIENCE

    def __call__(
        self,
        sub: str | None,
        name: str | None = None,
        roles: list[str] | None = None,
        *,
        ttl: float = 3600,
        key: SigningKey | None = None,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + ttl,
        }
        if sub is not None:
            payload["sub"] = sub
        if name is not None:
            payload["name"] = name
        if roles is not None:
            payload["roles"] = roles
        payload.update(claims)
        signer = key or self.key
        return jwt.encode(
            payload,
            signer.private,
            algorithm="RS256",
            headers={"kid": signer.kid, **(headers or {})},
        )


@dataclass
class Client:
    """A member's WebSocket: send events, wait for the next one with a given name."""

    ws: ClientConnection
    received: list[dict[str, Any]] = field(default_factory=list)
    # On many nodes (tests/deployment.py): what makes ``drain`` wait for the other nodes.
    barrier: Barrier | None = None

    async def send(self, event: str, payload: dict[str, Any] | None = None) -> None:
        await self.ws.send(json.dumps({"event": event, "payload": payload or {}}))

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send(text)

    def send_burst(self, *texts: str, close_code: int | None = None) -> None:
        """Send text frames (and a close frame, with ``close_code``) in ONE write, so the
        server reads them together instead of one network round at a time."""
        protocol = self.ws.protocol
        for text in texts:
            protocol.send_text(text.encode())
        if close_code is not None:
            protocol.send_close(close_code)
        self.ws.transport.write(b"".join(protocol.data_to_send()))

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame: dict[str, Any] = json.loads(raw)
        if frame["event"] != BARRIER_EVENT:
            self.received.append(frame)
        return frame

    async def expect(self, event: str, timeout: float = 5.0) -> dict[str, Any]:
        """The payload of the next frame named ``event``; fails on a timeout."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.next(max(0.01, deadline - time.monotonic()))
            if frame["event"] == event:
                payload: dict[str, Any] = frame["payload"]
                return payload

    async def drain(self) -> list[dict[str, Any]]:
        """Every frame before the answer to a ping: what the server sent so far.

        The server handles one connection's frames in order, so anything queued for
        this client before the ping is received before the pong: no sleep needed.
        On many nodes the pong only says the client's own node is done; the
        ``barrier`` then waits for what the other nodes published before now.
        """
        await self.send("ping")
        frames: list[dict[str, Any]] = []
        while (frame := await self.next())["event"] != "pong":
            frames.append(frame)
        if self.barrier is not None:
            tokens = set(await self.barrier())
            while tokens:
                frame = await self.next()
                if frame["event"] == BARRIER_EVENT:
                    tokens.discard(frame["payload"]["token"])
                else:
                    frames.append(frame)
        return frames

    async def close(self, code: int = 1000) -> None:
        await self.ws.close(code)

    async def closed_with(self, timeout: float = 5.0) -> int | None:
        """Wait until the server closes the socket; its close code."""
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code


async def open_client(url: str, **kwargs: Any) -> Client:
    ws = await connect(url, open_timeout=5, close_timeout=2, max_size=2**22, **kwargs)
    return Client(ws)


async def wait_until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll a condition on the server side (state, not time) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# -- Helpers of the room protocol tests (tests/integration/test_rooms_*.py) ----------


def room_url(node: Any, token: str, room: str = "room-1", kind: str = "zoom") -> str:
    """The WebSocket URL of a room on ``node`` (a ``Deployment``: on the node of the
    token's user's next connection), with the token as query parameter."""
    if isinstance(node, Deployment):
        node = node.node_for(token)
    return f"ws://127.0.0.1:{node.port}/ws/{kind}/{room}?token={token}"


async def join_room(
    node: Any, token: str, room: str = "room-1", kind: str = "zoom", **kwargs: Any
) -> tuple[Client, dict[str, Any]]:
    """Connect to a room (on ``node``, or where a ``Deployment`` places the token's
    user); the client and its first frame's payload (always room_state)."""
    target = node.node_for(token) if isinstance(node, Deployment) else node
    client = await open_client(room_url(target, token, room, kind), **kwargs)
    first = await client.next()
    assert first["event"] == "room_state", first
    if isinstance(node, Deployment):
        client.barrier = node.barrier_for(target, f"{kind}:{room}", first["payload"]["clientId"])
    return client, first["payload"]


async def join_admitted(
    host: Client, node: Any, token: str, room: str = "room-1"
) -> tuple[Client, dict[str, Any]]:
    """Join as a stranger, knock, and be admitted by ``host``.

    Returns the client and its ``room_state`` after the admission. The host's frames up
    to then are drained; other members' are not.
    """
    client, state = await join_room(node, token, room)
    assert state["role"] == "waiting", state
    knock = await host.expect("waiting_request")
    assert knock["clientId"] == state["clientId"]
    await host.send("accept_waiting", {"clientId": state["clientId"]})
    await client.expect("accept_waiting")
    admitted = await client.expect("room_state")
    assert admitted["role"] == "participant", admitted
    await host.drain()
    return client, admitted


async def settle(*clients: Client) -> list[list[dict[str, Any]]]:
    """``drain`` every client in turn: what each was sent so far, per client."""
    return [await client.drain() for client in clients]


async def meeting(node: Any, make_token: TokenFactory, *admitted: str) -> list[Client]:
    """alice (host) plus ``admitted`` members let in through the lobby, all settled."""
    alice, _ = await join_room(node, make_token("alice", "Alice"))
    clients = [alice]
    for sub in admitted:
        client, _ = await join_admitted(alice, node, make_token(sub, sub.title()))
        clients.append(client)
    await settle(*clients)
    return clients


def events(frames: list[dict[str, Any]]) -> list[str]:
    return [frame["event"] for frame in frames]


def ids(infos: list[dict[str, Any]]) -> list[str]:
    """The clientIds of a list of ClientInfo."""
    return [info["clientId"] for info in infos]


async def refused(url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """Connect, expect a refusal before the upgrade; its HTTP status and JSON body."""
    from websockets.exceptions import InvalidStatus

    try:
        client = await open_client(url, **kwargs)
    except InvalidStatus as exc:
        response = exc.response
        return response.status_code, json.loads(response.body or b"{}")
    await client.close()
    raise AssertionError(f"connection to {url.split('?')[0]} was not refused")


async def metrics_text(node: Any) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/metrics") as resp:
        return await resp.text()


async def metric_value(node: Any, name: str, labels: str = "") -> float:
    """One sample of ``/metrics`` (``labels`` like ``{event="add_chat",code="forbidden"}``,
    in any order), 0 if absent."""
    import re

    def parse(text: str) -> dict[str, str]:
        return dict(re.findall(r'(\w+)="([^"]*)"', text))

    wanted = parse(labels)
    for line in (await metrics_text(node)).splitlines():
        sample, _, value = line.rpartition(" ")
        sample_name, _, sample_labels = sample.partition("{")
        if sample_name == name and parse(sample_labels) == wanted:
            return float(value)
    return 0.0


# Many nodes (SPEC §7): a Redis database of the tests' own, emptied before each test, so
# that no room record, node or channel of another test is seen. CALLROOM_TEST_REDIS_URL
# points a run at a Redis of its own (two runs on one machine must not share one: pub/sub
# channels ignore database numbers).
REDIS_TEST_URL = os.environ.get("CALLROOM_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


async def flush_test_redis() -> str:
    """The tests' own Redis database, emptied; its URL."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_TEST_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    return REDIS_TEST_URL


PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


PG_ADMIN_DB = f"{PG_SERVER}/test"


async def pg_admin(*statements: str, database: str = PG_ADMIN_DB) -> None:
    """Run statements on the real PostgreSQL (trust auth, as on CI)."""
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(database)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def new_pg_name() -> str:
    """A database name no other test uses."""
    return f"callroom_t_{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def fresh_pg_database() -> AsyncIterator[str]:
    """A PostgreSQL database of its own for one test; dropped afterwards."""
    name = new_pg_name()
    await pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def http_call(
    node: Any,
    method: str,
    path: str,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One HTTP request; (status, JSON body or text, headers)."""
    import aiohttp

    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{node.url}{path}", headers=all_headers) as resp,
    ):
        if resp.content_type == "application/json":
            body: Any = await resp.json()
        else:
            body = await resp.text()
        return resp.status, body, dict(resp.headers)
