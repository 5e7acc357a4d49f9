"""Plain data of the room core (SPEC §2): members, roles, the room, and effects.

No I/O here. A ``Room`` is mutated in place by the functions of ``callroom.room.core``,
which return ``Effects``: the ordered list of frames to send and connections to close.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from callroom.errors import CloseCode
from callroom.room.events import Event
from callroom.room.payloads import RoomLists, RoomState, RoomStateOwn, ServerPayload


class Role(StrEnum):
    """Room roles, least to most privileged (SPEC §2)."""

    WAITING = "waiting"
    PARTICIPANT = "participant"
    SCREENSHARE = "screenshare"
    HOST = "host"

    @property
    def admitted(self) -> bool:
        return self is not Role.WAITING


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is, taken from the verified token only (SPEC §2)."""

    client_id: str
    display_name: str
    is_admin: bool = False  # role admin or permission rooms:admin
    is_token_host: bool = False  # role host/moderator or permission rooms:host (admin too)
    expires_at: float = 0.0  # token exp, Unix seconds


@dataclass(frozen=True, slots=True)
class RoomRules:
    """The settings the core needs (SPEC §6)."""

    lobby_enabled: bool = True
    max_room_size: int = 100
    max_screenshares: int = 1


@dataclass(slots=True)
class MediaState:
    audio: bool = False
    video: bool = False


@dataclass(slots=True)
class Member:
    client_id: str
    display_name: str
    role: Role
    is_admin: bool = False
    is_token_host: bool = False
    admitted_seq: int = 0  # order of admission in the current stay; 0 while waiting
    connected: bool = True  # False while a dropped admitted member is in its grace


@dataclass(slots=True)
class Room:
    kind: str
    room_id: str
    created_at_ms: int
    members: dict[str, Member] = field(default_factory=dict)  # join order
    hands: list[str] = field(default_factory=list)  # queue order
    locked: bool = False
    remembered: dict[str, Role] = field(default_factory=dict)  # PARTICIPANT or HOST
    banned: set[str] = field(default_factory=set)
    media: dict[str, MediaState] = field(default_factory=dict)
    seq: int = 0  # admission counter
    closed: bool = False


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``event`` with ``payload`` to each of ``recipients`` (client ids).

    The node encodes one ``Send`` once, whatever the number of recipients (DESIGN
    "Encode once").
    """

    recipients: tuple[str, ...]
    event: Event
    payload: ServerPayload


@dataclass(frozen=True, slots=True)
class SendView:
    """Send ``room_state`` to ``recipient``: ``{**own, **shared}`` (SPEC §3.2).

    ``own`` is the recipient's own part (its clientId, name, role and the roomId);
    ``shared`` holds the lists of its view class and is the same object for every
    recipient of that class in one transition, so the node encodes it once per
    transition instead of once per member: a join into a room of M sends M views of M
    entries each, O(M²) bytes of JSON per join if each were encoded whole.
    """

    recipient: str
    own: RoomStateOwn
    shared: RoomLists
    event: ClassVar[Event] = Event.ROOM_STATE

    @property
    def recipients(self) -> tuple[str, ...]:
        return (self.recipient,)

    @property
    def payload(self) -> RoomState:
        return {**self.own, **self.shared}


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection of ``client_id`` with ``code`` (SPEC §3.4)."""

    client_id: str
    code: CloseCode
    reason: str = ""


Action = Send | SendView | Close


@dataclass(slots=True)
class Effects:
    """What a transition asks the node to do, in order."""

    actions: list[Action] = field(default_factory=list)
    room_closed: bool = False  # the room is gone (last member left, or ended)

    def send(
        self, recipients: tuple[str, ...] | list[str], event: Event, payload: ServerPayload
    ) -> None:
        if recipients:
            self.actions.append(Send(tuple(recipients), event, payload))

    def send_view(self, recipient: str, own: RoomStateOwn, shared: RoomLists) -> None:
        self.actions.append(SendView(recipient, own, shared))

    def close(self, client_id: str, code: CloseCode, reason: str = "") -> None:
        self.actions.append(Close(client_id, code, reason))
