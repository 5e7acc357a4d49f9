"""Redis Cluster's hash slots and the cluster URL (callroom.runtime.redis_slots)."""

from __future__ import annotations

from binascii import crc_hqx
from typing import Any

import pytest

from callroom.config import Settings
from callroom.runtime.redis_keys import RedisKeys
from callroom.runtime.redis_slots import (
    SLOTS,
    SlotMap,
    is_cluster_url,
    node_url,
    parse_address,
    slot_of,
)


def test_crc16_is_the_clusters_xmodem_variant() -> None:
    """The cluster specification's test vector: CRC16-XMODEM("123456789") = 0x31C3."""
    assert crc_hqx(b"123456789", 0) == 0x31C3
    assert slot_of("123456789") == 0x31C3 % SLOTS


def test_a_hash_tag_puts_keys_on_one_slot() -> None:
    assert slot_of("{user1000}.following") == slot_of("{user1000}.followers")
    assert slot_of("{user1000}.following") == slot_of("user1000")
    assert slot_of(b"foo{}{bar}") == slot_of("foo{}{bar}")  # an empty tag is no tag
    assert slot_of("foo{}{bar}") != slot_of("bar")
    assert slot_of("foo{{bar}}zap") == slot_of("{bar")  # the first { to the next }


def test_every_name_of_a_room_and_every_liveness_key_share_one_slot() -> None:
    keys, room = RedisKeys("p"), "zoom:room-1"
    names = [keys.room_hash(room), keys.room_channel(room), keys.room_node_channel(room, "n1")]
    assert {slot_of(name) for name in names} == {slot_of(room)}
    liveness = [keys.nodes, keys.node_key("a"), keys.node_rooms("b"), keys.sweep_claim("c")]
    assert len({slot_of(name) for name in liveness}) == 1
    assert keys.room_of_hash(keys.room_hash(room)) == room


def test_cluster_urls_name_one_node_of_the_cluster() -> None:
    assert is_cluster_url("redis+cluster://10.0.0.1:7000")
    assert is_cluster_url("rediss+cluster://u:p@h:7000")
    assert not is_cluster_url("redis://127.0.0.1:6379/0")
    assert node_url("redis+cluster://10.0.0.1:7000") == "redis://10.0.0.1:7000"
    assert (
        node_url("rediss+cluster://u:p@h:7000/0?ssl_cert_reqs=none", ("10.0.0.2", 7001))
        == "rediss://u:p@10.0.0.2:7001?ssl_cert_reqs=none"
    )
    assert parse_address("10.0.0.2:7001") == ("10.0.0.2", 7001)
    assert parse_address("::1:7001") == ("::1", 7001)


def test_redis_url_accepts_the_cluster_schemes_and_names_them_when_wrong() -> None:
    base: dict[str, Any] = {
        "AUTH_ISSUER": "https://i/",
        "AUTH_JWKS_URL": "https://i/j",
        "AUTH0_AUDIENCE": "a",
    }
    settings = Settings(_env_file=None, REDIS_URL="redis+cluster://h:7000", **base)
    assert settings.REDIS_URL == "redis+cluster://h:7000"
    with pytest.raises(ValueError, match="redis\\+cluster"):
        Settings(_env_file=None, REDIS_URL="cluster://h:7000", **base)


async def test_the_map_of_cluster_slots_names_each_slots_primary() -> None:
    slots = SlotMap("redis+cluster://127.0.0.1:7000")
    assert not slots.known
    assert slots.owner(0) is None
    reply = [
        [0, 8191, [b"127.0.0.1", 7000, b"id-a"], [b"127.0.0.1", 7003, b"id-d"]],
        [8192, 16383, [b"", 7001, b"id-b"]],  # an empty host: the node asked
    ]
    slots._take(reply, ("10.0.0.9", 7000))
    assert slots.known
    assert slots.owner(0) == ("127.0.0.1", 7000)
    assert slots.owner(8191) == ("127.0.0.1", 7000)
    assert slots.owner(16383) == ("10.0.0.9", 7001)
    assert ("127.0.0.1", 7003) in slots.nodes
