"""Prometheus metrics (SPEC §4). Label values come from fixed sets only.

Event labels are canonical client event names of SPEC §3.1 or ``unknown``; error codes
are ``ErrorCode`` values; auth reasons are ``AuthError.reason`` values. Never a room id,
a user id or a client-sent string.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from callroom.auth.verifier import AUTH_FAILURE_REASONS
from callroom.room.protocol import EVENT_LABELS


class Metrics:
    """One registry per server instance (tests run several servers in one process)."""

    def __init__(self) -> None:
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
        self.messages_received = Counter(
            "callroom_messages_received", "Client frames received by event", ["event"], registry=r
        )
        self.handler_errors = Counter(
            "callroom_handler_errors",
            "Client frames answered with an error, by event and code",
            ["event", "code"],
            registry=r,
        )
        self.message_seconds = Histogram(
            "callroom_message_handling_seconds",
            "Time to handle one client frame",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=r,
        )
        self.messages_sent = Counter(
            "callroom_messages_sent", "Frames queued to clients", registry=r
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

        # Children resolved once: ``labels()`` costs a lock and a dict per call, and
        # these two are counted for every frame (DESIGN "per-message hot path").
        self.received_by_event = {
            event: self.messages_received.labels(event=event) for event in EVENT_LABELS
        }
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason=reason)

    def observe_store_commit(self, messages: int, seconds: float) -> None:
        """A group commit of the chat store (``SqlChatHistory``'s ``on_commit``)."""
        self.store_batch_messages.observe(messages)
        self.store_commit_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
