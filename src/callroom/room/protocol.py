"""Decode and validate client frames into typed commands (SPEC §3, §3.1, §3.3).

``decode(frame, limits)`` turns one WebSocket text frame into a ``callroom.room.commands``
command, or raises ``ProtocolError`` with the SPEC §3.3 code. It does no I/O and keeps no
state; the connection handler turns the error into an ``error`` event (SPEC §3.2).

Order of checks, first failure wins:

1. ``invalid_json`` — the text is not strict JSON (SPEC §3: ``NaN``, ``Infinity`` and
   duplicate keys anywhere in the document are not JSON), is not an object, or has no
   string ``event``.
2. ``unknown_event`` — ``event`` is not a client event of the §3.1 table (server-only names
   such as ``room_state`` or ``pong`` included).
3. ``invalid_payload`` — ``payload`` is present but neither an object nor ``null``, or a
   field is missing, of the wrong type, empty, too long or out of range. The message
   always starts with the wire name of the field.

The ``event`` of a raised ``ProtocolError`` (echoed in the ``error`` payload, SPEC §3.2):

- ``invalid_json``: always ``None``.
- ``invalid_payload``: the event name exactly as sent (an alias stays an alias), so the
  client can tell which of its messages was refused.
- ``unknown_event``: the sent name when it is 1-64 characters of ``[A-Za-z0-9_]``, else
  ``None``: an arbitrary client string is never echoed. This value is for the wire only;
  metric labels must come from ``canonical_event``, which maps every name outside
  ``CLIENT_EVENTS`` to ``"unknown"`` (SPEC §4).

Where SPEC §3.1 is silent, these choices (a careful production service would refuse
input it cannot store or relay faithfully):

- Identifier fields (``chatId``, ``before``, target ``clientId``, ``targetClientId``) and
  the optional strings ``sdpMid`` and ``reason``: non-empty (SPEC §3.3 "empty"), no NUL
  (PostgreSQL text cannot hold it), at most 64 (chat ids), 128 (client ids) or 256
  characters. They are not trimmed: they are matched exactly.
- ``chatContent`` is trimmed with ``str.strip()``; its length is counted in code points.
- ``sdp`` and ``token`` limits are counted in UTF-8 bytes (``MAX_SDP_BYTES``; 16 KiB).
- ``candidate`` may be the empty string: that is WebRTC's end-of-candidates marker.
- ``sdpMLineIndex`` is an int in 0-65535 (an unsigned short in WebRTC), which also keeps
  every relayed int within what the encoder can write.
- ``limit`` of ``get_recent_chats`` must be an int (``50.0``, ``"50"`` and ``true`` are not).
- The sender's own ``clientId``/``displayName`` in a payload are ignored (SPEC §3.1);
  ``clientId`` is read only where it names a target.

Strict JSON, and fast. orjson rejects ``NaN``/``Infinity``, lone surrogates, numbers beyond
a double and nesting deeper than 1024, but keeps the last of duplicate keys (so does
msgspec, for dicts and Structs alike). The duplicate check (``_free_of_duplicate_keys``)
counts colons: without ``\\u`` escapes every colon of the text is either a member
separator or a character of a string, and orjson writes the parsed document back with
one colon per kept member and every string colon verbatim. So the text has as many colons
as ``orjson.dumps(doc)`` exactly when no member was dropped, i.e. when no object repeats a
key. Before counting, the common case is settled by one comparison: a compact frame (what
``JSON.stringify`` sends) is byte for byte ``orjson.dumps(doc)``, and a text equal to the
serialization of dicts cannot repeat a key. (Counting loops over every character of the
text; comparing is a ``memcmp``.) A text with a ``\\u``
escape (which could spell a colon), or nested deeper than orjson writes (254), is checked
by stdlib ``json`` with an ``object_pairs_hook`` instead; nesting beyond ``MAX_NESTING``
(512) levels is ``invalid_json`` on every Python. The hypothesis tests hold
the fast checks against generated documents with escapes. (Running that stdlib check
after orjson on every frame instead was measured slower.)

Validation is one small function per event, found by a dict lookup; messages are only
formatted on failure. msgspec was not taken: it cannot see duplicate keys either, still
needs the hand checks and words its errors its own way, for a fraction of a microsecond
saved. The measurements behind these choices, with the commands that repeat them:
docs/performance.md, "Micro-measurements".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeGuard

import orjson

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

__all__ = [
    "CLIENT_EVENTS",
    "EVENT_LABELS",
    "UNKNOWN_EVENT_LABEL",
    "ProtocolLimits",
    "canonical_event",
    "decode",
]


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    """The configurable payload limits (SPEC §6 ``CHAT_MAX_LENGTH``, ``MAX_SDP_BYTES``)."""

    chat_max_length: int = 1000
    max_sdp_bytes: int = 32768


# Fixed limits (SPEC §3.1 where it gives one; see the module docstring otherwise).
CHAT_ID_MAX_LENGTH: Final = 64
CLIENT_ID_MAX_LENGTH: Final = 128
TOKEN_MAX_BYTES: Final = 16384
CANDIDATE_MAX_LENGTH: Final = 4096
SDP_MID_MAX_LENGTH: Final = 256
REASON_MAX_LENGTH: Final = 256
SDP_MLINE_INDEX_MAX: Final = 65535
RECENT_LIMIT_MIN: Final = 1
RECENT_LIMIT_MAX: Final = 100
RECENT_LIMIT_DEFAULT: Final = 50

UNKNOWN_EVENT_LABEL: Final = "unknown"
"""The metric label of every event name that is not a client event (SPEC §4)."""

_ECHOABLE_NAME: Final = re.compile(r"[A-Za-z0-9_]{1,64}")
_UNICODE_ESCAPE: Final = re.compile(r"\\u")  # re finds it ~3x faster than `in` on 2 KB

Payload = dict[str, Any]
Validator = Callable[[Payload, ProtocolLimits, str], Command]


# --- strict JSON (SPEC §3) ------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> None:
    # object_pairs_hook of the slow path: the parsed value is thrown away, only the
    # check matters (orjson already gave us the document).
    if len(pairs) > 1 and len({key for key, _ in pairs}) != len(pairs):
        raise _DuplicateKey


# Deeper documents are refused as they are, on every Python: how deep stdlib json can
# follow depends on the interpreter (~980 levels on 3.11, more on 3.12+, whose C
# scanner has its own recursion limit), and no frame of the protocol nests past 3.
MAX_NESTING = 512


def _nested_deeper_than(doc: Any, limit: int) -> bool:
    """Whether ``doc`` has containers nested more than ``limit`` deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
    return False


def _free_of_duplicate_keys_slow(frame: str, doc: Any) -> bool:
    if _nested_deeper_than(doc, MAX_NESTING):
        return False
    try:
        json.loads(frame, object_pairs_hook=_reject_duplicate_keys)
    except (ValueError, RecursionError):
        # A duplicate key; or a document stdlib json cannot follow: refused either way,
        # and the client gets the one invalid_json message that fits the common case.
        return False
    return True


def _free_of_duplicate_keys(frame: str, doc: Any) -> bool:
    """True when no object of ``frame`` (already parsed by orjson into ``doc``) repeats a key.

    See the module docstring for why comparing colon counts is exact without ``\\u``.
    """
    try:
        rewritten = orjson.dumps(doc)
    except orjson.JSONEncodeError:  # nesting deeper than orjson.dumps writes (254)
        return _free_of_duplicate_keys_slow(frame, doc)
    if rewritten == frame.encode():
        return True  # the text IS the parsed document written back, so no key repeats
    if "\\" in frame and _UNICODE_ESCAPE.search(frame) is not None:
        return _free_of_duplicate_keys_slow(frame, doc)
    return frame.count(":") == rewritten.count(b":")


def _invalid_json(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_JSON, message, None)


def _loads_strict(frame: str) -> Any:
    try:
        doc = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise _invalid_json("the frame is not valid JSON") from None
    if not _free_of_duplicate_keys(frame, doc):
        raise _invalid_json("the frame is not strict JSON: a key repeats in an object")
    return doc


# --- field checks (SPEC §3.1, §3.3) ---------------------------------------------------
# The happy path builds no strings: messages are formatted only when a check fails.


def _field_error(event: str, field: str, value: Any, expected: str) -> ProtocolError:
    # A required field given as null counts as missing (SPEC §3.1: null = absent).
    if value is None:
        message = f"{field} is required; it must be {expected}"
    else:
        message = f"{field} must be {expected}"
    return ProtocolError(ErrorCode.INVALID_PAYLOAD, message, event)


def _string_expected(max_length: int) -> str:
    return f"a non-empty string of at most {max_length} characters without NUL"


def _valid_string(value: object, max_length: int) -> TypeGuard[str]:
    return type(value) is str and 0 < len(value) <= max_length and "\x00" not in value


def _required_string(payload: Payload, field: str, event: str, max_length: int) -> str:
    value = payload.get(field)
    if _valid_string(value, max_length):
        return value
    raise _field_error(event, field, value, _string_expected(max_length))


def _optional_string(payload: Payload, field: str, event: str, max_length: int) -> str | None:
    value = payload.get(field)
    if value is None or _valid_string(value, max_length):
        return value
    raise _field_error(event, field, value, _string_expected(max_length) + ", or null")


def _optional_bool(payload: Payload, field: str, event: str) -> bool | None:
    # type() is exact: JSON 1/0 arrive as int, never as bool (SPEC §3.1 strict types).
    value = payload.get(field)
    if value is None or type(value) is bool:
        return value
    raise _field_error(event, field, value, "true, false or null")


def _utf8_longer_than(value: str, max_bytes: int) -> bool:
    # A code point is 1-4 UTF-8 bytes: only non-ASCII text within the character count
    # needs the allocating encode (str.isascii() is O(1) in CPython).
    if len(value) > max_bytes:
        return True
    if value.isascii():
        return False
    return len(value.encode()) > max_bytes


# --- one validator per event ----------------------------------------------------------


def _no_payload(command: Command) -> Validator:
    """Events whose payload is ``{}``: any fields they carry are ignored (SPEC §3)."""

    def validate(payload: Payload, limits: ProtocolLimits, event: str) -> Command:
        return command

    return validate


def _required_target(make: Callable[[str], Command]) -> Validator:
    """Host controls naming a member by ``clientId`` (required)."""

    def validate(payload: Payload, limits: ProtocolLimits, event: str) -> Command:
        return make(_required_string(payload, "clientId", event, CLIENT_ID_MAX_LENGTH))

    return validate


def _optional_target(make: Callable[[str | None], Command]) -> Validator:
    """``lower_hand``/``stop_screenshare``: ``clientId`` absent or null means the sender."""

    def validate(payload: Payload, limits: ProtocolLimits, event: str) -> Command:
        return make(_optional_string(payload, "clientId", event, CLIENT_ID_MAX_LENGTH))

    return validate


def _add_chat(payload: Payload, limits: ProtocolLimits, event: str) -> Command:
    raw = payload.get("chatContent")
    content = raw.strip() if type(raw) is str else ""
    if not content or len(content) > limits.chat_max_length or "\x00" in content:
        raise _field_error(
            event,
            "chatContent",
            raw,
            f"a string of 1-{limits.chat_max_length} characters after trimming, without NUL",
        )
    chat_id = _optional_string(payload, "chatId", event, CHAT_ID_MAX_LENGTH)
    return AddChat(chat_content=content, chat_id=chat_id)


def _delete_chat(payload: Payload, limits: ProtocolLimits, event: str) -> Command:
    return DeleteChat(chat_id=_required_string(payload, "chatId", event, CHAT_ID_MAX_LENGTH))


def _get_recent_chats(payload: Payload, limits: ProtocolLimits, event: str) -> Command:
    limit = payload.get("limit")
    if limit is None:
        limit = RECENT_LIMIT_DEFAULT
    elif type(limit) is not int or not RECENT_LIMIT_MIN <= limit <= RECENT_LIMIT_MAX:
        raise _field_error(
            event, "limit", limit, f"an integer {RECENT_LIMIT_MIN}-{RECENT_LIMIT_MAX}, or null"
        )
    before = _optional_string(payload, "before", event, CHAT_ID_MAX_LENGTH)
    # The reply goes out under the name the client sent (SPEC §3.1).
    reply_event: Literal["get_recent_chats", "recents_chat"] = (
        "recents_chat" if event == "recents_chat" else "get_recent_chats"
    )
    return GetRecentChats(limit=limit, before=before, reply_event=reply_event)


def _kick_participant(payload: Payload, limits: ProtocolLimits, event: str) -> Command:
    client_id = _required_string(payload, "clientId", event, CLIENT_ID_MAX_LENGTH)
    ban = _optional_bool(payload, "ban", event)
    return KickParticipant(client_id=client_id, ban=ban is True)


def _set_media_state(payload: Payload, limits: ProtocolLimits, event: str) -> Command:
    return SetMediaState(
        audio=_optional_bool(payload, "audio", event),
        video=_optional_bool(payload, "video", event),
    )


def _refresh_token(payload: Payload, limits: ProtocolLimits, event: str) -> Command:
    token = payload.get("token")
    if type(token) is not str or not token or _utf8_longer_than(token, TOKEN_MAX_BYTES):
        # The message never contains the token (SPEC §1).
        raise _field_error(
            event, "token", token, f"a non-empty string of at most {TOKEN_MAX_BYTES} bytes"
        )
    return RefreshToken(token=token)


def _target_client_id(payload: Payload, event: str) -> str:
    return _required_string(payload, "targetClientId", event, CLIENT_ID_MAX_LENGTH)


def _session_description(
    kind: Literal["offer", "answer"], payload: Payload, limits: ProtocolLimits
) -> Signal:
    target = _target_client_id(payload, kind)
    sdp = payload.get("sdp")
    if type(sdp) is not str or not sdp or _utf8_longer_than(sdp, limits.max_sdp_bytes):
        raise _field_error(
            kind, "sdp", sdp, f"a non-empty string of at most {limits.max_sdp_bytes} bytes"
        )
    # `type` is required and must match the event (SPEC §3.1), so an answer can never be
    # relayed as an offer.
    sdp_type = payload.get("type")
    if sdp_type != kind:
        raise _field_error(kind, "type", sdp_type, f'"{kind}"')
    return Signal(event=kind, target_client_id=target, fields={"sdp": sdp, "type": kind})


def _offer(payload: Payload, limits: ProtocolLimits, event: str) -> Command:
    return _session_description("offer", payload, limits)


def _answer(payload: Payload, limits: ProtocolLimits, event: str) -> Command:
    return _session_description("answer", payload, limits)


def _candidate(payload: Payload, limits: ProtocolLimits, event: str) -> Command:
    target = _target_client_id(payload, event)
    candidate = payload.get("candidate")
    # Empty is allowed: "" is WebRTC's end-of-candidates marker.
    if type(candidate) is not str or len(candidate) > CANDIDATE_MAX_LENGTH:
        raise _field_error(
            event, "candidate", candidate, f"a string of at most {CANDIDATE_MAX_LENGTH} characters"
        )
    sdp_mid = _optional_string(payload, "sdpMid", event, SDP_MID_MAX_LENGTH)
    index = payload.get("sdpMLineIndex")
    if index is not None and (type(index) is not int or not 0 <= index <= SDP_MLINE_INDEX_MAX):
        raise _field_error(
            event, "sdpMLineIndex", index, f"an integer 0-{SDP_MLINE_INDEX_MAX}, or null"
        )
    # The optional keys are always relayed (as null when absent): one shape for receivers.
    fields = {"candidate": candidate, "sdpMid": sdp_mid, "sdpMLineIndex": index}
    return Signal(event="candidate", target_client_id=target, fields=fields)


def _renegotiate(payload: Payload, limits: ProtocolLimits, event: str) -> Command:
    target = _target_client_id(payload, event)
    reason = _optional_string(payload, "reason", event, REASON_MAX_LENGTH)
    return Signal(event="renegotiate", target_client_id=target, fields={"reason": reason})


# Every name a client may send (SPEC §3.1), aliases included.
_VALIDATORS: Final[dict[str, Validator]] = {
    "ping": _no_payload(Ping()),
    "add_chat": _add_chat,
    "delete_chat": _delete_chat,
    "get_recent_chats": _get_recent_chats,
    "recents_chat": _get_recent_chats,
    "raise_hand": _no_payload(RaiseHand()),
    "lower_hand": _optional_target(LowerHand),
    "request_waiting": _no_payload(RequestWaiting()),
    "waiting_request": _no_payload(RequestWaiting(sent_as="waiting_request")),
    "accept_waiting": _required_target(AcceptWaiting),
    "deny_waiting": _required_target(DenyWaiting),
    "request_screenshare": _no_payload(RequestScreenshare()),
    "accept_screenshare": _required_target(AcceptScreenshare),
    "deny_screenshare": _required_target(DenyScreenshare),
    "stop_screenshare": _optional_target(StopScreenshare),
    "kick_participant": _kick_participant,
    "unban_participant": _required_target(UnbanParticipant),
    "promote_host": _required_target(PromoteHost),
    "demote_host": _required_target(DemoteHost),
    "lock_room": _no_payload(LockRoom()),
    "unlock_room": _no_payload(UnlockRoom()),
    "end_room": _no_payload(EndRoom()),
    "set_media_state": _set_media_state,
    "refresh_token": _refresh_token,
    "offer": _offer,
    "answer": _answer,
    "candidate": _candidate,
    "renegotiate": _renegotiate,
}

_ALIASES: Final = {"recents_chat": "get_recent_chats", "waiting_request": "request_waiting"}
_CANONICAL: Final[dict[str, str]] = {name: _ALIASES.get(name, name) for name in _VALIDATORS}

CLIENT_EVENTS: Final[frozenset[str]] = frozenset(_VALIDATORS)
"""Every event name a client may send (SPEC §3.1), aliases included."""

EVENT_LABELS: Final[frozenset[str]] = frozenset(_CANONICAL.values()) | {UNKNOWN_EVENT_LABEL}
"""Every value ``canonical_event`` can return: the bounded metric label set (SPEC §4)."""


def canonical_event(name: str | None) -> str:
    """The metric label of an event name: aliases folded, anything else ``"unknown"``."""
    if name is None:
        return UNKNOWN_EVENT_LABEL
    return _CANONICAL.get(name, UNKNOWN_EVENT_LABEL)


def _echoable(name: str) -> str | None:
    return name if _ECHOABLE_NAME.fullmatch(name) is not None else None


def decode(frame: str, limits: ProtocolLimits) -> Command:
    """The command carried by one client text frame (SPEC §3); raises ``ProtocolError``."""
    doc = _loads_strict(frame)
    if type(doc) is not dict:
        raise _invalid_json("the frame must be a JSON object")
    event = doc.get("event")
    if type(event) is not str:
        raise _invalid_json('the frame must have a string "event"')
    validate = _VALIDATORS.get(event)
    if validate is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_EVENT, "event is not one a client may send", _echoable(event)
        )
    payload = doc.get("payload")
    if payload is None:  # SPEC §3: a missing or null payload is {}
        payload = {}
    elif type(payload) is not dict:
        raise _field_error(event, "payload", payload, "a JSON object or null")
    return validate(payload, limits, event)
