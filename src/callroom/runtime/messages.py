"""What travels on a room bus (SPEC §7), as typed records: updates and deliveries.

A transition's ``Effects`` are turned into frames here, once, by the node that ran it
(DESIGN "Encode once"): every ``Send`` becomes the JSON text of its frame, the shared
part of each view class's ``room_state`` is encoded once per transition, and only each
member's own part is encoded per member when the frame is written (``own``). Every node
carries out the same ``Update`` for the members whose sockets it holds; the memory bus
hands the very object over, the Redis bus its bytes (``callroom.runtime.wire``). The
steps and deliveries are named tuples: several are made per join, one per message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from callroom.errors import CloseCode
from callroom.room.encode import encode_bytes, encode_tail
from callroom.room.model import Effects, Send, SendView
from callroom.room.payloads import RoomStateOwn
from callroom.room.record import RoomRecord


class FrameTo(NamedTuple):
    """One frame (its JSON text) for ``recipients`` (client ids)."""

    recipients: tuple[str, ...]
    text: bytes


class ViewTo(NamedTuple):
    """``room_state`` for ``recipient``: its own part, then the shared tail ``tail``
    (an index into ``Update.tails``)."""

    recipient: str
    own: RoomStateOwn
    tail: int


class CloseOf(NamedTuple):
    """Close the session of ``client_id`` (SPEC §3.4)."""

    client_id: str
    code: CloseCode
    reason: str


Step = FrameTo | ViewTo | CloseOf


@dataclass(slots=True)
class Update:
    """A transition of a room, as published by the node that ran it."""

    version: int
    record: RoomRecord | None  # None: the room is closed
    steps: tuple[Step, ...]
    tails: tuple[bytes, ...]  # the shared parts of this transition's room_state frames
    joined: tuple[str, str] | None = None  # (clientId, session) of a join


class Delivery(NamedTuple):
    """One frame for some members of the room; no state changes (chat, signaling).
    A tuple, not a dataclass: one is made per chat message and signal."""

    recipients: tuple[str, ...]
    text: bytes  # the frame's JSON text, UTF-8
    # Set on a chat message's broadcast: the node that published it is told when the
    # broadcast came back to it (the sender's own echo, SPEC §3.2 order of answers).
    tag: str = ""


def encode_effects(effects: Effects) -> tuple[tuple[Step, ...], tuple[bytes, ...]]:
    """The steps and shared tails of ``effects``: every frame encoded once, here."""
    tails: list[bytes] = []
    tail_index: dict[int, int] = {}  # id(SendView.shared) → its index in tails
    steps: list[Step] = []
    for action in effects.actions:
        if isinstance(action, Send):
            steps.append(FrameTo(action.recipients, encode_bytes(action.event, action.payload)))
        elif isinstance(action, SendView):
            index = tail_index.get(id(action.shared))
            if index is None:  # effects hold every shared dict: ids stay unique meanwhile
                index = tail_index[id(action.shared)] = len(tails)
                tails.append(encode_tail(action.shared))
            steps.append(ViewTo(action.recipient, action.own, index))
        else:
            steps.append(CloseOf(action.client_id, action.code, action.reason))
    return tuple(steps), tuple(tails)


def update_of(
    version: int, record: RoomRecord | None, effects: Effects, joined: tuple[str, str] | None
) -> Update:
    steps, tails = encode_effects(effects)
    return Update(version, record, steps, tails, joined)
