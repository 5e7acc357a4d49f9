"""What the bench measures besides message counts: latency percentiles, CPU, memory.

CPU is reported as a fraction of one core over a measured window, for the load generator
(its own ``process.cpuUsage`` and its core's ``/proc/stat``) and for the server
(``/proc/PID/stat``), so every result shows whether the generator, not the server, was
the limit (docs/performance.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Latency:
    """Nearest-rank percentiles of a set of latency samples, in milliseconds (the
    generator computes them: bench/node/generator.mjs)."""

    p50: float
    p99: float
    max: float


def core_ticks(cpu: int) -> tuple[int, int]:
    """(busy, total) clock ticks of one CPU since boot, from ``/proc/stat``."""
    prefix = f"cpu{cpu} "
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(prefix):
            # user nice system idle iowait irq softirq steal; guest time is already in user.
            ticks = [int(field) for field in line.split()[1:9]]
            idle = ticks[3] + ticks[4]
            return sum(ticks) - idle, sum(ticks)
    raise ValueError(f"/proc/stat has no line for CPU {cpu}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from ``/proc/PID/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB (``VmRSS`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"process {pid} reports no VmRSS")


@dataclass(frozen=True)
class CpuUse:
    """CPU used over a window, as a fraction of one core (1.0 = one core saturated).

    ``generator`` is the generator process's own CPU (Node's ``process.cpuUsage``);
    ``generator_core`` how busy the generator's core was (``/proc/stat``, anything on it:
    the generator, the kernel's network work done there, other processes), when the
    generator has a core of its own. ``redis`` is each Redis process's CPU when the
    bench started the Redis (``cluster --shards``), in the order of its ports.
    """

    generator: float
    server: float | None
    generator_core: float | None = None
    redis: tuple[float, ...] | None = None

    @property
    def generator_busy(self) -> float:
        """The larger of the two generator figures: what decides whether it was a limit."""
        return max(self.generator, self.generator_core or 0.0)


@dataclass(frozen=True)
class Window:
    """What ``CpuMeter.stop`` measured, as shares of one core (None: not measured)."""

    server: float | None
    generator_core: float | None
    redis: tuple[float, ...] | None


class CpuMeter:
    """Measures the server's CPU, each Redis process's and the generator's core over the
    window between ``__init__`` and ``stop``; the generator's own CPU comes from the
    generator."""

    def __init__(
        self,
        server_pids: Sequence[int],
        generator_core: int | None = None,
        redis_pids: Sequence[int] = (),
    ) -> None:
        self._pids = tuple(server_pids)
        self._core = generator_core
        self._redis_pids = tuple(redis_pids)
        self._wall = time.monotonic()
        self._server = self._server_cpu()
        self._redis = [process_cpu_seconds(pid) for pid in self._redis_pids]
        self._core_ticks = None if generator_core is None else core_ticks(generator_core)

    def _server_cpu(self) -> float | None:
        if not self._pids:
            return None
        return sum(process_cpu_seconds(pid) for pid in self._pids)

    def stop(self) -> Window:
        """The window's CPU shares."""
        wall = max(time.monotonic() - self._wall, 1e-9)
        before, after = self._server, self._server_cpu()
        server = None if before is None or after is None else round((after - before) / wall, 3)
        redis = tuple(
            round((process_cpu_seconds(pid) - spent) / wall, 3)
            for pid, spent in zip(self._redis_pids, self._redis, strict=True)
        )
        core = None
        if self._core is not None and self._core_ticks is not None:
            busy, total = core_ticks(self._core)
            spent = total - self._core_ticks[1]
            core = round((busy - self._core_ticks[0]) / spent, 3) if spent > 0 else None
        return Window(server, core, redis or None)
