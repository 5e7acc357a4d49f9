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

from callroom.errors import StoreUnavailable
from callroom.room.keys import RoomKey
from callroom.room.record import RoomRecord
from callroom.runtime.messages import Update
from callroom.runtime.redis_keys import RedisKeys
from callroom.runtime.redis_writer import REDIS_ERRORS, RedisClient, Writer
from callroom.runtime.tasks import finish
from callroom.runtime.wire import dump_record, dump_update, load_record

# A closed room's record keeps its version for a day, so versions never repeat for a
# key while a node may still hold an old replica; then it expires.
CLOSED_RECORD_MS = 86_400_000
RESTORE_STEP = 1_000_000

# KEYS[1] room hash; ARGV: expected version, new version, record ('' = closed), channel,
# message, closed record's time to live, rooms index, room key. A missing room is at 0.
CAS_TEMPLATE = """
local current = redis.call('HGET', KEYS[1], 'v') or '0'
if current ~= ARGV[1] then return 0 end
if ARGV[3] == '' then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', '')
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  {unindex}
else
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
  redis.call('PERSIST', KEYS[1])
  {index}
end
redis.call('{publish}', ARGV[4], ARGV[5])
return 1
"""

# KEYS[1] room hash; ARGV: the replica's version, the version to write, record, channel,
# message, rooms index, room key, restore step.
RESTORE_TEMPLATE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local base = tonumber(redis.call('HGET', KEYS[1], 'r') or '-1')
local mine = tonumber(ARGV[1])
local older_restore = base >= 0 and current == base + tonumber(ARGV[8]) and base < mine
if current >= mine and not older_restore then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3], 'r', ARGV[1])
redis.call('PERSIST', KEYS[1])
{restore_index}
redis.call('{publish}', ARGV[4], ARGV[5])
return 1
"""

# One Redis: the rooms index in the same step, PUBLISH. A cluster: a script touches its
# declared key's slot only, so no index (``open_rooms`` scans the room hashes), and
# SPUBLISH on the room's channel, which shares that slot (SPEC §9).
ONE_REDIS = {
    "unindex": "redis.call('SREM', ARGV[7], ARGV[8])",
    "index": "redis.call('SADD', ARGV[7], ARGV[8])",
    "restore_index": "redis.call('SADD', ARGV[6], ARGV[7])",
    "publish": "PUBLISH",
}
SHARDED = {"unindex": "", "index": "", "restore_index": "", "publish": "SPUBLISH"}
CAS_SCRIPT = CAS_TEMPLATE.format(**ONE_REDIS)
RESTORE_SCRIPT = RESTORE_TEMPLATE.format(**ONE_REDIS)
SHARDED_CAS_SCRIPT = CAS_TEMPLATE.format(**SHARDED)
SHARDED_RESTORE_SCRIPT = RESTORE_TEMPLATE.format(**SHARDED)
SCAN_COUNT = 1000


class RedisRoomStore:
    """Room records in Redis, shared by every node."""

    def __init__(self, writer: Writer, redis: RedisClient, keys: RedisKeys) -> None:
        self._writer = writer
        self._redis = redis
        self._keys = keys
        self._task: asyncio.Task[None] | None = None
        self._sharded = writer.sharded
        self._cas = SHARDED_CAS_SCRIPT if writer.sharded else CAS_SCRIPT
        self._restore = SHARDED_RESTORE_SCRIPT if writer.sharded else RESTORE_SCRIPT

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
                self._cas,
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
                self._restore,
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
            if self._sharded:
                return await self._scan_rooms()
            members: set[bytes] = await self._redis.execute_command(
                "SMEMBERS", self._keys.rooms_index
            )
        except REDIS_ERRORS:
            raise StoreUnavailable("redis") from None
        return sorted(RoomKey(m.decode()) for m in members)

    async def _scan_rooms(self) -> list[RoomKey]:
        """On a cluster: every room hash of every primary, those holding a record (a
        closed room's keeps its version, with an empty record, for a day)."""
        names = [
            name.decode()
            async for name in self._redis.scan_iter(
                match=self._keys.room_hash_pattern, count=SCAN_COUNT, _type="hash"
            )
        ]
        futures = [self._writer.call("HGET", name, "s") for name in names]
        records = [await future for future in futures if future is not None]
        return sorted(
            RoomKey(self._keys.room_of_hash(name))
            for name, record in zip(names, records, strict=True)
            if record
        )
