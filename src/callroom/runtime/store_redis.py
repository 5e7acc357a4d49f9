"""The Redis room store (SPEC §7): one hash per room, compare-and-set by Lua script.

``commit`` is one script: if the room's version is the one the transition read, write
the next version and publish the update on the room's channel, so the channel carries
the updates in version order, each exactly once. It goes through the node's
``CommandWriter``, behind every publish of this node called before it.

``restore`` writes a node's replica back when Redis lost the room (restarted empty, or
flushed): the stored version is lower than one the node has seen, or the stored record
is an older node's write-back not changed since. The version written is the replica's
plus ``RESTORE_STEP``, above any a room created meanwhile can have reached, so the
freshest replica wins and a room made by a joiner during the outage is replaced (its
members are closed with 1001 by their node and rejoin the restored room).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from callroom.errors import StoreUnavailable
from callroom.room.keys import RoomKey
from callroom.room.record import RoomRecord
from callroom.runtime.messages import Update
from callroom.runtime.redis_keys import RedisKeys
from callroom.runtime.redis_writer import REDIS_ERRORS, CommandWriter
from callroom.runtime.tasks import finish
from callroom.runtime.wire import dump_record, dump_update, load_record

# A closed room's record keeps its version for a day, so versions never repeat for a
# key while a node may still hold an old replica; then it expires.
CLOSED_RECORD_MS = 86_400_000
RESTORE_STEP = 1_000_000

# KEYS[1] room hash; ARGV: expected version, new version, record ('' = closed), channel,
# message, closed record's time to live, rooms index, room key. A missing room is at 0.
CAS_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'v') or '0'
if current ~= ARGV[1] then return 0 end
if ARGV[3] == '' then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', '')
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('SREM', ARGV[7], ARGV[8])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
  redis.call('PERSIST', KEYS[1])
  redis.call('SADD', ARGV[7], ARGV[8])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# KEYS[1] room hash; ARGV: the replica's version, the version to write, record, channel,
# message, rooms index, room key, restore step.
RESTORE_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local base = tonumber(redis.call('HGET', KEYS[1], 'r') or '-1')
local mine = tonumber(ARGV[1])
local older_restore = base >= 0 and current == base + tonumber(ARGV[8]) and base < mine
if current >= mine and not older_restore then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3], 'r', ARGV[1])
redis.call('PERSIST', KEYS[1])
redis.call('SADD', ARGV[6], ARGV[7])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""


class RedisRoomStore:
    """Room records in Redis, shared by every node."""

    def __init__(self, writer: CommandWriter, redis: Redis, keys: RedisKeys) -> None:
        self._writer = writer
        self._redis = redis
        self._keys = keys
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the ordered command writer; Redis being down does not stop this."""
        self._task = asyncio.create_task(self._writer.run())

    async def close(self) -> None:
        """Last of the Redis parts to close: every command still queued fails."""
        if self._task is not None:
            await finish(self._task)
        await self._writer.close()
        await self._redis.aclose()

    async def _ask(self, *args: Any) -> Any:
        future = self._writer.call(*args)
        assert future is not None
        return await future

    async def load(self, key: RoomKey) -> tuple[int, RoomRecord | None]:
        version, record = await self._ask("HMGET", self._keys.room_hash(key), "v", "s")
        return int(version or 0), (load_record(record) if record else None)

    async def load_many(self, keys: list[RoomKey]) -> list[RoomRecord | None]:
        futures = [self._writer.call("HGET", self._keys.room_hash(key), "s") for key in keys]
        records = [await future for future in futures if future is not None]
        return [load_record(record) if record else None for record in records]

    async def commit(self, key: RoomKey, expected: int, update: Update) -> bool:
        record = b"" if update.record is None else dump_record(update.record)
        return bool(
            await self._ask(
                "EVAL",
                CAS_SCRIPT,
                1,
                self._keys.room_hash(key),
                expected,
                update.version,
                record,
                self._keys.room_channel(key),
                dump_update(update),
                CLOSED_RECORD_MS,
                self._keys.rooms_index,
                key,
            )
        )

    async def restore(self, key: RoomKey, version: int, record: RoomRecord) -> bool:
        update = Update(version + RESTORE_STEP, record, (), ())
        return bool(
            await self._ask(
                "EVAL",
                RESTORE_SCRIPT,
                1,
                self._keys.room_hash(key),
                version,
                update.version,
                dump_record(record),
                self._keys.room_channel(key),
                dump_update(update),
                self._keys.rooms_index,
                key,
                RESTORE_STEP,
            )
        )

    async def open_rooms(self) -> list[RoomKey]:
        try:
            members: set[bytes] = await self._redis.execute_command(  # type: ignore[no-untyped-call]
                "SMEMBERS", self._keys.rooms_index
            )
        except REDIS_ERRORS:
            raise StoreUnavailable("redis") from None
        return sorted(RoomKey(m.decode()) for m in members)
