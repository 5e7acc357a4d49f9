"""Typed client commands (SPEC §3.1): what the protocol layer decodes a frame into.

The protocol layer (``callroom.room.protocol``) validates a frame and returns one of these;
the pure room core (``callroom.room.core``) and the node runtime act on them. Field names
are snake_case here; the wire names are camelCase (SPEC §3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


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
    reply_event: Literal["get_recent_chats", "recents_chat"]  # answer under the name sent


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
    sent_as: Literal["request_waiting", "waiting_request"] = field(
        default="request_waiting", compare=False
    )


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


SignalEvent = Literal["offer", "answer", "candidate", "renegotiate"]


@dataclass(frozen=True, slots=True)
class Signal:
    """``offer``/``answer``/``candidate``/``renegotiate``: relayed to one target only.

    ``fields`` holds the validated fields to forward (``sdp`` and ``type``; or
    ``candidate``, ``sdpMid``, ``sdpMLineIndex``; or ``reason``), wire names, without
    ``targetClientId``; the node stamps the sender's ClientInfo in.
    """

    event: SignalEvent
    target_client_id: str
    fields: dict[str, Any]


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
