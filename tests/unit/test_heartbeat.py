"""The node's heartbeat sweep (SPEC §3.4) on real sockets: a socketpair per connection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from callroom.room.model import Identity
from callroom.server.connection import Connection, OutBox
from callroom.server.framing import PING_FRAME, pong_frame
from callroom.server.heartbeat import ABNORMAL_CLOSURE, Heartbeat
from callroom_testing import wait_until


class Peer(asyncio.Protocol):
    """The client's end of a socketpair: what it received, and whether it was cut off."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


@pytest.fixture
async def pair() -> AsyncIterator[Any]:
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []

    async def make(client_id: str, *, upgraded: bool = True) -> tuple[Connection, Peer]:
        server_sock, client_sock = socket.socketpair()
        server_transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, server_sock)
        _, peer = await loop.connect_accepted_socket(Peer, client_sock)
        transports.append(server_transport)
        conn = Connection(
            Identity(client_id, client_id),
            "zoom",
            "room",
            "127.0.0.1",
            max_buffer=1 << 20,
            outbox=OutBox(),
        )
        if upgraded:
            conn.attach(server_transport)
        return conn, peer

    yield make
    for transport in transports:
        transport.close()


async def test_a_sweep_pings_and_the_next_gives_up_on_a_silent_connection(pair: Any) -> None:
    registry = CollectorRegistry()
    timeouts = Counter("closes", "", registry=registry)
    (quiet, quiet_peer), (chatty, chatty_peer) = await pair("quiet"), await pair("chatty")
    heartbeat = Heartbeat({quiet, chatty}, interval=60, timeouts=timeouts)

    heartbeat.beat()
    await wait_until(lambda: bool(quiet_peer.received and chatty_peer.received))
    assert bytes(quiet_peer.received) == bytes(chatty_peer.received) == PING_FRAME
    assert not quiet.alive
    assert not chatty.alive

    chatty.alive = True  # what the receive loop does for any frame, a pong included
    heartbeat.beat()
    await quiet_peer.lost.wait()  # aborted: no close frame, the peer is not reading
    assert (quiet.closing, quiet.on_close_code) == (True, ABNORMAL_CLOSURE)
    assert registry.get_sample_value("closes_total") == 1
    await wait_until(lambda: len(chatty_peer.received) == 2 * len(PING_FRAME))
    assert not chatty.closing
    assert not chatty_peer.lost.is_set()

    heartbeat.beat()  # the closing one is left alone; the silent one goes now
    await chatty_peer.lost.wait()
    assert registry.get_sample_value("closes_total") == 2


async def test_a_connection_without_its_socket_yet_is_not_given_up(pair: Any) -> None:
    # Not upgraded yet: the join queued its frames, the 101 response is still pending.
    conn, _ = await pair("alice", upgraded=False)
    conn.alive = False
    registry = CollectorRegistry()
    Heartbeat({conn}, interval=60, timeouts=Counter("closes", "", registry=registry)).beat()
    assert not conn.closing  # the next sweep comes back to it
    assert registry.get_sample_value("closes_total") == 0  # nothing was closed


async def test_the_timer_sweeps_every_interval_until_stopped(pair: Any) -> None:
    conn, peer = await pair("alice")
    heartbeat = Heartbeat({conn}, interval=0.01)
    heartbeat.start()
    await asyncio.wait_for(peer.lost.wait(), 5)  # one sweep pinged, the next gave up
    assert bytes(peer.received) == PING_FRAME
    heartbeat.stop()
    heartbeat.stop()  # idempotent


def test_a_pong_echoes_the_ping_payload() -> None:
    assert pong_frame(b"") == bytes([0x8A, 0])
    assert pong_frame(b"abc") == bytes([0x8A, 3]) + b"abc"


async def test_a_sweep_visits_a_few_connections_per_loop_turn(pair: Any) -> None:
    conns = [(await pair(f"m{i}"))[0] for i in range(5)]
    Heartbeat(conns, interval=60, per_turn=2).beat()
    assert [conn.alive for conn in conns] == [False, False, True, True, True]
    await asyncio.sleep(0)  # one turn of the loop: the next two
    assert [conn.alive for conn in conns] == [False, False, False, False, True]
    await asyncio.sleep(0)
    assert not any(conn.alive for conn in conns)
