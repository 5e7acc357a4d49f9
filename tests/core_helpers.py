"""Helpers shared by the pure room core's unit tests (tests/unit/test_core*.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from callroom.room.commands import AcceptWaiting
from callroom.room.core import handle, join, new_room
from callroom.room.model import Effects, Identity, Role, Room, RoomRules, Send, SendView
from callroom.room.payloads import ClientInfo, RoomState

# A payload of any event, as the tests read it (every ServerPayload is such a Mapping).
Payload = Mapping[str, object]

RULES = RoomRules()


def who(cid: str, **kw: Any) -> Identity:
    return Identity(cid, f"name-{cid}", **kw)


def info(cid: str) -> ClientInfo:
    return {"clientId": cid, "displayName": f"name-{cid}"}


def setup(
    *,
    host: str | Identity = "h",
    participants: tuple[str, ...] = (),
    waiting: tuple[str, ...] = (),
    rules: RoomRules = RULES,
) -> Room:
    """Host ``h`` (or ``host``), admitted participants in order, then waiting members."""
    host = who(host) if isinstance(host, str) else host
    room = new_room("zoom", "r1", 1000)
    join(room, host, rules)
    for cid in participants:
        join(room, who(cid), rules)
        handle(room, host.client_id, AcceptWaiting(cid), rules)
    for cid in waiting:
        join(room, who(cid), rules)
    return room


def sends(effects: Effects) -> list[tuple[tuple[str, ...], str, Payload]]:
    return [
        (a.recipients, a.event, a.payload)
        for a in effects.actions
        if isinstance(a, Send | SendView)
    ]


def received(effects: Effects, cid: str) -> list[tuple[str, Payload]]:
    return [(e, p) for r, e, p in sends(effects) if cid in r]


def events(effects: Effects, cid: str) -> list[str]:
    return [e for e, _ in received(effects, cid)]


def state_recipients(effects: Effects) -> list[str]:
    return [a.recipient for a in effects.actions if isinstance(a, SendView)]


def last_state(effects: Effects, cid: str) -> RoomState:
    states = [a.payload for a in effects.actions if isinstance(a, SendView) and a.recipient == cid]
    assert states, f"{cid} got no room_state"
    return states[-1]


def roles(room: Room) -> dict[str, Role]:
    return {cid: m.role for cid, m in room.members.items()}
