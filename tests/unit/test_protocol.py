"""The protocol layer (SPEC §3, §3.1, §3.3): strict JSON in, typed commands out, strict JSON back.

Each test names what a client would notice: which frames are accepted as which command,
and which error code (and field, and echoed event) a rejected frame gets.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import callroom.room.strict_json as strict_json_module
from callroom.errors import ErrorCode, ProtocolError
from callroom.room.commands import (
    AcceptScreenshare,
    AcceptWaiting,
    AddChat,
    Command,
    DeleteChat,
    DemoteHost,
    DenyScreenshare,
    DenyWaiting,
    EndRoom,
    GetRecentChats,
    KickParticipant,
    LockRoom,
    LowerHand,
    Ping,
    PromoteHost,
    RaiseHand,
    RefreshToken,
    RequestScreenshare,
    RequestWaiting,
    SetMediaState,
    Signal,
    StopScreenshare,
    UnbanParticipant,
    UnlockRoom,
)
from callroom.room.core import event_name
from callroom.room.encode import (
    PONG_FRAME,
    PONG_FRAME_BYTES,
    encode,
    encode_bytes,
    encode_split_bytes,
    encode_tail,
    error_frame,
)
from callroom.room.events import Event
from callroom.room.protocol import (
    CLIENT_EVENTS,
    EVENT_LABELS,
    ProtocolLimits,
    canonical_event,
    decode,
)

LIMITS = ProtocolLimits()
FAST = settings(max_examples=200, deadline=None, database=None)

# SPEC §3.1, transcribed by hand so that a name dropped from the decoder is noticed.
SPEC_CANONICAL_EVENTS = {
    "ping",
    "add_chat",
    "delete_chat",
    "get_recent_chats",
    "raise_hand",
    "lower_hand",
    "request_waiting",
    "accept_waiting",
    "deny_waiting",
    "request_screenshare",
    "accept_screenshare",
    "deny_screenshare",
    "stop_screenshare",
    "kick_participant",
    "unban_participant",
    "promote_host",
    "demote_host",
    "lock_room",
    "unlock_room",
    "end_room",
    "set_media_state",
    "refresh_token",
    "offer",
    "answer",
    "candidate",
    "renegotiate",
}
SPEC_ALIASES = {"recents_chat": "get_recent_chats", "waiting_request": "request_waiting"}
# Names only the server sends (SPEC §3.2 and the replies of §3.1).
SERVER_ONLY_EVENTS = [
    "room_state",
    "connect",
    "disconnect",
    "error",
    "pong",
    "media_state",
    "room_locked",
    "room_unlocked",
]

SDP = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx"


def frame(event: Any, payload: Any = None, *, with_payload: bool = True) -> str:
    doc: dict[str, Any] = {"event": event}
    if with_payload:
        doc["payload"] = payload
    return json.dumps(doc)


def accepted(event: str, payload: Any = None, limits: ProtocolLimits = LIMITS) -> Command:
    return decode(frame(event, payload), limits)


def outcome(text: str) -> Command | ProtocolError:
    """The command, or the ProtocolError: anything else propagates and fails the test."""
    try:
        return decode(text, LIMITS)
    except ProtocolError as err:
        return err


def rejected(text: str, limits: ProtocolLimits = LIMITS) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(text, limits)
    return info.value


def assert_names_field(err: ProtocolError, event: str, field: str) -> None:
    assert err.code is ErrorCode.INVALID_PAYLOAD
    assert err.message.split()[0] == field, err.message
    assert err.event == event


# --- accepted frames: every event of SPEC §3.1 ----------------------------------------

VALID_CASES: list[tuple[str, Any, Command]] = [
    ("ping", None, Ping()),
    ("add_chat", {"chatContent": "hello"}, AddChat("hello", None)),
    ("add_chat", {"chatContent": "  hi there \n", "chatId": "c1"}, AddChat("hi there", "c1")),
    ("add_chat", {"chatContent": "x", "chatId": None}, AddChat("x", None)),
    ("add_chat", {"chatContent": "é" * 1000, "chatId": "k" * 64}, AddChat("é" * 1000, "k" * 64)),
    ("add_chat", {"chatContent": " " * 50 + "a" * 1000 + "\t"}, AddChat("a" * 1000, None)),
    ("delete_chat", {"chatId": "c1"}, DeleteChat("c1")),
    ("get_recent_chats", None, GetRecentChats(50, None, Event.GET_RECENT_CHATS)),
    (
        "get_recent_chats",
        {"limit": 1, "before": "c9"},
        GetRecentChats(1, "c9", Event.GET_RECENT_CHATS),
    ),
    ("get_recent_chats", {"limit": 100}, GetRecentChats(100, None, Event.GET_RECENT_CHATS)),
    (
        "get_recent_chats",
        {"limit": None, "before": None},
        GetRecentChats(50, None, Event.GET_RECENT_CHATS),
    ),
    ("recents_chat", {"limit": 7}, GetRecentChats(7, None, Event.RECENTS_CHAT)),
    ("raise_hand", {}, RaiseHand()),
    ("lower_hand", {}, LowerHand(None)),
    ("lower_hand", {"clientId": None}, LowerHand(None)),
    ("lower_hand", {"clientId": "bob"}, LowerHand("bob")),
    ("request_waiting", {}, RequestWaiting()),
    ("waiting_request", {}, RequestWaiting()),
    ("accept_waiting", {"clientId": "bob"}, AcceptWaiting("bob")),
    ("deny_waiting", {"clientId": "bob"}, DenyWaiting("bob")),
    ("request_screenshare", {}, RequestScreenshare()),
    ("accept_screenshare", {"clientId": "bob"}, AcceptScreenshare("bob")),
    ("deny_screenshare", {"clientId": "bob"}, DenyScreenshare("bob")),
    ("stop_screenshare", None, StopScreenshare(None)),
    ("stop_screenshare", {"clientId": "bob"}, StopScreenshare("bob")),
    ("kick_participant", {"clientId": "bob"}, KickParticipant("bob", False)),
    ("kick_participant", {"clientId": "bob", "ban": None}, KickParticipant("bob", False)),
    ("kick_participant", {"clientId": "bob", "ban": True}, KickParticipant("bob", True)),
    ("kick_participant", {"clientId": "bob", "ban": False}, KickParticipant("bob", False)),
    (
        "unban_participant",
        {"clientId": "auth0|" + "x" * 122},
        UnbanParticipant("auth0|" + "x" * 122),
    ),
    ("promote_host", {"clientId": "bob"}, PromoteHost("bob")),
    ("demote_host", {"clientId": "bob"}, DemoteHost("bob")),
    ("lock_room", {}, LockRoom()),
    ("unlock_room", None, UnlockRoom()),
    ("end_room", {}, EndRoom()),
    ("set_media_state", {}, SetMediaState(None, None)),
    ("set_media_state", {"audio": True, "video": False}, SetMediaState(True, False)),
    ("set_media_state", {"audio": None, "video": True}, SetMediaState(None, True)),
    ("refresh_token", {"token": "a.b.c"}, RefreshToken("a.b.c")),
    ("refresh_token", {"token": "t" * 16384}, RefreshToken("t" * 16384)),
    (
        "offer",
        {"targetClientId": "bob", "sdp": SDP, "type": "offer"},
        Signal(Event.OFFER, "bob", {"sdp": SDP, "type": "offer"}),
    ),
    (
        "answer",
        {"targetClientId": "bob", "sdp": SDP, "type": "answer"},
        Signal(Event.ANSWER, "bob", {"sdp": SDP, "type": "answer"}),
    ),
    (
        "offer",
        {"targetClientId": "bob", "sdp": "s" * 32768, "type": "offer"},
        Signal(Event.OFFER, "bob", {"sdp": "s" * 32768, "type": "offer"}),
    ),
    (
        "candidate",
        {"targetClientId": "bob", "candidate": CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0},
        Signal(Event.CANDIDATE, "bob", {"candidate": CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0}),
    ),
    (
        "candidate",  # end-of-candidates: empty candidate, optional keys absent
        {"targetClientId": "bob", "candidate": ""},
        Signal(Event.CANDIDATE, "bob", {"candidate": "", "sdpMid": None, "sdpMLineIndex": None}),
    ),
    (
        "candidate",
        {"targetClientId": "bob", "candidate": "c" * 4096, "sdpMid": None, "sdpMLineIndex": 65535},
        Signal(
            Event.CANDIDATE,
            "bob",
            {"candidate": "c" * 4096, "sdpMid": None, "sdpMLineIndex": 65535},
        ),
    ),
    ("renegotiate", {"targetClientId": "bob"}, Signal(Event.RENEGOTIATE, "bob", {"reason": None})),
    (
        "renegotiate",
        {"targetClientId": "bob", "reason": "ice restart"},
        Signal(Event.RENEGOTIATE, "bob", {"reason": "ice restart"}),
    ),
]


@pytest.mark.parametrize(
    ("event", "payload", "expected"),
    VALID_CASES,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(VALID_CASES)],
)
def test_valid_frame_decodes_to_its_command(event: str, payload: Any, expected: Command) -> None:
    assert accepted(event, payload) == expected


def test_every_client_event_has_a_valid_case() -> None:
    assert {case[0] for case in VALID_CASES} == CLIENT_EVENTS


def test_missing_payload_is_read_as_empty_object() -> None:
    assert decode(frame("ping", with_payload=False), LIMITS) == Ping()
    assert decode(frame("lower_hand", with_payload=False), LIMITS) == LowerHand(None)
    expected = GetRecentChats(50, None, Event.GET_RECENT_CHATS)
    assert decode(frame("get_recent_chats", with_payload=False), LIMITS) == expected


def test_chat_content_limit_comes_from_limits() -> None:
    short = ProtocolLimits(chat_max_length=5)
    assert accepted("add_chat", {"chatContent": "abcde"}, short) == AddChat("abcde", None)
    err = rejected(frame("add_chat", {"chatContent": "abcdef"}), short)
    assert_names_field(err, "add_chat", "chatContent")
    assert "1-5 characters" in err.message


def test_sdp_limit_counts_utf8_bytes() -> None:
    small = ProtocolLimits(max_sdp_bytes=10)
    ok = {"targetClientId": "bob", "sdp": "ééééé", "type": "offer"}  # 5 chars, 10 bytes
    assert accepted("offer", ok, small) == Signal(
        Event.OFFER, "bob", {"sdp": "ééééé", "type": "offer"}
    )
    too_long = {"targetClientId": "bob", "sdp": "éééééa", "type": "offer"}  # 6 chars, 11 bytes
    assert_names_field(rejected(frame("offer", too_long), small), "offer", "sdp")


def test_extra_fields_are_ignored() -> None:
    payload = {"chatContent": "hi", "unknownField": [1, {"x": None}], "timestamp": 5}
    assert accepted("add_chat", payload) == AddChat("hi", None)
    assert accepted("ping", {"anything": "goes"}) == Ping()
    extra = {"targetClientId": "bob", "candidate": "", "usernameFragment": "u", "extra": 1}
    assert accepted("candidate", extra).fields == {  # type: ignore[union-attr]
        "candidate": "",
        "sdpMid": None,
        "sdpMLineIndex": None,
    }


def test_spoofed_sender_identity_in_add_chat_is_ignored() -> None:
    # SPEC §3.1: identity comes from the token; the payload's clientId must not be refused
    # nor carried into the command.
    payload = {"chatContent": "hi", "clientId": "someone-else", "displayName": "Mallory"}
    assert accepted("add_chat", payload) == AddChat("hi", None)
    assert accepted("raise_hand", {"clientId": "someone-else"}) == RaiseHand()
    assert accepted("add_chat", {"chatContent": "hi", "clientId": 5}) == AddChat("hi", None)


def test_aliases_reply_under_the_name_sent() -> None:
    assert accepted("recents_chat", {}) == GetRecentChats(50, None, Event.RECENTS_CHAT)
    assert accepted("get_recent_chats", {}) == GetRecentChats(50, None, Event.GET_RECENT_CHATS)
    assert accepted("waiting_request", {}) == accepted("request_waiting", {})


def test_alias_errors_echo_the_alias() -> None:
    assert_names_field(rejected(frame("recents_chat", {"limit": 0})), "recents_chat", "limit")


# --- invalid_payload: every field rule --------------------------------------------------

TARGET_EVENTS = [
    "accept_waiting",
    "deny_waiting",
    "accept_screenshare",
    "deny_screenshare",
    "kick_participant",
    "unban_participant",
    "promote_host",
    "demote_host",
]
OPTIONAL_TARGET_EVENTS = ["lower_hand", "stop_screenshare"]
SIGNAL_BASE: dict[str, dict[str, Any]] = {
    "offer": {"targetClientId": "bob", "sdp": SDP, "type": "offer"},
    "answer": {"targetClientId": "bob", "sdp": SDP, "type": "answer"},
    "candidate": {"targetClientId": "bob", "candidate": CANDIDATE},
    "renegotiate": {"targetClientId": "bob"},
}
MISSING = object()


# Bad values of a non-empty identifier of at most `n` characters.
def bad_ids(n: int) -> list[Any]:
    return [5, 1.5, True, False, "", "x" * (n + 1), "a\x00b", ["a"], {"a": "b"}]


INVALID_CASES: list[tuple[str, dict[str, Any], str, Any]] = []


def add_cases(event: str, base: dict[str, Any], field: str, values: list[Any]) -> None:
    INVALID_CASES.extend((event, base, field, value) for value in values)


add_cases(
    "add_chat",
    {"chatContent": "hi"},
    "chatContent",
    [MISSING, None, 5, True, ["hi"], {"t": "hi"}, "", "   \n\t", "a" * 1001, "a\x00b", "\x00"],
)
add_cases("add_chat", {"chatContent": "hi"}, "chatId", bad_ids(64))
add_cases("delete_chat", {"chatId": "c1"}, "chatId", [MISSING, None, *bad_ids(64)])
add_cases("get_recent_chats", {}, "limit", [0, 101, -1, "5", True, False, 5.5, 50.0, [5], 10**30])
add_cases("get_recent_chats", {}, "before", bad_ids(64))
for _event in TARGET_EVENTS:
    add_cases(_event, {"clientId": "bob"}, "clientId", [MISSING, None, *bad_ids(128)])
for _event in OPTIONAL_TARGET_EVENTS:
    add_cases(_event, {}, "clientId", bad_ids(128))
add_cases("kick_participant", {"clientId": "bob"}, "ban", [1, 0, "true", "yes", [], {}])
for _field in ("audio", "video"):
    add_cases("set_media_state", {}, _field, [1, 0, "true", "false", [], {}])
add_cases(
    "refresh_token",
    {"token": "a.b.c"},
    "token",
    [MISSING, None, "", 5, True, ["a.b.c"], "t" * 16385, "é" * 8193],  # 8193 chars, 16386 bytes
)
for _event, _base in SIGNAL_BASE.items():
    add_cases(_event, _base, "targetClientId", [MISSING, None, *bad_ids(128)])
for _event in ("offer", "answer"):
    _base = SIGNAL_BASE[_event]
    add_cases(_event, _base, "sdp", [MISSING, None, "", 5, True, ["v=0"], "s" * 32769])
    add_cases(_event, _base, "sdp", ["é" * 16385])  # 16385 chars but 32770 bytes
    _other = "answer" if _event == "offer" else "offer"
    add_cases(_event, _base, "type", [MISSING, None, _other, _event.upper(), "", 5, True])
add_cases("candidate", SIGNAL_BASE["candidate"], "candidate", [MISSING, None, 5, True, "c" * 4097])
add_cases("candidate", SIGNAL_BASE["candidate"], "sdpMid", [0, True, "", "m" * 257, "a\x00"])
add_cases(
    "candidate",
    SIGNAL_BASE["candidate"],
    "sdpMLineIndex",
    [-1, 65536, "0", True, False, 0.0, 1.5, [0]],
)
add_cases("renegotiate", SIGNAL_BASE["renegotiate"], "reason", [5, True, "", "r" * 257])


def with_value(base: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    payload = {k: v for k, v in base.items() if k != field}
    if value is not MISSING:
        payload[field] = value
    return payload


@pytest.mark.parametrize(
    ("event", "base", "field", "value"),
    INVALID_CASES,
    ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(INVALID_CASES)],
)
def test_invalid_field_is_rejected_naming_the_field(
    event: str, base: dict[str, Any], field: str, value: Any
) -> None:
    accepted(event, base)  # the base payload alone is valid: the field's value is the cause
    err = rejected(frame(event, with_value(base, field, value)))
    assert_names_field(err, event, field)


def test_missing_field_message_says_required() -> None:
    err = rejected(frame("delete_chat", {}))
    assert err.message.startswith("chatId is required")
    err = rejected(frame("add_chat", {"chatContent": None}))
    assert err.message.startswith("chatContent is required")
    err = rejected(frame("add_chat", {"chatContent": ""}))
    assert err.message.startswith("chatContent must be")


def test_token_never_appears_in_the_error_message() -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9." + "s" * 16400
    err = rejected(frame("refresh_token", {"token": secret}))
    assert "eyJ" not in err.message
    assert len(err.message) < 200


@pytest.mark.parametrize("payload", [[], [1], "x", "", 0, 5, 1.5, True, False])
def test_payload_that_is_not_an_object_is_invalid_payload(payload: Any) -> None:
    assert_names_field(rejected(frame("add_chat", payload)), "add_chat", "payload")


def test_payload_check_applies_to_events_without_fields() -> None:
    assert_names_field(rejected(frame("ping", [])), "ping", "payload")


# --- unknown_event ----------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVER_ONLY_EVENTS)
def test_server_only_event_is_unknown(name: str) -> None:
    err = rejected(frame(name, {}))
    assert err.code is ErrorCode.UNKNOWN_EVENT
    assert err.event == name


def test_the_hand_lists_cover_the_table_of_event_names() -> None:
    # A name added to callroom.room.events must be added here too, so that the tests
    # above decide which way it goes.
    assert set(SERVER_ONLY_EVENTS) == set(Event) - CLIENT_EVENTS


@pytest.mark.parametrize("name", sorted(CLIENT_EVENTS))
def test_every_client_event_of_the_table_has_a_validator(name: str) -> None:
    # An empty payload is fine for some events and invalid_payload for the others; it
    # is never unknown_event: decoding and the table of names agree.
    result = outcome(frame(name, {}))
    assert not isinstance(result, ProtocolError) or result.code is ErrorCode.INVALID_PAYLOAD
    assert isinstance(result, ProtocolError) or event_name(result) == name  # aliases kept


@pytest.mark.parametrize(
    ("name", "echoed"),
    [
        ("foo", "foo"),
        ("ADD_CHAT", "ADD_CHAT"),
        ("add-chat", None),
        ("add_chat ", None),
        (" add_chat", None),
        ("", None),
        ("x" * 64, "x" * 64),
        ("x" * 65, None),
        ("<script>alert(1)</script>", None),
        ("ping\n", None),
        ("pïng", None),
        ("ping\x00", None),
    ],
)
def test_unknown_event_echoes_only_a_safe_name(name: str, echoed: str | None) -> None:
    err = rejected(frame(name, {}))
    assert err.code is ErrorCode.UNKNOWN_EVENT
    assert err.event == echoed
    assert name not in err.message or name == ""


def test_unknown_event_wins_over_a_bad_payload() -> None:
    assert rejected(frame("no_such_event", [])).code is ErrorCode.UNKNOWN_EVENT


# --- invalid_json -----------------------------------------------------------------------

INVALID_JSON_FRAMES = {
    "empty": "",
    "not json": "hello",
    "single quotes": "{'event': 'ping'}",
    "truncated": '{"event": "ping", "payload": {',
    "trailing comma": '{"event": "ping",}',
    "comment": '{"event": "ping"} // hi',
    "two documents": '{"event": "ping"}{"event": "ping"}',
    "array": '[{"event": "ping"}]',
    "empty array": "[]",
    "string": '"ping"',
    "null": "null",
    "number": "42",
    "no event": '{"payload": {}}',
    "event null": '{"event": null}',
    "event number": '{"event": 5}',
    "event bool": '{"event": true}',
    "event array": '{"event": ["ping"]}',
    "event object": '{"event": {"name": "ping"}}',
    "NaN": '{"event": "get_recent_chats", "payload": {"limit": NaN}}',
    "Infinity": '{"event": "get_recent_chats", "payload": {"limit": Infinity}}',
    "-Infinity": '{"event": "get_recent_chats", "payload": {"limit": -Infinity}}',
    "NaN in ignored field": '{"event": "ping", "payload": {"x": [1, NaN]}}',
    "NaN top level": '{"event": "ping", "x": NaN}',
    "number overflow": '{"event": "ping", "payload": {"x": 1e400}}',
    "lone surrogate escape": '{"event": "add_chat", "payload": {"chatContent": "\\ud800"}}',
    "raw control character": '{"event": "add_chat", "payload": {"chatContent": "a\x01"}}',
    "leading zero": '{"event": "ping", "payload": {"x": 01}}',
    "byte order mark": '\ufeff{"event": "ping"}',
    "duplicate event": '{"event": "ping", "event": "ping"}',
    "duplicate event, different": '{"event": "ping", "event": "end_room"}',
    "duplicate payload": '{"event": "ping", "payload": {}, "payload": {}}',
    "duplicate field": '{"event": "add_chat", "payload": {"chatContent": "a", "chatContent": "b"}}',
    "duplicate nested": '{"event": "ping", "payload": {"x": {"y": 1, "y": 1}}}',
    "duplicate in array": '{"event": "ping", "payload": {"x": [1, {"a": 1, "b": 2, "a": 3}]}}',
    "duplicate with spaces": '{"event" : "ping" , "payload" : { "a" :1, "a" : 1 } }',
    "duplicate, colon in values": '{"event": "ping", "payload": {"a": "x:y", "a": "::"}}',
    "duplicate via escape": '{"event": "ping", "payload": {"ab": 1, "\\u0061b": 2}}',
    "duplicate via colon escape": '{"event": "ping", "payload": {"a:b": 1, "a\\u003ab": 2}}',
    "duplicate, escape elsewhere": '{"event": "ping", "payload": {"q": "\\u00e9", "q": 1}}',
    "duplicate, other escapes": '{"event": "ping", "payload": {"n": "a\\nb", "n": "\\""}}',
    "lone surrogate in text": '{"event": "add_chat", "payload": {"chatContent": "\ud800"}}',
}


@pytest.mark.parametrize("text", INVALID_JSON_FRAMES.values(), ids=INVALID_JSON_FRAMES.keys())
def test_frame_that_is_not_strict_json_is_invalid_json(text: str) -> None:
    err = rejected(text)
    assert err.code is ErrorCode.INVALID_JSON
    assert err.event is None


VALID_JSON_FRAMES = {
    "same key in different objects": (
        '{"event": "ping", "payload": {"event": "x", "a": {"a": {"a": 1}}, "b": [{"a": 2}]}}'
    ),
    "colons in strings": '{"event": "ping", "payload": {"a:b": "c:d::", "e": ["::", ":"]}}',
    "escapes and colons": '{"event": "ping", "payload": {"b\\u003a": ":", "a:": "\\n\\"\\\\:"}}',
    "escaped backslash before u": '{"event": "ping", "payload": {"a": "\\\\u0061", "b": ":"}}',
    "surrogate pair escape": '{"event": "add_chat", "payload": {"chatContent": "\\ud83d\\ude00"}}',
    "whitespace everywhere": ' \n{ "event" :\t"ping" ,\r\n "payload" : { } } \n',
    "null payload": '{"event": "ping", "payload": null}',
    "big int in an ignored field": '{"event": "ping", "payload": {"x": 1234567890123456789012345}}',
}


@pytest.mark.parametrize("text", VALID_JSON_FRAMES.values(), ids=VALID_JSON_FRAMES.keys())
def test_strict_json_without_duplicates_is_accepted(text: str) -> None:
    decode(text, LIMITS)


def test_escaped_chat_content_is_decoded() -> None:
    text = '{"event": "add_chat", "payload": {"chatContent": "\\ud83d\\ude00 \\u003a\\n"}}'
    assert decode(text, LIMITS) == AddChat("😀 :", None)


def nested(depth: int, inner: str) -> str:
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize("escape", ["", "\\u0061"])
def test_deep_nesting_without_duplicates_is_accepted(escape: str) -> None:
    # 300 levels: deeper than orjson writes back, so the duplicate check takes the slow path.
    text = '{"event": "ping", "payload": {"x": ' + nested(300, f'{{"k{escape}": 1}}') + "}}"
    assert decode(text, LIMITS) == Ping()


@pytest.mark.parametrize("escape", ["", "\\u0061"])
def test_duplicate_deep_in_nesting_is_invalid_json(escape: str) -> None:
    text = (
        '{"event": "ping", "payload": {"x": '
        + nested(300, f'{{"k{escape}": 1, "k{escape}": 2}}')
        + "}}"
    )
    assert rejected(text).code is ErrorCode.INVALID_JSON


@pytest.mark.parametrize("depth", [513, 1020, 5000])
def test_absurd_nesting_is_answered_with_invalid_json(depth: int) -> None:
    # Never a RecursionError escaping to the connection handler; the same bound on every
    # Python (MAX_NESTING counts the frame and payload objects too).
    text = '{"event": "ping", "payload": {"x": ' + nested(depth, '"\\u0061"') + "}}"
    assert rejected(text).code is ErrorCode.INVALID_JSON


# --- event names and metric labels ------------------------------------------------------


def test_client_events_are_exactly_the_spec_table() -> None:
    assert SPEC_CANONICAL_EVENTS | set(SPEC_ALIASES) == CLIENT_EVENTS
    assert not CLIENT_EVENTS & set(SERVER_ONLY_EVENTS)


def test_canonical_event_folds_aliases_and_bounds_labels() -> None:
    for name in SPEC_CANONICAL_EVENTS:
        assert canonical_event(name) == name
    for alias, name in SPEC_ALIASES.items():
        assert canonical_event(alias) == name
    for name in [*SERVER_ONLY_EVENTS, "", "ADD_CHAT", "x" * 1000, "unknown_thing"]:
        assert canonical_event(name) == "unknown"
    assert canonical_event(None) == "unknown"
    assert SPEC_CANONICAL_EVENTS | {"unknown"} == EVENT_LABELS


# --- hypothesis: only ProtocolError, and the right one ---------------------------------

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Every payload field some client event reads (SPEC §3.1).
ALL_FIELDS = {
    *("clientId", "chatContent", "chatId", "limit", "before", "ban", "audio", "video", "token"),
    *("targetClientId", "sdp", "type", "candidate", "sdpMid", "sdpMLineIndex", "reason"),
}
event_names = st.sampled_from(sorted(CLIENT_EVENTS | set(SERVER_ONLY_EVENTS))) | st.text(
    max_size=10
)


@FAST
@given(st.text(max_size=200))
def test_random_text_raises_only_protocol_errors(text: str) -> None:
    outcome(text)


@FAST
@given(event_names, json_values, st.booleans())
def test_random_json_never_gets_invalid_json_and_errors_name_a_field(
    event: str, payload: Any, ensure_ascii: bool
) -> None:
    result = outcome(json.dumps({"event": event, "payload": payload}, ensure_ascii=ensure_ascii))
    if isinstance(result, ProtocolError):
        assert result.code is not ErrorCode.INVALID_JSON
        if result.code is ErrorCode.INVALID_PAYLOAD:
            field = result.message.split()[0]
            if isinstance(payload, dict) or payload is None:  # null payload = {} (SPEC §3)
                assert field in ALL_FIELDS
            else:
                assert field == "payload"


FIELD_SAMPLES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    50,
    101,
    -1,
    1.5,
    "",
    " ",
    "x",
    "a\x00",
    "x" * 200,
    [],
    {},
]
field_values = st.sampled_from(FIELD_SAMPLES) | json_leaves


@FAST
@given(
    st.sampled_from(sorted(CLIENT_EVENTS)),
    st.dictionaries(st.sampled_from(sorted(ALL_FIELDS)), field_values, max_size=5),
)
def test_random_payloads_decode_or_name_the_bad_field(event: str, payload: dict[str, Any]) -> None:
    result = outcome(frame(event, payload))
    if isinstance(result, ProtocolError):
        assert result.code is ErrorCode.INVALID_PAYLOAD
        assert result.event == event
        field = result.message.split()[0]
        assert field in ALL_FIELDS
        if payload.get(field) is None:  # absent or null: only a required field complains
            assert result.message.startswith(f"{field} is required; it must be ")
        else:
            assert result.message.startswith(f"{field} must be ")
    elif isinstance(result, Signal):
        # Whatever is accepted for relaying can be written back as strict JSON.
        strict_loads(encode(result.event, result.fields))


def _no_constants(name: str) -> Any:
    raise AssertionError(f"non-strict JSON constant {name}")


# JSON text written token by token, so that keys may repeat and any character may be
# spelled as a \u escape (which the fast duplicate check must not be fooled by).
KEY_CHARS = st.sampled_from(["a", "b", ":", '"', "\\", "é", "😀", "\n"])


@st.composite
def json_string_token(draw: st.DrawFn, max_size: int = 3) -> tuple[str, str]:
    value = "".join(draw(st.lists(KEY_CHARS, max_size=max_size)))
    out: list[str] = []
    for ch in value:
        if draw(st.booleans()):  # spell it as \u escape(s)
            utf16 = ch.encode("utf-16-be")
            out.extend(
                f"\\u{int.from_bytes(utf16[i : i + 2], 'big'):04x}" for i in range(0, len(utf16), 2)
            )
        elif ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        else:
            out.append(ch)
    return value, '"' + "".join(out) + '"'


def _object(pairs: list[tuple[tuple[str, str], tuple[str, bool]]]) -> tuple[str, bool]:
    keys = [key for (key, _), _ in pairs]
    duplicate = len(set(keys)) != len(keys) or any(dup for _, (_, dup) in pairs)
    body = ", ".join(f"{token}: {value}" for (_, token), (value, _) in pairs)
    return "{" + body + "}", duplicate


def _array(items: list[tuple[str, bool]]) -> tuple[str, bool]:
    return "[" + ",".join(text for text, _ in items) + "]", any(dup for _, dup in items)


json_tokens = st.recursive(
    st.sampled_from([("1", False), ("null", False), ("true", False), ("-2.5e3", False)])
    | json_string_token(max_size=6).map(lambda s: (s[1], False)),
    lambda children: (
        st.lists(children, max_size=3).map(_array)
        | st.lists(st.tuples(json_string_token(), children), max_size=4).map(_object)
    ),
    max_leaves=10,
)


@settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(json_tokens)
def test_duplicate_keys_are_found_exactly(token: tuple[str, bool]) -> None:
    text, has_duplicate = token
    spaced = '{"event": "ping", "payload": {"x": ' + text + "}}"
    # No generated string holds a space: this is the same document written compactly, as
    # JSON.stringify writes it, which is often orjson's own writing (the fast path).
    compact = spaced.replace(", ", ",").replace(": ", ":")
    for doc in (spaced, compact):
        if has_duplicate:
            assert rejected(doc).code is ErrorCode.INVALID_JSON
        else:
            assert decode(doc, LIMITS) == Ping()


@pytest.mark.parametrize(
    ("text", "strict"),
    [
        ('{"event":"ping","payload":{"a":1,"b":"x:y"}}', True),
        ('{"event":"ping","payload":{"a":1,"a":1}}', False),
        ('{"event":"ping","payload":{"a":{"b":[]},"a":{"b":[]}}}', False),
        ('{"event":"ping","payload":{"s":"\\u0061\\n","t":"\\r"}}', True),
    ],
)
def test_compact_frames_are_checked_exactly(text: str, strict: bool) -> None:
    if strict:
        assert decode(text, LIMITS) == Ping()
    else:
        assert rejected(text).code is ErrorCode.INVALID_JSON


def test_a_frame_that_is_orjsons_own_writing_is_settled_by_one_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # orjson writes a control character as a \u escape, so this compact frame is its own
    # writing even with an escape; the same document with spaces is not, and a \u escape
    # then sends it to the stdlib check.
    def slow_check(frame: str, doc: Any) -> bool:
        raise AssertionError("the stdlib duplicate check ran")

    monkeypatch.setattr(strict_json_module, "_free_of_duplicate_keys_slow", slow_check)
    assert decode('{"event":"ping","payload":{"s":"\\u0001:"}}', LIMITS) == Ping()
    with pytest.raises(AssertionError, match="stdlib duplicate check"):
        decode('{"event": "ping", "payload": {"s": "\\u0001:"}}', LIMITS)


# --- encoding (SPEC §3, §3.2) -----------------------------------------------------------


def strict_loads(text: str | bytes) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        assert len({k for k, _ in pairs}) == len(pairs)
        return dict(pairs)

    return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=_no_constants)


def test_encode_writes_the_envelope_as_strict_json() -> None:
    payload = {"clientId": "a", "displayName": "Zoë 😀", "n": 1, "f": float("nan"), "l": [None]}
    text = encode("add_chat", payload)
    assert isinstance(text, str)
    assert strict_loads(text) == {
        "event": "add_chat",
        "payload": {"clientId": "a", "displayName": "Zoë 😀", "n": 1, "f": None, "l": [None]},
    }
    assert encode_bytes("add_chat", payload) == text.encode()


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@FAST
@given(
    head=st.dictionaries(st.text(max_size=6), _JSON_VALUES, min_size=1, max_size=4),
    tail=st.dictionaries(st.text(max_size=6), _JSON_VALUES, min_size=1, max_size=4),
)
def test_a_frame_encoded_in_two_parts_is_the_frame_encoded_whole(
    head: dict[str, object], tail: dict[str, object]
) -> None:
    tail = {f"t{key}": value for key, value in tail.items()}  # no key in both parts
    head = {f"h{key}": value for key, value in head.items()}
    whole = encode_bytes("room_state", {**head, **tail})
    assert encode_split_bytes("room_state", head, encode_tail(tail)) == whole


def test_encoded_frame_round_trips_through_decode() -> None:
    signal = Signal(
        Event.CANDIDATE, "bob", {"candidate": CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0}
    )
    text = encode("candidate", {"targetClientId": "bob", **signal.fields})
    assert decode(text, LIMITS) == signal


def test_encode_refuses_what_it_cannot_write_exactly() -> None:
    with pytest.raises(TypeError):
        encode("x", {1: "non-str key"})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        encode("x", {"name": "\ud800"})
    with pytest.raises(TypeError):
        encode_bytes("x", {"n": 2**64})


def test_error_frame_has_the_spec_shape() -> None:
    text = error_frame(ErrorCode.INVALID_PAYLOAD, "chatId must be a string", "delete_chat")
    assert strict_loads(text) == {
        "event": "error",
        "payload": {
            "code": "invalid_payload",
            "message": "chatId must be a string",
            "event": "delete_chat",
        },
    }
    assert (
        strict_loads(error_frame(ErrorCode.INVALID_JSON, "bad", None))["payload"]["event"] is None
    )


def test_error_frame_of_a_decode_error() -> None:
    err = rejected(frame("add_chat", {"chatContent": ""}))
    payload = strict_loads(error_frame(err.code, err.message, err.event))["payload"]
    assert payload["code"] == "invalid_payload"
    assert payload["event"] == "add_chat"
    assert payload["message"].startswith("chatContent ")


def test_pong_frame_is_precomputed() -> None:
    assert strict_loads(PONG_FRAME) == {"event": "pong", "payload": {}}
    assert encode("pong", {}) == PONG_FRAME
    assert PONG_FRAME.encode() == PONG_FRAME_BYTES
    assert orjson.loads(PONG_FRAME_BYTES) == {"event": "pong", "payload": {}}
