"""A consumer that cannot keep up is closed; memory stays bounded (DESIGN "Backpressure")."""

from __future__ import annotations

from typing import Any

from callroom.server.connection import FLUSH_EARLY_FRAMES
from callroom_testing import TokenFactory, open_client, wait_until


async def test_slow_consumer_is_closed_and_the_sender_goes_on(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node(
        LOBBY_ENABLED=False, RATE_LIMIT_PER_SECOND=100_000, RATE_LIMIT_BURST=100_000
    )
    node.max_buffer = 256 * 1024
    base = f"ws://127.0.0.1:{node.port}/ws/zoom/slow?token="
    alice = await open_client(base + make_token("alice"))
    await alice.expect("room_state")
    # websockets stops reading the socket once 16 frames wait unread: bob never reads,
    # so the kernel buffers fill and the server's write buffer for bob grows.
    bob = await open_client(base + make_token("bob"), max_queue=16)
    bob_conn = node.hub.sessions["zoom:slow"]["bob"]
    assert [f["event"] for f in await alice.drain()] == ["connect", "room_state"]
    candidate = "x" * 4000
    sent = 0
    while not bob_conn.closing and sent < 20_000:
        await alice.send("candidate", {"targetClientId": "bob", "candidate": candidate})
        sent += 1
        if sent % 200 == 0:
            assert await alice.drain() == []  # the sender is never slowed or blocked
    assert bob_conn.closing
    assert bob_conn.on_close_code == 1013
    await wait_until(lambda: node.metrics.slow_consumers._value.get() == 1)
    # What waits for bob is bounded by the limit plus one write of queued frames (at
    # most FLUSH_EARLY_FRAMES), not by what was sent.
    transport = bob_conn._transport
    assert transport is not None
    assert transport.get_write_buffer_size() <= node.max_buffer + FLUSH_EARLY_FRAMES * 4200
    assert sent * 4000 > 4 * node.max_buffer  # the test really pushed past the limit
    await alice.send("ping")
    assert await alice.expect("pong") == {}
    await alice.close()
    bob.ws.transport.abort()
