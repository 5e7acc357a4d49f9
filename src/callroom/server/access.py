"""Access lines and HTTP metrics: one line per HTTP request and per WebSocket handshake
(SPEC §9 "Logs", "Metrics"; docs/operations.md "Logs").

The ``access`` middleware (the outermost) works out the client's address once
(``callroom.server.proxies``, stored in the request under ``CLIENT_KEY``), then logs the
answer: ``http_request`` with the method, the path *without its query string* (a
``?token=`` never reaches a line, SPEC §1), the status, the duration and the client;
a refusal (status 400 and above) with its ``reason``, the ``error`` code of its JSON
body. The WebSocket handler logs its own handshakes (``ws_handshake``, with the
``conn_id`` of an upgraded connection): a handler that upgrades returns only when the
socket ends.

Refusals are the lines a client controls the rate of, so they are rate limited per
reason (``callroom.server.refusals.RefusalLog``): a flood of refused handshakes cannot
fill the log. The counters (``callroom_http_requests_total``,
``callroom_handshake_refusals_total``) still count every one.
"""

from __future__ import annotations

import json
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from callroom.server.proxies import client_address
from callroom.server.state import CLIENT_KEY, STATE_KEY, AppState

log = structlog.get_logger("callroom.access")

# perf_counter() when the request reached the node
STARTED_KEY: web.RequestKey[float] = web.RequestKey("callroom_started", float)
# Set by a handler that wrote the request's line itself
LOGGED_KEY: web.RequestKey[bool] = web.RequestKey("callroom_logged", bool)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route matched (404, 405)
MAX_PATH = 256  # characters of a path in a line: a client may send a long one


def route_label(request: web.Request) -> str:
    """The matched route's template (``/api/v1/rooms/{kind}/{room_id}``): a bounded label."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED
    return resource.canonical


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def client_of(request: web.Request) -> str:
    """The client's address: worked out once per request by the middleware."""
    return request.get(CLIENT_KEY) or request.remote or "unknown"


def _reason(response: web.StreamResponse) -> str:
    """A refusal's ``error`` code (SPEC §1 JSON body), else its status."""
    if isinstance(response, web.Response) and response.content_type == "application/json":
        try:
            error = json.loads(response.body)["error"]  # type: ignore[arg-type]
        except (TypeError, ValueError, KeyError):
            error = None
        if isinstance(error, str):
            return error
    return str(response.status)


def record(
    state: AppState,
    request: web.Request,
    status: int,
    *,
    event: str = "http_request",
    reason: str | None = None,
    conn_id: str | None = None,
) -> None:
    """Count the request and write its access line (a refusal's line rate limited)."""
    started = request.get(STARTED_KEY)
    elapsed = 0.0 if started is None else time.perf_counter() - started
    state.metrics.http_request(
        route_label(request), method_label(request.method), str(status), elapsed
    )
    request[LOGGED_KEY] = True
    if status >= 400 and not state.refusal_log.allow(f"{event}:{reason}"):
        return
    fields: dict[str, object] = {
        "method": request.method[:16],
        "path": request.path[:MAX_PATH],
        "status": status,
        "duration_ms": round(elapsed * 1000, 2),
        "client": client_of(request),
    }
    if reason is not None:
        fields["reason"] = reason
    if conn_id is not None:
        fields["conn_id"] = conn_id
    log.info(event, **fields)


@web.middleware
async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The client's address for the handlers; one access line per request."""
    request[STARTED_KEY] = time.perf_counter()
    state = request.app[STATE_KEY]
    trusted = state.trusted_proxies
    if trusted:
        headers = request.headers
        forwarded = headers.getall("Forwarded", ())
        request[CLIENT_KEY] = client_address(
            request.remote, trusted, forwarded, headers.getall("X-Forwarded-For", ())
        )
    else:  # no proxy is trusted: the TCP peer is the client (SPEC §9)
        request[CLIENT_KEY] = client_address(request.remote, trusted)
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # e.g. 413 from reading a body that is too large
        if not request.get(LOGGED_KEY):
            record(state, request, exc.status, reason=str(exc.status))
        raise
    except Exception:
        if not request.get(LOGGED_KEY):
            record(state, request, 500, reason="internal_error")
        raise
    if not request.get(LOGGED_KEY):
        status = response.status
        record(state, request, status, reason=_reason(response) if status >= 400 else None)
    return response
