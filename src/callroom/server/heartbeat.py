"""The heartbeat (SPEC §3.4): one timer for the node, not one per connection.

Every ``HEARTBEAT_INTERVAL_SECONDS`` a sweep goes over the node's connections: one that
has sent nothing at all since the previous sweep, not even the pong to that sweep's
ping, is given up (a drop, SPEC §2); every other one gets a new ping. So a ping that is
not answered within one more interval closes the connection, as SPEC §3.4 says.

Why not aiohttp's own ``heartbeat=``: it hands the protocol a bound method of the
``WebSocketResponse`` that is never cleared, a reference cycle (protocol → response →
request → protocol) that kept every closed connection's objects, some 35 of them and
12 to 20 KB, alive until a full garbage collection, which the node's collector settings make
rare (docs/architecture.md "Heartbeat"). It also re-armed a timer on every frame
received; here a frame costs one attribute store (``Connection.alive``).

A sweep goes over ``per_turn`` connections per turn of the event loop: each ping is a
write to a socket, and thousands of them in one turn hold every other connection's
frames long enough for a p99 spike every interval on a busy node (docs/performance.md,
"Micro-measurements").
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import TYPE_CHECKING

import structlog

from callroom.errors import CloseCode
from callroom.server.framing import PING_FRAME

if TYPE_CHECKING:
    from prometheus_client import Counter

    from callroom.server.connection import Connection

log = structlog.get_logger(__name__)

# RFC 6455 §7.1.5: no close frame; what the member's client sees.
ABNORMAL_CLOSURE = CloseCode.ABNORMAL_CLOSURE
PER_TURN = 256  # connections a sweep visits per event-loop turn (< 1 ms of writes)


class Heartbeat:
    """Pings every connection each interval; gives up on the ones that stay silent."""

    def __init__(
        self,
        connections: Collection[Connection],
        interval: float,
        timeouts: Counter | None = None,
        per_turn: int = PER_TURN,
    ) -> None:
        self._connections = connections
        self._interval = interval
        self._per_turn = per_turn
        self._timeouts = timeouts  # sockets aborted (the node counts its 1006 closes in ws.py)
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self._interval, self._sweep)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sweep(self) -> None:
        self.beat()
        self.start()

    def beat(self) -> None:
        """One sweep: give up on the silent, ping the others, ``per_turn`` at a time."""
        self._visit(list(self._connections), 0)

    def _visit(self, connections: list[Connection], start: int) -> None:
        end = start + self._per_turn
        if end < len(connections):  # the rest in a later turn, after other sockets' work
            asyncio.get_running_loop().call_soon(self._visit, connections, end)
        for conn in connections[start:end]:
            if conn.closing:
                continue
            if not conn.alive:
                if conn.abort(ABNORMAL_CLOSURE):
                    log.info("heartbeat_timeout", conn_id=conn.conn_id)
                    if self._timeouts is not None:
                        self._timeouts.inc()
                continue
            conn.alive = False
            conn.send(PING_FRAME)
