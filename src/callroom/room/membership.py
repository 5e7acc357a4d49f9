"""Joining and leaving a room (SPEC §1 refusals, §2 roles, memory, grace and host handoff).

Pure transitions over a ``Room``; each returns the ``Effects`` to carry out, in order.
"""

from __future__ import annotations

from callroom.errors import CloseCode, HandshakeCode, HandshakeRefused
from callroom.room.access import admitted_ids, client_info, host_ids
from callroom.room.events import Event
from callroom.room.model import Effects, Identity, Member, Role, Room, RoomRules
from callroom.room.views import ViewSnapshot, send_room_states, view_lists


def new_room(kind: str, room_id: str, now_ms: int) -> Room:
    """An empty room; its first member becomes host (SPEC §2)."""
    return Room(kind=kind, room_id=room_id, created_at_ms=now_ms)


def check_join(room: Room | None, identity: Identity, rules: RoomRules) -> None:
    """Refuse a connection before the upgrade (SPEC §1), or return.

    ``None`` or a closed room stands for a room that does not exist yet: nothing to refuse.
    """
    if room is None or room.closed:
        return
    cid = identity.client_id
    # SPEC §3.1 kick_participant: banned "whatever token it brings", admin included.
    if cid in room.banned:
        raise HandshakeRefused(HandshakeCode.BANNED, "you were banned from this room")
    if cid in room.members:
        return  # a takeover or a reconnect within the grace: it keeps its place (SPEC §2)
    privileged = identity.is_admin or identity.is_token_host
    if room.locked and not privileged and cid not in room.remembered:
        # SPEC §2: a remembered (previously admitted) user is let into a locked room too.
        raise HandshakeRefused(HandshakeCode.ROOM_LOCKED, "this room is locked")
    if len(room.members) >= rules.max_room_size:
        # SPEC §1: waiting members and members in their reconnect grace count.
        raise HandshakeRefused(HandshakeCode.ROOM_FULL, "this room is full")


def _has_admitted(room: Room) -> bool:
    return any(m.role.admitted for m in room.members.values())


def _newcomer_role(room: Room, identity: Identity, rules: RoomRules) -> Role:
    """SPEC §2 "Joining" and room memory."""
    if not room.members:
        return Role.HOST  # the first member of an empty room
    if identity.is_admin or identity.is_token_host:
        return Role.HOST
    remembered = room.remembered.get(identity.client_id)
    if remembered is Role.HOST:
        return Role.HOST  # a former host comes back as host
    if remembered is None and rules.lobby_enabled:
        # A stranger knocks, even when only waiting members are left: the lobby never
        # lets a stranger in by default.
        return Role.WAITING
    # Admitted as participant, unless nobody admitted is left: then by the handoff rule
    # the first admitted becomes host (a room with an admitted member has a host).
    return Role.PARTICIPANT if _has_admitted(room) else Role.HOST


def admit(room: Room, member: Member, role: Role) -> None:
    """Give ``member`` an admitted ``role`` and start its current stay (SPEC §2 memory)."""
    room.seq += 1
    member.admitted_seq = room.seq
    set_role(room, member, role)


def set_role(room: Room, member: Member, role: Role) -> None:
    """Change an admitted member's role and what the room remembers of it (SPEC §2).

    The memory holds host or participant: screen sharing is not remembered.
    """
    member.role = role
    room.remembered[member.client_id] = Role.HOST if role is Role.HOST else Role.PARTICIPANT


def ensure_host(room: Room) -> bool:
    """Host handoff (SPEC §2): when admitted members remain without a host, the one
    admitted earliest in its current stay becomes host. Returns whether it happened.

    A connected member is preferred over one in its reconnect grace, so that the room is
    not left without a host who can act while that one may never come back.
    """
    admitted = [m for m in room.members.values() if m.role.admitted]
    if not admitted or any(m.role is Role.HOST for m in admitted):
        return False
    heir = min(admitted, key=lambda m: (not m.connected, m.admitted_seq))
    set_role(room, heir, Role.HOST)
    return True


def join(room: Room, identity: Identity, rules: RoomRules) -> Effects:
    """Add ``identity`` to ``room`` (SPEC §1, §2); its ``room_state`` is the first action.

    Re-runs ``check_join`` (raises ``HandshakeRefused``). A user that already has a member
    entry (a takeover, or a reconnect within the grace) keeps its role and its place; the
    others see nothing new unless its display name changed. The node itself closes the
    replaced connection with 4009.
    """
    if room.closed:
        raise ValueError("join on a closed room: create a new room with new_room()")
    check_join(room, identity, rules)
    cid = identity.client_id
    before = ViewSnapshot.take(room)
    effects = Effects()
    member = room.members.get(cid)
    if member is not None:
        # The token of the newest connection is the truth about who this user is.
        member.display_name = identity.display_name
        member.is_admin = identity.is_admin
        member.is_token_host = identity.is_token_host
        member.connected = True
        after = view_lists(room)
        send_room_states(effects, room, [cid], after)
        send_room_states(effects, room, [c for c in before.changed(room, after) if c != cid], after)
        return effects

    role = _newcomer_role(room, identity, rules)
    member = Member(
        client_id=cid,
        display_name=identity.display_name,
        role=Role.WAITING,
        is_admin=identity.is_admin,
        is_token_host=identity.is_token_host,
    )
    room.members[cid] = member
    if role.admitted:
        admit(room, member, role)
    after = view_lists(room)  # the room does not change below: one build for both sends
    send_room_states(effects, room, [cid], after)  # SPEC §1: the first message is room_state
    info = client_info(member)
    if role.admitted:
        # SPEC §3.2 connect: to the other admitted members.
        effects.send([c for c in admitted_ids(room) if c != cid], Event.CONNECT, info)
    else:
        # SPEC §3.2 waiting_request: to hosts, whenever a member enters the waiting room.
        effects.send(host_ids(room), Event.WAITING_REQUEST, info)
    send_room_states(effects, room, [c for c in before.changed(room, after) if c != cid], after)
    return effects


def remove(room: Room, client_id: str, effects: Effects, *, forget: bool) -> Member:
    """Take a member out for good, with its ``disconnect``, handoff and ``room_state``.

    ``forget`` erases the room's memory of the user (SPEC §2: kick and denial). The caller
    has put whatever must come first (a Close, a deny_waiting) into ``effects`` already.
    """
    before = ViewSnapshot.take(room)
    member = room.members.pop(client_id)
    if client_id in room.hands:
        room.hands.remove(client_id)  # hand lowered
    room.media.pop(client_id, None)  # media removed; a screen share ends with the member
    if forget:
        room.remembered.pop(client_id, None)
    handed = ensure_host(room)
    if member.role.admitted:
        effects.send(admitted_ids(room), Event.DISCONNECT, client_info(member))
    # SPEC §2: after a handoff everybody gets the new room_state; else those whose view
    # changed (hosts only, when a waiting member goes).
    after = view_lists(room)
    changed = list(room.members) if handed else before.changed(room, after)
    send_room_states(effects, room, changed, after)
    if not room.members:
        close_room(room, effects)
    return member


def close_room(room: Room, effects: Effects) -> None:
    """The room is gone (SPEC §2: last member gone, §3.1 end_room)."""
    room.members.clear()
    room.hands.clear()
    room.media.clear()
    room.closed = True
    effects.room_closed = True


def leave(room: Room, client_id: str) -> Effects:
    """A member closed with 1000: it has left, at once (SPEC §2). Unknown ids: no effects."""
    effects = Effects()
    if client_id in room.members:
        remove(room, client_id, effects, forget=False)
    return effects


def drop(room: Room, client_id: str) -> Effects:
    """Any other end of a connection (SPEC §2).

    A waiting member is removed at once (no phantom knocks); an admitted one keeps its
    place, unseen by the others, until ``grace_expired`` (the node schedules it after
    ``RECONNECT_GRACE_SECONDS``).
    """
    effects = Effects()
    member = room.members.get(client_id)
    if member is None:
        return effects
    if member.role.admitted:
        member.connected = False
    else:
        remove(room, client_id, effects, forget=False)
    return effects


def grace_expired(room: Room, client_id: str) -> Effects:
    """The reconnect grace is over: a member still disconnected is removed like a leave."""
    effects = Effects()
    member = room.members.get(client_id)
    if member is not None and not member.connected:
        remove(room, client_id, effects, forget=False)
    return effects


def end_room(room: Room) -> Effects:
    """End the room (SPEC §3.1 end_room, §4 DELETE): every member closed with 4005."""
    effects = Effects()
    for cid in room.members:
        effects.close(cid, CloseCode.ROOM_ENDED, "room ended")
    close_room(room, effects)
    return effects
