"""The aiohttp application: routes, JSON errors and CORS (SPEC §1, §4)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

from callroom.errors import HandshakeCode, HandshakeRefused
from callroom.server.access import access
from callroom.server.handshake import origin_permitted
from callroom.server.http_api import dev_routes, routes
from callroom.server.http_common import NODE_KEY, json_error
from callroom.server.web import add_web_routes
from callroom.server.ws import websocket_handler

if TYPE_CHECKING:
    from callroom.server.node import Node

_CORS_HEADERS = {
    "Access-Control-Allow-Methods": "GET, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}
# SPEC §9: /dev/token answers CORS for allowed origins (a page on another dev server).
_DEV_CORS_HEADERS = {
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "600",
}


@web.middleware
async def errors_and_cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn refusals into the JSON body; CORS for allowed origins only (SPEC §4, §9)."""
    node = request.app[NODE_KEY]
    origin = request.headers.get("Origin")
    is_api = request.path.startswith("/api/")
    is_dev = node.settings.DEV_MODE and request.path.startswith("/dev/")
    cors = (
        (is_api or is_dev)
        and origin is not None
        and origin_permitted(request, origin, node.settings)
    )
    if (is_api or is_dev) and request.method == "OPTIONS":
        if not cors:
            return json_error(HandshakeCode.ORIGIN_NOT_ALLOWED, "this Origin is not allowed")
        response: web.StreamResponse = web.Response(status=204)
    else:
        try:
            if request.body_exists:
                await _read_body(request, node.settings.HANDSHAKE_TIMEOUT_SECONDS)
            response = await handler(request)
        except HandshakeRefused as exc:
            response = json_error(exc.code, exc.message)
            if exc.code is HandshakeCode.REQUEST_TIMEOUT:
                response.force_close()  # the rest of the body is not waited for
        except web.HTTPRequestEntityTooLarge:
            # aiohttp's own answer is text naming sizes; the body of SPEC §1 instead,
            # with nothing of the request in it.
            response = json_error(
                HandshakeCode.PAYLOAD_TOO_LARGE,
                f"the request body is larger than {MAX_BODY_BYTES} bytes",
            )
        except web.HTTPNotFound:
            response = json_error(HandshakeCode.NOT_FOUND, "no such route")
        except web.HTTPMethodNotAllowed as exc:
            response = web.json_response(
                {"error": "method_not_allowed", "message": "method not allowed"},
                status=405,
                headers={"Allow": ", ".join(sorted(exc.allowed_methods))},  # RFC 9110 §15.5.6
            )
    if cors and origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers.update(_DEV_CORS_HEADERS if is_dev else _CORS_HEADERS)
    return response


async def _read_body(request: web.Request, seconds: float) -> None:
    """Read the body before the handler, within ``seconds`` of its head (SPEC §9: a
    request must be complete in time; server/guard.py bounds the head). The handler then
    reads it from aiohttp's cache."""
    try:
        async with asyncio.timeout(seconds):
            await request.read()
    except TimeoutError:
        raise HandshakeRefused(
            HandshakeCode.REQUEST_TIMEOUT, "the request body did not arrive in time"
        ) from None


# Request bodies (only ``POST /dev/token`` reads one) larger than this get 413.
MAX_BODY_BYTES = 64 * 1024


def build_app(node: Node) -> web.Application:
    app = web.Application(middlewares=[access, errors_and_cors], client_max_size=MAX_BODY_BYTES)
    app[NODE_KEY] = node
    app.router.add_routes(routes)
    if node.settings.DEV_MODE:
        app.router.add_routes(dev_routes)
    app.router.add_get("/ws/{kind}/{room_id}", websocket_handler)
    app.router.add_get("/ws/{tail:.*}", _bad_ws_path)
    add_web_routes(app, node.settings)
    return app


async def _bad_ws_path(_request: web.Request) -> web.Response:
    """SPEC §1: a path that is not ``/ws/{kind}/{roomId}`` is a 400 ``bad_request``."""
    return json_error(HandshakeCode.BAD_REQUEST, "use /ws/{kind}/{roomId}")
