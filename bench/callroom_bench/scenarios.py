"""The scenarios of issue 5: what load each one offers and what it measures.

- **join**: N connections into rooms of M, C handshakes in flight; joins/s and the time
  from the TCP connect to the first ``room_state``.
- **chat** (R rooms x M), **bigroom** (one room, one sender) and **signal** (pairs
  exchanging ~2 KB ``candidate`` messages): an open-loop total send rate, stepped up
  until a step fails; delivered messages/s and p50/p99/max latency per step, and the
  highest step whose p99 stays under 100 ms with nothing lost and no error.
- **idle**: N idle connections; server RSS per connection.
- **cluster**: the chat or signal workload with the members of every room spread
  round-robin over several server URLs (nodes sharing rooms through Redis).

Latency is measured from the time a message was *scheduled* (the token bucket's due
time), not from when it was written, so a generator that falls behind shows up as
latency instead of hiding it (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import gc
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import monotonic_ns
from typing import Any

from picows import WSMsgType
from rich.progress import Progress, TaskID

from callroom_bench.client import (
    Connection,
    Protocol,
    Recorder,
    close_all,
    connect_all,
    encode,
    split_template,
    stamp,
    timed_text,
)
from callroom_bench.params import (
    IdleResult,
    JoinResult,
    Params,
    Result,
    Scenario,
    StepResult,
    TrafficResult,
)
from callroom_bench.stats import CpuMeter, Latency, process_rss_kb
from callroom_bench.target import BenchError, Target

P99_LIMIT_MS = 100.0
GENERATOR_SATURATED = 0.9
"""Generator CPU (share of one core) above which a result says more about the generator."""
TICK_SECONDS = 0.001
_TEXT = WSMsgType.TEXT
_STAMP_OVERHEAD = len(timed_text(0, ""))

Outlet = tuple[Callable[..., None], bytes, bytes]
"""A sender's ``transport.send`` with the frame prefix and suffix around the stamp."""


@dataclass(frozen=True)
class Member:
    room: str
    index: int
    client_id: str


def members(run: str, rooms: int, size: int) -> list[Member]:
    """Connection ``r * size + m`` is member ``m`` of room ``r``; ids are unique per run."""
    return [Member(f"{run}-{r}", m, f"u{r}-{m}") for r in range(rooms) for m in range(size)]


@dataclass
class _Phase:
    """Rich progress of one phase; ``advance``/``set`` are cheap enough for the loop."""

    progress: Progress
    task: TaskID = field(init=False)
    description: str = ""
    total: float = 0

    def __post_init__(self) -> None:
        self.task = self.progress.add_task(self.description, total=self.total)

    def advance(self) -> None:
        self.progress.advance(self.task)

    def set(self, completed: float) -> None:
        self.progress.update(self.task, completed=completed)

    def finish(self, description: str) -> None:
        self.progress.update(self.task, completed=self.total, description=description)


def _urls(target: Target, people: list[Member]) -> list[str]:
    """Every member's URL, with its token minted now: before any clock starts."""
    return [target.url(p.room, p.index, p.client_id) for p in people]


async def _join_all(
    target: Target, urls: list[str], recorder: Recorder, params: Params, progress: Progress
) -> list[Connection | None]:
    phase = _Phase(progress, f"joining {len(urls)}", len(urls))
    engineio = target.protocol is Protocol.SOCKETIO
    connections = await connect_all(urls, recorder, engineio, params.concurrency, phase.advance)
    joined = sum(c is not None for c in connections)
    phase.finish(f"joined {joined}/{len(urls)}")
    if not joined:
        await close_all(connections, recorder)
        raise BenchError(f"no connection could join {target.urls}: {dict(recorder.errors)}")
    return connections


async def _settle(recorder: Recorder, quiet_s: float = 0.3, limit_s: float = 60.0) -> None:
    """Wait until the join traffic (room_state, connect broadcasts) has died down."""
    quiet, deadline = int(quiet_s * 1e9), monotonic_ns() + int(limit_s * 1e9)
    while True:
        now = monotonic_ns()
        if now - recorder.last_rx_ns >= quiet or now >= deadline:
            return
        await asyncio.sleep(0.05)


async def run_join(params: Params, target: Target, progress: Progress, run: str) -> JoinResult:
    n, size = params.connections, params.room_size
    urls = _urls(target, members(run, math.ceil(n / size), size)[:n])
    recorder = Recorder()
    meter = CpuMeter(target.server_pids)
    started = monotonic_ns()
    connections = await _join_all(target, urls, recorder, params, progress)
    elapsed = (monotonic_ns() - started) / 1e9
    cpu = meter.stop()
    joined = [c for c in connections if c is not None]
    await close_all(connections, recorder)
    return JoinResult(
        connections=n,
        joined=len(joined),
        elapsed_s=round(elapsed, 3),
        joins_per_s=round(len(joined) / elapsed, 1),
        latency_ms=Latency.of([c.join_ns for c in joined]),
        cpu=cpu,
        generator_saturated=cpu.generator >= GENERATOR_SATURATED,
        errors=dict(recorder.errors),
    )


async def run_idle(params: Params, target: Target, progress: Progress, run: str) -> IdleResult:
    if not target.server_pids:
        raise BenchError("idle measures the server's memory: pass --server-pid or use --spawn")

    def rss() -> int:
        return sum(process_rss_kb(pid) for pid in target.server_pids)

    n, size = params.connections, params.room_size
    recorder = Recorder()
    urls = _urls(target, members(run, math.ceil(n / size), size)[:n])
    before = rss()
    connections = await _join_all(target, urls, recorder, params, progress)
    await _settle(recorder)
    phase = _Phase(progress, f"holding {n} idle", params.duration)
    loop = asyncio.get_running_loop()
    end = loop.time() + params.duration
    while (now := loop.time()) < end:
        phase.set(params.duration - (end - now))
        await asyncio.sleep(min(0.1, end - now))
    after = rss()
    phase.finish(f"held {n} idle")
    joined = [c for c in connections if c is not None]
    still_open = sum(c.transport is not None and not c.transport.is_disconnected for c in joined)
    await close_all(connections, recorder)
    return IdleResult(
        connections=n,
        joined=len(joined),
        open_after_hold=still_open,
        hold_s=params.duration,
        rss_before_kb=before,
        rss_after_kb=after,
        kb_per_connection=round((after - before) / len(joined), 2),
        errors=dict(recorder.errors),
    )


@dataclass(frozen=True)
class _Traffic:
    """Who sends what to whom: connection layout, send order, frames, fan-out."""

    people: list[Member]
    senders: list[int]
    templates: list[tuple[bytes, bytes]]
    signal: bool
    room_size: int

    @classmethod
    def plan(cls, params: Params, protocol: Protocol, run: str) -> _Traffic:
        pad = params.payload_bytes - _STAMP_OVERHEAD
        signal = params.traffic is Scenario.SIGNAL
        if signal:
            rooms, size = params.pairs, 2
        elif params.traffic is Scenario.BIGROOM:
            rooms, size = 1, params.room_size
        else:
            rooms, size = params.rooms, params.room_size
        people = members(run, rooms, size)
        # Interleave rooms so that consecutive sends hit different rooms; one sender only
        # in the big room.
        order = [r * size + m for m in range(size) for r in range(rooms)]
        if params.traffic is Scenario.BIGROOM:
            order = [0]
        templates = []
        for index in order:
            if signal:
                payload: dict[str, Any] = {
                    "targetClientId": people[index ^ 1].client_id,
                    "candidate": timed_text(pad, "c"),
                    "sdpMid": "0",
                    "sdpMLineIndex": 0,
                }
                frame = encode(protocol, "candidate", payload)
            else:
                frame = encode(protocol, "add_chat", {"chatContent": timed_text(pad, "x")})
            templates.append(split_template(frame))
        return cls(people, order, templates, signal, size)

    def fanout(self, connections: list[Connection | None]) -> list[int]:
        """Deliveries one message of each sender should cause (sender included in chat)."""
        if self.signal:
            return [int(connections[i ^ 1] is not None) for i in self.senders]
        size = self.room_size
        return [
            sum(c is not None for c in connections[i - i % size : i - i % size + size])
            for i in self.senders
        ]


async def _pace(
    rate: float,
    duration: float,
    outlets: list[Outlet],
    phase: _Phase,
) -> tuple[int, float]:
    """Open-loop token bucket: every tick, send the messages due by now, round-robin.

    Each batch carries the scheduled time of its first message. Returns (sent, seconds).
    """
    count = len(outlets)
    interval = 1e9 / rate
    start = monotonic_ns()
    end = start + int(duration * 1e9)
    sent = position = 0
    next_update = start
    while (now := monotonic_ns()) < end:
        due = int((now - start) / interval) + 1 - sent
        if due > 0:
            ts = stamp(start + int(sent * interval))
            for _ in range(due):
                send, prefix, suffix = outlets[position]
                send(_TEXT, prefix + ts + suffix)
                position += 1
                if position == count:
                    position = 0
            sent += due
        if now >= next_update:
            phase.set((now - start) / 1e9)
            next_update += 100_000_000
        await asyncio.sleep(TICK_SECONDS)
    return sent, (monotonic_ns() - start) / 1e9


async def _drain(recorder: Recorder, expected: int, quiet_s: float = 0.5) -> None:
    """Wait for the deliveries still in flight: all arrived, or nothing came for a while."""
    quiet, deadline = int(quiet_s * 1e9), monotonic_ns() + 10_000_000_000
    while len(recorder.latencies) < expected:
        now = monotonic_ns()
        if now - recorder.last_rx_ns > quiet or now > deadline:
            return
        await asyncio.sleep(0.01)


async def _step(
    rate: float,
    params: Params,
    plan: _Traffic,
    connections: list[Connection | None],
    recorder: Recorder,
    target: Target,
    progress: Progress,
) -> StepResult:
    live = [(k, i) for k, i in enumerate(plan.senders) if connections[i] is not None]
    if not live:
        raise BenchError("none of the senders could join; see the connect errors")
    outlets: list[Outlet] = []
    for k, i in live:
        connection = connections[i]
        assert connection is not None
        assert connection.transport is not None
        outlets.append((connection.transport.send, *plan.templates[k]))
    fanout = plan.fanout(connections)
    phase = _Phase(progress, f"{params.traffic} {rate:g}/s", params.duration)
    recorder.reset_samples()
    errors_before = Counter(recorder.errors)
    meter = CpuMeter(target.server_pids)
    started = monotonic_ns()
    sent, elapsed = await _pace(rate, params.duration, outlets, phase)
    cpu = meter.stop()
    # Round-robin from the first sender: sender j sent sent // n (+1 for the first rest).
    rounds, rest = divmod(sent, len(outlets))
    expected = sum((rounds + (j < rest)) * fanout[k] for j, (k, _) in enumerate(live))
    await _drain(recorder, expected)
    samples = recorder.latencies
    delivered = len(samples)
    window = max(elapsed, (recorder.last_rx_ns - started) / 1e9)
    latency = Latency.of(samples)
    errors = dict(recorder.errors - errors_before)
    lost = max(expected - delivered, 0)
    ok = latency is not None and latency.p99 < P99_LIMIT_MS and not lost and not errors
    p99 = "-" if latency is None else f"{latency.p99:g} ms"
    phase.finish(
        f"{params.traffic} {rate:g}/s: {delivered / window:,.0f} delivered/s, p99 {p99}"
        + ("" if ok else " (failed)")
    )
    return StepResult(
        rate=rate,
        duration_s=round(elapsed, 3),
        sent=sent,
        sent_per_s=round(sent / elapsed, 1),
        expected=expected,
        delivered=delivered,
        lost=lost,
        delivered_per_s=round(delivered / window, 1),
        latency_ms=latency,
        cpu=cpu,
        generator_saturated=cpu.generator >= GENERATOR_SATURATED,
        errors=errors,
        ok=ok,
    )


async def run_traffic(
    params: Params, target: Target, progress: Progress, run: str
) -> TrafficResult:
    plan = _Traffic.plan(params, target.protocol, run)
    recorder = Recorder()
    urls = _urls(target, plan.people)
    connections = await _join_all(target, urls, recorder, params, progress)
    steps: list[StepResult] = []
    try:
        await _settle(recorder)
        # The hot path allocates no containers; a full collection over thousands of
        # listeners would stall the generator and be booked as server latency.
        gc.collect()
        gc.disable()
        for rate in params.rates:
            steps.append(await _step(rate, params, plan, connections, recorder, target, progress))
            if not steps[-1].ok:
                break
    finally:
        gc.enable()
        await close_all(connections, recorder)
    passed = [step for step in steps if step.ok]
    return TrafficResult(
        connections=len(plan.people),
        joined=sum(c is not None for c in connections),
        steps=steps,
        best=max(passed, key=lambda step: step.delivered_per_s) if passed else None,
        errors=dict(recorder.errors),
    )


Runner = Callable[[Params, Target, Progress, str], Awaitable[Result]]
RUNNERS: dict[Scenario, Runner] = {
    Scenario.JOIN: run_join,
    Scenario.IDLE: run_idle,
    Scenario.CHAT: run_traffic,
    Scenario.BIGROOM: run_traffic,
    Scenario.SIGNAL: run_traffic,
    Scenario.CLUSTER: run_traffic,
}
