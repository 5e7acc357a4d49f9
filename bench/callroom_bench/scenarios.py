"""The scenarios of issue 5: what load each one offers and what it measures.

- **join**: N connections into rooms of M, C handshakes in flight; joins/s and the time
  from the TCP connect to the first ``room_state``.
- **storm**: the top of the hour, N connections into rooms of M opened on a schedule
  within a window whatever the server's pace, the lobby on: the first member of each
  room becomes its host and admits the others; the time from the TCP connect to the
  first ``room_state`` as participant.
- **chat** (R rooms x M), **bigroom** (one room, one sender) and **signal** (pairs
  exchanging ~2 KB ``candidate`` messages): an open-loop total send rate, stepped up
  until a step fails; delivered messages/s and p50/p99/max latency per step, and the
  highest step whose p99 stays under 100 ms with nothing lost and no error.
- **idle**: N idle connections; server RSS per connection.
- **cluster**: the chat or signal workload with the members of every room spread
  round-robin over several server URLs (nodes sharing rooms through Redis).

The generator (bench/node/generator.mjs, driven by ``callroom_bench.generator``) does the
per-frame work; this module plans each run and searches the steps. Latency is measured
from the time a message was *scheduled* (the token bucket's due time), not from when it
was written, so a generator that falls behind shows up as latency instead of hiding it
(no coordinated omission).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from typing import Any

from rich.progress import Progress, TaskID

from callroom_bench.client import Protocol, encode, split_template, timed_text
from callroom_bench.generator import Generator, JoinReply, Sender
from callroom_bench.params import (
    IdleResult,
    JoinResult,
    Params,
    Result,
    Scenario,
    StepResult,
    StormResult,
    TrafficResult,
)
from callroom_bench.stats import CpuMeter, CpuUse, Window, process_rss_kb
from callroom_bench.target import BenchError, Target

P99_LIMIT_MS = 100.0
GENERATOR_LIMIT = 0.7
"""Generator busy share of its core at or above which a step says more about the generator
than about the server (issue 20): such a step is marked, and a headline resting on it is
reported as unusable."""
_STAMP_OVERHEAD = len(timed_text(0, ""))


def _cpu_use(generator: float, window: Window) -> CpuUse:
    return CpuUse(generator, window.server, window.generator_core, window.redis)


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
    """Rich progress of one phase."""

    progress: Progress
    task: TaskID = field(init=False)
    description: str = ""
    total: float = 0

    def __post_init__(self) -> None:
        self.task = self.progress.add_task(self.description, total=self.total)

    def set(self, completed: float) -> None:
        self.progress.update(self.task, completed=completed)

    def finish(self, description: str) -> None:
        self.progress.update(self.task, completed=self.total, description=description)


def _urls(target: Target, people: list[Member]) -> list[str]:
    """Every member's URL, with its token minted now: before any clock starts."""
    return [target.url(p.room, p.index, p.client_id) for p in people]


async def _join_all(
    target: Target,
    generator: Generator,
    urls: list[str],
    params: Params,
    progress: Progress,
    meter: CpuMeter | None = None,
) -> tuple[list[bool], JoinResult]:
    """Join every URL; which joined, and the join's figures (CPU if ``meter`` is given)."""
    phase = _Phase(progress, f"joining {len(urls)}", len(urls))
    engineio = target.protocol is Protocol.SOCKETIO
    reply = await generator.join(urls, params.concurrency, engineio, phase.set)
    window = Window(None, None, None) if meter is None else meter.stop()
    joined = sum(reply.joined)
    phase.finish(f"joined {joined}/{len(urls)}")
    if not joined:
        await generator.close()
        raise BenchError(f"no connection could join {target.urls}: {generator.errors}")
    return reply.joined, _join_result(len(urls), reply, window, generator.errors)


def _join_result(
    connections: int, reply: JoinReply, window: Window, errors: dict[str, int]
) -> JoinResult:
    """The figures of a join (or a storm's joins) from the generator's reply."""
    joined = sum(reply.joined)
    cpu = _cpu_use(reply.generator_cpu, window)
    return JoinResult(
        connections=connections,
        joined=joined,
        elapsed_s=round(reply.elapsed_s, 3),
        joins_per_s=round(joined / reply.elapsed_s, 1),
        latency_ms=reply.latency_ms,
        cpu=cpu,
        generator_saturated=cpu.generator_busy >= GENERATOR_LIMIT,
        errors=dict(errors),
    )


async def run_join(
    params: Params, target: Target, generator: Generator, progress: Progress, run: str
) -> JoinResult:
    n, size = params.connections, params.room_size
    urls = _urls(target, members(run, math.ceil(n / size), size)[:n])
    meter = CpuMeter(target.server_pids, generator.cpu, target.redis_pids)
    _, result = await _join_all(target, generator, urls, params, progress, meter)
    await generator.close()
    return result


async def run_storm(
    params: Params, target: Target, generator: Generator, progress: Progress, run: str
) -> StormResult:
    n, size = params.connections, params.room_size
    people = members(run, math.ceil(n / size), size)[:n]
    # Arrivals in a random order (seeded by the run): a room's host is whoever comes
    # first, and its members may knock before or after it (SPEC §2, the lobby).
    random.Random(run).shuffle(people)
    urls = _urls(target, people)
    phase = _Phase(progress, f"storm of {n} in {params.duration:g} s", n)
    meter = CpuMeter(target.server_pids, generator.cpu, target.redis_pids)
    engineio = target.protocol is Protocol.SOCKETIO
    reply = await generator.storm(urls, params.duration, engineio, phase.set)
    joins = _join_result(n, reply, meter.stop(), generator.errors)
    phase.finish(f"admitted {joins.joined}/{n}")
    await generator.close()
    common = {item.name: getattr(joins, item.name) for item in fields(joins)}
    return StormResult(
        **common,
        window_s=params.duration,
        opened_s=round(reply.opened_s, 3),
        waited=reply.waited,
    )


async def run_idle(
    params: Params, target: Target, generator: Generator, progress: Progress, run: str
) -> IdleResult:
    if not target.server_pids:
        raise BenchError("idle measures the server's memory: pass --server-pid or use --spawn")

    def rss() -> int:
        return sum(process_rss_kb(pid) for pid in target.server_pids)

    n, size = params.connections, params.room_size
    urls = _urls(target, members(run, math.ceil(n / size), size)[:n])
    before = rss()
    _, joins = await _join_all(target, generator, urls, params, progress)
    await generator.settle()
    phase = _Phase(progress, f"holding {n} idle", params.duration)
    loop = asyncio.get_running_loop()
    end = loop.time() + params.duration
    while (now := loop.time()) < end:
        phase.set(params.duration - (end - now))
        await asyncio.sleep(min(0.1, end - now))
    after = rss()
    phase.finish(f"held {n} idle")
    still_open, _ = await generator.status()
    await generator.close()
    return IdleResult(
        connections=n,
        joined=joins.joined,
        open_after_hold=still_open,
        hold_s=params.duration,
        rss_before_kb=before,
        rss_after_kb=after,
        kb_per_connection=round((after - before) / joins.joined, 2),
        errors=dict(generator.errors),
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

    def live_senders(self, joined: list[bool]) -> list[Sender]:
        """The senders that joined, each with the deliveries one of its messages should
        cause: chat, every joined member of the room (sender included); signal, the
        partner."""
        senders = []
        for index, (prefix, suffix) in zip(self.senders, self.templates, strict=True):
            if not joined[index]:
                continue
            if self.signal:
                fanout = int(joined[index ^ 1])
            else:
                first = index - index % self.room_size
                fanout = sum(joined[first : first + self.room_size])
            senders.append(Sender(index, prefix, suffix, fanout))
        return senders


async def _step(
    rate: float, params: Params, target: Target, generator: Generator, progress: Progress
) -> StepResult:
    phase = _Phase(progress, f"{params.traffic} {rate:g}/s", params.duration)
    meter = CpuMeter(target.server_pids, generator.cpu, target.redis_pids)
    window: list[Window] = []
    reply = await generator.step(
        rate, params.duration, phase.set, lambda: window.append(meter.stop())
    )
    cpu = _cpu_use(reply.generator_cpu, window[0] if window else meter.stop())
    latency, lost = reply.latency_ms, max(reply.expected - reply.delivered, 0)
    ok = latency is not None and latency.p99 < P99_LIMIT_MS and not lost and not reply.errors
    per_s = reply.delivered / reply.window_s
    busiest = max(cpu.redis or [0.0])  # the Redis process that would saturate first
    p99 = "-" if latency is None else f"{latency.p99:g} ms"
    phase.finish(
        f"{params.traffic} {rate:g}/s: {per_s:,.0f} delivered/s, p99 {p99}"
        + ("" if ok else " (failed)")
    )
    return StepResult(
        rate=rate,
        duration_s=round(reply.elapsed_s, 3),
        sent=reply.sent,
        sent_per_s=round(reply.sent / reply.elapsed_s, 1),
        expected=reply.expected,
        delivered=reply.delivered,
        lost=lost,
        delivered_per_s=round(per_s, 1),
        delivered_per_server_core=round(per_s / cpu.server, 1) if cpu.server else None,
        redis_ceiling_per_s=round(per_s / busiest, 1) if busiest else None,
        latency_ms=latency,
        cpu=cpu,
        generator_saturated=cpu.generator_busy >= GENERATOR_LIMIT,
        errors=reply.errors,
        ok=ok,
    )


def headline_usable(steps: list[StepResult], best: StepResult | None) -> bool:
    """The best step is the server's figure when the generator stayed below its limit
    there and at the step that failed after it (whose failure decided the ceiling)."""
    if best is None:
        return False
    after = steps[steps.index(best) + 1 : steps.index(best) + 2]
    return not any(step.generator_saturated for step in [best, *after])


async def run_traffic(
    params: Params, target: Target, generator: Generator, progress: Progress, run: str
) -> TrafficResult:
    plan = _Traffic.plan(params, target.protocol, run)
    urls = _urls(target, plan.people)
    joined, _ = await _join_all(target, generator, urls, params, progress)
    senders = plan.live_senders(joined)
    if not senders:
        await generator.close()
        raise BenchError("none of the senders could join; see the connect errors")
    steps: list[StepResult] = []
    await generator.settle()
    await generator.senders(senders)
    for rate in params.rates:
        steps.append(await _step(rate, params, target, generator, progress))
        if not steps[-1].ok:
            break
    await generator.close()
    passed = [step for step in steps if step.ok]
    best = max(passed, key=lambda step: step.delivered_per_s) if passed else None
    return TrafficResult(
        connections=len(plan.people),
        joined=sum(joined),
        steps=steps,
        best=best,
        usable=headline_usable(steps, best),
        errors=dict(generator.errors),
    )


Runner = Callable[[Params, Target, Generator, Progress, str], Awaitable[Result]]
RUNNERS: dict[Scenario, Runner] = {
    Scenario.JOIN: run_join,
    Scenario.STORM: run_storm,
    Scenario.IDLE: run_idle,
    Scenario.CHAT: run_traffic,
    Scenario.BIGROOM: run_traffic,
    Scenario.SIGNAL: run_traffic,
    Scenario.CLUSTER: run_traffic,
}
