"""Reconnect grace timers (SPEC §2), behind a clock port.

A dropped admitted member keeps its place for ``RECONNECT_GRACE_SECONDS``; the record
names the node that times it (``RoomRecord.graces``). This node runs a timer for every
grace the record gives it and stops the ones it no longer gives it (the member came
back, maybe elsewhere, or another node took the timer over).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Protocol

from callroom.room.keys import RoomKey
from callroom.room.record import RoomRecord


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Wall time and timers: the event loop's, or a test's."""

    def now_ms(self) -> int: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...


class LoopClock:
    """The event loop's timers and the system's wall clock (graces end at a wall time
    every node agrees on)."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


class GraceTimers:
    """The grace timers this node runs; ``on_expired(key, clientId)`` when one ends."""

    def __init__(
        self, clock: Clock, node_id: str, on_expired: Callable[[RoomKey, str], None]
    ) -> None:
        self.clock = clock
        self.node_id = node_id
        self._on_expired = on_expired
        self._timers: dict[RoomKey, dict[str, Timer]] = {}

    @property
    def timed(self) -> dict[RoomKey, dict[str, Timer]]:
        """The timers running, per room (read only)."""
        return self._timers

    def held(self, key: RoomKey) -> bool:
        return bool(self._timers.get(key))

    def follow(self, key: RoomKey, record: RoomRecord) -> bool:
        """Run a timer for every grace of the room this node owns, stop the others;
        whether this node times any grace of the room."""
        timers = self._timers.get(key)
        if timers:
            for cid in list(timers):
                owner = record.graces.get(cid)
                if owner is None or owner[0] != self.node_id:
                    timers.pop(cid).cancel()
        owns = False
        for cid, (owner_id, until_ms) in record.graces.items():
            if owner_id != self.node_id:
                continue
            owns = True
            timers = self._timers.setdefault(key, {})
            if cid not in timers:
                delay = max(0.0, (until_ms - self.clock.now_ms()) / 1000)
                timers[cid] = self.clock.call_later(delay, partial(self._on_expired, key, cid))
        if not timers and key in self._timers:
            del self._timers[key]
        return owns

    def done(self, key: RoomKey, cid: str) -> None:
        """The expiry of ``cid``'s grace was carried out (or came to nothing)."""
        timers = self._timers.get(key)
        if timers is not None:
            timers.pop(cid, None)
            if not timers:
                del self._timers[key]

    def cancel_room(self, key: RoomKey) -> None:
        for timer in self._timers.pop(key, {}).values():
            timer.cancel()

    def cancel_all(self) -> None:
        for timers in self._timers.values():
            for timer in timers.values():
                timer.cancel()
        self._timers.clear()
