"""What each member sees of a room: ``room_state`` (SPEC §3.2) and the REST views (SPEC §4).

A view depends on the recipient only through its own ClientInfo and role, and on the room
through the lists of its *view class*: hosts see everything, other admitted members see
everything but the waiting room, a waiting member sees only itself. So "every member
whose view of the room changed" (SPEC §3.2) is found exactly in O(members): compare the
lists of each class and each member's own (role, name) before and after a transition
(``ViewSnapshot``), instead of building and comparing every member's whole view.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from callroom.room.access import client_info
from callroom.room.model import Effects, Member, Role, Room
from callroom.room.payloads import (
    ClientInfo,
    MemberLists,
    RoomLists,
    RoomState,
    RoomStateOwn,
    RoomSummary,
)

ViewClass = Literal["host", "admitted", "waiting"]
_HOST: Final = "host"
_ADMITTED: Final = "admitted"
_WAITING: Final = "waiting"


def _view_class(member: Member) -> ViewClass:
    if member.role is Role.HOST:
        return _HOST
    if member.role is Role.WAITING:
        return _WAITING
    return _ADMITTED


def _host_lists(room: Room) -> RoomLists:
    """Every list of ``room_state`` as a host sees it (SPEC §3.2), plus ``locked``/``media``."""
    hosts: list[ClientInfo] = []
    participants: list[ClientInfo] = []
    waiting: list[ClientInfo] = []
    sharing: list[ClientInfo] = []
    by_role = {
        Role.HOST: hosts,
        Role.PARTICIPANT: participants,  # role exactly participant (SPEC §3.2)
        Role.WAITING: waiting,
        Role.SCREENSHARE: sharing,
    }
    for member in room.members.values():
        by_role[member.role].append(client_info(member))
    return {
        "hosts": hosts,
        "participants": participants,
        "handsRaised": [client_info(room.members[cid]) for cid in room.hands],  # queue order
        "waitingUsers": waiting,
        "sharingScreen": sharing,
        "locked": room.locked,
        "media": {
            cid: {"audio": state.audio, "video": state.video} for cid, state in room.media.items()
        },
    }


ViewLists = dict[ViewClass, RoomLists]
"""The shared part of ``room_state`` per view class (``view_lists``)."""


def view_lists(room: Room) -> ViewLists:
    """The shared part of each view class. A waiting member's own entry is added per member.

    A transition that sends ``room_state`` more than once (the joiner's, then those of
    the members whose view changed) builds these once and passes them to each call.
    """
    host = _host_lists(room)
    return {
        _HOST: host,
        # SPEC §3.2: waitingUsers is filled for hosts only.
        _ADMITTED: {**host, "waitingUsers": []},
        # SPEC §3.2: a waiting recipient sees only itself (every list empty; `locked` is
        # the real flag: it tells a knocking user nothing about who is inside).
        _WAITING: {
            "hosts": [],
            "participants": [],
            "handsRaised": [],
            "waitingUsers": [],
            "sharingScreen": [],
            "locked": room.locked,
            "media": {},
        },
    }


def _state(room: Room, member: Member, lists: ViewLists) -> tuple[RoomStateOwn, RoomLists]:
    """``member``'s room_state as (its own part, the lists it shares with its class)."""
    cls = _view_class(member)
    shared = lists[cls]
    if cls == _WAITING:
        shared = {**shared, "waitingUsers": [client_info(member)]}
    own: RoomStateOwn = {
        "clientId": member.client_id,
        "displayName": member.display_name,
        "role": member.role.value,
        "roomId": room.room_id,
    }
    return own, shared


def room_state_for(room: Room, client_id: str) -> RoomState:
    """The ``room_state`` payload for member ``client_id`` (SPEC §3.2); KeyError if absent."""
    own, shared = _state(room, room.members[client_id], view_lists(room))
    return {**own, **shared}


def _member_lists(lists: RoomLists) -> MemberLists:
    # `locked` is left out: the REST views sit beside room_summary, which has it.
    return {
        "hosts": lists["hosts"],
        "participants": lists["participants"],
        "handsRaised": lists["handsRaised"],
        "waitingUsers": lists["waitingUsers"],
        "sharingScreen": lists["sharingScreen"],
        "media": lists["media"],
    }


def host_view(room: Room) -> MemberLists:
    """Every list of ``room_state`` as a host sees it, plus ``media`` (SPEC §4 admin view)."""
    return _member_lists(_host_lists(room))


def member_view(room: Room, client_id: str) -> MemberLists:
    """The lists as member ``client_id`` sees them in the room (SPEC §4 member view)."""
    _, shared = _state(room, room.members[client_id], view_lists(room))
    return _member_lists(shared)


def room_summary(room: Room) -> RoomSummary:
    """One entry of ``GET /api/v1/rooms`` (SPEC §4)."""
    admitted = sum(1 for m in room.members.values() if m.role.admitted)
    return {
        "kind": room.kind,
        "roomId": room.room_id,
        "members": len(room.members),
        "admitted": admitted,
        "waiting": len(room.members) - admitted,
        "hosts": [client_info(m) for m in room.members.values() if m.role is Role.HOST],
        "locked": room.locked,
        "createdAt": room.created_at_ms,
    }


def send_room_states(
    effects: Effects, room: Room, recipients: Iterable[str], lists: ViewLists | None = None
) -> None:
    """Append one ``room_state`` per recipient, each with its own view.

    The lists are built once (or given: ``view_lists`` of the room as it is now), and
    every recipient of a view class gets the same ``shared`` object: the node encodes it
    once (``SendView``).
    """
    for cid in recipients:
        if lists is None:
            lists = view_lists(room)
        effects.send_view(cid, *_state(room, room.members[cid], lists))


@dataclass(frozen=True, slots=True)
class ViewSnapshot:
    """What every member saw before a transition, to find whose view changed after it."""

    lists: ViewLists
    own: dict[str, tuple[Role, str]]

    @classmethod
    def take(cls, room: Room) -> ViewSnapshot:
        own = {cid: (m.role, m.display_name) for cid, m in room.members.items()}
        return cls(view_lists(room), own)

    def changed(self, room: Room, after: ViewLists | None = None) -> list[str]:
        """Members (join order) whose ``room_state`` differs from the snapshot's.

        ``after``: ``view_lists`` of the room as it is now, if the caller has them.
        """
        if after is None:
            after = view_lists(room)
        moved = {cls for cls in after if after[cls] != self.lists[cls]}
        return [
            cid
            for cid, m in room.members.items()
            if self.own.get(cid) != (m.role, m.display_name) or _view_class(m) in moved
        ]
