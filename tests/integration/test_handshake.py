"""SPEC §1 refusals before the upgrade, §4 health routes, §5 tokens, on a real node."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from websockets.exceptions import InvalidStatus

from callroom_testing import AUDIENCE, ISSUER, JwksServer, SigningKey, TokenFactory, open_client


def ws_url(node: Any, path: str = "/ws/zoom/room-1", token: str | None = None) -> str:
    url = f"ws://127.0.0.1:{node.port}{path}"
    return f"{url}?token={token}" if token is not None else url


async def refused(url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """Connect, expect a refusal before the upgrade; its status and JSON body."""
    with pytest.raises(InvalidStatus) as info:
        await open_client(url, **kwargs)
    response = info.value.response
    return response.status_code, json.loads(response.body or b"{}")


async def metric_value(node: Any, name: str, labels: str = "") -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.split()[-1])
    return 0.0


async def test_first_frame_after_upgrade_is_room_state_and_ping_gets_pong(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node()
    client = await open_client(ws_url(node, token=make_token("alice", "Alice")))
    first = await client.next()
    assert first["event"] == "room_state"
    assert first["payload"]["clientId"] == "alice"
    assert first["payload"]["role"] == "host"
    await client.send("ping")
    assert await client.next() == {"event": "pong", "payload": {}}
    await client.close()


async def test_token_in_authorization_header_is_accepted(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node()
    client = await open_client(
        ws_url(node), additional_headers={"Authorization": f"Bearer {make_token('bob')}"}
    )
    assert (await client.next())["payload"]["clientId"] == "bob"
    await client.close()


@pytest.mark.parametrize(
    "path",
    ["/ws/meeting/room-1", "/ws/zoom/" + "a" * 65, "/ws/zoom/bad%20id", "/ws/zoom/a.b", "/ws/zoom"],
)
async def test_bad_kind_or_room_id_is_400(
    start_node: Any, make_token: TokenFactory, path: str
) -> None:
    node = await start_node()
    status, body = await refused(ws_url(node, path, make_token("alice")))
    assert status == 400
    assert body["error"] == "bad_request"
    assert body["message"]


def _unsigned(claims: dict[str, Any]) -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "iat": now, "exp": now + 600}
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def bad_tokens(make_token: TokenFactory, signing_key: SigningKey) -> dict[str, tuple[str, str]]:
    """name -> (token, expected metric reason)."""
    now = int(time.time())
    foreign = SigningKey.generate(signing_key.kid)  # same kid, other key
    public_pem = signing_key.private.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    good = make_token("mallory")
    header, payload, signature = good.split(".")
    tampered_claims = json.loads(base64.urlsafe_b64decode(payload + "==="))
    tampered_claims["sub"] = "admin"
    tampered_payload = (
        base64.urlsafe_b64encode(json.dumps(tampered_claims).encode()).rstrip(b"=").decode()
    )
    return {
        "expired": (make_token("mallory", ttl=-120), "expired"),
        "nbf_future": (make_token("mallory", nbf=now + 600), "not_yet_valid"),
        "wrong_issuer": (
            TokenFactory(signing_key, issuer="https://evil/")("mallory"),
            "bad_issuer",
        ),
        "wrong_audience": (TokenFactory(signing_key, audience="other")("mallory"), "bad_audience"),
        "no_sub": (make_token(None), "no_sub"),
        "alg_none": (_unsigned(_claims()), "bad_algorithm"),
        # The classic key-confusion attack: the RSA public key used as an HMAC secret.
        "hs256_with_public_key": (_hs256(public_pem, signing_key.kid), "bad_algorithm"),
        "unknown_kid": (
            make_token("mallory", key=SigningKey.generate("nobody-knows")),
            "unknown_key",
        ),
        "foreign_key": (make_token("mallory", key=foreign), "bad_signature"),
        "tampered": (f"{header}.{tampered_payload}.{signature}", "bad_signature"),
        "garbage": ("not-a-jwt", "malformed"),
    }


def _hs256(secret: bytes, kid: str) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': kid}).encode())}."
        f"{b64(json.dumps(_claims()).encode())}"
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


BAD_TOKEN_NAMES = [
    "expired",
    "nbf_future",
    "wrong_issuer",
    "wrong_audience",
    "no_sub",
    "alg_none",
    "hs256_with_public_key",
    "unknown_kid",
    "foreign_key",
    "tampered",
    "garbage",
]


@pytest.mark.parametrize("name", BAD_TOKEN_NAMES)
async def test_bad_token_is_401_before_upgrade_and_counted(
    start_node: Any, make_token: TokenFactory, signing_key: SigningKey, name: str
) -> None:
    node = await start_node()
    token, reason = bad_tokens(make_token, signing_key)[name]
    status, body = await refused(ws_url(node, token=token))
    assert status == 401
    assert body["error"] == "unauthorized"
    assert token not in body["message"]
    assert await metric_value(node, "callroom_auth_failures_total", f'{{reason="{reason}"}}') == 1


async def test_missing_token_is_401(start_node: Any) -> None:
    node = await start_node()
    status, body = await refused(ws_url(node))
    assert (status, body["error"]) == (401, "unauthorized")


async def test_origin_must_be_allowed_when_present(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node(ALLOWED_ORIGINS="https://meet.example.com,http://localhost:3000")
    url = ws_url(node, token=make_token("alice"))
    status, body = await refused(url, origin="https://evil.example.com")
    assert (status, body["error"]) == (403, "origin_not_allowed")
    ok = await open_client(url, origin="https://meet.example.com")
    assert (await ok.next())["event"] == "room_state"
    await ok.close()


async def test_connections_per_ip_are_limited(start_node: Any, make_token: TokenFactory) -> None:
    node = await start_node(MAX_CONNECTIONS_PER_IP=2, LOBBY_ENABLED=False)
    first = await open_client(ws_url(node, token=make_token("u1")))
    second = await open_client(ws_url(node, token=make_token("u2")))
    status, body = await refused(ws_url(node, token=make_token("u3")))
    assert (status, body["error"]) == (429, "too_many_connections")
    await first.close()
    await second.close()


async def test_node_at_max_connections_is_503(start_node: Any, make_token: TokenFactory) -> None:
    node = await start_node(MAX_CONNECTIONS=1)
    first = await open_client(ws_url(node, token=make_token("u1")))
    await first.next()
    status, body = await refused(ws_url(node, token=make_token("u2")))
    assert (status, body["error"]) == (503, "unavailable")
    await first.close()


async def test_draining_node_refuses_upgrades_and_is_not_ready(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node()
    node.draining = True
    status, body = await refused(ws_url(node, token=make_token("u1")))
    assert (status, body["error"]) == (503, "unavailable")
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/readyz") as resp:
        assert resp.status == 503
        assert "draining" in (await resp.json())["failing"]


async def test_health_readiness_and_metrics(start_node: Any) -> None:
    node = await start_node()
    async with aiohttp.ClientSession() as http:
        for path in ("/ws/health", "/healthz"):
            async with http.get(f"{node.url}{path}") as resp:
                assert resp.status == 200
                assert await resp.json() == {"status": "ok"}
        async with http.get(f"{node.url}/readyz") as resp:
            assert resp.status == 200, await resp.text()
        async with http.get(f"{node.url}/metrics") as resp:
            text = await resp.text()
    for name in (
        "callroom_ws_connections",
        "callroom_rooms_active",
        "callroom_rooms_created_total",
        "callroom_rooms_closed_total",
        "callroom_auth_failures_total",
        "callroom_messages_received_total",
        "callroom_handler_errors_total",
        "callroom_message_handling_seconds",
        "process_resident_memory_bytes",
        "python_gc_collections_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


async def test_readyz_names_token_keys_when_provider_never_answered(
    start_node: Any, jwks_server: JwksServer
) -> None:
    jwks_server.up = False
    node = await start_node()
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/readyz") as resp:
        assert resp.status == 503
        assert "token keys" in (await resp.json())["failing"]


async def test_rotated_key_is_picked_up_on_unknown_kid(
    start_node: Any, make_token: TokenFactory, jwks_server: JwksServer
) -> None:
    node = await start_node()
    new_key = SigningKey.generate("rotated-key")
    jwks_server.keys.append(new_key)
    client = await open_client(ws_url(node, token=make_token("carol", key=new_key)))
    assert (await client.next())["payload"]["clientId"] == "carol"
    await client.close()


async def test_cached_keys_keep_working_while_provider_is_down(
    start_node: Any, make_token: TokenFactory, jwks_server: JwksServer
) -> None:
    node = await start_node()
    jwks_server.up = False
    client = await open_client(ws_url(node, token=make_token("dave")))
    assert (await client.next())["event"] == "room_state"
    await client.close()


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "keep-alive, Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",  # RFC 6455 §1.3's example
}


async def _upgrade(
    node: Any, token: str, headers: dict[str, str], *extra: str
) -> tuple[bytes, bytes]:
    """A hand-written upgrade request (``extra``: more header lines, as they are): the
    status line, and the rest of the answer's head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    lines = [f"GET /ws/zoom/room-1?token={token} HTTP/1.1", "Host: x"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += extra
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    status, _, rest = head.partition(b"\r\n")
    return status, rest


async def test_the_101_answers_the_key_as_rfc_6455_says(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node()
    status, rest = await _upgrade(node, make_token("alice"), UPGRADE)
    assert status == b"HTTP/1.1 101 Switching Protocols"
    headers = dict(line.split(b": ", 1) for line in rest.strip().split(b"\r\n"))
    assert headers[b"Sec-WebSocket-Accept"] == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
    assert headers[b"Upgrade"] == b"websocket"
    assert headers[b"Connection"].lower() == b"upgrade"
    assert b"Sec-WebSocket-Extensions" not in headers  # no permessage-deflate


async def test_an_upgrade_named_on_a_second_connection_line_is_an_upgrade(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node()
    headers = UPGRADE | {"Connection": "keep-alive"}
    status, _ = await _upgrade(node, make_token("alice"), headers)
    assert status.startswith(b"HTTP/1.1 400")  # the control: no upgrade named at all
    status, _ = await _upgrade(node, make_token("bob"), headers, "Connection: Upgrade")
    assert status == b"HTTP/1.1 101 Switching Protocols"


@pytest.mark.parametrize(
    "change",
    [
        {"Upgrade": "h2c"},
        {"Connection": "keep-alive"},
        {"Sec-WebSocket-Version": "12"},
        {"Sec-WebSocket-Key": ""},
        {"Sec-WebSocket-Key": base64.b64encode(b"fifteen bytes!!").decode()},
        {"Sec-WebSocket-Key": "not base64 at all!"},
        {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==\u00e9"},  # not even ASCII
    ],
)
async def test_a_broken_upgrade_is_400_with_its_reason(
    start_node: Any, make_token: TokenFactory, change: dict[str, str]
) -> None:
    node = await start_node()
    status, _ = await _upgrade(node, make_token("alice"), UPGRADE | change)
    assert status.startswith(b"HTTP/1.1 400")
    async with aiohttp.ClientSession() as http:  # the same request over plain HTTP
        url = f"{node.url}/ws/zoom/room-1?token={make_token('alice')}"
        async with http.get(url, headers=UPGRADE | change) as resp:
            assert resp.status == 400
            assert await resp.json() == {
                "error": "bad_request",
                "message": "expected a WebSocket upgrade",
            }
