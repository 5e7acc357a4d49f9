"""What the nodes of a cluster keep in Redis and say to each other (SPEC §7). Pure.

**The room record** (``Shared``): the core's ``Room`` plus what the nodes need around it:
which session (``"<node id>/<connection id>"``) holds each member's place, and, for a
member in its reconnect grace, which node owns the timer and when it ends. It is stored
as JSON (``dump_shared``) under a version number; every change is a compare-and-set on
that version (``callroom.cluster.link``).

**The room's channel** carries two kinds of message, in the order they were published:

- an *update* (``b"u"`` + JSON): the room's new version and record (``None`` once the
  room is closed), the effects of the transition (SPEC §3.2 frames and closes, each frame
  encoded once by the node that ran it), and the session that joined, if any;
- a *delivery* (``b"d"`` + JSON list of recipients + NUL + frame): one frame for some
  members (chat, signaling, ``delete_chat``): no state changes. A NUL byte never occurs
  in JSON text, so the first one ends the recipient list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from callroom.errors import CloseCode
from callroom.room.encode import encode_bytes, encode_tail
from callroom.room.model import Close, Effects, Room, Send, SendView
from callroom.room.serialize import room_from_dict, room_to_dict

UPDATE = b"u"[0]
DELIVERY = b"d"[0]


@dataclass(slots=True)
class Shared:
    """One room as every node sees it."""

    room: Room
    sessions: dict[str, str]  # clientId → session id ("<node>/<conn>") holding its place
    graces: dict[str, tuple[str, int]]  # clientId → (node owning the timer, end in ms)


def session_node(session: str) -> str:
    """The node id of a session id."""
    return session.rpartition("/")[0]


def shared_to_dict(shared: Shared) -> dict[str, Any]:
    return {
        "room": room_to_dict(shared.room),
        "sessions": shared.sessions,
        "graces": {cid: [node, until] for cid, (node, until) in shared.graces.items()},
    }


def shared_from_dict(data: dict[str, Any]) -> Shared:
    return Shared(
        room=room_from_dict(data["room"]),
        sessions=dict(data["sessions"]),
        graces={cid: (str(node), int(until)) for cid, (node, until) in data["graces"].items()},
    )


def dump_shared(shared: Shared) -> bytes:
    return orjson.dumps(shared_to_dict(shared))


def load_shared(data: bytes | str) -> Shared:
    return shared_from_dict(orjson.loads(data))


# -- messages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Update:
    """A transition of the room, as published by the node that ran it."""

    version: int
    shared: Shared | None  # None: the room is closed
    actions: list[list[Any]]  # ["s", recipients, frame] | ["v", recipient, own, tail] | ["c", …]
    tails: list[bytes]  # the shared parts of this transition's room_state frames
    joined: tuple[str, str] | None  # (clientId, session) of a join


@dataclass(frozen=True, slots=True)
class Delivery:
    """One frame for some members of the room."""

    recipients: list[str]
    frame: bytes  # the frame's JSON text, UTF-8


def update_message(
    version: int,
    shared: Shared | None,
    effects: Effects,
    joined: tuple[str, str] | None = None,
) -> bytes:
    """The update message of a transition: every frame encoded once, here."""
    tails: list[str] = []
    tail_index: dict[int, int] = {}  # id(SendView.shared) → its index in tails
    actions: list[list[Any]] = []
    for action in effects.actions:
        if isinstance(action, Send):
            frame = encode_bytes(action.event, action.payload).decode()
            actions.append(["s", list(action.recipients), frame])
        elif isinstance(action, SendView):
            index = tail_index.get(id(action.shared))
            if index is None:  # effects hold every shared dict: ids stay unique meanwhile
                index = tail_index[id(action.shared)] = len(tails)
                tails.append(encode_tail(action.shared).decode())
            actions.append(["v", action.recipient, action.own, index])
        else:
            actions.append(["c", action.client_id, int(action.code), action.reason])
    body = {
        "v": version,
        "s": None if shared is None else shared_to_dict(shared),
        "a": actions,
        "w": tails,
        "j": None if joined is None else list(joined),
    }
    return b"u" + orjson.dumps(body)


def delivery_message(recipients: tuple[str, ...] | list[str], frame: bytes) -> bytes:
    """A delivery of ``frame`` (its JSON text) to ``recipients``."""
    return b"d" + orjson.dumps(recipients) + b"\x00" + frame


def decode_message(data: bytes) -> Update | Delivery:
    """The message published by ``update_message`` or ``delivery_message``."""
    if data[0] == DELIVERY:
        end = data.index(b"\x00")
        return Delivery(orjson.loads(data[1:end]), data[end + 1 :])
    if data[0] != UPDATE:
        raise ValueError(f"unknown bus message kind {data[:1]!r}")
    body = orjson.loads(data[1:])
    state = body["s"]
    joined = body["j"]
    return Update(
        version=int(body["v"]),
        shared=None if state is None else shared_from_dict(state),
        actions=body["a"],
        tails=[tail.encode() for tail in body["w"]],
        joined=None if joined is None else (joined[0], joined[1]),
    )


def close_action(action: list[Any]) -> Close:
    """The ``Close`` of a ``["c", clientId, code, reason]`` action."""
    return Close(action[1], CloseCode(action[2]), action[3])
