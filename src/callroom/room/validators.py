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
formatted on failure. msgspec was not taken: it cannot see duplicate keys either, still
needs the hand checks and words its errors its own way, for a fraction of a microsecond
saved (docs/performance.md, "Micro-measurements").

A signal's validator is made for its event (``_session_description(Event.OFFER)``): the
closure reads its ``Event`` from a cell, where ``Event.OFFER`` would be a descriptor call
on the hottest frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal, TypeGuard

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
from callroom.room.events import Event, RecentChatsEvent
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
from callroom.room.payloads import IceCandidate

__all__ = ["VALIDATORS", "ClientPayload", "Validator", "field_error"]

ClientPayload = dict[str, object]
"""A client frame's ``payload`` object as parsed (SPEC §3: extra fields allowed)."""

Validator = Callable[[ClientPayload, ProtocolLimits, str], Command]


# --- field checks (SPEC §3.1, §3.3) ---------------------------------------------------
# The happy path builds no strings: messages are formatted only when a check fails.


def field_error(event: str, field: str, value: object, expected: str) -> ProtocolError:
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


def _required_string(payload: ClientPayload, field: str, event: str, max_length: int) -> str:
    value = payload.get(field)
    if _valid_string(value, max_length):
        return value
    raise field_error(event, field, value, _string_expected(max_length))


def _optional_string(payload: ClientPayload, field: str, event: str, max_length: int) -> str | None:
    value = payload.get(field)
    if value is None or _valid_string(value, max_length):
        return value
    raise field_error(event, field, value, _string_expected(max_length) + ", or null")


def _optional_bool(payload: ClientPayload, field: str, event: str) -> bool | None:
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

    def validate(payload: ClientPayload, limits: ProtocolLimits, event: str) -> Command:
        return command

    return validate


def _required_target(make: Callable[[str], Command]) -> Validator:
    """Host controls naming a member by ``clientId`` (required)."""

    def validate(payload: ClientPayload, limits: ProtocolLimits, event: str) -> Command:
        return make(_required_string(payload, "clientId", event, CLIENT_ID_MAX_LENGTH))

    return validate


def _optional_target(make: Callable[[str | None], Command]) -> Validator:
    """``lower_hand``/``stop_screenshare``: ``clientId`` absent or null means the sender."""

    def validate(payload: ClientPayload, limits: ProtocolLimits, event: str) -> Command:
        return make(_optional_string(payload, "clientId", event, CLIENT_ID_MAX_LENGTH))

    return validate


def _add_chat(payload: ClientPayload, limits: ProtocolLimits, event: str) -> Command:
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


def _delete_chat(payload: ClientPayload, limits: ProtocolLimits, event: str) -> Command:
    return DeleteChat(chat_id=_required_string(payload, "chatId", event, CHAT_ID_MAX_LENGTH))


def _get_recent_chats(payload: ClientPayload, limits: ProtocolLimits, event: str) -> Command:
    raw = payload.get("limit")
    if raw is None:
        limit = RECENT_LIMIT_DEFAULT
    elif type(raw) is int and RECENT_LIMIT_MIN <= raw <= RECENT_LIMIT_MAX:
        limit = raw
    else:
        raise field_error(
            event, "limit", raw, f"an integer {RECENT_LIMIT_MIN}-{RECENT_LIMIT_MAX}, or null"
        )
    before = _optional_string(payload, "before", event, CHAT_ID_MAX_LENGTH)
    # The reply goes out under the name the client sent (SPEC §3.1).
    reply_event: RecentChatsEvent = (
        Event.RECENTS_CHAT if event == Event.RECENTS_CHAT else Event.GET_RECENT_CHATS
    )
    return GetRecentChats(limit=limit, before=before, reply_event=reply_event)


def _kick_participant(payload: ClientPayload, limits: ProtocolLimits, event: str) -> Command:
    client_id = _required_string(payload, "clientId", event, CLIENT_ID_MAX_LENGTH)
    ban = _optional_bool(payload, "ban", event)
    return KickParticipant(client_id=client_id, ban=ban is True)


def _set_media_state(payload: ClientPayload, limits: ProtocolLimits, event: str) -> Command:
    return SetMediaState(
        audio=_optional_bool(payload, "audio", event),
        video=_optional_bool(payload, "video", event),
    )


def _refresh_token(payload: ClientPayload, limits: ProtocolLimits, event: str) -> Command:
    token = payload.get("token")
    if type(token) is not str or not token or _utf8_longer_than(token, TOKEN_MAX_BYTES):
        # The message never contains the token (SPEC §1).
        raise field_error(
            event, "token", token, f"a non-empty string of at most {TOKEN_MAX_BYTES} bytes"
        )
    return RefreshToken(token=token)


def _target_client_id(payload: ClientPayload, event: str) -> str:
    return _required_string(payload, "targetClientId", event, CLIENT_ID_MAX_LENGTH)


def _session_description(kind: Literal[Event.OFFER, Event.ANSWER]) -> Validator:
    """``offer``/``answer``: ``targetClientId``, ``sdp``, and ``type`` = the event's name."""
    sdp_type: Literal["offer", "answer"] = "offer" if kind is Event.OFFER else "answer"

    def validate(payload: ClientPayload, limits: ProtocolLimits, event: str) -> Command:
        target = _target_client_id(payload, kind)
        sdp = payload.get("sdp")
        if type(sdp) is not str or not sdp or _utf8_longer_than(sdp, limits.max_sdp_bytes):
            raise field_error(
                kind, "sdp", sdp, f"a non-empty string of at most {limits.max_sdp_bytes} bytes"
            )
        # `type` is required and must match the event (SPEC §3.1), so an answer can never
        # be relayed as an offer.
        given = payload.get("type")
        if given != sdp_type:
            raise field_error(kind, "type", given, f'"{sdp_type}"')
        return Signal(event=kind, target_client_id=target, fields={"sdp": sdp, "type": sdp_type})

    return validate


def _candidate(kind: Literal[Event.CANDIDATE]) -> Validator:
    """``candidate``: ``targetClientId``, ``candidate``, optional ``sdpMid``/``sdpMLineIndex``."""

    def validate(payload: ClientPayload, limits: ProtocolLimits, event: str) -> Command:
        target = _target_client_id(payload, event)
        candidate = payload.get("candidate")
        # Empty is allowed: "" is WebRTC's end-of-candidates marker.
        if type(candidate) is not str or len(candidate) > CANDIDATE_MAX_LENGTH:
            raise field_error(
                event,
                "candidate",
                candidate,
                f"a string of at most {CANDIDATE_MAX_LENGTH} characters",
            )
        sdp_mid = _optional_string(payload, "sdpMid", event, SDP_MID_MAX_LENGTH)
        index = payload.get("sdpMLineIndex")
        if index is not None and (type(index) is not int or not 0 <= index <= SDP_MLINE_INDEX_MAX):
            raise field_error(
                event, "sdpMLineIndex", index, f"an integer 0-{SDP_MLINE_INDEX_MAX}, or null"
            )
        # The optional keys are always relayed (as null when absent): one shape for receivers.
        fields: IceCandidate = {"candidate": candidate, "sdpMid": sdp_mid, "sdpMLineIndex": index}
        return Signal(event=kind, target_client_id=target, fields=fields)

    return validate


def _renegotiate(kind: Literal[Event.RENEGOTIATE]) -> Validator:
    """``renegotiate``: ``targetClientId``, optional ``reason``."""

    def validate(payload: ClientPayload, limits: ProtocolLimits, event: str) -> Command:
        target = _target_client_id(payload, event)
        reason = _optional_string(payload, "reason", event, REASON_MAX_LENGTH)
        return Signal(event=kind, target_client_id=target, fields={"reason": reason})

    return validate


_BY_EVENT: Final[dict[Event, Validator]] = {
    Event.PING: _no_payload(Ping()),
    Event.ADD_CHAT: _add_chat,
    Event.DELETE_CHAT: _delete_chat,
    Event.GET_RECENT_CHATS: _get_recent_chats,
    Event.RECENTS_CHAT: _get_recent_chats,
    Event.RAISE_HAND: _no_payload(RaiseHand()),
    Event.LOWER_HAND: _optional_target(LowerHand),
    Event.REQUEST_WAITING: _no_payload(RequestWaiting()),
    Event.WAITING_REQUEST: _no_payload(RequestWaiting(sent_as=Event.WAITING_REQUEST)),
    Event.ACCEPT_WAITING: _required_target(AcceptWaiting),
    Event.DENY_WAITING: _required_target(DenyWaiting),
    Event.REQUEST_SCREENSHARE: _no_payload(RequestScreenshare()),
    Event.ACCEPT_SCREENSHARE: _required_target(AcceptScreenshare),
    Event.DENY_SCREENSHARE: _required_target(DenyScreenshare),
    Event.STOP_SCREENSHARE: _optional_target(StopScreenshare),
    Event.KICK_PARTICIPANT: _kick_participant,
    Event.UNBAN_PARTICIPANT: _required_target(UnbanParticipant),
    Event.PROMOTE_HOST: _required_target(PromoteHost),
    Event.DEMOTE_HOST: _required_target(DemoteHost),
    Event.LOCK_ROOM: _no_payload(LockRoom()),
    Event.UNLOCK_ROOM: _no_payload(UnlockRoom()),
    Event.END_ROOM: _no_payload(EndRoom()),
    Event.SET_MEDIA_STATE: _set_media_state,
    Event.REFRESH_TOKEN: _refresh_token,
    Event.OFFER: _session_description(Event.OFFER),
    Event.ANSWER: _session_description(Event.ANSWER),
    Event.CANDIDATE: _candidate(Event.CANDIDATE),
    Event.RENEGOTIATE: _renegotiate(Event.RENEGOTIATE),
}

# Keyed by the plain strings: decode looks up the name as sent, and a dict of exact str
# keys takes CPython's fastest lookup (Event keys cost a few ns more per frame).
VALIDATORS: Final[dict[str, Validator]] = {
    event.value: validate for event, validate in _BY_EVENT.items()
}
"""Every name a client may send (SPEC §3.1), aliases included: its validator."""
