"""Typed client commands (SPEC §3.1): what the protocol layer decodes a frame into.

The protocol layer (``callroom.room.protocol``) validates a frame and returns one of these;
the pure room core (``callroom.room.core``) and the node runtime act on them. Field names
are snake_case here; the wire names are camelCase (SPEC §3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callroom.room.events import Event, RecentChatsEvent, RequestWaitingEvent, SignalEvent
from callroom.room.payloads import SignalFields

__all__ = [
    "AcceptScreenshare",
    "AcceptWaiting",
    "AddChat",
    "Command",
    "DeleteChat",
    "DemoteHost",
    "DenyScreenshare",
    "DenyWaiting",
    "EndRoom",
    "GetRecentChats",
    "KickParticipant",
    "LockRoom",
    "LowerHand",
    "Ping",
    "PromoteHost",
    "RaiseHand",
    "RefreshToken",
    "RequestScreenshare",
    "RequestWaiting",
    "SetMediaState",
    "Signal",
    "SignalEvent",
    "StopScreenshare",
    "UnbanParticipant",
    "UnlockRoom",
    "event_name",
]


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class AddChat:
    chat_content: str  # trimmed, 1..CHAT_MAX_LENGTH chars, no NUL
    chat_id: str | None  # client id for safe retries, <= 64 chars


@dataclass(frozen=True, slots=True)
class DeleteChat:
    chat_id: str


@dataclass(frozen=True, slots=True)
class GetRecentChats:
    limit: int  # 1..100, default 50
    before: str | None
    reply_event: RecentChatsEvent  # answer under the name sent


@dataclass(frozen=True, slots=True)
class RaiseHand:
    pass


@dataclass(frozen=True, slots=True)
class LowerHand:
    client_id: str | None  # None: the sender itself


@dataclass(frozen=True, slots=True)
class RequestWaiting:
    # The name the client sent, for the ``event`` of its errors (an alias stays an alias,
    # as for GetRecentChats). Not part of equality: both names are the same command.
    sent_as: RequestWaitingEvent = field(default=Event.REQUEST_WAITING, compare=False)


@dataclass(frozen=True, slots=True)
class AcceptWaiting:
    client_id: str


@dataclass(frozen=True, slots=True)
class DenyWaiting:
    client_id: str


@dataclass(frozen=True, slots=True)
class RequestScreenshare:
    pass


@dataclass(frozen=True, slots=True)
class AcceptScreenshare:
    client_id: str


@dataclass(frozen=True, slots=True)
class DenyScreenshare:
    client_id: str


@dataclass(frozen=True, slots=True)
class StopScreenshare:
    client_id: str | None  # None: the sender itself


@dataclass(frozen=True, slots=True)
class KickParticipant:
    client_id: str
    ban: bool


@dataclass(frozen=True, slots=True)
class UnbanParticipant:
    client_id: str


@dataclass(frozen=True, slots=True)
class PromoteHost:
    client_id: str


@dataclass(frozen=True, slots=True)
class DemoteHost:
    client_id: str


@dataclass(frozen=True, slots=True)
class LockRoom:
    pass


@dataclass(frozen=True, slots=True)
class UnlockRoom:
    pass


@dataclass(frozen=True, slots=True)
class EndRoom:
    pass


@dataclass(frozen=True, slots=True)
class SetMediaState:
    audio: bool | None
    video: bool | None


@dataclass(frozen=True, slots=True)
class RefreshToken:
    token: str


@dataclass(frozen=True, slots=True)
class Signal:
    """``offer``/``answer``/``candidate``/``renegotiate``: relayed to one target only.

    ``fields`` holds the validated fields to forward (``sdp`` and ``type``; or
    ``candidate``, ``sdpMid``, ``sdpMLineIndex``; or ``reason``), wire names, without
    ``targetClientId``; the room core stamps the target and the sender's ClientInfo in.
    """

    event: SignalEvent
    target_client_id: str
    fields: SignalFields


Command = (
    Ping
    | AddChat
    | DeleteChat
    | GetRecentChats
    | RaiseHand
    | LowerHand
    | RequestWaiting
    | AcceptWaiting
    | DenyWaiting
    | RequestScreenshare
    | AcceptScreenshare
    | DenyScreenshare
    | StopScreenshare
    | KickParticipant
    | UnbanParticipant
    | PromoteHost
    | DemoteHost
    | LockRoom
    | UnlockRoom
    | EndRoom
    | SetMediaState
    | RefreshToken
    | Signal
)


# The name of each command that has one name; the others carry the name sent.
_EVENTS: dict[type[Command], Event] = {
    Ping: Event.PING,
    AddChat: Event.ADD_CHAT,
    DeleteChat: Event.DELETE_CHAT,
    RaiseHand: Event.RAISE_HAND,
    LowerHand: Event.LOWER_HAND,
    RequestWaiting: Event.REQUEST_WAITING,
    AcceptWaiting: Event.ACCEPT_WAITING,
    DenyWaiting: Event.DENY_WAITING,
    RequestScreenshare: Event.REQUEST_SCREENSHARE,
    AcceptScreenshare: Event.ACCEPT_SCREENSHARE,
    DenyScreenshare: Event.DENY_SCREENSHARE,
    StopScreenshare: Event.STOP_SCREENSHARE,
    KickParticipant: Event.KICK_PARTICIPANT,
    UnbanParticipant: Event.UNBAN_PARTICIPANT,
    PromoteHost: Event.PROMOTE_HOST,
    DemoteHost: Event.DEMOTE_HOST,
    LockRoom: Event.LOCK_ROOM,
    UnlockRoom: Event.UNLOCK_ROOM,
    EndRoom: Event.END_ROOM,
    SetMediaState: Event.SET_MEDIA_STATE,
    RefreshToken: Event.REFRESH_TOKEN,
}


def event_name(command: Command) -> Event:
    """The SPEC §3.1 event name of ``command`` (the ``event`` field of its errors)."""
    if isinstance(command, Signal):
        return command.event
    if isinstance(command, GetRecentChats):
        return command.reply_event
    if isinstance(command, RequestWaiting):
        return command.sent_as
    return _EVENTS[type(command)]
