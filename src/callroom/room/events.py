"""The one table of event names (SPEC §3.1 client events, §3.2 server events).

Every event name the server reads or writes is a member of ``Event``, here and nowhere
else; ``CLIENT_EVENTS`` and ``SERVER_EVENTS`` say which direction each travels. Many
names travel both ways (a client sends ``raise_hand``, the admitted receive
``raise_hand``), so the table is one enum with two sets rather than two enums.
tests/unit/test_docs.py holds both sets against docs/protocol.md's tables, so a new event
cannot be added in one place only.

``Event`` is a ``StrEnum``: a member *is* its wire string (``Event.ADD_CHAT == "add_chat"``,
same hash, so a dict keyed by members is looked up with the plain string a frame
carries), and orjson writes it as that string, so frames are byte for byte what plain
strings gave.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal


class Event(StrEnum):
    """Every event name of the protocol (SPEC §3.1, §3.2), aliases included."""

    # Sent by clients (SPEC §3.1); most are also sent back by the server.
    PING = "ping"
    ADD_CHAT = "add_chat"
    DELETE_CHAT = "delete_chat"
    GET_RECENT_CHATS = "get_recent_chats"
    RECENTS_CHAT = "recents_chat"  # alias of get_recent_chats; replies keep the name sent
    RAISE_HAND = "raise_hand"
    LOWER_HAND = "lower_hand"
    REQUEST_WAITING = "request_waiting"
    WAITING_REQUEST = "waiting_request"  # alias of request_waiting; the knock hosts get
    ACCEPT_WAITING = "accept_waiting"
    DENY_WAITING = "deny_waiting"
    REQUEST_SCREENSHARE = "request_screenshare"
    ACCEPT_SCREENSHARE = "accept_screenshare"
    DENY_SCREENSHARE = "deny_screenshare"
    STOP_SCREENSHARE = "stop_screenshare"
    KICK_PARTICIPANT = "kick_participant"
    UNBAN_PARTICIPANT = "unban_participant"
    PROMOTE_HOST = "promote_host"
    DEMOTE_HOST = "demote_host"
    LOCK_ROOM = "lock_room"
    UNLOCK_ROOM = "unlock_room"
    END_ROOM = "end_room"
    SET_MEDIA_STATE = "set_media_state"
    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - an event name, not a secret
    OFFER = "offer"
    ANSWER = "answer"
    CANDIDATE = "candidate"
    RENEGOTIATE = "renegotiate"
    # Sent only by the server (SPEC §3.2); a client sending one gets unknown_event.
    ROOM_STATE = "room_state"
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    PONG = "pong"
    ROOM_LOCKED = "room_locked"
    ROOM_UNLOCKED = "room_unlocked"
    MEDIA_STATE = "media_state"
    ERROR = "error"


_SERVER_ONLY: Final = frozenset(
    {
        Event.ROOM_STATE,
        Event.CONNECT,
        Event.DISCONNECT,
        Event.PONG,
        Event.ROOM_LOCKED,
        Event.ROOM_UNLOCKED,
        Event.MEDIA_STATE,
        Event.ERROR,
    }
)

CLIENT_EVENTS: Final[frozenset[Event]] = frozenset(Event) - _SERVER_ONLY
"""Every name a client may send (SPEC §3.1), aliases included."""

ALIASES: Final[dict[Event, Event]] = {
    Event.RECENTS_CHAT: Event.GET_RECENT_CHATS,
    Event.WAITING_REQUEST: Event.REQUEST_WAITING,
}
"""SPEC §3.1 "aliases in brackets are accepted as the same event": alias → event."""

SERVER_EVENTS: Final[frozenset[Event]] = _SERVER_ONLY | {
    # SPEC §3.1 "what happens": the answers and broadcasts under a client event's name.
    Event.ADD_CHAT,
    Event.DELETE_CHAT,
    Event.GET_RECENT_CHATS,
    Event.RECENTS_CHAT,
    Event.RAISE_HAND,
    Event.LOWER_HAND,
    Event.WAITING_REQUEST,
    Event.ACCEPT_WAITING,
    Event.DENY_WAITING,
    Event.REQUEST_SCREENSHARE,
    Event.ACCEPT_SCREENSHARE,
    Event.DENY_SCREENSHARE,
    Event.UNBAN_PARTICIPANT,
    Event.OFFER,
    Event.ANSWER,
    Event.CANDIDATE,
    Event.RENEGOTIATE,
}
"""Every name the server sends (SPEC §3.1 answers and broadcasts, §3.2)."""

# The closed sets some commands carry, as types (callroom.room.commands).
SignalEvent = Literal[Event.OFFER, Event.ANSWER, Event.CANDIDATE, Event.RENEGOTIATE]
RecentChatsEvent = Literal[Event.GET_RECENT_CHATS, Event.RECENTS_CHAT]
RequestWaitingEvent = Literal[Event.REQUEST_WAITING, Event.WAITING_REQUEST]
