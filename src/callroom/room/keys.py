"""The key of a room: ``"<kind>:<roomId>"`` (SPEC §1 paths, §7 Redis keys).

One constructor, so the format is written once; ``RoomKey`` keeps keys apart from other
strings in signatures (a room key is not a room id).
"""

from __future__ import annotations

from typing import NewType

RoomKey = NewType("RoomKey", str)


def room_key(kind: str, room_id: str) -> RoomKey:
    """The key of room ``room_id`` of ``kind`` (``meeting`` or ``webinar``)."""
    return RoomKey(f"{kind}:{room_id}")


def split_key(key: RoomKey) -> tuple[str, str]:
    """``(kind, roomId)`` of a key; a room id may itself hold ``:``, the kind never does."""
    kind, _, room_id = key.partition(":")
    return kind, room_id
