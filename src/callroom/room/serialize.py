"""A room as JSON-safe data, for a shared store (SPEC §7), and back.

``room_from_dict(room_to_dict(room)) == room``, and ``room_to_dict`` gives back exactly a
dict it made, orders included (members in join order, hands in queue order).
The format carries a version ``v`` so that a later change can read older rooms.
"""

from __future__ import annotations

from typing import TypedDict

from callroom.room.model import MediaState, Member, Role, Room
from callroom.room.payloads import MediaFlags

FORMAT_VERSION = 1


class MemberRecord(TypedDict):
    """A ``Member``, field for field (``role`` as its value)."""

    client_id: str
    display_name: str
    role: str
    is_admin: bool
    is_token_host: bool
    admitted_seq: int
    connected: bool


class RoomRecord(TypedDict):
    """A ``Room`` as JSON-safe data, format ``v`` = ``FORMAT_VERSION``."""

    v: int
    kind: str
    room_id: str
    created_at_ms: int
    members: list[MemberRecord]  # join order
    hands: list[str]  # queue order
    locked: bool
    remembered: dict[str, str]  # client id → a Role value
    banned: list[str]  # sorted
    media: dict[str, MediaFlags]
    seq: int
    closed: bool


def room_to_dict(room: Room) -> RoomRecord:
    return {
        "v": FORMAT_VERSION,
        "kind": room.kind,
        "room_id": room.room_id,
        "created_at_ms": room.created_at_ms,
        "members": [
            {
                "client_id": m.client_id,
                "display_name": m.display_name,
                "role": m.role.value,
                "is_admin": m.is_admin,
                "is_token_host": m.is_token_host,
                "admitted_seq": m.admitted_seq,
                "connected": m.connected,
            }
            for m in room.members.values()
        ],
        "hands": list(room.hands),
        "locked": room.locked,
        "remembered": {cid: role.value for cid, role in room.remembered.items()},
        "banned": sorted(room.banned),
        "media": {cid: {"audio": s.audio, "video": s.video} for cid, s in room.media.items()},
        "seq": room.seq,
        "closed": room.closed,
    }


def room_from_dict(data: RoomRecord) -> Room:
    """The room ``room_to_dict`` made; ValueError for another format version."""
    if data.get("v") != FORMAT_VERSION:
        raise ValueError(f"unsupported room format version {data.get('v')!r}")
    members = [
        Member(
            client_id=m["client_id"],
            display_name=m["display_name"],
            role=Role(m["role"]),
            is_admin=m["is_admin"],
            is_token_host=m["is_token_host"],
            admitted_seq=m["admitted_seq"],
            connected=m["connected"],
        )
        for m in data["members"]
    ]
    return Room(
        kind=data["kind"],
        room_id=data["room_id"],
        created_at_ms=data["created_at_ms"],
        members={m.client_id: m for m in members},
        hands=list(data["hands"]),
        locked=data["locked"],
        remembered={cid: Role(role) for cid, role in data["remembered"].items()},
        banned=set(data["banned"]),
        media={
            cid: MediaState(audio=s["audio"], video=s["video"]) for cid, s in data["media"].items()
        },
        seq=data["seq"],
        closed=data["closed"],
    )
