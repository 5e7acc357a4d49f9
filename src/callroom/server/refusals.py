"""Refusal lines, rate limited per reason (SPEC §9 "Logs"; docs/operations.md "Logs").

Refusals are the lines a client controls the rate of (a refused handshake, a request the
guard stops), so at most ``REFUSAL_LINES_PER_SECOND`` are written per reason each second;
the lines left out are counted in one ``refusals_suppressed`` line when the window ends.
The metrics still count every refusal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("callroom.access")

# At most this many refusal lines per second for each reason; then one line saying how
# many were left out (``refusals_suppressed``).
REFUSAL_LINES_PER_SECOND = 10


class RefusalLog:
    """Per reason, at most ``per_second`` lines in each one-second window; the lines left
    out are counted and reported in one ``refusals_suppressed`` line when the window ends.
    """

    def __init__(
        self,
        per_second: int = REFUSAL_LINES_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # reason → (window start, lines)
        self._suppressed: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def allow(self, reason: str) -> bool:
        """Whether a refusal line for ``reason`` may be written now (counts it)."""
        now = self._clock()
        start, lines = self._windows.get(reason, (now, 0))
        if now - start >= 1.0:
            self.report(reason)
            start, lines = now, 0
        if lines < self.per_second:
            self._windows[reason] = (start, lines + 1)
            return True
        suppressed = self._suppressed.get(reason, 0)
        if not suppressed:
            # Reported when the window ends even if no refusal comes after it.
            delay = max(0.0, start + 1.0 - now)
            self._timers[reason] = asyncio.get_running_loop().call_later(delay, self.report, reason)
        self._suppressed[reason] = suppressed + 1
        return False

    def report(self, reason: str) -> int:
        """Write the ``refusals_suppressed`` line of ``reason``'s window, if any; the
        number of lines it stands for."""
        timer = self._timers.pop(reason, None)
        if timer is not None:
            timer.cancel()
        count = self._suppressed.pop(reason, 0)
        if count:
            log.warning("refusals_suppressed", reason=reason, suppressed=count)
        return count

    def close(self) -> None:
        """Report every window now (the node stops)."""
        for reason in list(self._suppressed):
            self.report(reason)
