"""The two mappers over every exception class of the tree (callroom.errors): what a member
is told on the WebSocket (``ws_answers``) and what an HTTP client is told
(``http_answers``). A new exception class fails here until both say what it becomes."""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest
from aiohttp import web

import callroom
from callroom.auth.verifier import AuthError
from callroom.chat.base import ChatIdTaken
from callroom.errors import (
    CallroomError,
    CloseCode,
    ConfigError,
    ConnectionFailed,
    ErrorCode,
    HandshakeCode,
    HandshakeRefused,
    ProtocolError,
    StartupError,
    StoreUnavailable,
)
from callroom.server.framing import text_frame
from callroom.server.http_answers import (
    BEARER_CHALLENGE,
    MAX_BODY_BYTES,
    HttpAnswer,
    error_response,
    http_answer,
)
from callroom.server.inbound import UnmaskedFrame
from callroom.server.ws_answers import INTERNAL_ERROR, CloseAnswer, ErrorAnswer, ws_answer

UNAUTHORIZED = {"WWW-Authenticate": BEARER_CHALLENGE}
TAKEN = "chatId is already used by another message in this room"

# One instance of every class of the tree; each row: the exception, what the WebSocket
# mapper makes of it raised by a ``lock_room`` frame, what the HTTP mapper makes of it.
CASES: list[tuple[CallroomError, ErrorAnswer | CloseAnswer, HttpAnswer | None]] = [
    (
        ProtocolError(ErrorCode.NOT_FOUND, "no such chat message", "delete_chat"),
        ErrorAnswer(ErrorCode.NOT_FOUND, "no such chat message", "delete_chat"),
        HttpAnswer(404, "not_found", "no such chat message"),
    ),
    (
        HandshakeRefused(HandshakeCode.ROOM_LOCKED, "this room is locked"),
        ErrorAnswer(ErrorCode.FORBIDDEN, "this room is locked", "lock_room"),
        HttpAnswer(403, "room_locked", "this room is locked"),
    ),
    (
        AuthError("expired"),
        ErrorAnswer(
            ErrorCode.INVALID_PAYLOAD,
            "token is not a valid token for this session (expired)",
            "lock_room",
        ),
        HttpAnswer(401, "unauthorized", AuthError("expired").message, UNAUTHORIZED),
    ),
    (
        ChatIdTaken("m1"),
        ErrorAnswer(ErrorCode.INVALID_PAYLOAD, TAKEN, "lock_room"),
        HttpAnswer(422, "invalid_payload", TAKEN),
    ),
    (
        StoreUnavailable("store", "chat store unavailable: connection refused"),
        ErrorAnswer(
            ErrorCode.UNAVAILABLE,
            "the chat store is unavailable; nothing was done, retry later",
            "lock_room",
        ),
        HttpAnswer(503, "unavailable", "the chat store is unavailable, retry later"),
    ),
    (
        ConnectionFailed(CloseCode.POLICY_VIOLATION, "message flood"),
        CloseAnswer(CloseCode.POLICY_VIOLATION, "message flood"),
        None,
    ),
    (
        UnmaskedFrame(),
        CloseAnswer(CloseCode.PROTOCOL_ERROR, "client frames must be masked"),
        None,
    ),
    (
        ConfigError("PORT", "must be 1-65535"),
        ErrorAnswer(ErrorCode.UNAVAILABLE, INTERNAL_ERROR, "lock_room"),
        None,
    ),
    (
        StartupError("PORT: 127.0.0.1:8080 is already in use"),
        ErrorAnswer(ErrorCode.UNAVAILABLE, INTERNAL_ERROR, "lock_room"),
        None,
    ),
    (
        CallroomError("a domain error of no kind"),
        ErrorAnswer(ErrorCode.UNAVAILABLE, INTERNAL_ERROR, "lock_room"),
        None,
    ),
]


def subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= subclasses(sub)
    return found


def test_every_class_of_the_tree_has_a_case() -> None:
    # Every module that may define one (not __main__, which runs the command line, nor
    # the benchmark, which is not the server's).
    for module in pkgutil.walk_packages(callroom.__path__, "callroom."):
        if not module.name.startswith(("callroom.bench", "callroom.__main__")):
            importlib.import_module(module.name)
    assert {type(exc) for exc, _, _ in CASES} == subclasses(CallroomError)


@pytest.mark.parametrize(("exc", "ws", "http"), CASES, ids=lambda v: type(v).__name__)
def test_each_class_maps_to_one_answer_on_each_side(
    exc: CallroomError, ws: ErrorAnswer | CloseAnswer, http: HttpAnswer | None
) -> None:
    assert ws_answer(exc, "lock_room") == ws
    assert http_answer(exc) == http


def test_an_exception_outside_the_tree_is_a_bug() -> None:
    assert ws_answer(KeyError("x"), "ping") == ErrorAnswer(
        ErrorCode.UNAVAILABLE, INTERNAL_ERROR, "ping"
    )
    assert ws_answer(KeyError("x")) == ErrorAnswer(ErrorCode.UNAVAILABLE, INTERNAL_ERROR, None)
    assert http_answer(KeyError("x")) is None  # aiohttp's 500, with its traceback


def test_the_error_event_keeps_the_refusals_own_event_name() -> None:
    """An alias stays an alias; a decoding refusal names what the client sent, or
    nothing when the frame was not a JSON object with an echoable name."""
    refused = ProtocolError(ErrorCode.INVALID_PAYLOAD, "limit: ...", "recents_chat")
    assert ws_answer(refused, "get_recent_chats").event == "recents_chat"
    assert ws_answer(ProtocolError(ErrorCode.INVALID_JSON, "...")).event is None


def test_the_error_frame_is_the_error_event_of_spec_3_2() -> None:
    answer = ErrorAnswer(ErrorCode.FORBIDDEN, "only hosts may lock the room", "lock_room")
    payload = {"code": "forbidden", "message": "only hosts may lock the room"}
    expected = {"event": "error", "payload": {**payload, "event": "lock_room"}}
    assert answer.frame() == text_frame(json.dumps(expected, separators=(",", ":")).encode())


@pytest.mark.parametrize("code", list(HandshakeCode))
def test_every_refusal_code_has_its_status_and_body(code: HandshakeCode) -> None:
    answer = http_answer(HandshakeRefused(code, "why"))
    assert answer.status == HandshakeRefused(code, "why").status
    assert answer.body == {"error": code.value, "message": "why"}
    assert answer.headers == (UNAUTHORIZED if answer.status == 401 else {})
    assert answer.close is (code is HandshakeCode.REQUEST_TIMEOUT)  # the body is not read on


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_frame_refusal_has_a_status_over_http(code: ErrorCode) -> None:
    answer = http_answer(ProtocolError(code, "why"))
    assert answer is not None
    assert 400 <= answer.status < 600
    assert answer.body == {"error": code.value, "message": "why"}


@pytest.mark.parametrize("code", list(HandshakeCode))
def test_a_refusal_meant_for_the_handshake_raised_after_it_is_an_error_event(
    code: HandshakeCode,
) -> None:
    answer = ws_answer(HandshakeRefused(code, "why"), "lock_room")
    assert isinstance(answer, ErrorAnswer)
    assert (answer.message, answer.event) == ("why", "lock_room")


def test_a_status_of_its_own_replaces_the_codes() -> None:
    refused = HandshakeRefused(HandshakeCode.BAD_REQUEST, "the request head is too big", status=431)
    assert http_answer(refused) == HttpAnswer(431, "bad_request", "the request head is too big")


def test_aiohttps_own_refusals_get_the_json_body() -> None:
    assert http_answer(web.HTTPNotFound()) == HttpAnswer(404, "not_found", "no such route")
    allowed = http_answer(web.HTTPMethodNotAllowed("PUT", ["GET", "DELETE"]))
    assert allowed == HttpAnswer(
        405, "method_not_allowed", "method not allowed", {"Allow": "DELETE, GET"}
    )
    too_large = http_answer(web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, MAX_BODY_BYTES + 1))
    message = f"the request body is larger than {MAX_BODY_BYTES} bytes"
    assert too_large == HttpAnswer(413, "payload_too_large", message)
    assert http_answer(web.HTTPFound("/elsewhere")) is None  # not a refusal


def test_the_response_carries_the_answer() -> None:
    answer = http_answer(HandshakeRefused(HandshakeCode.UNAUTHORIZED, "token expired"))
    response = error_response(answer)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == BEARER_CHALLENGE
    assert response.content_type == "application/json"
    assert response.body is not None
    assert json.loads(bytes(response.body)) == answer.body  # type: ignore[arg-type]
    timed_out = http_answer(HandshakeRefused(HandshakeCode.REQUEST_TIMEOUT, "too slow"))
    assert error_response(timed_out).keep_alive is False
