"""This node's replica of each room it hears: the latest record and its version.

Chat and signaling are checked against the replica (no store round trip); a member's
next frame after a room command waits until the replica reached that command's version
(``seen``), so it meets the room as the command left it, as on one node.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from callroom.errors import ErrorCode, ProtocolError
from callroom.metrics import Metrics
from callroom.room.keys import RoomKey
from callroom.room.model import Room
from callroom.room.record import RoomRecord
from callroom.runtime.messages import Update
from callroom.runtime.peer import Peer

SEEN_TIMEOUT_SECONDS = 5.0  # an update not back by then: the member's next frame goes on


@dataclass(slots=True)
class Replica:
    version: int
    record: RoomRecord
    # Callers waiting until the replica reached a version.
    waiting: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)


class Replicas:
    """One replica per room heard here."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._replicas: dict[RoomKey, Replica] = {}

    def __contains__(self, key: RoomKey) -> bool:
        return key in self._replicas

    def keys(self) -> list[RoomKey]:
        return list(self._replicas)

    def get(self, key: RoomKey) -> Replica | None:
        return self._replicas.get(key)

    def record(self, key: RoomKey) -> RoomRecord | None:
        replica = self._replicas.get(key)
        return None if replica is None else replica.record

    def room(self, key: RoomKey) -> Room | None:
        replica = self._replicas.get(key)
        return None if replica is None else replica.record.room

    def member_record(self, peer: Peer, event: str | None = None) -> RoomRecord:
        """The record of ``peer``'s room, whose session must still hold its place."""
        replica = self._replicas.get(peer.room_key)
        if replica is None or peer.detached:
            # The room ended or this session was replaced while a frame was in flight.
            raise ProtocolError(ErrorCode.FORBIDDEN, "you are no longer in this room", event)
        return replica.record

    def member_room(self, peer: Peer, event: str | None = None) -> Room:
        """The room of ``peer``'s session, which must still hold its member's place."""
        return self.member_record(peer, event).room

    def rooms(self) -> dict[RoomKey, Room]:
        return {key: replica.record.room for key, replica in self._replicas.items()}

    def advance(self, key: RoomKey, update: Update) -> bool:
        """Take ``update`` if it is newer than the replica; whether it was."""
        replica = self._replicas.get(key)
        if replica is not None and update.version <= replica.version:
            return False
        self.adopt(key, update.version, update.record)
        return True

    def adopt(self, key: RoomKey, version: int, record: RoomRecord | None) -> None:
        """The room is at ``version`` with ``record`` (None: closed)."""
        replica = self._replicas.get(key)
        if record is None:
            if replica is not None:
                replica.version = version
                self._wake(replica)
            return
        if replica is None:
            replica = self._replicas[key] = Replica(version, record)
            self.metrics.rooms_active.set(len(self._replicas))
        else:
            replica.version = version
            replica.record = record
        self._wake(replica)

    def _wake(self, replica: Replica) -> None:
        if not replica.waiting:
            return
        still = []
        for wanted, future in replica.waiting:
            if wanted <= replica.version:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((wanted, future))
        replica.waiting = still

    async def seen(self, key: RoomKey, version: int) -> bool:
        """Wait (at most ``SEEN_TIMEOUT_SECONDS``) until the replica reached ``version``
        (or was dropped: the room is gone here); whether it did."""
        replica = self._replicas.get(key)
        if replica is None or replica.version >= version:
            return True
        future = asyncio.get_running_loop().create_future()
        replica.waiting.append((version, future))
        try:
            await asyncio.wait_for(future, SEEN_TIMEOUT_SECONDS)
        except TimeoutError:
            return False
        return True

    def drop(self, key: RoomKey) -> None:
        replica = self._replicas.pop(key, None)
        if replica is None:
            return
        for _, future in replica.waiting:
            if not future.done():
                future.set_result(None)  # nothing more of this room will be seen here
        self.metrics.rooms_active.set(len(self._replicas))
