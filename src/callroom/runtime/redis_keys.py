"""The names of callroom's keys and channels in Redis (SPEC §7, §9).

Every name starts with ``REDIS_PREFIX`` (``P`` here; deployments sharing one Redis must
not see each other, and pub/sub ignores database numbers). Every key and channel of one
room carries the room's hash tag (``{kind:roomId}``), so on a Redis Cluster a room's
commands all go to one slot, one shard:

- ``P:{k}:room``: a hash with the record's version ``v``, the record ``s`` and, after a
  write-back, the version it was restored from ``r``; ``P:{k}:bus``: its channel;
  ``P:{k}:bus:<node id>``: on a cluster, deliveries of the room to one node (signaling;
  on the room's slot so they keep their order with the room's channel);
- ``P:rooms``: the open rooms (the admin API; one Redis only: a cluster scans the room
  hashes instead, as one set cannot share every room's slot);
- ``P:node:<id>:bus``: on one Redis, deliveries to one node, every room's;
- the liveness keys share the hash tag ``{nodes}``, so their multi-key commands stay on
  one slot: ``P:{nodes}:all``: node ids; ``P:{nodes}:node:<id>``: a node's liveness, with
  a time to live; ``P:{nodes}:rooms:<id>``: rooms where a node holds sessions or grace
  timers (for the sweep after it dies); ``P:{nodes}:sweep:<id>``: the claim on a dead
  node's sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "callroom"
LIVENESS_TAG = "{nodes}"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = PREFIX

    def room_hash(self, key: str) -> str:
        return f"{self.prefix}:{{{key}}}:room"

    def room_channel(self, key: str) -> str:
        return f"{self.prefix}:{{{key}}}:bus"

    def room_node_channel(self, key: str, node_id: str) -> str:
        """On a cluster: the room's deliveries to one node (on the room's slot)."""
        return f"{self.prefix}:{{{key}}}:bus:{node_id}"

    def node_channel(self, node_id: str) -> str:
        """On one Redis: the channel of deliveries addressed to one node."""
        return f"{self.prefix}:node:{node_id}:bus"

    def node_key(self, node_id: str) -> str:
        return f"{self.prefix}:{LIVENESS_TAG}:node:{node_id}"

    def node_rooms(self, node_id: str) -> str:
        return f"{self.prefix}:{LIVENESS_TAG}:rooms:{node_id}"

    def sweep_claim(self, node_id: str) -> str:
        return f"{self.prefix}:{LIVENESS_TAG}:sweep:{node_id}"

    @property
    def rooms_index(self) -> str:
        return f"{self.prefix}:rooms"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:{LIVENESS_TAG}:all"

    @property
    def room_hash_pattern(self) -> str:
        """``SCAN MATCH`` of every room hash (the prefix holds no glob character)."""
        return f"{self.prefix}:{{*}}:room"

    def room_of_hash(self, name: str) -> str:
        """The room key of a ``room_hash`` name."""
        return name[len(self.prefix) + 2 : -len("}:room")]
