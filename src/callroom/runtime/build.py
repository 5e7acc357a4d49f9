"""The hub with the backends the settings ask for: memory (one node) or Redis (many).

``REDIS_URL`` unset: the memory store and bus, no liveness (SPEC §6). Set: the Redis
store and bus sharing one ordered command connection, the subscriber, and the liveness
loop that sweeps dead nodes (SPEC §7). ``redis+cluster://`` (SPEC §9): the same store and
liveness over the cluster's router (one ordered connection per primary), the bus with
one sharded subscriber per shard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.asyncio import ConnectionPool, Redis, RedisCluster

from callroom.room.keys import RoomKey
from callroom.runtime.bus_redis import RedisRoomBus
from callroom.runtime.bus_sharded import ShardedRoomBus
from callroom.runtime.hub import Hub
from callroom.runtime.liveness_redis import RedisLiveness
from callroom.runtime.memory import MemoryRoomBus, MemoryRoomStore, NoLiveness
from callroom.runtime.ports import RoomBus
from callroom.runtime.redis_cluster import ClusterWriter
from callroom.runtime.redis_keys import RedisKeys
from callroom.runtime.redis_slots import SlotMap, is_cluster_url, node_url
from callroom.runtime.redis_writer import CommandWriter, RedisClient, Writer
from callroom.runtime.store_redis import RedisRoomStore

if TYPE_CHECKING:
    from callroom.auth.verifier import TokenVerifier
    from callroom.chat.base import ChatHistory
    from callroom.config import Settings
    from callroom.metrics import Metrics


def build_hub(
    settings: Settings,
    history: ChatHistory,
    verifier: TokenVerifier,
    metrics: Metrics,
    *,
    node_id: str,
) -> Hub:
    if not settings.REDIS_URL:
        bus = MemoryRoomBus()
        return Hub(
            settings,
            history,
            verifier,
            metrics,
            node_id=node_id,
            store=MemoryRoomStore(bus),
            bus=bus,
            liveness=NoLiveness(),
        )
    return _redis_hub(settings, history, verifier, metrics, node_id, settings.REDIS_URL)


def _redis_hub(
    settings: Settings,
    history: ChatHistory,
    verifier: TokenVerifier,
    metrics: Metrics,
    node_id: str,
    url: str,
) -> Hub:
    keys = RedisKeys(settings.REDIS_PREFIX)
    # Named connections: `CLIENT LIST` tells an operator which node holds which.
    redis: RedisClient
    writer: Writer
    bus: RoomBus
    if is_cluster_url(url):
        slots = SlotMap(url, socket_connect_timeout=2)
        redis = RedisCluster.from_url(
            node_url(url),
            socket_connect_timeout=2,
            socket_timeout=5,
            client_name=f"callroom:{node_id}",
            require_full_coverage=False,  # a lost shard must not stop the others' rooms
        )
        writer = ClusterWriter(
            slots, client_name=f"callroom-rooms:{node_id}", metrics=metrics.redis
        )
        bus = ShardedRoomBus(
            url,
            node_id,
            slots=slots,
            writer=writer,
            redis=redis,
            keys=keys,
            metrics=metrics.redis,
        )
    else:
        redis = Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, client_name=f"callroom:{node_id}"
        )
        writer = CommandWriter(
            ConnectionPool.from_url(
                url, socket_connect_timeout=2, client_name=f"callroom-rooms:{node_id}"
            ),
            metrics.redis,
        )
        bus = RedisRoomBus(
            url, node_id, writer=writer, redis=redis, keys=keys, metrics=metrics.redis
        )
    hub: Hub | None = None

    async def sweep(dead: str, rooms: list[RoomKey]) -> None:
        assert hub is not None
        await hub.sweep(dead, rooms)

    hub = Hub(
        settings,
        history,
        verifier,
        metrics,
        node_id=node_id,
        store=RedisRoomStore(writer, redis, keys),
        bus=bus,
        liveness=RedisLiveness(
            node_id,
            writer=writer,
            keys=keys,
            interval=settings.HEARTBEAT_INTERVAL_SECONDS,
            sweep=sweep,
        ),
    )
    return hub
