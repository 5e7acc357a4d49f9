"""The pure room core (SPEC §2, §3): every rule of a room, no I/O, no asyncio.

Each function takes a ``Room`` (mutated in place), the acting member and a command,
and returns ``Effects``. Rule violations raise ``ProtocolError`` with the SPEC §3.3 code
(the room is left unchanged when they do); refusals at join raise ``HandshakeRefused``.
"""

from __future__ import annotations

from callroom.errors import ProtocolError  # noqa: F401
from callroom.room.commands import Command
from callroom.room.model import Effects, Identity, Room, RoomRules


def new_room(kind: str, room_id: str, now_ms: int) -> Room:
    raise NotImplementedError


def check_join(room: Room | None, identity: Identity, rules: RoomRules) -> None:
    raise NotImplementedError


def join(room: Room, identity: Identity, rules: RoomRules) -> Effects:
    raise NotImplementedError


def leave(room: Room, client_id: str) -> Effects:
    raise NotImplementedError


def drop(room: Room, client_id: str) -> Effects:
    raise NotImplementedError


def grace_expired(room: Room, client_id: str) -> Effects:
    raise NotImplementedError


def handle(room: Room, actor_id: str, command: Command, rules: RoomRules) -> Effects:
    raise NotImplementedError
