"""Running a transition: read the record, decide, compare-and-set, retry on conflict.

One node runs one transition of a room at a time (a lock per room), so conflicts only
come from other nodes; on one node (the memory store) nothing awaits between the read
and the write, and the first attempt always wins.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import structlog

from callroom.errors import StoreUnavailable
from callroom.metrics import Metrics
from callroom.room.keys import RoomKey
from callroom.room.placement import Change
from callroom.room.record import RoomRecord
from callroom.runtime.messages import Update, update_of
from callroom.runtime.ports import ImmediateRoomStore, RoomStore

log = structlog.get_logger(__name__)

CAS_ATTEMPTS = 50
# A transition that must happen (a leave, a grace, a sweep) is retried while the store
# is down, for about a minute.
RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 8.0, 16.0, 16.0)

Decide = Callable[[RoomRecord | None], Change | None]


@dataclass(slots=True)
class Committed:
    """A transition written: its change and the version it was written as."""

    change: Change
    version: int


@dataclass(slots=True)
class RoomLocks:
    """One transition of a room at a time on this node; a lock exists while in use."""

    locks: dict[RoomKey, asyncio.Lock] = field(default_factory=dict)
    users: dict[RoomKey, int] = field(default_factory=dict)

    @asynccontextmanager
    async def hold(self, key: RoomKey) -> AsyncIterator[None]:
        lock = self.locks.get(key)
        if lock is None:
            lock = self.locks[key] = asyncio.Lock()
        self.users[key] = self.users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self.users[key] -= 1
            if not self.users[key]:
                del self.users[key]
                del self.locks[key]


class Transitions:
    """Transitions of rooms through a ``RoomStore``."""

    def __init__(self, store: RoomStore, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self.locks = RoomLocks()
        self.immediate = isinstance(store, ImmediateRoomStore)

    async def run(self, key: RoomKey, decide: Decide) -> Committed | None:
        """Run ``decide`` on the room's record and write what it returns, atomically.

        ``decide`` may raise to refuse (nothing is written) or return None (nothing to
        write). ``StoreUnavailable`` when the store is down or the room too contended."""
        if self.immediate:  # nothing awaits: no lock needed, the first attempt wins
            return self.run_at_once(key, decide)
        async with self.locks.hold(key):
            for _ in range(CAS_ATTEMPTS):
                version, record = await self.store.load(key)
                update = self._decided(version, record, decide)
                if update is None:
                    return None
                if await self.store.commit(key, version, update[1]):
                    return self._committed(record, *update)
                if self.metrics.redis is not None:  # another node changed the room first
                    self.metrics.redis.cas_retries.inc()
        log.warning("room_transition_contended", room=key, attempts=CAS_ATTEMPTS)
        raise StoreUnavailable("redis")

    def run_at_once(self, key: RoomKey, decide: Decide) -> Committed | None:
        """``run`` without a turn of the event loop, on a store that never waits (one
        node): its update is carried out before this returns, as ``run``'s would be."""
        store = cast("ImmediateRoomStore", self.store)  # checked once: self.immediate
        version, record = store.load_at_once(key)
        update = self._decided(version, record, decide)
        if update is None:
            return None
        store.commit_at_once(key, version, update[1])  # no other writer: always wins
        return self._committed(record, *update)

    @staticmethod
    def _decided(
        version: int, record: RoomRecord | None, decide: Decide
    ) -> tuple[Change, Update] | None:
        change = decide(record)
        if change is None:
            return None
        change.record.prune()
        closed = change.effects.room_closed
        update = update_of(
            version + 1, None if closed else change.record, change.effects, change.joined
        )
        return change, update

    def _committed(self, before: RoomRecord | None, change: Change, update: Update) -> Committed:
        if update.record is None:
            self.metrics.rooms_closed.inc()
        elif before is None:
            self.metrics.rooms_created.inc()
        return Committed(change, update.version)

    async def retrying(self, key: RoomKey, decide: Decide) -> Committed | None:
        """A transition that must happen, retried while the store is down."""
        for delay in (*RETRY_DELAYS, None):
            try:
                return await self.run(key, decide)
            except StoreUnavailable:
                if delay is None:
                    log.error("room_transition_given_up", room=key)
                    return None
                await asyncio.sleep(delay)
        return None  # pragma: no cover - the loop returns
