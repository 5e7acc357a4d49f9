"""The payloads the server sends (SPEC §3, §3.1, §3.2) and its REST views (SPEC §4), typed.

Each is a ``TypedDict`` with the wire names as keys: at run time a plain ``dict``, built
and encoded exactly as before (orjson writes keys in insertion order, which is the order
the builders write them in, not the order declared here), so typing them cost nothing on
the hot paths. msgspec Structs were the other candidate the issue named; the project
does not ship msgspec (it was dropped as unused) and a Struct would be one more object
to build per frame and a second encoder's semantics, for no check mypy cannot do here.

``ServerPayload`` is every payload of a ``Send`` (``callroom.room.model``); which event
carries which payload is SPEC §3.1's "what happens" column and §3.2.
"""

from __future__ import annotations

from typing import Literal, TypedDict


class ClientInfo(TypedDict):
    """SPEC §3 ``ClientInfo``; the payload of ``connect``, ``disconnect``, the hand,
    waiting-room and screen-share events."""

    clientId: str
    displayName: str


class ChatInfo(ClientInfo):
    """SPEC §3 ``ChatInfo``: ``add_chat``, and each message of a recent-chats page."""

    chatId: str
    timestamp: int  # ms since the epoch, server clock
    chatContent: str


class ChatDeleted(ClientInfo):
    """``delete_chat`` to the admitted: the message's id and the deleter (SPEC §3.1)."""

    chatId: str


class RecentChats(TypedDict):
    """The reply to ``get_recent_chats``/``recents_chat`` (SPEC §3.1)."""

    messages: list[ChatInfo]  # oldest first
    total: int
    hasMore: bool


class Unbanned(TypedDict):
    """``unban_participant`` to the host who lifted the ban (SPEC §3.1)."""

    clientId: str


class MediaFlags(TypedDict):
    """One member's entry of ``room_state.media`` (SPEC §3.2)."""

    audio: bool
    video: bool


class MediaStateChanged(ClientInfo):
    """``media_state`` to the admitted (SPEC §3.1 ``set_media_state``)."""

    audio: bool
    video: bool


class NoFields(TypedDict):
    """``{}``: ``pong``, ``room_locked``, ``room_unlocked`` (SPEC §3.1)."""


class ErrorPayload(TypedDict):
    """``error`` to the sender of a refused frame (SPEC §3.2)."""

    code: str
    message: str
    event: str | None


# --- room_state (SPEC §3.2) and the REST views (SPEC §4) ----------------------------------


class MemberLists(TypedDict):
    """The member lists of a view, with ``media``: SPEC §4's host and member views."""

    hosts: list[ClientInfo]
    participants: list[ClientInfo]  # role exactly participant
    handsRaised: list[ClientInfo]  # queue order
    waitingUsers: list[ClientInfo]
    sharingScreen: list[ClientInfo]
    media: dict[str, MediaFlags]  # by clientId


class RoomLists(MemberLists):
    """The part of ``room_state`` one view class shares (``callroom.room.views``)."""

    locked: bool


class RoomStateOwn(TypedDict):
    """The recipient's own part of ``room_state``."""

    clientId: str
    displayName: str
    role: str  # a callroom.room.model.Role value
    roomId: str


class RoomState(RoomStateOwn, RoomLists):
    """``room_state`` as one recipient sees it (SPEC §3.2): ``{**own, **lists}``."""


class RoomSummary(TypedDict):
    """One entry of ``GET /api/v1/rooms`` (SPEC §4)."""

    kind: str
    roomId: str
    members: int
    admitted: int
    waiting: int
    hosts: list[ClientInfo]
    locked: bool
    createdAt: int  # ms since the epoch


# --- signaling (SPEC §3.1 offer, answer, candidate, renegotiate) --------------------------


class SessionDescription(TypedDict):
    """The fields an ``offer``/``answer`` relays."""

    sdp: str
    type: Literal["offer", "answer"]  # always the event's own name


class IceCandidate(TypedDict):
    """The fields a ``candidate`` relays; the optional ones as null when absent."""

    candidate: str  # "" is WebRTC's end-of-candidates marker
    sdpMid: str | None
    sdpMLineIndex: int | None


class Renegotiation(TypedDict):
    """The field a ``renegotiate`` relays."""

    reason: str | None


SignalFields = SessionDescription | IceCandidate | Renegotiation
"""What a client's signaling frame carries on (``callroom.room.commands.Signal.fields``)."""


class SignalStamp(ClientInfo):
    """What the server adds to a relayed signal: the target, and the sender's ClientInfo."""

    targetClientId: str


class SessionDescriptionRelay(SessionDescription, SignalStamp):
    pass


class IceCandidateRelay(IceCandidate, SignalStamp):
    pass


class RenegotiationRelay(Renegotiation, SignalStamp):
    pass


SignalRelay = SessionDescriptionRelay | IceCandidateRelay | RenegotiationRelay
"""A signal as its target receives it (SPEC §3.1: the sender's ClientInfo stamped in)."""


ServerPayload = (
    ClientInfo
    | ChatInfo
    | ChatDeleted
    | RecentChats
    | Unbanned
    | MediaStateChanged
    | NoFields
    | ErrorPayload
    | RoomState
    | SignalRelay
)
"""Every payload the server sends in a frame (SPEC §3.1 answers and broadcasts, §3.2)."""
