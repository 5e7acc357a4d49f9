"""The room record: a room plus where its members are (SPEC §7). Pure data, no I/O.

On one node and on many, the runtime keeps every room as one record in its room store
(``callroom.runtime.ports.RoomStore``): the core's ``Room``, which *session* holds each
member's place (``"<node id>/<connection id>"``), and, for an admitted member in its
reconnect grace, which node owns the timer and when it ends. The record is what a
transition reads and compare-and-sets (``callroom.room.placement``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from callroom.room.model import Room
from callroom.room.serialize import room_from_dict, room_to_dict


@dataclass(slots=True)
class RoomRecord:
    """One room as every node sees it."""

    room: Room
    # clientId → session id ("<node>/<conn>") holding its place.
    sessions: dict[str, str] = field(default_factory=dict)
    # clientId → (node owning the grace timer, end of the grace in Unix ms).
    graces: dict[str, tuple[str, int]] = field(default_factory=dict)

    def prune(self) -> None:
        """Free the places and graces of members gone from the room (kicked, denied,
        left): the record never names a session or a timer of a non-member."""
        members = self.room.members
        for cid in [c for c in self.sessions if c not in members]:
            del self.sessions[cid]
        for cid in [c for c in self.graces if c not in members]:
            del self.graces[cid]


def session_id(node_id: str, conn_id: str) -> str:
    """The id of a session: the node holding the socket, then the connection."""
    return f"{node_id}/{conn_id}"


def session_node(session: str) -> str:
    """The node id of a session id."""
    return session.rpartition("/")[0]


def record_to_dict(record: RoomRecord) -> dict[str, Any]:
    return {
        "room": room_to_dict(record.room),
        "sessions": record.sessions,
        "graces": {cid: [node, until] for cid, (node, until) in record.graces.items()},
    }


def record_from_dict(data: dict[str, Any]) -> RoomRecord:
    return RoomRecord(
        room=room_from_dict(data["room"]),
        sessions=dict(data["sessions"]),
        graces={cid: (str(node), int(until)) for cid, (node, until) in data["graces"].items()},
    )
