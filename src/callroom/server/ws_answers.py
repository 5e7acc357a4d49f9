"""The WebSocket's one mapper: what a member is told when handling its frame raised.

After the upgrade a refused or failed frame is answered with an ``error`` event, and the
connection stays open (SPEC §3.2, §3.3); only a byte stream that breaks the protocol is
closed (``ConnectionFailed``, SPEC §3.4, §9). Every exception of ``callroom.errors``'s
tree, and any other (a bug: "nothing was done"), is turned into one of the two here and
nowhere else; the code that finds an error just raises it. The HTTP side, before the
upgrade and on every route, is ``callroom.server.http_answers``.

``error.event`` names the event of the refused frame as the client sent it (an alias
stays an alias, docs/protocol.md "Errors"): the exception's own ``event`` when it has
one, else the event of the frame being handled, ``None`` only when the frame was never
decoded (``invalid_json``, a name that is not echoed, a frame over the rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, overload

from callroom.auth.verifier import AuthError
from callroom.chat.base import ChatIdTaken
from callroom.errors import (
    CloseCode,
    ConnectionFailed,
    ErrorCode,
    HandshakeCode,
    HandshakeRefused,
    ProtocolError,
    StoreUnavailable,
)
from callroom.room.encode import error_frame
from callroom.server.framing import text_frame

INTERNAL_ERROR: Final = "internal error: nothing was done"
CHAT_ID_TAKEN: Final = "chatId is already used by another message in this room"

# A refusal meant for the handshake, raised after it: the nearest SPEC §3.3 code.
_AFTER_UPGRADE: Final[dict[HandshakeCode, ErrorCode]] = {
    HandshakeCode.UNAVAILABLE: ErrorCode.UNAVAILABLE,
    HandshakeCode.REQUEST_TIMEOUT: ErrorCode.UNAVAILABLE,
    HandshakeCode.NOT_FOUND: ErrorCode.NOT_FOUND,
    HandshakeCode.INVALID_PAYLOAD: ErrorCode.INVALID_PAYLOAD,
    HandshakeCode.BAD_REQUEST: ErrorCode.INVALID_PAYLOAD,
    HandshakeCode.PAYLOAD_TOO_LARGE: ErrorCode.INVALID_PAYLOAD,
    HandshakeCode.ROOM_FULL: ErrorCode.LIMIT_REACHED,
    HandshakeCode.TOO_MANY_CONNECTIONS: ErrorCode.RATE_LIMITED,
}


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """An ``error`` event to the sender (SPEC §3.2); the connection stays open."""

    code: ErrorCode
    message: str
    event: str | None

    def frame(self) -> bytes:
        return text_frame(error_frame(self.code, self.message, self.event).encode())


@dataclass(frozen=True, slots=True)
class CloseAnswer:
    """The connection is closed with ``code`` (SPEC §3.4)."""

    code: CloseCode
    reason: str


WsAnswer = ErrorAnswer | CloseAnswer


@overload
def ws_answer(exc: ProtocolError, event: str | None = None) -> ErrorAnswer: ...
@overload
def ws_answer(exc: BaseException, event: str | None = None) -> WsAnswer: ...
def ws_answer(exc: BaseException, event: str | None = None) -> WsAnswer:
    """What the member is told for ``exc``, raised handling its frame of ``event`` (the
    name the client sent; None for a frame that was not decoded)."""
    if isinstance(exc, ProtocolError):
        return ErrorAnswer(exc.code, exc.message, event if exc.event is None else exc.event)
    if isinstance(exc, ConnectionFailed):
        return CloseAnswer(exc.code, exc.reason)
    if isinstance(exc, StoreUnavailable):
        message = f"{exc.summary}; nothing was done, retry later"
        return ErrorAnswer(ErrorCode.UNAVAILABLE, message, event)
    if isinstance(exc, ChatIdTaken):  # SPEC §3.1: another sender's message holds it
        return ErrorAnswer(ErrorCode.INVALID_PAYLOAD, CHAT_ID_TAKEN, event)
    if isinstance(exc, AuthError):  # a refresh_token's token (SPEC §5); never echoed
        message = f"token is not a valid token for this session ({exc.reason})"
        return ErrorAnswer(ErrorCode.INVALID_PAYLOAD, message, event)
    if isinstance(exc, HandshakeRefused):
        code = _AFTER_UPGRADE.get(exc.code, ErrorCode.FORBIDDEN)
        return ErrorAnswer(code, exc.message, event)
    # A bug, or an error with no meaning for a member (ConfigError, StartupError): the
    # sender is told its frame failed (SPEC §3.3 ``unavailable``), and its socket stays.
    return ErrorAnswer(ErrorCode.UNAVAILABLE, INTERNAL_ERROR, event)
