"""Audit lines: one per moderation or admin action that took effect (SPEC §9 "Logs").

``{"event": "audit", "action", "actor", "target", "room", "via"}``: ``actor`` is the
acting user's id (the token's ``sub``), ``target`` the member acted on (none for room-wide
actions), ``room`` the room key (``kind:roomId``), ``via`` ``ws`` (a host's frame) or
``api`` (the REST API). Only actions that took effect are written: a refused one is an
``error`` event to its sender and a ``callroom_handler_errors_total`` count.
"""

from __future__ import annotations

import structlog

from callroom.room.commands import (
    AcceptScreenshare,
    AcceptWaiting,
    Command,
    DemoteHost,
    DenyScreenshare,
    DenyWaiting,
    EndRoom,
    KickParticipant,
    LockRoom,
    LowerHand,
    PromoteHost,
    StopScreenshare,
    UnbanParticipant,
    UnlockRoom,
)

log = structlog.get_logger("callroom.audit")

# The moderation commands (SPEC §3.1 host controls) and the action each is logged as.
_ACTIONS: dict[type[Command], str] = {
    AcceptWaiting: "admit",
    DenyWaiting: "deny",
    KickParticipant: "kick",
    UnbanParticipant: "unban",
    PromoteHost: "promote",
    DemoteHost: "demote",
    LockRoom: "lock",
    UnlockRoom: "unlock",
    EndRoom: "end_room",
    AcceptScreenshare: "approve_screenshare",
    DenyScreenshare: "deny_screenshare",
    StopScreenshare: "stop_screenshare",
    LowerHand: "lower_hand",
}


# For the hub's check before calling ``audit_command``: one set lookup per frame.
AUDITED: frozenset[type[Command]] = frozenset(_ACTIONS)


def audit_action(actor: str, command: Command) -> str | None:
    """The audit action of ``actor``'s ``command``; None when it is no moderation."""
    action = _ACTIONS.get(type(command))
    if action is None:
        return None
    if isinstance(command, StopScreenshare | LowerHand) and command.client_id in (None, actor):
        return None  # a member stopping its own share or lowering its own hand
    if isinstance(command, KickParticipant) and command.ban:
        return "ban"
    return action


def audit_command(actor: str, room: str, command: Command) -> None:
    """Log ``command`` of ``actor`` if it is a moderation action (it took effect)."""
    action = audit_action(actor, command)
    if action is not None:
        target: str | None = getattr(command, "client_id", None)
        audit(action, actor=actor, target=target, room=room, via="ws")


def audit(action: str, *, actor: str, target: str | None, room: str, via: str) -> None:
    log.info("audit", action=action, actor=actor, target=target, room=room, via=via)
