"""Many nodes over real Redis (SPEC §7): what only a deployment of many nodes has.

The room behaviour itself (lobby, chat, signaling, host controls, sessions, limits, the
REST API) is tested on one node and on two nodes sharing Redis by the same tests, with
members alternating between the nodes (tests/deployment.py, the ``deploy`` fixture).
This file keeps what one node cannot show: a member moving between nodes in the middle
of something, the order of a member's frames across nodes, what a node holds of a room
and lets go of, nodes that stop or die (sweep, takeover of graces), Redis unreachable or
cut off, races between nodes, and the keys in Redis.

Across nodes ``drain`` is not a barrier here (these tests use plain nodes, not a
deployment): a ping is answered by the client's own node, which may not have heard yet
what another node published. ``heard`` is: another member signals the client (a
delivery published to the client's node), and a node's subscriber connection delivers
in publish order, so once that signal is in, everything published before it has been
passed on by the client's node. No test sleeps to let something happen; where time
itself is the subject (a grace, a node's death) the test waits for the server state
that ends it and checks the time it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest

from callroom_testing import (
    Client,
    TokenFactory,
    events,
    http_call,
    ids,
    join_admitted,
    join_room,
    refused,
    room_url,
    wait_until,
)

KEY = "zoom:room-1"
BOB = {"clientId": "bob", "displayName": "Bob"}
ALICE = {"clientId": "alice", "displayName": "Alice"}
CAROL = {"clientId": "carol", "displayName": "Carol"}


# -- helpers --------------------------------------------------------------------------


async def heard(client: Client, client_id: str, via: Client) -> list[dict[str, Any]]:
    """The frames ``client`` (admitted, ``client_id``) got of everything its own frames
    caused and of everything the room's channel carried until now, from every node
    (module docstring).

    First ``drain``: the ping is answered after the client's own frames were handled,
    so whatever they publish is on the channel. Then ``via``, another admitted member,
    signals the client a ``renegotiate`` with a reason of its own, published on the
    room's channel behind all of that; the frames before it are the answer."""
    frames = await client.drain()
    reason = f"barrier {uuid.uuid4().hex}"
    await via.send("renegotiate", {"targetClientId": client_id, "reason": reason})
    while True:
        frame = await client.next()
        if frame["event"] == "renegotiate" and frame["payload"]["reason"] == reason:
            return frames
        frames.append(frame)


# Issue 19: a node killed, on one Redis and on the suite's Redis Cluster.
ON_ONE_REDIS_AND_A_CLUSTER = pytest.mark.parametrize(
    "redis_url", ["redis", "redis_cluster"], indirect=True
)


async def shared_record(node: Any) -> Any:
    """The room's record as it is in Redis (``callroom.room.record.RoomRecord``), or None."""
    _, record = await node.hub.store.load(KEY)
    return record


async def holder(node: Any, client_id: str) -> str | None:
    """The node id holding ``client_id``'s place in Redis (None: no session holds it)."""
    from callroom.room.record import session_node

    shared = await shared_record(node)
    session = None if shared is None else shared.sessions.get(client_id)
    return None if session is None else session_node(session)


def forgot_the_room(node: Any) -> bool:
    """Whether ``node`` holds nothing of the room any more (no replica)."""
    return KEY not in node.hub.rooms


def connected(node: Any, client_id: str) -> bool:
    """Whether ``node``'s replica of the room counts ``client_id`` as connected."""
    room = node.hub.rooms.get(KEY)
    member = room.members.get(client_id) if room is not None else None
    return member is not None and bool(member.connected)


async def two_node_meeting(
    one: Any, two: Any, make_token: TokenFactory
) -> tuple[Client, Client, Client]:
    """alice (host) and carol on node one, bob on node two: all admitted and settled."""
    alice, _ = await join_room(one, make_token("alice", "Alice"))
    bob, _ = await join_admitted(alice, two, make_token("bob", "Bob"))
    carol, _ = await join_admitted(alice, one, make_token("carol", "Carol"))
    await heard(alice, "alice", via=bob)
    await heard(bob, "bob", via=carol)
    await heard(carol, "carol", via=alice)
    return alice, bob, carol


async def call(node: Any, method: str, path: str, token: str | None = None) -> tuple[int, Any]:
    """One HTTP request to ``node``; (status, JSON body or text)."""
    status, body, _ = await http_call(node, method, path, token)
    return status, body


async def vanish(node: Any) -> None:
    """Make ``node`` die without a goodbye, as a killed process does (SPEC §7).

    A killed process stops refreshing its liveness key, stops hearing and writing Redis,
    and its members' sockets break; it runs nothing more. In this process that is: its
    liveness task ended, its Redis link closed WITHOUT ``goodbye`` (so its liveness key
    is left to expire on its own, after at most one ``HEARTBEAT_INTERVAL_SECONDS``), its
    own heartbeat and grace timers stopped, and every socket aborted (the clients see
    no close frame) with the connection first marked detached, so that the end of the
    socket runs nothing of the room on this node: whatever happens to its members next
    is done by the nodes that live. (A real ``kill -9`` of a child process would be
    more literal, but a node's process takes ~4 s to import and start here.)
    """
    from callroom.runtime.tasks import finish

    hub = node.hub
    assert hub.liveness._task is not None
    await finish(hub.liveness._task)  # a bare cancel() may be swallowed (finish says why)
    await hub.bus.close()
    await hub.store.close()
    node._heartbeat.stop()
    hub.graces.cancel_all()  # its grace timers die with it
    for conn in list(hub.connections):
        conn.detached = True
        conn.abort(1006)
    await wait_until(lambda: not hub.connections)


class RedisProxy:
    """A TCP relay to the real Redis on a port of its own, that can be cut (every
    connection through it aborted, new ones refused) and restored: a network between
    one node and Redis that fails, the node and Redis both running."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.upstream = 6379

    def url(self, redis_url: str) -> str:
        """``redis_url`` (the tests' database) through this relay."""
        self.upstream = urlsplit(redis_url).port or 6379
        return redis_url.replace(f":{self.upstream}/", f":{self.port}/")

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # no new connections
        for writer in list(self._writers):
            writer.transport.abort()  # each relay then ends on its own
        self._writers.clear()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            # Since Python 3.12.1 this waits for the server's connections to end, so
            # only after they were aborted (before, it returned at once).
            await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._tasks.discard(task)
            self._writers -= {writer, up_writer}


# -- a member's frames across nodes, a member moving between nodes (SPEC §3.2) ----------


async def test_signal_right_after_admitting_reaches_the_newcomer(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """A member's frames are handled in order (SPEC §3.2): a host on node one that
    admits a stranger on node two and signals it and chats in the next frames reaches
    it, though the admission is a transition in Redis and the signal and the chat's
    recipients are checked against node one's replica of the room."""
    one, two = await start_cluster()
    alice, _ = await join_room(one, make_token("alice", "Alice"))
    for attempt in range(5):
        sub = f"guest{attempt}"
        guest, _ = await join_room(two, make_token(sub))
        await alice.expect("waiting_request")
        await alice.expect("room_state")
        alice.send_burst(
            json.dumps({"event": "accept_waiting", "payload": {"clientId": sub}}),
            json.dumps({"event": "renegotiate", "payload": {"targetClientId": sub}}),
            json.dumps({"event": "add_chat", "payload": {"chatContent": f"hi {sub}"}}),
        )
        assert events(await heard(guest, sub, via=alice))[-4:] == [
            "accept_waiting",
            "room_state",
            "renegotiate",
            "add_chat",
        ]
        assert "error" not in events(await heard(alice, "alice", via=guest))
        await guest.close()
        assert (await alice.expect("disconnect"))["clientId"] == sub


async def test_chat_retry_after_moving_to_another_node_is_answered_to_the_sender_only(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """SPEC §3.1 safe retry, without sticky sessions: bob's connection breaks after it
    sent a chat, it reconnects through another node and sends the same chatId again."""
    one, two = await start_cluster(RECONNECT_GRACE_SECONDS=30)
    alice, bob, carol = await two_node_meeting(one, two, make_token)
    await bob.send("add_chat", {"chatContent": "sent once", "chatId": "retry-1"})
    stored = await alice.expect("add_chat")
    assert stored["chatId"] == "retry-1"
    await carol.expect("add_chat")

    bob.ws.transport.abort()
    await wait_until(lambda: not connected(one, "bob"))
    bob2, state = await join_room(one, make_token("bob", "Bob"))
    assert state["role"] == "participant"
    await bob2.send("add_chat", {"chatContent": "sent once", "chatId": "retry-1"})
    assert await bob2.expect("add_chat") == stored  # the stored one, timestamp included
    assert "add_chat" not in events(await heard(alice, "alice", via=carol))
    assert "add_chat" not in events(await heard(carol, "carol", via=alice))
    await bob2.send("get_recent_chats")
    assert (await bob2.expect("get_recent_chats"))["total"] == 1


async def test_a_members_frames_reach_another_node_in_their_order(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """SPEC §3.2 order: bob's chat messages go through the store and a delivery, its
    hands through transitions in Redis; alice on the other node sees them as sent."""
    one, two = await start_cluster()
    alice, bob, carol = await two_node_meeting(one, two, make_token)

    def frame(event: str, payload: dict[str, Any] | None = None) -> str:
        return json.dumps({"event": event, "payload": payload or {}})

    burst = [
        frame("add_chat", {"chatContent": "one"}),
        frame("raise_hand"),
        frame("add_chat", {"chatContent": "two"}),
        frame("renegotiate", {"targetClientId": "alice", "reason": "three"}),
        frame("lower_hand"),
        frame("add_chat", {"chatContent": "four"}),
        frame("add_chat", {"chatContent": "five"}),
        frame("raise_hand"),
    ]
    for _ in range(3):
        bob.send_burst(*burst)
        got: list[dict[str, Any]] = []
        while len(got) < len(burst):
            got.append(await alice.next())
        assert [(f["event"], f["payload"].get("chatContent")) for f in got] == [
            ("add_chat", "one"),
            ("raise_hand", None),
            ("add_chat", "two"),
            ("renegotiate", None),
            ("lower_hand", None),
            ("add_chat", "four"),
            ("add_chat", "five"),
            ("raise_hand", None),
        ]
        bob.send_burst(frame("lower_hand"))
        await alice.expect("lower_hand")
        await heard(bob, "bob", via=alice)  # the others read theirs too: a client
        await heard(carol, "carol", via=alice)  # that reads nothing stops its socket


# -- what a node holds of a room ---------------------------------------------------------


async def test_a_node_holding_nothing_of_the_room_answers_joins_from_its_record(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """The check before the upgrade (SPEC §2) on a node with no replica of the room reads
    the room's record in Redis: its size, a ban and a lock made on node one hold on node
    two, which never held any of it."""
    one, two = await start_cluster(MAX_ROOM_SIZE=2)
    alice, _ = await join_room(one, make_token("alice", "Alice"))
    bob, _ = await join_admitted(alice, one, make_token("bob", "Bob"))
    assert forgot_the_room(two)
    status, body = await refused(room_url(two, make_token("mallory")))
    assert (status, body["error"]) == (409, "room_full")

    await alice.send("kick_participant", {"clientId": "bob", "ban": True})
    assert await bob.closed_with() == 4004
    await alice.send("lock_room")
    assert await alice.expect("room_locked") == {}
    assert forgot_the_room(two)
    for token in (make_token("bob"), make_token("bob", roles=["admin"])):
        status, body = await refused(room_url(two, token))
        assert (status, body["error"]) == (403, "banned")
    status, body = await refused(room_url(two, make_token("mallory")))
    assert (status, body["error"]) == (403, "room_locked")
    # Positive control: a token host is let in, on the record's terms.
    hank, state = await join_room(two, make_token("hank", "Hank", roles=["host"]))
    assert (state["role"], state["locked"]) == ("host", True)
    assert ids(state["hosts"]) == ["alice", "hank"]
    await hank.close()


async def test_a_node_lets_go_of_a_room_once_none_of_its_members_is_left(
    start_cluster: Any, make_token: TokenFactory, redis_url: str
) -> None:
    """Node two stops hearing the room (no replica, no subscription) as soon as its last
    member of it is gone, whichever way: denied, left, kicked, or its session taken over
    through node one. The room lives on at node one."""
    from redis.asyncio import Redis

    from callroom.runtime.redis_keys import RedisKeys

    channel = RedisKeys().room_channel(KEY)
    one, two = await start_cluster(RECONNECT_GRACE_SECONDS=30)
    alice, _ = await join_room(one, make_token("alice", "Alice"))
    redis = Redis.from_url(redis_url)

    async def node_two_let_go() -> bool:
        subscribers = (await redis.pubsub_numsub(channel))[0][1]
        return forgot_the_room(two) and subscribers == 1  # node one's

    try:
        bob, _ = await join_room(two, make_token("bob", "Bob"))
        await alice.expect("waiting_request")
        await alice.send("deny_waiting", {"clientId": "bob"})
        assert await bob.closed_with() == 4003
        await wait_until(node_two_let_go)

        bob, _ = await join_admitted(alice, two, make_token("bob", "Bob"))
        await bob.close()
        assert await alice.expect("disconnect") == BOB
        await wait_until(node_two_let_go)

        carol, _ = await join_admitted(alice, two, make_token("carol", "Carol"))
        await alice.send("kick_participant", {"clientId": "carol"})
        assert await carol.closed_with() == 4004
        await wait_until(node_two_let_go)

        dave, _ = await join_admitted(alice, two, make_token("dave", "Dave"))
        dave2, state = await join_room(one, make_token("dave", "Dave"))
        assert state["role"] == "participant"
        assert await dave.closed_with() == 4009
        await wait_until(node_two_let_go)
    finally:
        await redis.aclose()
    assert not forgot_the_room(one)
    await alice.send("renegotiate", {"targetClientId": "dave"})  # node one serves on
    assert (await dave2.expect("renegotiate"))["clientId"] == "alice"


# -- nodes that stop or die (SPEC §7, §8) -------------------------------------------------


@ON_ONE_REDIS_AND_A_CLUSTER
async def test_members_of_a_node_that_dies_are_dropped_then_removed_after_the_grace(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """Node two dies without a goodbye (``vanish``): within 2 x HEARTBEAT_INTERVAL_SECONDS
    node one sweeps it, bob's place is kept for the grace (nobody sees anything), then
    node one, which took the grace over, removes bob and the others get ``disconnect``."""
    interval, grace = 0.6, 0.8
    one, two = await start_cluster(
        HEARTBEAT_INTERVAL_SECONDS=interval, RECONNECT_GRACE_SECONDS=grace
    )
    alice, _bob, carol = await two_node_meeting(one, two, make_token)
    _wendy, _ = await join_room(two, make_token("wendy", "Wendy"))  # waiting, on node two
    await alice.expect("waiting_request")
    await alice.expect("room_state")

    await vanish(two)
    died_at = time.monotonic()
    await wait_until(lambda: not connected(one, "bob"), timeout=4 * interval)
    assert time.monotonic() - died_at <= 2 * interval
    swept_at = time.monotonic()
    record = await shared_record(one)
    assert record.graces["bob"][0] == one.hub.node_id  # node one took it over
    assert "wendy" not in record.room.members  # a waiting member goes at once
    assert record.room.members["bob"].role == "participant"  # an admitted one is kept
    frames = await heard(alice, "alice", via=carol)
    assert "disconnect" not in events(frames)
    states = [f["payload"] for f in frames if f["event"] == "room_state"]
    assert states  # the host saw the lobby change
    assert states[-1]["waitingUsers"] == []

    assert await alice.expect("disconnect", timeout=grace + 3) == BOB
    assert time.monotonic() - swept_at >= grace - 0.2
    assert await carol.expect("disconnect") == BOB
    assert set((await shared_record(one)).room.members) == {"alice", "carol"}


@ON_ONE_REDIS_AND_A_CLUSTER
async def test_member_of_a_dead_node_reconnects_to_another_within_the_grace(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    interval, grace = 0.6, 0.8
    one, two = await start_cluster(
        HEARTBEAT_INTERVAL_SECONDS=interval, RECONNECT_GRACE_SECONDS=grace
    )
    alice, bob, carol = await two_node_meeting(one, two, make_token)
    await alice.send("promote_host", {"clientId": "bob"})
    for member in (alice, bob, carol):
        await member.expect("room_state")

    await vanish(two)
    await wait_until(lambda: not connected(one, "bob"), timeout=4 * interval)
    bob2, state = await join_room(one, make_token("bob", "Bob"))
    assert state["role"] == "host"
    # The grace node one took over runs out and finds bob back: nobody saw it go.
    await wait_until(lambda: not one.hub.graces.timed, timeout=grace + 3)
    assert await heard(alice, "alice", via=carol) == []
    assert await heard(carol, "carol", via=alice) == []
    await bob2.send("lock_room")
    assert await carol.expect("room_locked") == {}


@ON_ONE_REDIS_AND_A_CLUSTER
async def test_grace_of_a_node_that_dies_is_taken_over(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """bob drops on node two, whose timer would remove it; node two dies before that.
    Without the sweep taking its grace timers over, bob would stay forever."""
    interval, grace = 0.6, 0.8
    one, two = await start_cluster(
        HEARTBEAT_INTERVAL_SECONDS=interval, RECONNECT_GRACE_SECONDS=grace
    )
    alice, bob, carol = await two_node_meeting(one, two, make_token)
    bob.ws.transport.abort()
    dropped_at = time.monotonic()
    await wait_until(lambda: not connected(one, "bob"))
    assert (await shared_record(one)).graces["bob"][0] == two.hub.node_id
    await vanish(two)
    assert await alice.expect("disconnect", timeout=grace + 4 * interval) == BOB
    assert time.monotonic() - dropped_at >= grace - 0.05
    assert await carol.expect("disconnect") == BOB
    record = await shared_record(one)
    assert "bob" not in record.room.members
    assert record.graces == {}


async def test_node_that_stops_hands_its_members_over_to_the_others(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """SPEC §8 and §7: a node stopped cleanly (the SIGTERM path) closes its members with
    1001 and says goodbye; node one sweeps it at once, keeps the places of its members
    for the grace (dave comes back through node one, bob does not), takes over the grace
    node two was timing (erin dropped before the stop), then removes bob and erin."""
    interval, grace = 0.6, 0.8
    one, two = await start_cluster(
        HEARTBEAT_INTERVAL_SECONDS=interval, RECONNECT_GRACE_SECONDS=grace
    )
    alice, bob, carol = await two_node_meeting(one, two, make_token)
    dave, _ = await join_admitted(alice, two, make_token("dave", "Dave"))
    erin, _ = await join_admitted(alice, two, make_token("erin", "Erin"))
    await heard(carol, "carol", via=alice)
    erin.ws.transport.abort()
    await wait_until(lambda: not connected(one, "erin"))
    assert (await shared_record(one)).graces["erin"][0] == two.hub.node_id

    await two.stop()
    assert await bob.closed_with() == 1001
    assert await dave.closed_with() == 1001
    await wait_until(lambda: not connected(one, "bob"), timeout=2 * interval)
    swept_at = time.monotonic()
    graces = (await shared_record(one)).graces
    assert {cid: owner for cid, (owner, _) in graces.items()} == {
        "bob": one.hub.node_id,
        "dave": one.hub.node_id,
        "erin": one.hub.node_id,
    }
    assert await heard(alice, "alice", via=carol) == []
    dave2, state = await join_room(one, make_token("dave", "Dave"))
    assert state["role"] == "participant"

    gone = {(await alice.expect("disconnect", timeout=grace + 3))["clientId"] for _ in range(2)}
    assert gone == {"bob", "erin"}
    assert time.monotonic() - swept_at >= grace - 0.2
    members = (await shared_record(one)).room.members
    assert set(members) == {"alice", "carol", "dave"}
    assert "disconnect" not in events(await heard(alice, "alice", via=dave2))
    await dave2.close()


async def test_a_node_holding_nothing_of_the_room_may_sweep_it(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """Node three wins the sweep of node two (node one is made to lose every claim):
    it drops bob, times bob's grace without being in the room, and removes bob; the
    room's members on node one hear it."""
    interval, grace = 0.6, 0.6
    one, two, three = await start_cluster(
        3, HEARTBEAT_INTERVAL_SECONDS=interval, RECONNECT_GRACE_SECONDS=grace
    )

    async def lose(dead: str, ttl_seconds: float) -> bool:
        return False

    one.hub.liveness.claim = lose
    alice, _bob, carol = await two_node_meeting(one, two, make_token)
    await vanish(two)
    await wait_until(lambda: not connected(one, "bob"), timeout=4 * interval)
    assert (await shared_record(one)).graces["bob"][0] == three.hub.node_id
    assert KEY not in three.hub.rooms  # not a member: no replica, no subscription
    assert await alice.expect("disconnect", timeout=grace + 3) == BOB
    assert await carol.expect("disconnect") == BOB
    await wait_until(lambda: not three.hub.graces.timed)
    assert "bob" not in (await shared_record(one)).room.members


async def test_room_whose_members_were_all_on_a_dead_node_is_closed_after_the_grace(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """No phantom rooms: every member of the room was on node two, which dies; node one,
    never in the room, sweeps it, and once the grace is over the room is closed."""
    interval, grace = 0.6, 0.5
    one, two = await start_cluster(
        HEARTBEAT_INTERVAL_SECONDS=interval, RECONNECT_GRACE_SECONDS=grace
    )
    alice, _ = await join_room(two, make_token("alice", "Alice"))
    _bob, _ = await join_admitted(alice, two, make_token("bob", "Bob"))
    assert [room.room_id for room in await one.hub.all_rooms()] == ["room-1"]
    await vanish(two)

    async def closed() -> bool:
        return await one.hub.all_rooms() == [] and await shared_record(one) is None

    await wait_until(closed, timeout=2 * interval + grace + 3)
    assert not one.hub.graces.timed
    assert KEY not in one.hub.rooms


async def test_member_of_a_dying_node_that_reconnected_before_the_sweep_is_left_alone(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """bob's socket on node two breaks as node two dies, and bob is back through node one
    before node two's death is noticed: the sweep finds bob's place held by node one and
    leaves it; nobody ever sees bob go."""
    from redis.asyncio import Redis

    from callroom.runtime.redis_keys import RedisKeys

    NODES = RedisKeys().nodes

    interval = 0.6
    one, two = await start_cluster(HEARTBEAT_INTERVAL_SECONDS=interval, RECONNECT_GRACE_SECONDS=0.3)
    alice, _bob, carol = await two_node_meeting(one, two, make_token)
    await vanish(two)
    bob2, state = await join_room(one, make_token("bob", "Bob"))  # takeover of a dead session
    assert state["role"] == "participant"
    assert await holder(one, "bob") == one.hub.node_id
    redis = Redis.from_url(one.settings.REDIS_URL)
    try:

        async def swept() -> bool:
            return two.hub.node_id.encode() not in await redis.smembers(NODES)

        await wait_until(swept, timeout=4 * interval)
    finally:
        await redis.aclose()
    assert connected(one, "bob")
    assert (await shared_record(one)).graces == {}
    assert await heard(alice, "alice", via=carol) == []
    assert await heard(carol, "carol", via=bob2) == []


# -- readiness (SPEC §6) ------------------------------------------------------------------


async def test_readyz_names_the_bus_while_redis_is_unreachable(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """SPEC §6: a dependency down at start does not stop the node: it serves /healthz,
    names the part in /readyz, and refuses joins with 503 unavailable (nothing to do
    without the room state)."""
    (node,) = await start_cluster(1, REDIS_URL="redis://127.0.0.1:1/0")
    status, body = await call(node, "GET", "/healthz")
    assert (status, body) == (200, {"status": "ok"})
    status, body = await call(node, "GET", "/readyz")
    assert status == 503
    assert body["failing"] == ["bus"]
    status, body = await refused(room_url(node, make_token("alice")))
    assert (status, body["error"]) == (503, "unavailable")
    status, body = await call(node, "GET", "/api/v1/rooms", make_token("root", roles=["admin"]))
    assert (status, body["error"]) == (503, "unavailable")


async def test_readyz_is_ready_with_redis(start_cluster: Any, redis_url: str) -> None:
    """The positive control of the test above: the same node, Redis up, and really on
    it (its liveness key is in Redis: a node ignoring REDIS_URL would be ready too)."""
    from redis.asyncio import Redis

    from callroom.runtime.redis_keys import RedisKeys

    node_key = RedisKeys().node_key

    (node,) = await start_cluster(1)

    async def ready() -> bool:
        return (await call(node, "GET", "/readyz"))[0] == 200

    await wait_until(ready)
    assert (await call(node, "GET", "/readyz"))[1] == {"status": "ready"}
    redis = Redis.from_url(redis_url)
    try:
        await wait_until(lambda: redis.exists(node_key(node.hub.node_id)))
    finally:
        await redis.aclose()


# -- races, clean-up, the subscriber ----------------------------------------------------


async def test_concurrent_joins_on_two_nodes_make_one_host(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """Joins of an empty room race on both nodes (compare-and-set conflicts in Redis):
    exactly one member is host, every other one waits."""
    one, two = await start_cluster()
    subs = [f"user{i}" for i in range(6)]
    joined = await asyncio.gather(
        *(join_room((one, two)[i % 2], make_token(sub)) for i, sub in enumerate(subs))
    )
    roles = {state["clientId"]: state["role"] for _, state in joined}
    assert sorted(roles.values()) == ["host"] + ["waiting"] * 5
    room = (await shared_record(one)).room
    assert {cid: str(m.role) for cid, m in room.members.items()} == roles
    for client, _ in joined:
        await client.close()


async def test_same_user_joining_on_both_nodes_at_once_keeps_one_session(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    one, two = await start_cluster()
    alice, _ = await join_room(one, make_token("alice", "Alice"))
    bob, _ = await join_admitted(alice, one, make_token("bob", "Bob"))
    bob.ws.transport.abort()
    await wait_until(lambda: not connected(one, "bob"))
    (a, state_a), (b, state_b) = await asyncio.gather(
        join_room(one, make_token("bob", "Bob")), join_room(two, make_token("bob", "Bob"))
    )
    assert state_a["role"] == state_b["role"] == "participant"
    done, _ = await asyncio.wait(
        [asyncio.ensure_future(a.closed_with()), asyncio.ensure_future(b.closed_with())],
        return_when=asyncio.FIRST_COMPLETED,
    )
    assert [task.result() for task in done] == [4009]
    survivor, node = (b, two) if a.ws.close_code == 4009 else (a, one)
    assert await holder(one, "bob") == node.hub.node_id
    await alice.send("renegotiate", {"targetClientId": "bob"})
    assert (await survivor.expect("renegotiate"))["clientId"] == "alice"
    assert await heard(alice, "alice", via=survivor) == []  # no connect, no disconnect
    await survivor.close()


async def test_room_full_is_decided_in_redis_when_joins_race_on_two_nodes(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """MAX_ROOM_SIZE=2 and one member: two strangers join at once through both nodes.
    Both pass the check before the upgrade (each node saw one member); the transitions
    in Redis let exactly one in, the other is refused 409 and leaves nothing behind."""
    from websockets.exceptions import InvalidStatus

    one, two = await start_cluster(MAX_ROOM_SIZE=2)
    alice, _ = await join_room(one, make_token("alice", "Alice"))
    await wait_until(lambda: KEY in one.hub.rooms)
    for attempt in range(3):
        results = await asyncio.gather(
            join_room(one, make_token(f"x{attempt}")),
            join_room(two, make_token(f"y{attempt}")),
            return_exceptions=True,
        )
        joined = [r for r in results if not isinstance(r, BaseException)]
        refusals = [r for r in results if isinstance(r, BaseException)]
        assert len(joined) == 1, results
        (error,) = refusals
        assert isinstance(error, InvalidStatus)
        assert error.response.status_code == 409
        assert json.loads(error.response.body or b"{}")["error"] == "room_full"
        assert len((await shared_record(one)).room.members) == 2
        client, _ = joined[0]
        await client.close()
        await heard_host_lobby(alice, [])  # the one let in knocked, then left
        for node in (one, two):
            assert not node.hub.pending_joins


async def heard_host_lobby(host: Client, waiting: list[str]) -> None:
    """Read the host's frames until a room_state whose waiting room is ``waiting``."""
    while True:
        frame = await host.next()
        if frame["event"] == "room_state" and ids(frame["payload"]["waitingUsers"]) == waiting:
            return


async def test_last_member_leaving_closes_the_room_everywhere(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """The room's record, its index entry, the nodes' replicas, their subscriptions and
    their room lists are gone once the last member left (the chat history stays)."""
    from redis.asyncio import Redis

    from callroom.runtime.redis_keys import RedisKeys

    keys = RedisKeys()
    ROOMS_INDEX, node_rooms_key, room_channel = keys.rooms_index, keys.node_rooms, keys.room_channel

    one, two = await start_cluster()
    alice, bob, carol = await two_node_meeting(one, two, make_token)
    await bob.send("add_chat", {"chatContent": "kept"})
    await carol.expect("add_chat")
    redis = Redis.from_url(one.settings.REDIS_URL)
    try:
        channel = room_channel(KEY)
        assert (await redis.pubsub_numsub(channel))[0][1] == 2
        assert await redis.smembers(node_rooms_key(two.hub.node_id)) == {KEY.encode()}
        for client in (bob, alice, carol):
            await client.close()

        async def closed() -> bool:
            return await shared_record(one) is None

        await wait_until(closed)
        await wait_until(lambda: KEY not in one.hub.rooms and KEY not in two.hub.rooms)
        assert await redis.smembers(ROOMS_INDEX) == set()

        async def released() -> bool:
            numsub = (await redis.pubsub_numsub(channel))[0][1]
            held = [await redis.scard(node_rooms_key(n.hub.node_id)) for n in (one, two)]
            return numsub == 0 and held == [0, 0]

        await wait_until(released)
    finally:
        await redis.aclose()
    # The chat stays: a new room of that name lists it.
    alice2, state = await join_room(two, make_token("alice", "Alice"))
    assert state["role"] == "host"
    await alice2.send("get_recent_chats")
    assert [m["chatContent"] for m in (await alice2.expect("get_recent_chats"))["messages"]] == [
        "kept"
    ]
    await alice2.close()


async def test_grace_taken_over_after_a_reconnect_elsewhere_keeps_its_own_end(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """carol drops on node one (node one's timer set for t0 + grace), comes back through
    node two, drops there (node two's grace: t1 + grace), and node two dies. Node one
    takes the grace over: carol must stay until t1 + grace, not go at node one's
    earlier, stale t0 + grace (node one let go of that timer when carol came back)."""
    interval, grace = 0.45, 1.1
    one, two = await start_cluster(
        HEARTBEAT_INTERVAL_SECONDS=interval, RECONNECT_GRACE_SECONDS=grace
    )
    alice, bob, carol = await two_node_meeting(one, two, make_token)
    await bob.close()  # bob leaves: only carol's grace is at stake
    assert await alice.expect("disconnect") == BOB
    carol.ws.transport.abort()
    await wait_until(lambda: not connected(one, "carol"))
    t0 = time.monotonic()
    carol2, state = await join_room(two, make_token("carol", "Carol"))
    assert state["role"] == "participant"
    await wait_until(lambda: time.monotonic() > t0 + 0.3)  # the two drops apart
    carol2.ws.transport.abort()
    await wait_until(lambda: not connected(one, "carol"))
    t1 = time.monotonic()
    assert one.hub.replicas.record(KEY).graces["carol"][0] == two.hub.node_id
    await vanish(two)

    def taken_over() -> bool:
        grace_of_carol = one.hub.replicas.record(KEY).graces.get("carol")
        return grace_of_carol is not None and grace_of_carol[0] == one.hub.node_id

    await wait_until(taken_over, timeout=4 * interval)
    assert await alice.expect("disconnect", timeout=grace + 3) == CAROL
    assert time.monotonic() - t1 >= grace - 0.1
    assert "carol" not in (await shared_record(one)).room.members


async def test_node_whose_subscriber_was_cut_off_catches_up_from_the_record(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    """Node two's subscriber connection is killed in Redis and kept from coming back
    (the test holds the link's subscriber lock, where a reconnect waits before it
    subscribes again) while node one kicks and bans bob and locks the room: node two
    misses those updates. Once it is subscribed again it reads the record (resync):
    its replica is current, bob's socket, whose place is gone, is closed (1001: go
    and reconnect, where the ban answers), and dave, still there, hears the room."""
    from redis.asyncio import Redis

    one, two = await start_cluster()
    alice, bob, carol = await two_node_meeting(one, two, make_token)
    dave, _ = await join_admitted(alice, two, make_token("dave", "Dave"))
    await heard(bob, "bob", via=alice)
    await heard(carol, "carol", via=alice)

    link = two.hub.bus
    host, port = link._sub._writer.get_extra_info("sockname")[:2]
    redis = Redis.from_url(two.settings.REDIS_URL)
    try:
        async with link._sub_lock:
            assert await redis.client_kill(f"{host}:{port}")
            await wait_until(lambda: not link.up)
            await alice.send("kick_participant", {"clientId": "bob", "ban": True})
            assert await carol.expect("disconnect") == BOB
            await alice.send("lock_room")
            assert await carol.expect("room_locked") == {}
            assert not two.hub.rooms[KEY].locked  # node two heard none of it
            assert "bob" in two.hub.rooms[KEY].members
        await wait_until(lambda: link.up)
    finally:
        await redis.aclose()
    assert await bob.closed_with() == 1001
    await wait_until(lambda: two.hub.rooms[KEY].locked)
    assert "bob" not in two.hub.rooms[KEY].members
    status, body = await refused(room_url(two, make_token("bob")))
    assert (status, body["error"]) == (403, "banned")
    # dave, on node two, is in the room as before: chat and signaling reach it.
    await carol.send("add_chat", {"chatContent": "still here?"})
    assert (await dave.expect("add_chat"))["chatContent"] == "still here?"
    await dave.send("renegotiate", {"targetClientId": "carol"})
    assert (await carol.expect("renegotiate"))["clientId"] == "dave"


async def test_node_started_while_redis_is_unreachable_becomes_ready_when_it_is_back(
    start_cluster: Any, make_token: TokenFactory, redis_url: str
) -> None:
    """SPEC §6: Redis down at start does not stop the node; it is ready within 10 s of
    Redis coming back, and serves rooms with the other nodes."""
    proxy = RedisProxy()
    (one,) = await start_cluster(1, REDIS_URL=proxy.url(redis_url))
    (two,) = await start_cluster(1)
    try:
        status, body = await call(one, "GET", "/readyz")
        assert (status, body["failing"]) == (503, ["bus"])
        await proxy.start()
        back_at = time.monotonic()

        async def ready() -> bool:
            return (await call(one, "GET", "/readyz"))[0] == 200

        await wait_until(ready, timeout=10)
        assert time.monotonic() - back_at < 10
        alice, _ = await join_room(two, make_token("alice", "Alice"))
        bob, _ = await join_admitted(alice, one, make_token("bob", "Bob"))
        await alice.send("add_chat", {"chatContent": "through the relay"})
        assert (await bob.expect("add_chat"))["chatContent"] == "through the relay"
    finally:
        await proxy.cut()


async def test_node_cut_off_from_redis_answers_unavailable_and_recovers(
    start_cluster: Any, make_token: TokenFactory, redis_url: str
) -> None:
    """Node one loses Redis mid-session (node two keeps it): bob's room commands on node
    one are answered ``unavailable`` (nothing was done), /readyz names the bus, joins
    through node one are refused 503; once Redis is back, node one catches up with
    what it missed and serves bob again."""
    proxy = RedisProxy()
    await proxy.start()
    (one,) = await start_cluster(1, REDIS_URL=proxy.url(redis_url))
    (two,) = await start_cluster(1)
    try:
        alice, _ = await join_room(two, make_token("alice", "Alice"))
        bob, _ = await join_admitted(alice, one, make_token("bob", "Bob"))
        carol, _ = await join_admitted(alice, two, make_token("carol", "Carol"))
        await heard(bob, "bob", via=alice)

        await proxy.cut()
        await wait_until(lambda: not one.hub.bus.up)
        await bob.send("raise_hand")
        error = await bob.expect("error")
        assert (error["code"], error["event"]) == ("unavailable", "raise_hand")
        assert (await shared_record(two)).room.hands == []  # nothing was done
        status, body = await call(one, "GET", "/readyz")
        assert (status, body["failing"]) == (503, ["bus"])
        status, body = await refused(room_url(one, make_token("dave")))
        assert (status, body["error"]) == (503, "unavailable")
        await alice.send("lock_room")  # node one misses this one
        assert await carol.expect("room_locked") == {}

        await proxy.start()
        await wait_until(lambda: one.hub.bus.up, timeout=10)
        await wait_until(lambda: one.hub.rooms[KEY].locked)  # caught up from the record
        await bob.send("raise_hand")
        assert await alice.expect("raise_hand") == BOB
        assert await bob.expect("raise_hand") == BOB
    finally:
        await proxy.cut()


async def test_chat_and_signals_on_a_node_cut_off_from_redis_are_answered_unavailable(
    start_cluster: Any, make_token: TokenFactory, redis_url: str
) -> None:
    """SPEC §3.3 ``unavailable``: "nothing was done, retry later". A chat message, a
    deletion or a signal that node one cannot carry to the room (its channel is down)
    is refused as such, not stored or deleted behind the room's back nor dropped in
    silence; retried once Redis is back, it reaches everyone."""
    proxy = RedisProxy()
    await proxy.start()
    (one,) = await start_cluster(1, REDIS_URL=proxy.url(redis_url))
    (two,) = await start_cluster(1)
    try:
        alice, _ = await join_room(two, make_token("alice", "Alice"))
        bob, _ = await join_admitted(alice, one, make_token("bob", "Bob"))
        await bob.send("add_chat", {"chatContent": "before"})
        before = await alice.expect("add_chat")
        await heard(bob, "bob", via=alice)

        await proxy.cut()
        await wait_until(lambda: not one.hub.bus.up)
        await bob.send("add_chat", {"chatContent": "during", "chatId": "during-1"})
        await bob.send("delete_chat", {"chatId": before["chatId"]})
        await bob.send("renegotiate", {"targetClientId": "alice"})
        answers = [f["payload"] for f in await bob.drain()]
        assert [(a.get("code"), a.get("event")) for a in answers] == [
            ("unavailable", "add_chat"),
            ("unavailable", "delete_chat"),
            ("unavailable", "renegotiate"),
        ]
        await alice.send("get_recent_chats")
        assert (await alice.expect("get_recent_chats"))["messages"] == [before]

        await proxy.start()
        await wait_until(lambda: one.hub.bus.up, timeout=10)
        await bob.send("add_chat", {"chatContent": "during", "chatId": "during-1"})
        assert (await alice.expect("add_chat"))["chatId"] == "during-1"
        assert (await bob.expect("add_chat"))["chatId"] == "during-1"
    finally:
        await proxy.cut()


async def test_a_stopping_node_ends_its_liveness_and_says_goodbye_in_time(
    start_cluster: Any, redis_url: str
) -> None:
    """SPEC §8: a node stops within its grace and, first of all here, says goodbye, or
    the others would take it for alive and never hand its members' places over.

    Stopping cancels the node's liveness loop. A cancellation that lands as a Redis
    command completes is swallowed by redis-py's socket timeout on Python 3.11
    (``asyncio.wait_for``), and a loop that goes on after it never ends. The liveness
    loops here run all the time (a 3 ms interval), so that some of the stops land in a
    Redis command."""
    from redis.asyncio import Redis

    from callroom.runtime.redis_keys import RedisKeys

    node_key = RedisKeys().node_key

    nodes = await start_cluster(8, HEARTBEAT_INTERVAL_SECONDS=0.003)
    redis = Redis.from_url(redis_url)
    try:
        for node in nodes:
            started = time.monotonic()
            await node.stop()
            assert time.monotonic() - started < node.settings.SHUTDOWN_GRACE_SECONDS / 2
            assert node.hub.liveness._task.done()
            assert not await redis.exists(node_key(node.hub.node_id))
    finally:
        await redis.aclose()


async def test_every_key_of_a_room_shares_one_hash_tag(
    start_cluster: Any, make_token: TokenFactory, redis_url: str
) -> None:
    """SPEC §7: the design holds on a Redis Cluster: every key and channel of one room
    carries the room's hash tag, so one slot serves all of the room's commands (the Lua
    compare-and-set included)."""
    from redis.asyncio import Redis

    one, two = await start_cluster()
    members = await two_node_meeting(one, two, make_token)
    redis = Redis.from_url(redis_url)
    try:
        keys = [key.decode() for key in await redis.keys("*")]
        channels = [channel.decode() for channel in await redis.pubsub_channels()]
    finally:
        await redis.aclose()
    per_room = [name for name in keys + channels if KEY in name]
    assert per_room  # the record and the channel at least
    assert all(f"{{{KEY}}}" in name for name in per_room), per_room
    assert any(name.endswith(":bus") for name in per_room)
    for member in members:
        await member.close()
