"""Room commands to a Redis Cluster, in call order per room (SPEC §9).

The routing layer between the store, bus and liveness and a cluster: the same calls as
one ``CommandWriter`` (``call``, ``publish``), each sent by the writer of the primary
serving its slot (``redis_slots.SlotMap``), one writer per primary. A room's keys and
channels share one slot, so its commands go through one writer: the order the writer
gives one Redis (a chat message published before the member's next command is seen
before that command's update) holds per room. Publishes are ``SPUBLISH``: a message
touches its slot's shard only.

- ``MOVED slot node``: the slot is taken from the answer at once and the map read
  again; the command, then every command of that slot still queued for the old shard,
  go to the new one, ahead of anything called later: the room's order holds.
- ``ASK slot node`` (a slot being migrated): ``ASKING`` and the command, to that node,
  this once.
- A shard that stops answering (killed, failed over): its commands fail with
  ``StoreUnavailable`` as on one Redis (the same timeouts), the map is read again, and
  what is still queued goes to the slot's new primary once the map names it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import structlog
from redis import exceptions as redis_errors

from callroom.errors import StoreUnavailable
from callroom.metrics import RedisMetrics
from callroom.runtime.redis_slots import Address, SlotMap, slot_of
from callroom.runtime.redis_writer import Command, CommandWriter, pack
from callroom.runtime.tasks import finish

log = structlog.get_logger(__name__)

MAX_REDIRECTS = 5
ASKING = pack(("ASKING",))
KEYED_AT = {"EVAL": 3, "EVALSHA": 3}  # where a command's key is (else its first argument)


class ClusterWriter:
    """One ``CommandWriter`` per primary, each command to its slot's."""

    sharded = True  # SPUBLISH and SSUBSCRIBE; no cross-slot index

    def __init__(
        self, slots: SlotMap, *, client_name: str, metrics: RedisMetrics | None = None
    ) -> None:
        self.slots = slots
        self._client_name = client_name
        self._metrics = metrics
        self.writers: dict[Address, CommandWriter] = {}
        self._tasks: dict[Address, asyncio.Task[None]] = {}
        self._ending: set[asyncio.Task[None]] = set()  # writers of former primaries
        self._held: list[Command] = []  # called before the first map was read
        self._closed = False
        self._stop = asyncio.Event()
        slots.listeners.append(self._rehome)

    # -- the calls of one CommandWriter ---------------------------------------------

    def call(self, *args: Any, answer: bool = True) -> asyncio.Future[Any] | None:
        name = args[0]
        key = args[KEYED_AT.get(name, 1)]
        return self._route(slot_of(key), name, pack(args), answer)

    def publish(
        self, channel: bytes, message: bytes, *, answer: bool
    ) -> asyncio.Future[Any] | None:
        return self._route(
            slot_of(channel), "SPUBLISH", pack(("SPUBLISH", channel, message)), answer
        )

    def _route(
        self, slot: int, name: str, packed: bytes, answer: bool
    ) -> asyncio.Future[Any] | None:
        if self._closed:
            if answer:
                raise StoreUnavailable("redis")
            return None
        future = asyncio.get_running_loop().create_future() if answer else None
        self._send(Command(name, packed, future, slot))
        return future

    def _send(self, command: Command) -> None:
        owner = self.slots.owner(command.slot)
        if owner is not None:
            self.writer_at(owner).enqueue(command)
            return
        self.slots.request_refresh()
        if not self.slots.known:  # the first map is being read: wait for it
            self._held.append(command)
            return
        # The cluster named no primary for the slot (a shard lost): as Redis down.
        if command.future is not None:
            command.future.set_exception(StoreUnavailable("redis"))
        elif self._metrics is not None and command.name == "SPUBLISH":
            self._metrics.publish_failures.inc()

    def writer_at(self, address: Address) -> CommandWriter:
        writer = self.writers.get(address)
        if writer is None:
            pool = self.slots.pool(address, client_name=self._client_name)
            writer = CommandWriter(pool, self._metrics)
            writer.redirect = self._redirected
            writer.down = self.slots.request_refresh
            self.writers[address] = writer
            self._tasks[address] = asyncio.create_task(writer.run())
        return writer

    # -- redirects and failovers ----------------------------------------------------

    def _redirected(
        self, source: CommandWriter, bounced: list[tuple[Command, redis_errors.AskError]]
    ) -> list[Command]:
        failed: list[Command] = []
        moved: dict[int, CommandWriter] = {}
        for command, error in bounced:
            command.redirects += 1
            if command.redirects > MAX_REDIRECTS:
                log.warning("redis_redirect_loop", command=command.name, slot=command.slot)
                failed.append(command)
                continue
            target = self.writer_at(error.node_addr)
            if isinstance(error, redis_errors.MovedError):
                self.slots.moved(error.slot_id, error.node_addr)
                moved[command.slot] = target
                target.enqueue(command)
            else:
                target.enqueue(Command("ASKING", ASKING, None, command.slot))
                target.enqueue(command)
        if moved:  # what is still queued for those slots goes behind, in its order
            self._move_queued(source, lambda slot: moved.get(slot))
        return failed

    def _rehome(self) -> None:
        """The map was read: commands queued for a shard that no longer serves their
        slot go to the one that does, in order; writers of former primaries end;
        commands held for the first map are sent (or fail, when no node answered)."""
        held, self._held = self._held, []
        for command in held:
            if self.slots.known:
                self._send(command)
            elif command.future is not None and not command.future.done():
                command.future.set_exception(StoreUnavailable("redis"))
        for address, writer in list(self.writers.items()):
            self._move_queued(writer, lambda slot, here=address: self._other_owner(slot, here))
        primaries = set(self.slots.owners)
        for address, writer in list(self.writers.items()):
            if address not in primaries and not writer.queue and not writer.in_flight:
                del self.writers[address]
                ending = asyncio.create_task(_end(writer, self._tasks.pop(address)))
                self._ending.add(ending)
                ending.add_done_callback(self._ending.discard)

    def _other_owner(self, slot: int, here: Address) -> CommandWriter | None:
        owner = self.slots.owner(slot)
        return None if owner is None or owner == here else self.writer_at(owner)

    @staticmethod
    def _move_queued(source: CommandWriter, target_of: Any) -> None:
        kept: deque[Command] = deque()
        for command in source.queue:
            target = target_of(command.slot)
            if target is None or target is source:
                kept.append(command)
            else:
                target.enqueue(command)
        source.queue = kept

    # -- the writer's life ----------------------------------------------------------

    async def run(self) -> None:
        """Read the map (again and again while no node answers), then keep it."""
        delay = 0.1
        while not await self.slots.refresh():
            await asyncio.sleep(delay)
            delay = min(2 * delay, 2.0)
        await self._stop.wait()

    async def close(self) -> None:
        self._closed = True
        for command in self._held:
            if command.future is not None and not command.future.done():
                command.future.set_exception(StoreUnavailable("redis"))
        self._held = []
        self._stop.set()
        for address, writer in list(self.writers.items()):
            await _end(writer, self._tasks.pop(address))
        self.writers.clear()
        await self.slots.close()


async def _end(writer: CommandWriter, task: asyncio.Task[None]) -> None:
    await finish(task)
    await writer.close()
