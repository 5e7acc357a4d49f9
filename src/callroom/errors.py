"""Error and close codes of the wire protocol, and the exceptions that carry them.

Exception tree. Code that finds an error raises one of these; exactly two places turn
them into what a client is told: ``callroom.server.ws_answers`` (an ``error`` event or a
close code, after the upgrade) and ``callroom.server.http_answers`` (an HTTP status and
the JSON body of SPEC §1, before it and on every HTTP route).

- ``CallroomError`` — base of every domain error.
  - ``ProtocolError(code, message, event)`` — a client frame was rejected; the sender gets
    an ``error`` event with ``code`` (SPEC §3.3) and the connection stays open.
  - ``HandshakeRefused(code, message)`` — a connection or HTTP request is refused with
    the status of ``HANDSHAKE_STATUS`` and the JSON body of SPEC §1.
  - ``AuthError(reason)`` (``callroom.auth.verifier``) — a refused token: 401 before the
    upgrade (SPEC §1, §4), ``invalid_payload`` for a ``refresh_token`` (SPEC §5).
  - ``ChatIdTaken`` (``callroom.chat.base``) — an ``add_chat`` whose ``chatId`` another
    sender's message holds: ``invalid_payload`` (SPEC §3.1).
  - ``StoreUnavailable(part)`` — a part the server needs (chat store, Redis) is down;
    surfaced as ``unavailable`` (SPEC §3.3), as 503 over HTTP, and in ``/readyz``.
  - ``ConnectionFailed(code, reason)`` — the member's byte stream broke the protocol
    (e.g. ``UnmaskedFrame``, ``callroom.server.inbound``): the connection is closed with
    ``code`` (SPEC §3.4, §9).
  - ``ConfigError(variable, message)`` — a bad setting; the process exits with code 2 and
    one line naming the variable (SPEC §6).
  - ``StartupError(message)`` — the process cannot start (a port in use, an address that
    is not this machine's); exit code 2 and one line naming the cause (SPEC §9 "CLI").
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """Codes of the ``error`` event (SPEC §3.3). The connection always stays open."""

    INVALID_JSON = "invalid_json"
    """The text frame is not a JSON object with a string ``event``."""
    UNKNOWN_EVENT = "unknown_event"
    """The event name is not one a client may send (SPEC §3.1)."""
    INVALID_PAYLOAD = "invalid_payload"
    """A field is missing, of the wrong type, empty or too long; the message names it."""
    FORBIDDEN = "forbidden"
    """The sender's role may not send this event or may not act on that target."""
    NOT_FOUND = "not_found"
    """The named chat message or member does not exist (or is the wrong kind of member)."""
    TARGET_NOT_FOUND = "target_not_found"
    """A signaling target is not an admitted member of the room, or is the sender."""
    LIMIT_REACHED = "limit_reached"
    """A configured limit (screen sharers, ...) is full."""
    RATE_LIMITED = "rate_limited"
    """The sender exceeded its message rate; the message was dropped."""
    UNAVAILABLE = "unavailable"
    """A part the server needs (store, Redis) is down; nothing was done, retry later."""


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (SPEC §3.4), with the client's expected reaction."""

    NORMAL = 1000
    """A clean leave (sent by clients); the member is removed at once."""
    GOING_AWAY = 1001
    """Server shutting down: reconnect, possibly to another node."""
    PROTOCOL_ERROR = 1002
    """The client broke RFC 6455 (e.g. an unmasked frame, SPEC §9): fix the client."""
    UNSUPPORTED_DATA = 1003
    """A binary frame was received: fix the client, do not reconnect blindly."""
    ABNORMAL_CLOSURE = 1006
    """Never sent (RFC 6455 §7.1.5): the socket was dropped without a close frame; the
    server's count for a heartbeat timeout (SPEC §3.4), and what the client sees then."""
    INVALID_DATA = 1007
    """A text frame that is not UTF-8 (RFC 6455 §8.1): fix the client."""
    POLICY_VIOLATION = 1008
    """Abuse: the sender kept flooding after ``rate_limited`` errors."""
    MESSAGE_TOO_BIG = 1009
    """A frame larger than ``MAX_MESSAGE_BYTES``."""
    TRY_AGAIN_LATER = 1013
    """A slow consumer: its outgoing buffer overflowed; it may reconnect."""
    TOKEN_EXPIRED = 4001
    """The token expired during the session: get a new token, then reconnect."""
    DENIED = 4003
    """Denied from the waiting room: do not reconnect automatically."""
    KICKED = 4004
    """Removed by a host: do not reconnect automatically."""
    ROOM_ENDED = 4005
    """Room ended by a host or admin: do not reconnect."""
    REPLACED = 4009
    """Session replaced by a newer connection of the same user: do not reconnect."""


class HandshakeCode(StrEnum):
    """Codes of a refused connection (SPEC §1), sent before the upgrade."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    ROOM_LOCKED = "room_locked"
    BANNED = "banned"
    ROOM_FULL = "room_full"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    UNAVAILABLE = "unavailable"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    INVALID_PAYLOAD = "invalid_payload"
    REQUEST_TIMEOUT = "request_timeout"
    PAYLOAD_TOO_LARGE = "payload_too_large"


HANDSHAKE_STATUS: dict[HandshakeCode, int] = {
    HandshakeCode.BAD_REQUEST: 400,
    HandshakeCode.UNAUTHORIZED: 401,
    HandshakeCode.ORIGIN_NOT_ALLOWED: 403,
    HandshakeCode.ROOM_LOCKED: 403,
    HandshakeCode.BANNED: 403,
    HandshakeCode.FORBIDDEN: 403,
    HandshakeCode.NOT_FOUND: 404,
    HandshakeCode.REQUEST_TIMEOUT: 408,
    HandshakeCode.ROOM_FULL: 409,
    HandshakeCode.PAYLOAD_TOO_LARGE: 413,
    HandshakeCode.INVALID_PAYLOAD: 422,
    HandshakeCode.TOO_MANY_CONNECTIONS: 429,
    HandshakeCode.UNAVAILABLE: 503,
}


class CallroomError(Exception):
    """Base of every domain error."""


class ProtocolError(CallroomError):
    """A rejected client frame: answered with an ``error`` event (SPEC §3.2, §3.3)."""

    def __init__(self, code: ErrorCode, message: str, event: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event = event


class HandshakeRefused(CallroomError):
    """A connection or HTTP request refused with a status and JSON body (SPEC §1, §4).

    ``status`` replaces the code's usual one where docs/protocol.md gives another (a
    request head too large: 431 ``bad_request``; aiohttp's 4xx for a malformed request).
    """

    def __init__(self, code: HandshakeCode, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self._status = status

    @property
    def status(self) -> int:
        return HANDSHAKE_STATUS[self.code] if self._status is None else self._status


class ConfigError(CallroomError):
    """A bad configuration value; the process exits with code 2 (SPEC §6)."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable
        self.message = message


class StartupError(CallroomError):
    """The server cannot start; the process exits with code 2 (SPEC §9 "CLI")."""


class ConnectionFailed(CallroomError):
    """The member's byte stream broke the protocol: its connection is closed with
    ``code`` (SPEC §3.4, §9), never answered with an ``error`` event."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class StoreUnavailable(CallroomError):
    """A part the server needs is down (SPEC §3.3 ``unavailable``)."""

    def __init__(self, part: str, message: str = "") -> None:
        super().__init__(message or f"{part} is unavailable")
        self.part = part

    @property
    def summary(self) -> str:
        """What a client is told is down (the message itself may name internals)."""
        return _UNAVAILABLE.get(self.part, f"the {self.part} is unavailable")


# The parts ``StoreUnavailable`` is raised for, as a client is told about them.
_UNAVAILABLE = {
    "store": "the chat store is unavailable",
    "redis": "the room state is unavailable",
    "token keys": "the token keys are unavailable",
}
