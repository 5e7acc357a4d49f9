"""Results as JSON (``--json PATH``) and as rich tables.

A report is one run of one scenario against one server::

    {"tool": "callroom bench", "version", "scenario", "started_at", "machine",
     "server", "protocol", "urls", "server_pids", "pinned", "generator", "redis",
     "params", "headline": {"metric", "value", "higher_is_better", "usable"}, "result",
     "errors"}

``result`` is the scenario's dataclass (scenarios.py) as a dict; ``generator`` names the
load generator (its program, Node's version, its CPU); ``redis`` the Redis the bench
started for the run (``cluster --shards``: shards, mode, URL, ports, PIDs, CPUs), else
null. ``usable`` is false when the generator was at its limit where the headline was
decided. ``compare`` wraps several reports with the ratios of their headline values.
``tool`` keeps the name the command had before it became ``callroom-bench``, so old and
new result files read alike.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich import box
from rich.table import Table

from callroom import __version__
from callroom_bench.params import (
    IdleResult,
    JoinResult,
    Params,
    Result,
    StepResult,
    StormResult,
    TrafficResult,
)
from callroom_bench.stats import CpuUse, Latency
from callroom_bench.target import Target


def headline(result: Result) -> tuple[str, float | None, bool]:
    """The one number a scenario is judged by: (metric, value, higher is better)."""
    if isinstance(result, StormResult):
        # Only a storm that let everyone in has a figure: a join given up is not fast.
        everyone = result.joined == result.connections and result.latency_ms is not None
        p99 = result.latency_ms.p99 if everyone and result.latency_ms else None
        return "p99 ms from connect to participant", p99, False
    if isinstance(result, JoinResult):
        return "joins/s", result.joins_per_s, True
    if isinstance(result, IdleResult):
        return "KB per idle connection", result.kb_per_connection, False
    best = None if result.best is None else result.best.delivered_per_s
    return "delivered msgs/s at p99 < 100 ms", best, True


def usable(result: Result) -> bool:
    """Whether the headline is the server's figure rather than the generator's."""
    if isinstance(result, JoinResult):
        return not result.generator_saturated
    if isinstance(result, IdleResult):
        return True  # the memory of idle connections: no generator throughput involved
    return result.usable


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "processor": platform.processor() or platform.machine(),
    }


def build_report(
    params: Params,
    target: Target,
    result: Result,
    generator: dict[str, Any],
    pinned: bool,
    redis: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metric, value, higher = headline(result)
    return {
        "tool": "callroom bench",
        "version": __version__,
        "scenario": params.scenario.value,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "server": target.name,
        "protocol": target.protocol.value,
        "urls": list(target.urls),
        "server_pids": list(target.server_pids),
        "pinned": pinned,
        "generator": generator,
        "redis": redis,
        "params": params.used(),
        "headline": {
            "metric": metric,
            "value": value,
            "higher_is_better": higher,
            "usable": usable(result),
        },
        "result": asdict(result),
        "errors": result.errors,
    }


def compare_ratios(runs: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Headline of the first server divided by each other server's headline."""
    values = {name: run["headline"]["value"] for name, run in runs.items()}
    base = next(iter(values.values()), None)
    return {
        name: None if base is None or not value else round(base / value, 3)
        for name, value in list(values.items())[1:]
    }


def median_round_ratios(
    round_ratios: list[dict[str, float | None]], higher_is_better: bool
) -> dict[str, float | None]:
    """Each server's median of its per-round ratios: the paired comparison.

    Each round runs the servers back to back, minutes apart, so its ratio holds even when
    the machine's speed drifts between rounds, which a ratio of medians taken from
    different rounds does not. Of an even count, the middle one less favourable to the
    first server; a round without a ratio is left out (``None`` when none has one).
    """
    names = dict.fromkeys(name for ratios in round_ratios for name in ratios)
    medians: dict[str, float | None] = {}
    for name in names:
        values = sorted(v for ratios in round_ratios if (v := ratios.get(name)) is not None)
        if not values:
            medians[name] = None
            continue
        # Sorted ascending: for a higher-is-better metric the smaller ratio is the worse.
        middle = (len(values) - 1) // 2 if higher_is_better else len(values) // 2
        medians[name] = values[middle]
    return medians


def median_runs(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each server's report of its median round by headline: of an even count the worse of
    the two middle ones; a round without a headline value counts as the worst."""
    chosen: dict[str, dict[str, Any]] = {}
    names = [name for runs in rounds for name in runs]
    for name in dict.fromkeys(names):  # first-seen order: the baseline stays first
        reports = [runs[name] for runs in rounds if name in runs]
        higher: bool = reports[0]["headline"]["higher_is_better"]
        ordered = sorted(reports, key=lambda r: _ranked(r, higher), reverse=not higher)
        chosen[name] = ordered[(len(ordered) - 1) // 2]  # ordered worst first
    return chosen


def _ranked(report: dict[str, Any], higher_is_better: bool) -> float:
    """The headline value to sort by; a missing one ranks as the worst."""
    value = report["headline"]["value"]
    if value is None:
        return float("-inf") if higher_is_better else float("inf")
    return float(value)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def _ms(latency: Latency | None) -> tuple[str, str, str]:
    if latency is None:
        return "-", "-", "-"
    return f"{latency.p50:,.1f}", f"{latency.p99:,.1f}", f"{latency.max:,.1f}"


def _cpu(cpu: CpuUse, saturated: bool) -> tuple[str, str, str]:
    """(generator process, generator's core, server) in % of a core."""
    server = "-" if cpu.server is None else f"{cpu.server:.0%}"
    core = "-" if cpu.generator_core is None else f"{cpu.generator_core:.0%}"
    mark = "!" if saturated else ""
    return f"{cpu.generator:.0%}{mark}", core, server


def _redis(step: StepResult) -> list[str]:
    """Each Redis process's CPU, and the step's ``redis_ceiling_per_s``."""
    shares = "/".join(f"{share:.0%}" for share in step.cpu.redis or ())
    return [shares or "-", _per_core(step.redis_ceiling_per_s)]


def _per_core(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{code} x{count}" for code, count in sorted(errors.items())) or "none"


def result_table(report: dict[str, Any], result: Result) -> Table:
    """The summary of one report: one row per step (traffic) or one row."""
    title = f"{report['scenario']} on {report['server']} ({report['protocol']})"
    table = Table(title=title, box=box.SIMPLE_HEAD)
    # Latency in ms; CPU as a share of one core (generator, its core, server); ok = p99
    # < 100 ms, nothing lost, no error.
    legend = "ms; CPU in % of a core (! the generator at >= 70% of its core)\n"
    if isinstance(result, TrafficResult):
        # recv/core: delivered/s per core of server CPU (all nodes together); redis: each
        # Redis process the bench started (cluster --shards), in % of a core; redis max:
        # recv/s at which the busiest of them would use a whole core.
        headers = ["rate/s", "sent/s", "recv/s", "recv/core", "lost", "p50", "p99", "max"]
        headers += ["gen", "gen core", "server"]
        redis = any(s.cpu.redis for s in result.steps)
        rows = [
            [
                f"{s.rate:g}",
                f"{s.sent_per_s:,.0f}",
                f"{s.delivered_per_s:,.0f}",
                _per_core(s.delivered_per_server_core),
                str(s.lost),
                *_ms(s.latency_ms),
                *_cpu(s.cpu, s.generator_saturated),
                *(_redis(s) if redis else []),
                "yes" if s.ok else "no",
            ]
            for s in result.steps
        ]
        headers += [*(["redis", "redis max"] if redis else []), "ok"]
    elif isinstance(result, JoinResult):
        headers = ["joined", "joins/s", "p50", "p99", "max", "gen", "gen core", "server"]
        joined = f"{result.joined}/{result.connections}"
        row = [joined, f"{result.joins_per_s:,.0f}", *_ms(result.latency_ms)]
        row += _cpu(result.cpu, result.generator_saturated)
        if isinstance(result, StormResult):  # the schedule kept, or how far it slipped
            headers[:0] = ["opened in s", "lobby"]
            row[:0] = [f"{result.opened_s:g}/{result.window_s:g}", str(result.waited)]
        rows = [row]
    else:
        headers = ["joined", "open after hold", "RSS before KB", "RSS after KB", "KB/conn"]
        legend = ""
        rows = [
            [
                f"{result.joined}/{result.connections}",
                str(result.open_after_hold),
                str(result.rss_before_kb),
                str(result.rss_after_kb),
                f"{result.kb_per_connection:g}",
            ]
        ]
    for header in headers:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*row)
    metric, value, _ = headline(result)
    shown = "-" if value is None else f"{value:,.1f}"
    if isinstance(result, TrafficResult) and result.best is not None:
        per_core = result.best.delivered_per_server_core
        shown += "" if per_core is None else f" ({per_core:,.0f} per server core)"
    if value is not None and not usable(result):
        shown += " (unusable: the generator was at its limit)"
    table.caption = f"{legend}{metric}: {shown}; errors: {_errors(result.errors)}"
    return table


def compare_table(scenario: str, comparison: dict[str, Any]) -> Table:
    runs: dict[str, dict[str, Any]] = comparison["runs"]
    ratios: dict[str, float | None] = comparison["ratios"]
    base = next(iter(runs), None)
    better = "higher" if comparison["higher_is_better"] else "lower"
    title = f"compare {scenario}: {comparison['metric']} ({better} is better)"
    rounds: list[dict[str, float | None]] = comparison.get("rounds", [])
    round_ratios: list[dict[str, float | None]] = comparison.get("round_ratios", [])
    paired: dict[str, float | None] = comparison.get("median_round_ratios", {})
    several = len(rounds) > 1
    table = Table(title=title, box=box.SIMPLE_HEAD)
    headers = ["server", "median" if several else "value", f"{base} / server", "errors"]
    if several:
        headers[2:3] = ["rounds", f"{base} / server (medians)", "median (each round)"]
    for header in headers:
        table.add_column(header, justify="right")
    for name, run in runs.items():
        is_base = name == base
        row = [name, _value(run["headline"]["value"]) + _limited(run)]
        if several:
            cells = zip(rounds, comparison.get("round_runs", []), strict=False)
            row.append(
                " / ".join(
                    _value(values.get(name)) + _limited(reports.get(name))
                    for values, reports in cells
                )
            )
        row.append(_ratio(ratios.get(name), is_base))
        if several:
            per_round = " / ".join(_plain(r.get(name)) for r in round_ratios)
            row.append("-" if is_base else f"{_ratio(paired.get(name), False)} ({per_round})")
        row.append(_errors(run["errors"]))
        table.add_row(*row)
    for name, reason in comparison["skipped"].items():
        table.add_row(name, "skipped", *(["-", "-"] if several else []), "-", reason)
    table.caption = "! unusable: the generator was at >= 70% of its core where it was decided"
    return table


def _limited(report: dict[str, Any] | None) -> str:
    """``!`` after a headline the generator decided (``usable`` false)."""
    if report is None or report["headline"].get("usable", True):
        return ""
    return "!"


def _ratio(value: float | None, is_base: bool) -> str:
    return "-" if is_base or value is None else f"{value:.2f}x"


def _plain(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"
