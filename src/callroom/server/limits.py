"""Token buckets for message rates and connection attempts (SPEC §6 limits)."""

from __future__ import annotations

import time


class TokenBucket:
    """A classic token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("_last", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._last = time.monotonic() if now is None else now

    def take(self, now: float | None = None, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens; False (nothing taken) when the bucket holds fewer."""
        if now is None:
            now = time.monotonic()
        elapsed = now - self._last
        self._last = now
        tokens = self.tokens + elapsed * self.rate
        if tokens > self.burst:
            tokens = self.burst
        if tokens >= cost:
            self.tokens = tokens - cost
            return True
        self.tokens = tokens
        return False


class ConnectionLimiter:
    """Per-IP connection count and connection-attempt rate (SPEC §1 429 row).

    An IP may hold ``per_ip`` connections, and may open at most ``per_ip`` connections in
    a burst, refilled at ``per_ip / 5`` per second (at least 1): a burst of tabs
    reconnecting is fine, a script hammering the handshake is not.
    """

    def __init__(self, per_ip: int) -> None:
        self.per_ip = per_ip
        self._open: dict[str, int] = {}
        self._attempts: dict[str, TokenBucket] = {}

    def open_count(self, ip: str) -> int:
        return self._open.get(ip, 0)

    def admit(self, ip: str) -> bool:
        """Whether ``ip`` may open one more connection now (counts the attempt)."""
        bucket = self._attempts.get(ip)
        if bucket is None:
            if len(self._attempts) > 100_000:
                self._attempts.clear()  # bounded memory under an address-spraying attack
            bucket = self._attempts[ip] = TokenBucket(max(1.0, self.per_ip / 5), self.per_ip)
        if not bucket.take():
            return False
        return self._open.get(ip, 0) < self.per_ip

    def opened(self, ip: str) -> None:
        self._open[ip] = self._open.get(ip, 0) + 1

    def closed(self, ip: str) -> None:
        count = self._open.get(ip, 0) - 1
        if count > 0:
            self._open[ip] = count
        else:
            self._open.pop(ip, None)
