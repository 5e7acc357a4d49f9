"""The memory room store and bus: one node, no Redis (SPEC §6 ``REDIS_URL`` unset).

The store's compare-and-set is an integer bump, and the bus hands every message to the
hub in the same turn: a transition's update is carried out before ``commit`` returns, as
a single node did before it shared the runtime with many. Nothing here awaits, so a
transition cannot interleave with another between its ``load`` and its ``commit``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from callroom.room.keys import RoomKey
from callroom.room.record import RoomRecord
from callroom.runtime.messages import Delivery, Update
from callroom.runtime.ports import BusListener


class MemoryRoomBus:
    """Hands every message to this node's hub at once."""

    up = True

    def __init__(self) -> None:
        self._listener: BusListener | None = None

    def listen(self, listener: BusListener) -> None:
        self._listener = listener

    def hears(self, key: RoomKey) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ready(self) -> bool:
        return True

    async def subscribe(self, key: RoomKey) -> None:
        pass

    def unsubscribe(self, key: RoomKey) -> None:
        pass

    def publish(
        self, key: RoomKey, delivery: Delivery, on_lost: Callable[[], None] | None = None
    ) -> None:
        assert self._listener is not None
        self._listener.on_delivery(key, delivery)

    def publish_to_node(self, node_id: str, key: RoomKey, delivery: Delivery) -> None:
        assert self._listener is not None
        self._listener.on_delivery(key, delivery)

    def publish_to_holders(
        self, key: RoomKey, delivery: Delivery, sessions: Mapping[str, str]
    ) -> None:
        # One node holds every session: no node to look up.
        assert self._listener is not None
        self._listener.on_delivery(key, delivery)

    def publish_update(self, key: RoomKey, update: Update) -> None:
        assert self._listener is not None
        self._listener.on_update(key, update)


class MemoryRoomStore:
    """Room records in this process: the live objects, versioned by a counter."""

    def __init__(self, bus: MemoryRoomBus) -> None:
        self._bus = bus
        self._records: dict[RoomKey, tuple[int, RoomRecord]] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def load(self, key: RoomKey) -> tuple[int, RoomRecord | None]:
        return self.load_at_once(key)

    def load_at_once(self, key: RoomKey) -> tuple[int, RoomRecord | None]:
        held = self._records.get(key)
        return (0, None) if held is None else held

    async def load_many(self, keys: list[RoomKey]) -> list[RoomRecord | None]:
        return [held[1] if (held := self._records.get(key)) else None for key in keys]

    async def commit(self, key: RoomKey, expected: int, update: Update) -> bool:
        return self.commit_at_once(key, expected, update)

    def commit_at_once(self, key: RoomKey, expected: int, update: Update) -> bool:
        held = self._records.get(key)
        if (0 if held is None else held[0]) != expected:
            return False
        if update.record is None:
            # A closed room's version is not kept: no other node may hold a replica.
            self._records.pop(key, None)
        else:
            self._records[key] = (update.version, update.record)
        self._bus.publish_update(key, update)
        return True

    async def restore(self, key: RoomKey, version: int, record: RoomRecord) -> bool:
        return False  # the records live as long as the process: nothing is ever lost

    async def open_rooms(self) -> list[RoomKey]:
        return sorted(self._records)


class NoLiveness:
    """One node: nobody to sweep, nothing to record."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def hold_room(self, key: RoomKey, *, held: bool) -> None:
        pass
