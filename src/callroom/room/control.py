"""Commands of members in a room (SPEC §3.1): hands, waiting room, screen share, host
controls, media state and signaling.

Every handler checks everything first and raises ``ProtocolError`` (SPEC §3.3) before it
changes anything, so a rejected command leaves the room exactly as it was. Chat and
``refresh_token`` need the chat store or the token verifier: the node runs them, with the
permission helpers of ``callroom.room.access``.
"""

from __future__ import annotations

from typing import assert_never, cast

from callroom.errors import CloseCode, ErrorCode, ProtocolError
from callroom.room.access import (
    acts_as_host,
    admitted_ids,
    client_info,
    host_ids,
    require_admitted,
    require_host,
    require_member,
)
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
    event_name,
)
from callroom.room.events import Event
from callroom.room.membership import admit, end_room, ensure_host, remove, set_role
from callroom.room.model import Effects, MediaState, Member, Role, Room, RoomRules
from callroom.room.payloads import MediaStateChanged, SignalRelay
from callroom.room.views import send_room_states


def _target(room: Room, client_id: str, event: Event, wanted: set[Role], what: str) -> Member:
    """The member named by a host control, if its role is one of ``wanted`` (SPEC §3.1:
    a control aimed at the wrong kind of member, or at nobody, gets ``not_found``)."""
    member = room.members.get(client_id)
    if member is None or member.role not in wanted:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"clientId is not {what} of this room", event)
    return member


def _everyone(room: Room) -> list[str]:
    return list(room.members)


def handle(room: Room, actor_id: str, command: Command, rules: RoomRules) -> Effects:
    """Run ``command`` of member ``actor_id`` (SPEC §3.1); raises ``ProtocolError``.

    ``Ping`` is answered with ``pong`` (the node may answer it itself). ``AddChat``,
    ``DeleteChat``, ``GetRecentChats`` and ``RefreshToken`` are the node's: ValueError.
    """
    match command:
        case Signal():  # first: the most frequent frame (ICE candidates), and each case
            return _signal(room, actor_id, command)  # below is an isinstance check
        case Ping():
            require_member(room, actor_id, Event.PING)  # any role may ping (SPEC §3.1)
            effects = Effects()
            effects.send((actor_id,), Event.PONG, {})
            return effects
        case RaiseHand():
            return _raise_hand(room, actor_id)
        case LowerHand():
            return _lower_hand(room, actor_id, command)
        case RequestWaiting():
            return _request_waiting(room, actor_id, command.sent_as)
        case AcceptWaiting():
            return _accept_waiting(room, actor_id, command)
        case DenyWaiting():
            return _deny_waiting(room, actor_id, command)
        case RequestScreenshare():
            return _request_screenshare(room, actor_id)
        case AcceptScreenshare():
            return _accept_screenshare(room, actor_id, command, rules)
        case DenyScreenshare():
            return _deny_screenshare(room, actor_id, command)
        case StopScreenshare():
            return _stop_screenshare(room, actor_id, command)
        case KickParticipant():
            return _kick(room, actor_id, command)
        case UnbanParticipant():
            return _unban(room, actor_id, command)
        case PromoteHost():
            return _promote(room, actor_id, command)
        case DemoteHost():
            return _demote(room, actor_id, command)
        case LockRoom() | UnlockRoom():
            return _lock(room, actor_id, locked=isinstance(command, LockRoom))
        case EndRoom():
            require_host(room, actor_id, Event.END_ROOM)
            return end_room(room)
        case SetMediaState():
            return _set_media_state(room, actor_id, command)
        case AddChat() | DeleteChat() | GetRecentChats() | RefreshToken():
            raise ValueError(f"{event_name(command)} is run by the node, not the room core")
        case _:  # pragma: no cover - exhaustiveness is checked by mypy
            assert_never(command)


def _raise_hand(room: Room, actor_id: str) -> Effects:
    actor = require_admitted(room, actor_id, Event.RAISE_HAND)
    effects = Effects()
    if actor_id in room.hands:
        return effects  # SPEC §3.1: no-op if already in the queue (nothing sent either)
    room.hands.append(actor_id)
    effects.send(admitted_ids(room), Event.RAISE_HAND, client_info(actor))
    return effects


def _lower_hand(room: Room, actor_id: str, command: LowerHand) -> Effects:
    actor = require_admitted(room, actor_id, Event.LOWER_HAND)
    # SPEC §3.1: naming oneself is the same as naming nobody.
    target_id = command.client_id if command.client_id not in (None, actor_id) else actor_id
    if target_id != actor_id and not acts_as_host(actor):
        raise ProtocolError(
            ErrorCode.FORBIDDEN, "only a host may lower another member's hand", Event.LOWER_HAND
        )
    effects = Effects()
    if target_id not in room.hands:
        return effects  # SPEC §3.1: lowering a hand that is not raised sends nothing
    room.hands.remove(target_id)
    effects.send(admitted_ids(room), Event.LOWER_HAND, client_info(room.members[target_id]))
    return effects


def _request_waiting(room: Room, actor_id: str, event: Event) -> Effects:
    # ``event``: the name sent (``waiting_request`` is an alias), for the error's event.
    actor = require_member(room, actor_id, event)
    if actor.role is not Role.WAITING:
        raise ProtocolError(
            ErrorCode.FORBIDDEN, "only a member of the waiting room may knock", event
        )
    effects = Effects()
    effects.send(host_ids(room), Event.WAITING_REQUEST, client_info(actor))
    return effects


def _accept_waiting(room: Room, actor_id: str, command: AcceptWaiting) -> Effects:
    event = Event.ACCEPT_WAITING
    require_host(room, actor_id, event)
    member = _target(room, command.client_id, event, {Role.WAITING}, "a waiting member")
    admit(room, member, Role.PARTICIPANT)
    info = client_info(member)
    effects = Effects()
    # SPEC §3.1: admitted members and the member get accept_waiting, then everyone
    # gets room_state; SPEC §3.2: connect to the other admitted members.
    effects.send(admitted_ids(room), event, info)
    effects.send([c for c in admitted_ids(room) if c != member.client_id], Event.CONNECT, info)
    send_room_states(effects, room, _everyone(room))
    return effects


def _deny_waiting(room: Room, actor_id: str, command: DenyWaiting) -> Effects:
    event = Event.DENY_WAITING
    require_host(room, actor_id, event)
    member = _target(room, command.client_id, event, {Role.WAITING}, "a waiting member")
    info = client_info(member)
    effects = Effects()
    # SPEC §3.1: the member gets deny_waiting, then is closed with 4003; hosts get
    # deny_waiting and room_state. A denial erases the room's memory of the user (§2).
    effects.send((member.client_id,), event, info)
    effects.close(member.client_id, CloseCode.DENIED, "denied by a host")
    room.members.pop(member.client_id)
    room.remembered.pop(member.client_id, None)
    hosts = host_ids(room)
    effects.send(hosts, event, info)
    send_room_states(effects, room, hosts)
    return effects


def _request_screenshare(room: Room, actor_id: str) -> Effects:
    event = Event.REQUEST_SCREENSHARE
    actor = require_admitted(room, actor_id, event)
    if actor.role is not Role.PARTICIPANT:
        raise ProtocolError(ErrorCode.FORBIDDEN, "only a participant may ask to share", event)
    effects = Effects()
    effects.send(host_ids(room), event, client_info(actor))
    return effects


def _with_hosts(room: Room, member_id: str) -> list[str]:
    return [member_id, *(c for c in host_ids(room) if c != member_id)]


def _accept_screenshare(
    room: Room, actor_id: str, command: AcceptScreenshare, rules: RoomRules
) -> Effects:
    event = Event.ACCEPT_SCREENSHARE
    require_host(room, actor_id, event)
    member = _target(room, command.client_id, event, {Role.PARTICIPANT}, "a participant")
    sharing = sum(1 for m in room.members.values() if m.role is Role.SCREENSHARE)
    if sharing >= rules.max_screenshares:
        raise ProtocolError(
            ErrorCode.LIMIT_REACHED,
            f"{rules.max_screenshares} member(s) already share their screen",
            event,
        )
    set_role(room, member, Role.SCREENSHARE)
    effects = Effects()
    effects.send(_with_hosts(room, member.client_id), event, client_info(member))
    send_room_states(effects, room, _everyone(room))
    return effects


def _deny_screenshare(room: Room, actor_id: str, command: DenyScreenshare) -> Effects:
    event = Event.DENY_SCREENSHARE
    require_host(room, actor_id, event)
    # Only a participant can have asked (request_screenshare); anyone else is the wrong
    # kind of member, and a waiting one must not hear of screen sharing at all (§3.2).
    member = _target(room, command.client_id, event, {Role.PARTICIPANT}, "a participant")
    effects = Effects()
    effects.send(_with_hosts(room, member.client_id), event, client_info(member))
    return effects


def _stop_screenshare(room: Room, actor_id: str, command: StopScreenshare) -> Effects:
    event = Event.STOP_SCREENSHARE
    actor = require_admitted(room, actor_id, event)
    target_id = command.client_id if command.client_id is not None else actor_id
    if target_id != actor_id:
        if not acts_as_host(actor):
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "only a host may stop another member's share", event
            )
    elif actor.role is not Role.SCREENSHARE and not acts_as_host(actor):
        raise ProtocolError(ErrorCode.FORBIDDEN, "you are not sharing your screen", event)
    member = _target(room, target_id, event, {Role.SCREENSHARE}, "a screen sharer")
    set_role(room, member, Role.PARTICIPANT)
    effects = Effects()
    send_room_states(effects, room, _everyone(room))
    return effects


def _forbid_admin_target(actor: Member, target: Member, event: Event) -> None:
    # SPEC §3.1: an admin cannot be kicked or banned by a host; it may act as host in
    # every room, so another admin may.
    if target.is_admin and not actor.is_admin:
        raise ProtocolError(ErrorCode.FORBIDDEN, "a host cannot act on an admin", event)


def _kick(room: Room, actor_id: str, command: KickParticipant) -> Effects:
    event = Event.KICK_PARTICIPANT
    actor = require_host(room, actor_id, event)
    if command.client_id == actor_id:
        raise ProtocolError(ErrorCode.INVALID_PAYLOAD, "clientId: you cannot kick yourself", event)
    member = _target(room, command.client_id, event, set(Role), "a member")
    _forbid_admin_target(actor, member, event)
    effects = Effects()
    # SPEC §3.1: closed with 4004; the admitted get disconnect; room_state to everyone
    # whose view changed. A kick erases the room's memory of the user (§2).
    effects.close(member.client_id, CloseCode.KICKED, "removed by a host")
    if command.ban:
        room.banned.add(member.client_id)
    remove(room, member.client_id, effects, forget=True)
    return effects


def _unban(room: Room, actor_id: str, command: UnbanParticipant) -> Effects:
    event = Event.UNBAN_PARTICIPANT
    require_host(room, actor_id, event)
    if command.client_id not in room.banned:
        raise ProtocolError(ErrorCode.NOT_FOUND, "clientId is not banned from this room", event)
    room.banned.discard(command.client_id)
    effects = Effects()
    effects.send((actor_id,), event, {"clientId": command.client_id})
    return effects


def _promote(room: Room, actor_id: str, command: PromoteHost) -> Effects:
    event = Event.PROMOTE_HOST
    require_host(room, actor_id, event)
    wanted = {Role.PARTICIPANT, Role.SCREENSHARE}
    member = _target(room, command.client_id, event, wanted, "an admitted non-host member")
    set_role(room, member, Role.HOST)  # a sharer's share ends: roles are exclusive
    effects = Effects()
    send_room_states(effects, room, _everyone(room))
    return effects


def _demote(room: Room, actor_id: str, command: DemoteHost) -> Effects:
    event = Event.DEMOTE_HOST
    actor = require_host(room, actor_id, event)
    if command.client_id == actor_id:
        raise ProtocolError(
            ErrorCode.INVALID_PAYLOAD, "clientId: you cannot demote yourself", event
        )
    member = _target(room, command.client_id, event, {Role.HOST}, "a host")
    _forbid_admin_target(actor, member, event)
    set_role(room, member, Role.PARTICIPANT)  # remembered as participant from now on
    # An admin acting as host without the host role could demote the last host.
    ensure_host(room)
    effects = Effects()
    send_room_states(effects, room, _everyone(room))
    return effects


def _lock(room: Room, actor_id: str, *, locked: bool) -> Effects:
    event = Event.LOCK_ROOM if locked else Event.UNLOCK_ROOM
    require_host(room, actor_id, event)
    room.locked = locked
    effects = Effects()
    # Not a change of membership or role: no room_state (SPEC §3.2), the event says it.
    effects.send(admitted_ids(room), Event.ROOM_LOCKED if locked else Event.ROOM_UNLOCKED, {})
    return effects


def _set_media_state(room: Room, actor_id: str, command: SetMediaState) -> Effects:
    event = Event.SET_MEDIA_STATE
    actor = require_admitted(room, actor_id, event)
    old = room.media.get(actor_id, MediaState())
    # Optional fields may be absent: an absent one keeps its value.
    new = MediaState(
        audio=old.audio if command.audio is None else command.audio,
        video=old.video if command.video is None else command.video,
    )
    room.media[actor_id] = new
    payload: MediaStateChanged = {**client_info(actor), "audio": new.audio, "video": new.video}
    effects = Effects()
    effects.send(admitted_ids(room), Event.MEDIA_STATE, payload)
    return effects


def _signal(room: Room, actor_id: str, command: Signal) -> Effects:
    actor = require_admitted(room, actor_id, command.event)
    target = room.members.get(command.target_client_id)
    if target is None or not target.role.admitted or target.client_id == actor_id:
        raise ProtocolError(
            ErrorCode.TARGET_NOT_FOUND,
            "targetClientId is not another admitted member of this room",
            command.event,
        )
    # SPEC §3.1: only the target gets it, with the sender's ClientInfo stamped in (after
    # the sender's fields, which the decoder limited to the event's own); targetClientId
    # is kept for client compatibility. The cast: mypy cannot spread a union of
    # TypedDicts, and each member of `fields` gives its own member of SignalRelay.
    payload = cast(
        SignalRelay,
        {
            **command.fields,
            "targetClientId": target.client_id,
            "clientId": actor.client_id,
            "displayName": actor.display_name,
        },
    )
    effects = Effects()
    effects.send((target.client_id,), command.event, payload)
    return effects
