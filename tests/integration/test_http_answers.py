"""What the HTTP side answers, over real HTTP: `/docs` from the package (no CDN), an
OpenAPI document a client generator can use, JSON 413, `WWW-Authenticate` on every 401,
`Cache-Control: no-store` where credentials are sent (SPEC §4, §9)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import aiohttp
import jsonschema_rs  # schemathesis validates with it too
import pytest

from callroom import __version__
from callroom.auth.dev import DevKeys
from callroom.config import Settings
from callroom.server.http_answers import MAX_BODY_BYTES
from callroom.server.http_api import openapi_document
from callroom.server.node import Node
from callroom_testing import TokenFactory, http_call

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
async def dev_node(tmp_path: Any) -> AsyncIterator[Node]:
    """A `serve --dev` node in this process (its key in memory, not in the work tree)."""
    settings = Settings(
        _env_file=None,
        DEV_MODE=True,
        HOST="127.0.0.1",
        PORT=0,
        DATABASE_URL="memory://",
        SHUTDOWN_GRACE_SECONDS=2,
    )
    node = Node(settings, dev_keys=DevKeys.generate())
    await node.start()
    yield node
    await node.stop()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_every_operation_has_an_id_a_declared_tag_and_examples() -> None:
    document = openapi_document()
    assert document["info"]["version"] == __version__
    declared = {tag["name"] for tag in document["tags"]}
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids)) == 14
    for path, method, operation in operations(document):
        where = f"{method.upper()} {path}"
        assert re.fullmatch(r"[a-z][A-Za-z]+", operation["operationId"]), where
        assert operation["tags"], where
        assert set(operation["tags"]) <= declared, where
        for status, response in operation["responses"].items():
            if "$ref" in response:
                name = response["$ref"].rsplit("/", 1)[1]
                response = document["components"]["responses"][name]
            for media_type, content in response.get("content", {}).items():
                assert "example" in content, f"{where} {status} {media_type}"
                if media_type == "application/json":
                    # The example is what the schema says (its $refs resolved in the document).
                    schema = {**content["schema"], "components": document["components"]}
                    jsonschema_rs.validate(schema, content["example"])


async def test_every_route_of_the_server_is_documented(dev_node: Node) -> None:
    from callroom.server.app import build_app
    from callroom.server.web import load_web_files

    documented = {
        (path.replace("{roomId}", "{room_id}"), method.upper())
        for path, method, _ in operations(openapi_document())
    }
    served = {
        (route.resource.canonical, route.method)
        for route in build_app(dev_node.state).router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    # The WebSocket endpoint is docs/protocol.md's; the Redoc script belongs to /docs,
    # the web client's scripts and style sheet to its page at / (docs/web-client.md).
    undocumented = {
        ("/ws/{kind}/{room_id}", "GET"),
        ("/ws/{tail}", "GET"),
        ("/docs/redoc.standalone.js", "GET"),
    }
    undocumented |= {(path, "GET") for path in load_web_files(dev_node.settings) if path != "/"}
    assert served - undocumented == documented


async def test_docs_page_and_redoc_come_from_the_package_without_another_origin(
    dev_node: Node,
) -> None:
    status, html, headers = await http_call(dev_node, "GET", "/docs")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<redoc spec-url="/openapi.json">' in html
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources == ["/openapi.json", "/docs/redoc.standalone.js?v=2.5.4"]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{dev_node.url}{sources[1]}") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/javascript; charset=utf-8"
        script = await resp.read()
    apidocs = resources.files("callroom").joinpath("apidocs")
    assert script == apidocs.joinpath("redoc.standalone.js").read_bytes()
    assert b'Version: "2.5.4"' in apidocs.joinpath("redoc.standalone.js.LICENSE.txt").read_bytes()
    assert "MIT License" in apidocs.joinpath("LICENSE.redoc").read_text()


async def test_a_body_too_large_is_a_json_413_echoing_nothing(dev_node: Node) -> None:
    marker = "ECHO-ME-" * (MAX_BODY_BYTES // 8 + 1)
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{dev_node.url}/dev/token", data=f'{{"sub": "{marker}"}}') as resp,
    ):
        assert resp.status == 413
        assert resp.content_type == "application/json"
        text = await resp.text()
    assert "ECHO-ME" not in text
    assert json.loads(text) == {
        "error": "payload_too_large",
        "message": f"the request body is larger than {MAX_BODY_BYTES} bytes",
    }


@pytest.mark.parametrize(
    ("path", "token"),
    [
        ("/api/v1/rooms", None),
        ("/api/v1/rooms", "not-a-jwt"),
        ("/api/v1/ice-servers", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"),
        ("/ws/zoom/room-1", None),  # a WebSocket handshake refusal
    ],
)
async def test_every_401_names_the_bearer_scheme(
    start_node: Any, path: str, token: str | None
) -> None:
    node = await start_node()
    headers = {"Connection": "Upgrade", "Upgrade": "websocket"} if path.startswith("/ws") else {}
    status, body, answer = await http_call(node, "GET", path, token, headers)
    assert status == 401
    assert body["error"] == "unauthorized"
    assert answer["WWW-Authenticate"] == 'Bearer realm="callroom"'
    if token is not None:
        assert token not in str(body)


async def test_a_403_has_no_bearer_challenge(start_node: Any, make_token: TokenFactory) -> None:
    node = await start_node()
    status, _, headers = await http_call(node, "GET", "/api/v1/rooms", make_token("alice"))
    assert status == 403
    assert "WWW-Authenticate" not in headers


async def test_credentials_are_never_cached(dev_node: Node) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{dev_node.url}/dev/token", json={"sub": "alice"}) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        token = (await resp.json())["token"]
    status, body, headers = await http_call(dev_node, "GET", "/api/v1/ice-servers", token)
    assert status == 200
    assert "iceServers" in body
    assert headers["Cache-Control"] == "no-store"
