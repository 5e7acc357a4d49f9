"""Glue: start or reach the server, run a scenario, build the report; ``compare``."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvloop
from rich.progress import Progress

from callroom.auth.dev import DEV_AUDIENCE, DEV_ISSUER
from callroom_bench.client import Protocol
from callroom_bench.generator import Generator
from callroom_bench.params import Params, Result, Scenario
from callroom_bench.report import build_report, compare_ratios, median_round_ratios, median_runs
from callroom_bench.scenarios import RUNNERS
from callroom_bench.servers import PROTOCOLS, ServerKind, pinned_generator, spawn
from callroom_bench.target import DEV_KEY_FILE, BenchError, Minter, Target

T = TypeVar("T")


@dataclass(frozen=True)
class Source:
    """Where the server comes from: given URLs, or spawned by the bench."""

    urls: tuple[str, ...] = ()
    spawn: ServerKind = ServerKind.CALLROOM
    nodes: int = 1
    protocol: Protocol = Protocol.CALLROOM
    server_pids: tuple[int, ...] = ()
    key_file: Path = DEV_KEY_FILE
    issuer: str = DEV_ISSUER
    audience: str = DEV_AUDIENCE
    pin: bool = True
    shards: int = 0
    """Start a Redis of this many shards for the spawned nodes (0: they use REDIS_URL)."""


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop, with the file descriptor limit raised for thousands of sockets."""
    with contextlib.suppress(ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def _run(
    params: Params, target: Target, progress: Progress, cpu: int | None
) -> tuple[Result, dict[str, Any]]:
    """The scenario, driven by a generator started for it on ``cpu``; the result and what
    the report says about the generator."""
    run = secrets.token_hex(3)  # fresh room ids: a long-lived server remembers old rooms
    async with Generator.start(cpu) as generator:
        result = await RUNNERS[params.scenario](params, target, generator, progress, run)
        return result, generator.describe()


async def bench(
    params: Params, source: Source, progress: Progress
) -> tuple[dict[str, Any], Result]:
    """One scenario against one server; returns the JSON report and the result."""
    if source.urls:
        minter = None
        if source.protocol is Protocol.CALLROOM:
            minter = Minter(source.key_file, source.issuer, source.audience)
        target = Target("external", source.urls, source.protocol, minter, source.server_pids)
        result, generator = await _run(params, target, progress, None)
        return build_report(params, target, result, generator, pinned=False), result
    lobby = params.scenario is Scenario.STORM
    async with spawn(source.spawn, source.nodes, source.pin, source.shards, lobby=lobby) as server:
        minter = Minter(server.key_file) if server.kind is ServerKind.CALLROOM else None
        redis = server.redis
        target = Target(
            server.kind.value,
            server.urls,
            PROTOCOLS[server.kind],
            minter,
            server.pids,
            redis_pids=() if redis is None else redis.pids,
        )
        # The orchestration (this process: pipes, progress) shares the generator's core,
        # so that the server's core holds the server alone.
        with pinned_generator(server.generator_cpu):
            result, generator = await _run(params, target, progress, server.generator_cpu)
        pinned = server.generator_cpu is not None
        described = None if redis is None else redis.describe()
        report = build_report(params, target, result, generator, pinned=pinned, redis=described)
        return report, result


async def compare(
    params: Params, servers: list[ServerKind], pin: bool, progress: Progress, rounds: int = 1
) -> dict[str, Any]:
    """The scenario over each server back to back, ``rounds`` times; a server that cannot
    run is skipped.

    Rounds are interleaved (every server once per round), so a slow spell of the machine
    hits every server alike. Each server is then represented by its median round: at the
    edge of saturation the best step moves by a step or two between runs, and one run
    proves little (docs/performance.md, "Run-to-run spread").
    """
    rounds_run: list[dict[str, dict[str, Any]]] = []
    skipped: dict[str, str] = {}
    for number in range(1, rounds + 1):
        runs: dict[str, dict[str, Any]] = {}
        for kind in servers:
            if kind.value in skipped:
                continue
            if rounds > 1:
                progress.console.print(f"round {number}/{rounds}: {kind.value}")
            try:
                runs[kind.value], _ = await bench(params, Source(spawn=kind, pin=pin), progress)
            except BenchError as exc:
                skipped[kind.value] = str(exc)
                progress.console.print(f"[yellow]skipped {kind.value}:[/yellow] {exc}")
        rounds_run.append(runs)
    chosen = median_runs(rounds_run)
    headline = next(iter(chosen.values()))["headline"] if chosen else {}
    round_ratios = [compare_ratios(runs) for runs in rounds_run]
    higher_is_better = headline.get("higher_is_better", True)
    return {
        "tool": "callroom bench compare",
        "scenario": params.scenario.value,
        "metric": headline.get("metric", "-"),
        "higher_is_better": headline.get("higher_is_better", True),
        "baseline": next(iter(chosen), None),
        "runs": chosen,
        "skipped": skipped,
        "ratios": compare_ratios(chosen),
        "rounds": [
            {name: run["headline"]["value"] for name, run in runs.items()} for runs in rounds_run
        ],
        "round_ratios": round_ratios,
        # The paired comparison: each server's median of its ratios within one round.
        "median_round_ratios": median_round_ratios(round_ratios, higher_is_better),
        # Every round's whole reports (steps, CPU, latencies), not only the median's.
        "round_runs": rounds_run,
    }
