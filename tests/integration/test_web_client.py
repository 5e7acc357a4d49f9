"""The web client at ``/`` and the origin rules of SPEC §9, over real HTTP and WebSockets.

- ``/`` and the static files: content types, caching, no listing, no traversal; the page
  tells dev mode from production.
- Origins: the page's own origin is allowed in production too; a foreign one is refused
  (403); under ``--dev`` with ``ALLOWED_ORIGINS`` unset any loopback origin is allowed;
  ``/dev/token`` answers CORS (preflight included) for allowed origins only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from callroom_testing import TokenFactory, http_call, open_client, refused

DevNodeFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def start_dev_node() -> AsyncIterator[DevNodeFactory]:
    """A node as ``callroom serve --dev`` starts it (own key, ``/dev/token``)."""
    from callroom.auth.dev import DevKeys
    from callroom.config import Settings
    from callroom.server.node import Node

    nodes: list[Node] = []

    async def factory(**overrides: Any) -> Node:
        values: dict[str, Any] = {
            "HOST": "127.0.0.1",
            "PORT": 0,
            "DATABASE_URL": "memory://",
            "DEV_MODE": True,
        }
        values.update(overrides)
        settings = Settings(_env_file=None, **values)
        node = Node(settings, dev_keys=DevKeys.generate())
        await node.start()
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        await node.stop()


async def dev_token(node: Any, sub: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{node.url}/dev/token", json={"sub": sub, "name": sub}) as resp,
    ):
        assert resp.status == 200
        token: str = (await resp.json())["token"]
        return token


def room_url(node: Any, token: str, room: str = "web-1") -> str:
    return f"ws://127.0.0.1:{node.port}/ws/zoom/{room}?token={token}"


async def joins(url: str, origin: str) -> bool:
    """True when the upgrade with this Origin succeeds (first frame room_state)."""
    client = await open_client(url, origin=origin)
    try:
        return bool((await client.next())["event"] == "room_state")
    finally:
        await client.close()


# -- the page and its files --------------------------------------------------------------


async def test_root_serves_the_page_with_its_hooks_and_cache_headers(start_node: Any) -> None:
    node = await start_node()
    status, body, headers = await http_call(node, "GET", "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    for hook in ("display-name", "room-id", "join", "status", "participants", "chat-input"):
        assert f'data-testid="{hook}"' in body
    assert '<meta name="callroom-dev" content="0">' in body  # production node
    assert headers["Cache-Control"] == "no-cache"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    etag = next(value for name, value in headers.items() if name.lower() == "etag")
    status, body, _ = await http_call(node, "GET", "/", headers={"If-None-Match": etag})
    assert (status, body) == (304, "")


async def test_static_files_have_their_content_types(start_node: Any) -> None:
    node = await start_node()
    for path, content_type in (
        ("/callroom-client.js", "text/javascript; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/rtc.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
    ):
        status, body, headers = await http_call(node, "GET", path)
        assert (status, headers["Content-Type"]) == (200, content_type), path
        assert headers["Cache-Control"] == "no-cache"
        assert body
    status, body, _ = await http_call(node, "GET", "/callroom-client.js")
    assert "export class CallroomClient" in body


@pytest.mark.parametrize(
    "path",
    ["/index.html/", "/web/", "/web/app.js", "/../pyproject.toml", "/%2e%2e/cli.py", "/nope.js"],
)
async def test_no_listing_no_traversal_no_other_files(start_node: Any, path: str) -> None:
    node = await start_node()
    status, body, _ = await http_call(node, "GET", path)
    assert status == 404
    assert body["error"] == "not_found"


async def test_other_routes_are_untouched(start_node: Any) -> None:
    node = await start_node()
    assert (await http_call(node, "GET", "/healthz"))[0] == 200
    assert (await http_call(node, "GET", "/metrics"))[0] == 200
    status, body, _ = await http_call(node, "GET", "/docs")
    assert status == 200
    assert "redoc" in body
    status, body, _ = await http_call(node, "GET", "/api/v1/rooms")
    assert (status, body["error"]) == (401, "unauthorized")


async def test_dev_node_page_says_dev_mode(start_dev_node: DevNodeFactory) -> None:
    node = await start_dev_node()
    status, body, _ = await http_call(node, "GET", "/")
    assert status == 200
    assert '<meta name="callroom-dev" content="1">' in body


# -- origins (SPEC §9) ---------------------------------------------------------------------


async def test_own_origin_is_allowed_in_production(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node(ALLOWED_ORIGINS="https://meet.example.com")
    url = room_url(node, make_token("alice"))
    assert await joins(url, origin=f"http://127.0.0.1:{node.port}")
    # Behind a TLS-terminating proxy the page's origin is https with the same host.
    assert await joins(url, origin=f"https://127.0.0.1:{node.port}")
    assert await joins(url, origin="https://meet.example.com")


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.com",
        "http://127.0.0.1:1",  # same host, another port: another origin
        "http://localhost:5173",  # loopback is not special outside dev mode
        "null",
        "http://127.0.0.1:{port}/path",
    ],
)
async def test_foreign_origins_are_refused(
    start_node: Any, make_token: TokenFactory, origin: str
) -> None:
    node = await start_node(ALLOWED_ORIGINS="https://meet.example.com")
    url = room_url(node, make_token("alice"))
    status, body = await refused(url, origin=origin.format(port=node.port))
    assert (status, body["error"]) == (403, "origin_not_allowed")


@pytest.mark.parametrize(
    "origin", ["http://localhost:5173", "http://127.0.0.1:3000", "http://[::1]:4000"]
)
async def test_dev_mode_allows_loopback_origins(
    start_dev_node: DevNodeFactory, origin: str
) -> None:
    node = await start_dev_node()
    assert await joins(room_url(node, await dev_token(node, "alice")), origin=origin)


async def test_dev_mode_still_refuses_other_origins(start_dev_node: DevNodeFactory) -> None:
    node = await start_dev_node()
    url = room_url(node, await dev_token(node, "alice"))
    for origin in ("https://evil.example.com", "http://localhost.evil.example.com:80"):
        status, body = await refused(url, origin=origin)
        assert (status, body["error"]) == (403, "origin_not_allowed")


async def test_dev_mode_with_allowed_origins_set_uses_only_them(
    start_dev_node: DevNodeFactory,
) -> None:
    node = await start_dev_node(ALLOWED_ORIGINS="http://localhost:3000")
    url = room_url(node, await dev_token(node, "alice"))
    status, body = await refused(url, origin="http://localhost:5173")
    assert (status, body["error"]) == (403, "origin_not_allowed")
    assert await joins(url, origin="http://localhost:3000")


async def test_dev_token_answers_cors_preflight_for_allowed_origins(
    start_dev_node: DevNodeFactory,
) -> None:
    node = await start_dev_node()
    origin = "http://localhost:5173"
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    status, _, headers = await http_call(node, "OPTIONS", "/dev/token", headers=preflight)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in headers["Access-Control-Allow-Headers"]
    assert headers["Vary"] == "Origin"
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{node.url}/dev/token", json={"sub": "bob"}, headers={"Origin": origin}) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == origin
        assert (await resp.json())["token"]


async def test_dev_token_refuses_cors_for_foreign_origins(
    start_dev_node: DevNodeFactory,
) -> None:
    node = await start_dev_node()
    headers = {"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"}
    status, body, answer = await http_call(node, "OPTIONS", "/dev/token", headers=headers)
    assert (status, body["error"]) == (403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in answer
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{node.url}/dev/token", json={"sub": "eve"}, headers={"Origin": headers["Origin"]}
        ) as resp,
    ):
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_no_dev_token_route_in_production(start_node: Any) -> None:
    node = await start_node()
    status, body, _ = await http_call(
        node, "OPTIONS", "/dev/token", headers={"Origin": "http://localhost:3000"}
    )
    assert status in (404, 405)
    assert body["error"] in ("not_found", "method_not_allowed")
