"""The names of callroom's keys and channels in Redis (SPEC §7, §9).

Every name starts with ``REDIS_PREFIX`` (``P`` here; deployments sharing one Redis must
not see each other, and pub/sub ignores database numbers). Every key of one room carries
the room's hash tag (``{kind:roomId}``), so a room's keys share a Redis Cluster slot:

- ``P:{k}:room``: a hash with the record's version ``v``, the record ``s`` and, after a
  write-back, the version it was restored from ``r``; ``P:{k}:bus``: its channel;
- ``P:rooms``: the open rooms (the admin API); ``P:nodes``: node ids;
- ``P:node:<id>``: a node's liveness, with a time to live; ``P:node:<id>:rooms``: rooms
  where a node holds sessions or grace timers (for the sweep after it dies);
  ``P:node:<id>:bus``: deliveries to one node; ``P:sweep:<id>``: the claim on a dead
  node's sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "callroom"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = PREFIX

    def room_hash(self, key: str) -> str:
        return f"{self.prefix}:{{{key}}}:room"

    def room_channel(self, key: str) -> str:
        return f"{self.prefix}:{{{key}}}:bus"

    def node_channel(self, node_id: str) -> str:
        """The channel of deliveries addressed to one node (signaling: one recipient)."""
        return f"{self.prefix}:node:{node_id}:bus"

    def node_key(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    def node_rooms(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}:rooms"

    def sweep_claim(self, node_id: str) -> str:
        return f"{self.prefix}:sweep:{node_id}"

    @property
    def rooms_index(self) -> str:
        return f"{self.prefix}:rooms"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"
