"""The runtime's transitions as pure functions over a room record (SPEC §2, §7).

Each function reads a ``RoomRecord`` (or ``None``: no open room), changes it in place
through the core's rules and says what happened as a ``Change``; ``None`` means nothing
to write. A refusal raises (``HandshakeRefused`` at a join, ``ProtocolError`` for a
command) before anything is changed. The runtime runs one of these inside a
compare-and-set of the record (``callroom.runtime.transitions``), the same on one node
and on many; the hypothesis tests drive them directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from callroom.errors import ErrorCode, ProtocolError
from callroom.room import core
from callroom.room.commands import Command
from callroom.room.model import Effects, Identity, RoomRules
from callroom.room.record import RoomRecord, session_node


@dataclass(slots=True)
class Change:
    """What a transition decided: the record to write and the effects to carry out."""

    record: RoomRecord
    effects: Effects
    joined: tuple[str, str] | None = None  # (clientId, session) of a join


def join(
    record: RoomRecord | None,
    kind: str,
    room_id: str,
    identity: Identity,
    session: str,
    rules: RoomRules,
    now_ms: int,
) -> Change:
    """``identity`` joins through ``session`` (SPEC §2); a new room when there is none.

    Refusals (banned, locked, full) raise ``HandshakeRefused``. The member's older
    session, if any, loses its place: its node closes it with 4009 on the update."""
    if record is None:
        record = RoomRecord(core.new_room(kind, room_id, now_ms))
    effects = core.join(record.room, identity, rules)  # may refuse: nothing changed then
    cid = identity.client_id
    record.sessions[cid] = session
    record.graces.pop(cid, None)
    return Change(record, effects, joined=(cid, session))


def depart(
    record: RoomRecord | None,
    cid: str,
    session: str,
    *,
    leave: bool,
    node_id: str,
    grace_until_ms: int,
) -> Change | None:
    """The socket of ``session`` ended: a leave (close 1000) or a drop (SPEC §2).

    Nothing when the place is no longer this session's (replaced, swept, gone). A drop
    of an admitted member keeps its place until ``grace_until_ms``, timed by
    ``node_id``."""
    if record is None or record.sessions.get(cid) != session:
        return None
    del record.sessions[cid]
    room = record.room
    if leave:
        return Change(record, core.leave(room, cid))
    effects = core.drop(room, cid)
    member = room.members.get(cid)
    if member is not None and not member.connected:
        record.graces[cid] = (node_id, grace_until_ms)
    return Change(record, effects)


def expire_grace(record: RoomRecord | None, cid: str, node_id: str) -> Change | None:
    """The grace timer ``node_id`` owns for ``cid`` ran out (SPEC §2): the member goes,
    unless it came back or the timer is another node's now."""
    if record is None or record.graces.get(cid, ("", 0))[0] != node_id:
        return None
    del record.graces[cid]
    return Change(record, core.grace_expired(record.room, cid))


def command(
    record: RoomRecord | None, cid: str, session: str, cmd: Command, rules: RoomRules
) -> Change:
    """A member's room command (SPEC §3.1), by the session holding its place."""
    if record is None or record.sessions.get(cid) != session:
        raise ProtocolError(
            ErrorCode.FORBIDDEN, "you are no longer in this room", core.event_name(cmd)
        )
    return Change(record, core.handle(record.room, cid, cmd, rules))


def end(record: RoomRecord | None) -> Change | None:
    """End the room (SPEC §4 DELETE): every member closed with 4005."""
    if record is None:
        return None
    return Change(record, core.end_room(record.room))


def sweep(record: RoomRecord | None, dead: str, node_id: str, grace_until_ms: int) -> Change | None:
    """Take over what the dead node ``dead`` held (SPEC §7): its sessions are dropped
    (admitted members keep their place for the grace, timed by ``node_id``), its grace
    timers are ``node_id``'s now."""
    if record is None:
        return None
    room = record.room
    effects = Effects()
    changed = False
    for cid, session in list(record.sessions.items()):
        if session_node(session) != dead:
            continue
        changed = True
        del record.sessions[cid]
        dropped = core.drop(room, cid)
        effects.actions.extend(dropped.actions)
        effects.room_closed = effects.room_closed or dropped.room_closed
        member = room.members.get(cid)
        if member is not None and not member.connected:
            record.graces[cid] = (node_id, grace_until_ms)
    for cid, (owner, until_ms) in list(record.graces.items()):
        if owner == dead:
            changed = True
            record.graces[cid] = (node_id, until_ms)
    return Change(record, effects) if changed else None
