"""The runtime's ports: where room records live and how rooms' messages travel (SPEC §7).

Two small interfaces, each with a memory and a Redis implementation side by side
(``memory.py``; ``store_redis.py``, ``bus_redis.py``), the way Centrifuge keeps its
memory and Redis brokers. One hub (``callroom.runtime.hub``) runs on either pair: on
one node the memory store's compare-and-set is an integer bump and the memory bus hands
the update over in the same turn; on many, both go through Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Protocol, runtime_checkable

from callroom.room.keys import RoomKey
from callroom.room.record import RoomRecord
from callroom.runtime.messages import Delivery, Update


class BusListener(Protocol):
    """What a bus hands its messages to: the hub."""

    def on_update(self, key: RoomKey, update: Update) -> None:
        """A transition of a room this node hears, in the room's order."""

    def on_delivery(self, key: RoomKey, delivery: Delivery) -> None:
        """A frame for some members of a room this node hears."""

    def on_reconnect(self, restarted: bool, keys: Collection[RoomKey] | None = None) -> None:
        """The bus (re)connected; messages may have been missed meanwhile. ``restarted``:
        the bus is another process now and may have lost every record. ``keys``: the
        rooms concerned (a cluster's shard), None for every room. Returns at once (the
        hub resyncs in a task of its own)."""


class RoomStore(Protocol):
    """Versioned room records (a room without a record has version 0).

    Contract: ``commit`` writes ``update.record`` as version ``expected + 1`` only if the
    room is still at ``expected``, and publishes ``update`` on the room's bus in the same
    atomic step, so every node hears the updates of a room in version order, each once.
    ``update.record`` None closes the room. A store that cannot answer raises
    ``StoreUnavailable``; nothing is written then.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def load(self, key: RoomKey) -> tuple[int, RoomRecord | None]:
        """The room's version and record (None: no open room). The record may be
        changed by the caller: it is the caller's copy (memory: the live one, which is
        only changed inside a transition)."""

    async def load_many(self, keys: list[RoomKey]) -> list[RoomRecord | None]: ...

    async def commit(self, key: RoomKey, expected: int, update: Update) -> bool:
        """Compare-and-set, with the update published (see the class docstring)."""

    async def restore(self, key: RoomKey, version: int, record: RoomRecord) -> bool:
        """Write back this node's replica (seen at ``version``) when the store lost the
        room: it has no record, or an older one, or an older node's write-back. Whether
        it was written (its update then published with a version above any the room had
        before the loss)."""

    async def open_rooms(self) -> list[RoomKey]:
        """Every open room (the admin API)."""


@runtime_checkable
class ImmediateRoomStore(RoomStore, Protocol):
    """A store that never waits (one node, in memory): a transition then runs without a
    turn of the event loop, so room commands are answered in the frame's own turn."""

    def load_at_once(self, key: RoomKey) -> tuple[int, RoomRecord | None]: ...

    def commit_at_once(self, key: RoomKey, expected: int, update: Update) -> bool: ...


class RoomBus(Protocol):
    """Rooms' messages between the nodes (SPEC §7).

    Contract: messages published by this node reach every node subscribed to the room
    in the order this node called ``publish``/``publish_to_node`` and the store's
    ``commit``; a subscription is confirmed before ``subscribe`` returns.
    """

    @property
    def up(self) -> bool:
        """Whether this node hears its rooms now (Redis: the subscriber is connected)."""

    def hears(self, key: RoomKey) -> bool:
        """Whether this node hears ``key``'s room now (on a cluster: its shard's link is
        up; a room of a shard failing over does not stop the others)."""

    def listen(self, listener: BusListener) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ready(self) -> bool:
        """Whether the bus answers (``/readyz``)."""

    async def subscribe(self, key: RoomKey) -> None:
        """Hear the room; ``StoreUnavailable`` if the bus cannot confirm it."""

    def unsubscribe(self, key: RoomKey) -> None: ...

    def publish(
        self, key: RoomKey, delivery: Delivery, on_lost: Callable[[], None] | None = None
    ) -> None:
        """To every node hearing the room; ``on_lost`` runs if the bus did not take it."""

    def publish_to_node(self, node_id: str, key: RoomKey, delivery: Delivery) -> None:
        """To one node only."""

    def publish_to_holders(
        self, key: RoomKey, delivery: Delivery, sessions: Mapping[str, str]
    ) -> None:
        """To the nodes holding the delivery's recipients only (signaling), as
        ``sessions`` (the room record's clientId → session) says; a recipient without a
        session is skipped."""


class Liveness(Protocol):
    """Which nodes live and what each holds (SPEC §7 sweep); nothing on one node."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def hold_room(self, key: RoomKey, *, held: bool) -> None:
        """Record (or forget) that this node holds sessions or timers in ``key``."""
