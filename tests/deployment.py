"""The room behaviour tests on one node and on two nodes sharing Redis (SPEC §7).

A test written against a ``Deployment`` runs unchanged on both (the ``deploy`` fixture
of tests/conftest.py is parametrised ``one_node`` and ``two_nodes``): it joins members
with ``join_room(nodes, token)`` (``meeting``, ``join_admitted``, ``room_url`` alike)
and calls the HTTP API with ``http_call(nodes, ...)``, where ``nodes`` is the
deployment instead of a node. On two nodes:

- **Members alternate between the nodes.** The n-th user (the token's ``sub``) to
  connect goes to node n mod 2 (alice on A, bob on B, carol on A, ...), and each later
  connection of a user goes to the node after the one it used last: a member that
  reconnects, takes its session over or knocks again does so through the other node.
- **HTTP requests alternate too**: each reading of ``nodes.url`` is the next node's.
- **``Client.drain`` waits for both nodes.** A ping is answered by the client's own
  node, which may not have carried out yet what the other node published; so after the
  pong every node puts a barrier frame on the client's socket through Redis
  (``send_barrier``), and ``drain`` reads until all of them are in: whatever any node
  published before is then in too (one subscriber connection per node, read in order).

A test that finds a real difference of the many-node runtime is marked
``@pytest.mark.xfail_on_two_nodes(reason)`` (tests/conftest.py): a strict xfail on two
nodes only, until the runtime is fixed.

The few places where a test looks inside the server are here, in functions that work
on both deployments (``send_barrier``, ``current_room``, ``room_gone``, ``connected``),
so that a change of the server's insides is adapted in one place.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt

if TYPE_CHECKING:
    from callroom.room.model import Room
    from callroom.server.node import Node

KEY = "zoom:room-1"

# The frame of a barrier: never a SPEC §3.1 event, never seen by a test (``drain``
# consumes it).
BARRIER_EVENT = "test_barrier"

# Puts one barrier frame per node on a member's socket, behind everything the nodes sent
# it so far; the frames' tokens.
Barrier = Callable[[], Awaitable[Collection[str]]]


@dataclass
class Deployment:
    """The nodes of one test, and which of them each member's connection goes to."""

    nodes: list[Node]
    placed: dict[str, int] = field(default_factory=dict)  # user → node index, last used
    requests: int = 0

    @property
    def many(self) -> bool:
        return len(self.nodes) > 1

    def node_for(self, token: str) -> Node:
        """The node of the token's user's next connection (module docstring)."""
        user = _user(token)
        last = self.placed.get(user)
        index = len(self.placed) if last is None else last + 1
        self.placed[user] = index % len(self.nodes)
        return self.nodes[self.placed[user]]

    def node_of(self, user: str) -> Node:
        """The node of ``user``'s latest connection."""
        return self.nodes[self.placed[user]]

    @property
    def url(self) -> str:
        """The HTTP base URL of the next node in turn."""
        self.requests += 1
        return self.nodes[(self.requests - 1) % len(self.nodes)].url

    def barrier_for(self, node: Node, key: str, client_id: str) -> Barrier | None:
        """On many nodes: one barrier frame from every running node to ``client_id``'s
        socket on ``node``."""
        if not self.many:
            return None

        async def barrier() -> Collection[str]:
            senders = [sender for sender in self.nodes if not sender.stopped.is_set()]
            return [send_barrier(sender, node, key, client_id) for sender in senders]

        return barrier


def _user(token: str) -> str:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return str(claims.get("sub", token))


DeployFactory = Callable[..., Awaitable[Deployment]]


# -- looking inside (module docstring) ---------------------------------------------


def send_barrier(via: Node, node: Node, key: str, client_id: str) -> str:
    """Have ``via`` publish, behind every room message it published so far, a frame for
    ``client_id``'s socket on ``node``; the frame's token.

    It goes the way a signal does (a delivery to ``node`` on the room bus, in the order
    ``via`` published: the ``RoomBus`` contract), so ``node`` passes it on after
    everything published before it."""
    from callroom.room.keys import RoomKey
    from callroom.runtime.messages import Delivery

    token = uuid.uuid4().hex
    frame = json.dumps({"event": BARRIER_EVENT, "payload": {"token": token}}).encode()
    via.hub.bus.publish_to_node(node.hub.node_id, RoomKey(key), Delivery((client_id,), frame))
    return token


def _nodes(target: Deployment | Node) -> list[Node]:
    return target.nodes if isinstance(target, Deployment) else [target]


async def find_room(target: Deployment | Node, key: str = KEY) -> Room | None:
    """The room as the deployment holds it now (on many nodes: its record in Redis)."""
    from callroom.room.keys import RoomKey

    return await _nodes(target)[0].hub.find_room(RoomKey(key))


async def current_room(target: Deployment | Node, key: str = KEY) -> Room:
    """The room as the deployment holds it now; it must be open."""
    room = await find_room(target, key)
    assert room is not None, f"room {key} is not open"
    return room


async def room_gone(target: Deployment | Node, key: str = KEY) -> bool:
    """Whether no node finds the room any more (it was closed)."""
    for node in _nodes(target):
        if await find_room(node, key) is not None:
            return False
    return True


async def connected(target: Deployment | Node, client_id: str, key: str = KEY) -> bool:
    """Whether the room counts ``client_id`` as connected (SPEC §2: not in its grace)."""
    room = await find_room(target, key)
    member = None if room is None else room.members.get(client_id)
    return member is not None and member.connected


async def dropped(target: Deployment | Node, client_id: str, key: str = KEY) -> bool:
    """Whether the room does not count ``client_id`` as connected (in its grace, or gone)."""
    return not await connected(target, client_id, key)
