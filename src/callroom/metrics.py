"""Prometheus metrics (SPEC §4). Label values come from fixed sets only.

Event labels are canonical client event names of SPEC §3.1 or ``unknown``; error codes
are ``ErrorCode`` values; auth reasons are ``AuthError.reason`` values. Never a room id,
a user id or a client-sent string.

The three metrics counted for every frame (frames received by event, the time to handle a
frame, frames sent) are ``HotCounter``/``HotHistogram``: plain numbers that ``/metrics``
reads when it is scraped, instead of ``prometheus_client``'s metrics, which take a lock
on every update (a visible share of the CPU of a relayed ICE candidate;
docs/performance.md, finding 11 and "Micro-measurements"). They
need no lock: the node's event-loop thread is their only writer, and ``/metrics`` reads
them on that thread too.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from callroom import __version__
from callroom.auth.verifier import AUTH_FAILURE_REASONS
from callroom.room.protocol import EVENT_LABELS


class HotCounter:
    """A counter for the per-frame hot path (module docstring)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HotHistogram:
    """A histogram for the per-frame hot path (module docstring): one count per bucket."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # A value equal to a bound belongs to that bound's bucket (Prometheus "le").
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """The Prometheus buckets: (upper bound, observations at or below it)."""
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            buckets.append((_bound_label(bound), total))
        return buckets


def _bound_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _HotCollector(Collector):
    """Reads the hot-path metrics into ``/metrics`` when it is scraped."""

    def __init__(
        self,
        received: Mapping[str, HotCounter],
        handling_seconds: HotHistogram,
        sent: HotCounter,
    ) -> None:
        self._received = received
        self._handling_seconds = handling_seconds
        self._sent = sent

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily(
            "callroom_messages_received", "Client frames received by event", labels=["event"]
        )
        for event, counter in self._received.items():
            received.add_metric([event], counter.value)
        yield received
        seconds = self._handling_seconds
        yield HistogramMetricFamily(
            "callroom_message_handling_seconds",
            "Time to handle one client frame",
            buckets=seconds.cumulative(),
            sum_value=seconds.sum,
        )
        yield CounterMetricFamily(
            "callroom_messages_sent", "Frames queued to clients", value=self._sent.value
        )


def _running_tasks() -> float:
    """Tasks of the running loop; 0 when scraped outside one (``render`` called from a
    test's thread)."""
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:
        return 0.0


READY_PARTS = ("store", "keys", "bus")
JWKS_OUTCOMES = ("ok", "error")


class RedisMetrics:
    """The Redis link (SPEC §9), exported only by a node with ``REDIS_URL``."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.up = Gauge(
            "callroom_redis_up", "1 while the node's Redis subscriber is connected", registry=r
        )
        self.reconnects = Counter(
            "callroom_redis_reconnects",
            "Redis connections made again after one was lost",
            registry=r,
        )
        self.publish_failures = Counter(
            "callroom_redis_publish_failures",
            "Publishes (chat, signaling, deliveries) lost because Redis failed",
            registry=r,
        )
        self.cas_retries = Counter(
            "callroom_redis_cas_retries",
            "Room transitions run again after another node changed the room first",
            registry=r,
        )


class Metrics:
    """One registry per server instance (tests run several servers in one process)."""

    def __init__(self, *, redis: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The process's memory, CPU and collector counts (process_*, python_gc_*): a
        # server that leaks shows it here first (docs/architecture.md "Heartbeat").
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        self.ws_connections = Gauge(
            "callroom_ws_connections", "Open WebSocket connections on this node", registry=r
        )
        self.rooms_active = Gauge("callroom_rooms_active", "Rooms open on this node", registry=r)
        # Read at scrape time: a task that outlives its connection or room shows here as
        # growth (the soak scenario of the benchmark watches it; docs/operations.md).
        Gauge(
            "callroom_asyncio_tasks",
            "Unfinished asyncio tasks in the node's event loop",
            registry=r,
        ).set_function(_running_tasks)
        self.rooms_created = Counter(
            "callroom_rooms_created", "Rooms created on this node", registry=r
        )
        self.rooms_closed = Counter(
            "callroom_rooms_closed", "Rooms closed on this node", registry=r
        )
        self.auth_failures = Counter(
            "callroom_auth_failures", "Refused tokens by reason", ["reason"], registry=r
        )
        self.handshake_refusals = Counter(
            "callroom_handshake_refusals",
            "Connections refused before the upgrade, by code",
            ["code"],
            registry=r,
        )
        self.handler_errors = Counter(
            "callroom_handler_errors",
            "Client frames answered with an error, by event and code",
            ["event", "code"],
            registry=r,
        )
        self.slow_consumers = Counter(
            "callroom_slow_consumer_closes",
            "Connections closed because their outgoing queue was full",
            registry=r,
        )
        self.store_batch_messages = Histogram(
            "callroom_chat_store_batch_messages",
            "Chat messages stored by one group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
            registry=r,
        )
        self.store_commit_seconds = Histogram(
            "callroom_chat_store_commit_seconds",
            "Time to store one group commit of chat messages",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.closes = Counter(
            "callroom_ws_closes",
            "Connections closed by the server, by close code",
            ["code"],
            registry=r,
        )
        self.close_aborts = Counter(
            "callroom_ws_close_aborts",
            "Closes whose peer did not take the close frame in time: socket aborted",
            registry=r,
        )
        self.pre_upgrade_closes = Counter(
            "callroom_pre_upgrade_closes",
            "Connections closed before they made a complete request or became members, by reason",
            ["reason"],
            registry=r,
        )

        # SPEC §9 (operating in production): build, readiness, capacity, dependencies.
        Gauge(
            "callroom_build_info", "The running version (always 1)", ["version"], registry=r
        ).labels(version=__version__).set(1)
        self.ready = Gauge(
            "callroom_ready",
            "1 when the part is usable (refreshed by /readyz and by each scrape)",
            ["part"],
            registry=r,
        )
        for part in READY_PARTS:
            self.ready.labels(part=part)
        self.max_connections = Gauge(
            "callroom_max_connections", "The MAX_CONNECTIONS setting", registry=r
        )
        self.redis = RedisMetrics(r) if redis else None
        self.store_failures = Counter(
            "callroom_chat_store_failures",
            "Chat store errors met (a failed transaction, group commit or reconnect probe)",
            registry=r,
        )
        self.jwks_fetches = Counter(
            "callroom_jwks_fetches", "JWKS fetches by outcome", ["outcome"], registry=r
        )
        for outcome in JWKS_OUTCOMES:
            self.jwks_fetches.labels(outcome=outcome)
        self.jwks_breaker_open = Gauge(
            "callroom_jwks_breaker_open",
            "1 while the JWKS circuit breaker refuses to fetch",
            registry=r,
        )
        self.http_requests = Counter(
            "callroom_http_requests",
            "HTTP requests (WebSocket handshakes included) by route template, method, status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "callroom_http_request_seconds",
            "Time to answer an HTTP request (a WebSocket handshake: until the upgrade)",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self._http_counted: dict[tuple[str, str, str], Counter] = {}
        self._http_timed: dict[str, Histogram] = {}
        self.join_seconds = Histogram(
            "callroom_join_seconds",
            "From the upgrade request to the room_state sent",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )

        # Counted for every frame (DESIGN "per-message hot path"): see the module docstring.
        self.received_by_event = {event: HotCounter() for event in EVENT_LABELS}
        self.message_seconds = HotHistogram(
            (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
        )
        self.messages_sent = HotCounter()
        r.register(_HotCollector(self.received_by_event, self.message_seconds, self.messages_sent))
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason=reason)

    def http_request(self, route: str, method: str, status: str, seconds: float) -> None:
        """One answered request (the access line's metrics); the labelled children are
        kept, so a request costs two dictionary lookups instead of two ``labels()``
        calls (every label is bounded: route templates, methods, statuses)."""
        counter = self._http_counted.get((route, method, status))
        if counter is None:
            counter = self.http_requests.labels(route=route, method=method, status=status)
            self._http_counted[route, method, status] = counter
        counter.inc()
        timer = self._http_timed.get(route)
        if timer is None:
            timer = self._http_timed[route] = self.http_seconds.labels(route=route)
        timer.observe(seconds)

    def observe_store_commit(self, messages: int, seconds: float) -> None:
        """A group commit of the chat store (``SqlChatHistory``'s ``on_commit``)."""
        self.store_batch_messages.observe(messages)
        self.store_commit_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
