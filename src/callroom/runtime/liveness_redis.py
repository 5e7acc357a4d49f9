"""Which nodes live, and the sweep of those that died (SPEC §7).

Every node refreshes a key with a time to live of ``HEARTBEAT_INTERVAL_SECONDS`` every
third of it, and looks for nodes whose key expired. One of the living claims each dead
node and *sweeps* it (``callroom.room.placement.sweep``, run by the hub): in every room
the dead node held, its sessions are dropped (its admitted members keep their place for
the grace, owned now by the sweeper; its waiting members go at once) and its grace
timers are taken over. A node that dies is therefore swept within 4/3 of the interval,
inside the 2x of SPEC §7; a node that stops cleanly deletes its key first and is swept
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from callroom.errors import StoreUnavailable
from callroom.room.keys import RoomKey
from callroom.runtime.redis_keys import RedisKeys
from callroom.runtime.redis_writer import REDIS_ERRORS, Writer
from callroom.runtime.tasks import finish

log = structlog.get_logger(__name__)

Sweep = Callable[[str, list[RoomKey]], Awaitable[None]]


class RedisLiveness:
    """This node's liveness key, and the sweep of dead nodes.

    Its commands go through the node's ordered writer (on a cluster: the primary of the
    ``{nodes}`` slot, which every liveness key shares, so ``MGET`` stays on one slot)."""

    def __init__(
        self,
        node_id: str,
        *,
        writer: Writer,
        keys: RedisKeys,
        interval: float,
        sweep: Sweep,
    ) -> None:
        self.node_id = node_id
        self._writer = writer
        self._keys = keys
        self._interval = interval
        self._sweep = sweep
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop beating and say goodbye: the others sweep this node's places at once."""
        if self._task is not None:
            await finish(self._task)  # not a bare cancel(): see redis_writer.finish
        with contextlib.suppress(*REDIS_ERRORS, TimeoutError, StoreUnavailable):
            await asyncio.wait_for(self._ask("DEL", self._keys.node_key(self.node_id)), 1)

    def hold_room(self, key: RoomKey, *, held: bool) -> None:
        command = "SADD" if held else "SREM"
        self._writer.call(command, self._keys.node_rooms(self.node_id), key, answer=False)

    async def _ask(self, *args: Any) -> Any:
        future = self._writer.call(*args)
        assert future is not None
        return await future

    async def _loop(self) -> None:
        interval = self._interval
        while True:
            try:
                await self.beat(interval)
                for dead in await self.dead_nodes():
                    if await self.claim(dead, max(30.0, 4 * interval)):
                        await self._sweep(dead, await self.rooms_of(dead))
                        await self.forget(dead)
            except (*REDIS_ERRORS, StoreUnavailable) as exc:
                log.warning("liveness_failed", error=str(exc))
            await asyncio.sleep(interval / 3)

    async def beat(self, ttl_seconds: float) -> None:
        """Say this node lives for ``ttl_seconds`` more."""
        ttl = int(ttl_seconds * 1000)
        await self._ask("SET", self._keys.node_key(self.node_id), "1", "PX", ttl)
        await self._ask("SADD", self._keys.nodes, self.node_id)

    async def dead_nodes(self) -> list[str]:
        nodes = sorted(n.decode() for n in await self._ask("SMEMBERS", self._keys.nodes))
        others = [n for n in nodes if n != self.node_id]
        if not others:
            return []
        alive = await self._ask("MGET", *[self._keys.node_key(n) for n in others])
        return [n for n, mark in zip(others, alive, strict=True) if mark is None]

    async def claim(self, dead: str, ttl_seconds: float) -> bool:
        """Take the sweep of a dead node; one node gets it."""
        claim = self._keys.sweep_claim(dead)
        taken = await self._ask("SET", claim, self.node_id, "NX", "PX", int(ttl_seconds * 1000))
        return taken is not None

    async def rooms_of(self, node_id: str) -> list[RoomKey]:
        members = await self._ask("SMEMBERS", self._keys.node_rooms(node_id))
        return sorted(RoomKey(k.decode()) for k in members)

    async def forget(self, node_id: str) -> None:
        """A swept node is gone for good."""
        await self._ask("DEL", self._keys.node_rooms(node_id))
        await self._ask("SREM", self._keys.nodes, node_id)
