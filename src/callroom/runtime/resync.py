"""After the bus reconnected: every room held here back in step with the store (SPEC §7).

Messages published while this node could not hear were lost; the records were not,
unless the store itself lost them (Redis restarted empty). For every room this node
holds a replica of, ``Resync`` asks the store to take the replica back where it lost the
room (``RoomStore.restore``: the freshest replica of all nodes wins, roles included),
and otherwise reloads the record and acts on what changed (sockets whose place is gone
are closed with 1001 so their members rejoin; never silently half-present).

It retries until every room is done: meanwhile readiness is 503, joins to those rooms
are refused with 503, and leaves and grace expiries of those rooms wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection

import structlog

from callroom.errors import CloseCode, StoreUnavailable
from callroom.room.keys import RoomKey
from callroom.room.record import RoomRecord
from callroom.runtime.local import LocalSessions
from callroom.runtime.ports import Liveness, RoomStore
from callroom.runtime.replicas import Replicas
from callroom.runtime.tasks import finish

log = structlog.get_logger(__name__)

RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0)  # then 1 s between attempts
SETTLE_TIMEOUT_SECONDS = 60.0


class Resync:
    """The resync of one hub's rooms."""

    def __init__(
        self,
        store: RoomStore,
        replicas: Replicas,
        local: LocalSessions,
        liveness: Liveness,
        *,
        follow: Callable[[RoomKey, RoomRecord], None],
        lost: Callable[[RoomKey], None],
    ) -> None:
        self.store = store
        self.replicas = replicas
        self.local = local
        self.liveness = liveness
        self._follow = follow  # act on a record newer than the replica
        self._lost = lost  # the room closed while this node could not hear it
        self._task: asyncio.Task[None] | None = None
        self._restarted = False
        self._again = False
        self._pending: set[RoomKey] = set()
        self._settled = asyncio.Event()
        self._settled.set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def holds(self, key: RoomKey) -> bool:
        """Whether ``key`` is not back in step yet."""
        return key in self._pending

    async def settled(self, key: RoomKey) -> None:
        """Wait (bounded) until ``key`` is back in step with the store."""
        if key in self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), SETTLE_TIMEOUT_SECONDS)

    def begin(self, restarted: bool, keys: Collection[RoomKey] | None = None) -> None:
        """The bus (re)connected: resync every room held, or those of ``keys`` (a
        cluster's shard), again if one is under way."""
        self._restarted = self._restarted or restarted
        held = set(self.replicas.keys())
        self._pending = held if keys is None else self._pending | (held & set(keys))
        if self.running:
            self._again = True
            return
        if self._pending:
            self._settled.clear()
            self._task = asyncio.create_task(self._run())

    async def wait(self) -> None:
        """Until the resync under way, if any, is done."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None:
            await finish(self._task)
        self._pending.clear()
        self._settled.set()

    async def _run(self) -> None:
        attempt = 0
        while True:
            self._again = False
            restarted = self._restarted
            while self._pending:
                key = min(self._pending)
                try:
                    await self._one(key)
                except StoreUnavailable:
                    await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
                    attempt += 1
                    continue
                except Exception:  # a bug or a record it cannot read: never block the room
                    log.exception("room_resync_failed", room=key)
                self._pending.discard(key)
            if not self._again:
                break
        self._restarted = False
        self._settled.set()
        log.info("rooms_resynced", restarted=restarted, attempts=attempt + 1)

    async def _one(self, key: RoomKey) -> None:
        replica = self.replicas.get(key)
        if replica is None:
            return  # released meanwhile
        if await self.store.restore(key, replica.version, replica.record):
            log.warning("room_written_back", room=key, version=replica.version)
            # The write-back's update comes back on the bus; nothing else changed here.
        else:
            version, record = await self.store.load(key)
            if version > replica.version:
                self.replicas.adopt(key, version, record)
                if record is None:
                    for peer in self.local.of(key).values():
                        peer.close(CloseCode.GOING_AWAY, "room state lost: reconnect")
                    self._pending.discard(key)
                    self._lost(key)
                    return
                self._follow(key, record)
        self.liveness.hold_room(key, held=True)
