"""Who may do what in a room (SPEC §2, §3.1 "who may send"), and who receives what.

Pure functions over a ``Room``. The node uses ``require_admitted``, ``authorize_delete``,
``admitted_ids`` and ``host_ids`` for the chat rows it runs itself (they need the chat
store); the room core uses them for everything else.
"""

from __future__ import annotations

from callroom.errors import ErrorCode, ProtocolError
from callroom.room.events import Event
from callroom.room.model import Member, Role, Room
from callroom.room.payloads import ClientInfo


def client_info(member: Member) -> ClientInfo:
    """``ClientInfo`` of SPEC §3."""
    return {"clientId": member.client_id, "displayName": member.display_name}


def acts_as_host(member: Member) -> bool:
    """A host, or an admitted admin: SPEC §2 "admin may act as host in every room"."""
    return member.role is Role.HOST or (member.is_admin and member.role.admitted)


def require_member(room: Room, actor_id: str, event: str) -> Member:
    """The acting member; a connection that is not (or no longer) in the room is refused."""
    member = room.members.get(actor_id)
    if member is None:
        raise ProtocolError(ErrorCode.FORBIDDEN, "you are not in this room", event)
    return member


def require_admitted(room: Room, actor_id: str, event: str) -> Member:
    """The acting member if admitted, else ``forbidden`` (SPEC §3.1, §3.2: waiting see nothing)."""
    member = require_member(room, actor_id, event)
    if not member.role.admitted:
        raise ProtocolError(
            ErrorCode.FORBIDDEN, "members in the waiting room may not do this", event
        )
    return member


def require_host(room: Room, actor_id: str, event: str) -> Member:
    """The acting member if it may act as host, else ``forbidden`` (SPEC §3.3)."""
    member = require_member(room, actor_id, event)
    if not acts_as_host(member):
        raise ProtocolError(ErrorCode.FORBIDDEN, "only a host may do this", event)
    return member


def authorize_delete(room: Room, actor_id: str, author_id: str) -> None:
    """SPEC §3.1 ``delete_chat``: the author or a host, and only while admitted."""
    member = require_admitted(room, actor_id, Event.DELETE_CHAT)
    if actor_id != author_id and not acts_as_host(member):
        raise ProtocolError(
            ErrorCode.FORBIDDEN, "only the author or a host may delete a message", Event.DELETE_CHAT
        )


def admitted_ids(room: Room) -> tuple[str, ...]:
    """Admitted members in join order, those in their reconnect grace included.

    A member in grace keeps its place (SPEC §2); frames for it are simply not delivered
    (the node skips a client id without a socket).
    """
    waiting = Role.WAITING  # an identity test: this runs for every chat broadcast
    return tuple(cid for cid, m in room.members.items() if m.role is not waiting)


def host_ids(room: Room) -> tuple[str, ...]:
    """Members whose role is ``host``, in join order: the recipients of host-only events."""
    return tuple(cid for cid, m in room.members.items() if m.role is Role.HOST)
