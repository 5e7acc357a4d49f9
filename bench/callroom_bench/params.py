"""What a benchmark run is asked for (``Params``, ``DEFAULTS`` per scenario) and what it
reports (the result records), apart from how the scenarios run (``scenarios``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from callroom_bench.stats import CpuUse, Latency


class Scenario(StrEnum):
    JOIN = "join"
    STORM = "storm"
    CHAT = "chat"
    BIGROOM = "bigroom"
    SIGNAL = "signal"
    IDLE = "idle"
    CLUSTER = "cluster"


@dataclass(frozen=True)
class Params:
    """Sizes of a run; which fields a scenario reads is listed in ``DEFAULTS``."""

    scenario: Scenario
    connections: int = 0
    rooms: int = 1
    room_size: int = 2
    pairs: int = 0
    concurrency: int = 100
    rates: tuple[float, ...] = ()
    duration: float = 5.0
    payload_bytes: int = 100
    workload: Scenario | None = None

    @property
    def traffic(self) -> Scenario:
        """The message pattern: the scenario itself, or chat/signal for cluster."""
        return self.workload or self.scenario

    def used(self) -> dict[str, Any]:
        """The parameters this scenario reads, for the report."""
        names = _USES[self.traffic] | ({"workload"} if self.workload else set())
        return {name: getattr(self, name) for name in sorted(names)}


_STEPPED = {"concurrency", "rates", "duration", "payload_bytes"}
_USES: dict[Scenario, set[str]] = {
    Scenario.JOIN: {"connections", "room_size", "concurrency"},
    Scenario.STORM: {"connections", "room_size", "duration"},
    Scenario.IDLE: {"connections", "room_size", "concurrency", "duration"},
    Scenario.CHAT: {"rooms", "room_size", *_STEPPED},
    Scenario.BIGROOM: {"room_size", *_STEPPED},
    Scenario.SIGNAL: {"pairs", *_STEPPED},
}


DEFAULTS = {
    Scenario.JOIN: Params(Scenario.JOIN, connections=2000, room_size=10),
    # Issue 20: 10,000 connections into 1,000 rooms of 10, all opened within 5 s.
    Scenario.STORM: Params(Scenario.STORM, connections=10000, room_size=10, duration=5.0),
    Scenario.CHAT: Params(
        Scenario.CHAT,
        rooms=100,
        room_size=10,
        # Steps of 1,000 messages/s (10,000 deliveries) where the servers saturate on a
        # 2-core VM, so a best step is not off by a whole doubling; up to 200,000
        # deliveries/s, above the fastest server measured by the Node generator (160,000).
        rates=(
            *(500, 1000, 2000, 3000, 4000, 5000, 6000, 7000),
            *(8000, 9000, 10000, 11000, 12000, 13000, 14000, 15000, 16000, 18000, 20000),
        ),
    ),
    Scenario.BIGROOM: Params(
        Scenario.BIGROOM,
        room_size=500,
        # Up to 1.5 M deliveries/s: callroom coalesces a loop turn's frames (1.13 M, issue 20).
        rates=(
            *(2, 5, 10, 25, 50, 100, 150, 200, 250, 300, 350, 400, 500, 600, 800, 1000),
            *(1200, 1600, 2000, 2500, 3000),
        ),
    ),
    Scenario.SIGNAL: Params(
        Scenario.SIGNAL,
        pairs=100,
        payload_bytes=2048,
        # Up to 70,000/s: the picows relay passed 50,000/s on a fast VM (docs/performance.md).
        rates=(
            *(1000, 2500, 5000, 10000, 15000, 20000, 25000, 30000),
            *(35000, 40000, 45000, 50000, 55000, 60000, 65000, 70000),
        ),
    ),
    Scenario.IDLE: Params(Scenario.IDLE, connections=1000, room_size=10),
}


@dataclass(frozen=True)
class JoinResult:
    connections: int
    joined: int
    elapsed_s: float
    joins_per_s: float
    latency_ms: Latency | None
    cpu: CpuUse
    generator_saturated: bool
    errors: dict[str, int]


@dataclass(frozen=True)
class StormResult(JoinResult):
    """A join whose latency runs from the TCP connect to the first ``room_state`` as
    participant, through the lobby; ``opened_s``: when the last connection was opened
    (the window, unless the generator fell behind its schedule); ``waited``: the
    connections let in from the waiting room by a host."""

    window_s: float
    opened_s: float
    waited: int


@dataclass(frozen=True)
class StepResult:
    rate: float
    duration_s: float
    sent: int
    sent_per_s: float
    expected: int
    delivered: int
    lost: int
    delivered_per_s: float
    delivered_per_server_core: float | None
    """delivered/s ÷ the server's CPU share (all nodes together): deliveries per server
    core; None when the server's CPU is not measured."""
    redis_ceiling_per_s: float | None
    """delivered/s ÷ the CPU share of the busiest Redis process the bench started: the
    rate at which that process would use a whole core, at this step's mix (rooms, nodes,
    shards); None without such a process or when its share rounds to 0."""
    latency_ms: Latency | None
    cpu: CpuUse
    generator_saturated: bool
    errors: dict[str, int]
    ok: bool


@dataclass(frozen=True)
class TrafficResult:
    connections: int
    joined: int
    steps: list[StepResult]
    best: StepResult | None
    usable: bool
    """False when the generator was at its limit at the best step or the failed one after
    it (scenarios.GENERATOR_LIMIT): the best step is then the generator's figure."""
    errors: dict[str, int]


@dataclass(frozen=True)
class IdleResult:
    connections: int
    joined: int
    open_after_hold: int
    hold_s: float
    rss_before_kb: int
    rss_after_kb: int
    kb_per_connection: float
    errors: dict[str, int]


Result = JoinResult | StormResult | TrafficResult | IdleResult
