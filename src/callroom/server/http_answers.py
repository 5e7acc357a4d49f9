"""The HTTP side's one mapper: an exception → a status and the JSON body of SPEC §1.

``{"error": "<code>", "message": "<text>"}`` answers every refusal: of a WebSocket
handshake (SPEC §1), of an API request (SPEC §4), and of a request the guard stops before
it is one (``server/guard.py``). Handlers and checks just raise (``callroom.errors``'s
tree, or aiohttp's own 404/405/413); this module alone says what the client is told. The
WebSocket side, after the upgrade, is ``callroom.server.ws_answers``.

An exception that is not a refusal (a bug, or ``ConfigError``/``StartupError``, which
never happen in a request) has no answer here: aiohttp answers 500 and logs its traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, overload

from aiohttp import web

from callroom.auth.verifier import AuthError
from callroom.chat.base import ChatIdTaken
from callroom.errors import (
    ErrorCode,
    HandshakeCode,
    HandshakeRefused,
    ProtocolError,
    StoreUnavailable,
)
from callroom.server.ws_answers import CHAT_ID_TAKEN

# Request bodies (only ``POST /dev/token`` reads one) larger than this get 413.
MAX_BODY_BYTES: Final = 64 * 1024
# RFC 6750 §3: a 401 names the scheme the client must use. No ``error`` attribute: the
# JSON body's message says what was wrong, and the token itself is never echoed.
BEARER_CHALLENGE: Final = 'Bearer realm="callroom"'

# A frame's refusal raised in an HTTP request (the rooms' rules are shared): its status.
_PROTOCOL_STATUS: Final[dict[ErrorCode, int]] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.UNKNOWN_EVENT: 400,
    ErrorCode.INVALID_PAYLOAD: 422,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.TARGET_NOT_FOUND: 404,
    ErrorCode.LIMIT_REACHED: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
}


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A refusal: its status, the body's ``error`` and ``message``, extra headers, and
    whether the connection closes after it (the rest of the request is not read)."""

    status: int
    code: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    close: bool = False

    @property
    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message}


@overload
def http_answer(exc: HandshakeRefused) -> HttpAnswer: ...
@overload
def http_answer(exc: BaseException) -> HttpAnswer | None: ...
def http_answer(exc: BaseException) -> HttpAnswer | None:
    """The answer to a request refused with ``exc``; None when ``exc`` is not a refusal."""
    if isinstance(exc, HandshakeRefused):
        return _refusal(exc.status, exc.code.value, exc.message)
    if isinstance(exc, AuthError):  # SPEC §1, §4: every reason is a 401; never the token
        return _refusal(401, HandshakeCode.UNAUTHORIZED.value, exc.message)
    if isinstance(exc, StoreUnavailable):
        return _refusal(503, HandshakeCode.UNAVAILABLE.value, f"{exc.summary}, retry later")
    if isinstance(exc, ProtocolError):
        return _refusal(_PROTOCOL_STATUS[exc.code], exc.code.value, exc.message)
    if isinstance(exc, ChatIdTaken):
        return _refusal(422, HandshakeCode.INVALID_PAYLOAD.value, CHAT_ID_TAKEN)
    if isinstance(exc, web.HTTPNotFound):
        return _refusal(404, HandshakeCode.NOT_FOUND.value, "no such route")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allow = {"Allow": ", ".join(sorted(exc.allowed_methods))}  # RFC 9110 §15.5.6
        return HttpAnswer(405, "method_not_allowed", "method not allowed", allow)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        # aiohttp's own answer is text naming sizes; nothing of the request here.
        message = f"the request body is larger than {MAX_BODY_BYTES} bytes"
        return _refusal(413, HandshakeCode.PAYLOAD_TOO_LARGE.value, message)
    return None


def _refusal(status: int, code: str, message: str) -> HttpAnswer:
    # Every 401 (API or WebSocket handshake) names the scheme; a request whose body did
    # not arrive in time is not read on (SPEC §9).
    headers = {"WWW-Authenticate": BEARER_CHALLENGE} if status == 401 else {}
    close = code == HandshakeCode.REQUEST_TIMEOUT.value
    return HttpAnswer(status, code, message, headers, close)


def error_response(answer: HttpAnswer) -> web.Response:
    """The aiohttp response of ``answer``."""
    response = web.json_response(
        answer.body, status=answer.status, headers=dict(answer.headers) or None
    )
    if answer.close:
        response.force_close()
    return response
