"""The aiohttp application: routes, JSON errors and CORS (SPEC §1, §4)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from callroom.errors import CallroomError, HandshakeCode, HandshakeRefused
from callroom.server.access import access
from callroom.server.handshake import origin_permitted
from callroom.server.http_answers import MAX_BODY_BYTES, error_response, http_answer
from callroom.server.http_api import dev_routes, routes
from callroom.server.state import STATE_KEY, AppState
from callroom.server.web import add_web_routes
from callroom.server.ws import websocket_handler

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
    """Refusals as the JSON body (``http_answers``); CORS for allowed origins only
    (SPEC §4, §9)."""
    settings = request.app[STATE_KEY].settings
    origin = request.headers.get("Origin")
    is_api = request.path.startswith("/api/")
    is_dev = settings.DEV_MODE and request.path.startswith("/dev/")
    cors = (is_api or is_dev) and origin is not None and origin_permitted(request, origin, settings)
    response: web.StreamResponse
    try:
        if (is_api or is_dev) and request.method == "OPTIONS":
            if not cors:
                raise HandshakeRefused(
                    HandshakeCode.ORIGIN_NOT_ALLOWED, "this Origin is not allowed"
                )
            response = web.Response(status=204)
        else:
            if request.body_exists:
                await _read_body(request, settings.HANDSHAKE_TIMEOUT_SECONDS)
            response = await handler(request)
    except (CallroomError, web.HTTPException) as exc:
        answer = http_answer(exc)
        if answer is None:  # not a refusal: aiohttp's own (a bug: 500, with its traceback)
            raise
        response = error_response(answer)
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


def build_app(state: AppState) -> web.Application:
    app = web.Application(middlewares=[access, errors_and_cors], client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = state
    app.router.add_routes(routes)
    if state.settings.DEV_MODE:
        app.router.add_routes(dev_routes)
    app.router.add_get("/ws/{kind}/{room_id}", websocket_handler)
    app.router.add_get("/ws/{tail:.*}", _bad_ws_path)
    add_web_routes(app, state.settings)
    return app


async def _bad_ws_path(_request: web.Request) -> web.Response:
    """SPEC §1: a path that is not ``/ws/{kind}/{roomId}`` is a 400 ``bad_request``."""
    raise HandshakeRefused(HandshakeCode.BAD_REQUEST, "use /ws/{kind}/{roomId}")
