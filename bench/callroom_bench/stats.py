"""What the bench measures besides message counts: latency percentiles, CPU, memory.

CPU is reported as a fraction of one core over a measured window, for the load generator
(``getrusage`` of this process) and for the server (``/proc/PID/stat``), so every result
shows whether the generator, not the server, was the limit (docs/performance.md).
"""

from __future__ import annotations

import math
import os
import resource
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Latency:
    """Percentiles of a set of latency samples, in milliseconds."""

    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples_ns: Sequence[int]) -> Latency | None:
        """Nearest-rank percentiles; ``None`` when there are no samples."""
        if not samples_ns:
            return None
        ordered = sorted(samples_ns)
        count = len(ordered)

        def rank(p: float) -> float:
            return round(ordered[max(math.ceil(p * count) - 1, 0)] / 1e6, 3)

        return cls(p50=rank(0.50), p99=rank(0.99), max=round(ordered[-1] / 1e6, 3))


def new_samples() -> array[int]:
    """A compact buffer for nanosecond samples (no Python object per sample)."""
    return array("q")


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
    """CPU used over a window, as a fraction of one core (1.0 = one core saturated)."""

    generator: float
    server: float | None


class CpuMeter:
    """Measures generator and server CPU over the window between ``__init__`` and ``stop``."""

    def __init__(self, server_pids: Sequence[int]) -> None:
        self._pids = tuple(server_pids)
        self._wall = time.monotonic()
        self._self = self_cpu_seconds()
        self._server = self._server_cpu()

    def _server_cpu(self) -> float | None:
        if not self._pids:
            return None
        return sum(process_cpu_seconds(pid) for pid in self._pids)

    def stop(self) -> CpuUse:
        wall = max(time.monotonic() - self._wall, 1e-9)
        generator = (self_cpu_seconds() - self._self) / wall
        before, after = self._server, self._server_cpu()
        server = None if before is None or after is None else (after - before) / wall
        return CpuUse(
            generator=round(generator, 3), server=None if server is None else round(server, 3)
        )
