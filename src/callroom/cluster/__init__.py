"""Many nodes over Redis (SPEC §7): shared room state, the bus between nodes, liveness.

- ``wire``: the room record kept in Redis and the messages on a room's channel (pure);
- ``link``: the node's Redis connections (ordered pipelined commands, the subscriber,
  node liveness and the sweep of dead nodes);
- ``callroom.server.cluster_hub``: the hub that runs rooms through them.
"""
