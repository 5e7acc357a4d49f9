"""The aiohttp application: routes, JSON errors and CORS (SPEC §1, §4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

from callroom.errors import HandshakeCode, HandshakeRefused
from callroom.server.handshake import origin_allowed
from callroom.server.http_api import dev_routes, routes
from callroom.server.http_common import NODE_KEY, json_error
from callroom.server.ws import websocket_handler

if TYPE_CHECKING:
    from callroom.server.node import Node

_CORS_HEADERS = {
    "Access-Control-Allow-Methods": "GET, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


@web.middleware
async def errors_and_cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn refusals into the JSON body; CORS for ``ALLOWED_ORIGINS`` only (SPEC §4)."""
    node = request.app[NODE_KEY]
    origin = request.headers.get("Origin")
    is_api = request.path.startswith("/api/")
    cors = is_api and origin is not None and origin_allowed(origin, node.settings.ALLOWED_ORIGINS)
    if is_api and request.method == "OPTIONS":
        if not cors:
            return json_error(HandshakeCode.ORIGIN_NOT_ALLOWED, "this Origin is not allowed")
        response: web.StreamResponse = web.Response(status=204)
    else:
        try:
            response = await handler(request)
        except HandshakeRefused as exc:
            response = json_error(exc.code, exc.message)
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
        response.headers.update(_CORS_HEADERS)
    return response


# Request bodies (only ``POST /dev/token`` reads one) larger than this get 413.
MAX_BODY_BYTES = 64 * 1024


def build_app(node: Node) -> web.Application:
    app = web.Application(middlewares=[errors_and_cors], client_max_size=MAX_BODY_BYTES)
    app[NODE_KEY] = node
    app.router.add_routes(routes)
    if node.settings.DEV_MODE:
        app.router.add_routes(dev_routes)
    app.router.add_get("/ws/{kind}/{room_id}", websocket_handler)
    app.router.add_get("/ws/{tail:.*}", _bad_ws_path)
    return app


async def _bad_ws_path(_request: web.Request) -> web.Response:
    """SPEC §1: a path that is not ``/ws/{kind}/{roomId}`` is a 400 ``bad_request``."""
    return json_error(HandshakeCode.BAD_REQUEST, "use /ws/{kind}/{roomId}")
