"""One validator per client event (SPEC §3.1): a payload in, a typed command out.

``VALIDATORS`` maps every name of ``callroom.room.events.CLIENT_EVENTS`` (aliases
included) to a function ``(payload, limits, event) -> Command`` that raises
``ProtocolError`` ``invalid_payload`` (SPEC §3.3) whose message starts with the wire name
of the field; ``event`` is the name as sent, echoed in that error.

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

Validation is one small function per event, found by a dict lookup; messages are only
formatted on failure. Of the ~1 µs it adds to an add_chat, 0.35 µs is constructing the
frozen ``AddChat`` dataclass. msgspec decoding into a tagged union of Structs takes 0.23 µs
(add_chat) and 0.55 µs (2 KB candidate), but it cannot see duplicate keys either (the
orjson parse and re-dump of ``callroom.room.strict_json`` would still be needed), still
needs the hand checks (trimming, NUL, UTF-8 byte lengths) and words its errors its own way
("Expected `str`, got `int` - at `$.payload.chatContent`"): at best ~0.3 µs saved of
~1.8, for two parsers' semantics. Not taken.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal, TypeGuard

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
from callroom.room.limits import (
    CANDIDATE_MAX_LENGTH,
    CHAT_ID_MAX_LENGTH,
    CLIENT_ID_MAX_LENGTH,
    REASON_MAX_LENGTH,
    RECENT_LIMIT_DEFAULT,
    RECENT_LIMIT_MAX,
    RECENT_LIMIT_MIN,
    SDP_MID_MAX_LENGTH,
    SDP_MLINE_INDEX_MAX,
    TOKEN_MAX_BYTES,
    ProtocolLimits,
)

__all__ = ["VALIDATORS", "Payload", "Validator", "field_error"]

Payload = dict[str, Any]
"""A client frame's ``payload`` object as parsed (SPEC §3: extra fields allowed)."""

Validator = Callable[[Payload, ProtocolLimits, str], Command]


# --- field checks (SPEC §3.1, §3.3) ---------------------------------------------------
# The happy path builds no strings: messages are formatted only when a check fails.


def field_error(event: str, field: str, value: Any, expected: str) -> ProtocolError:
    """``invalid_payload`` naming ``field`` (SPEC §3.3), for the event as sent."""
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
    raise field_error(event, field, value, _string_expected(max_length))


def _optional_string(payload: Payload, field: str, event: str, max_length: int) -> str | None:
    value = payload.get(field)
    if value is None or _valid_string(value, max_length):
        return value
    raise field_error(event, field, value, _string_expected(max_length) + ", or null")


def _optional_bool(payload: Payload, field: str, event: str) -> bool | None:
    # type() is exact: JSON 1/0 arrive as int, never as bool (SPEC §3.1 strict types).
    value = payload.get(field)
    if value is None or type(value) is bool:
        return value
    raise field_error(event, field, value, "true, false or null")


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
        raise field_error(
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
        raise field_error(
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
        raise field_error(
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
        raise field_error(
            kind, "sdp", sdp, f"a non-empty string of at most {limits.max_sdp_bytes} bytes"
        )
    # `type` is required and must match the event (SPEC §3.1), so an answer can never be
    # relayed as an offer.
    sdp_type = payload.get("type")
    if sdp_type != kind:
        raise field_error(kind, "type", sdp_type, f'"{kind}"')
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
        raise field_error(
            event, "candidate", candidate, f"a string of at most {CANDIDATE_MAX_LENGTH} characters"
        )
    sdp_mid = _optional_string(payload, "sdpMid", event, SDP_MID_MAX_LENGTH)
    index = payload.get("sdpMLineIndex")
    if index is not None and (type(index) is not int or not 0 <= index <= SDP_MLINE_INDEX_MAX):
        raise field_error(
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
VALIDATORS: Final[dict[str, Validator]] = {
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
"""Every name a client may send (SPEC §3.1), aliases included: its validator."""
