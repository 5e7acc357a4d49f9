"""Free TCP ports for the processes the tests start (Redis, PostgreSQL, JWKS servers,
callroom nodes).

``CALLROOM_TEST_PORTS=7500-7599`` keeps them inside a range (a machine shared by
several test runs gives each run a range of its own); unset, the system picks.
"""

from __future__ import annotations

import os
import random
import socket

RANGE = os.environ.get("CALLROOM_TEST_PORTS", "")


def bindable(port: int) -> bool:
    """Whether a listener could bind ``port`` of 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now (inside
    ``CALLROOM_TEST_PORTS`` when it is set)."""
    if RANGE:
        low, _, high = RANGE.partition("-")
        candidates = list(range(int(low), int(high or low) + 1))
        random.shuffle(candidates)
        for port in candidates:
            if bindable(port):
                return port
        raise RuntimeError(f"no free port in CALLROOM_TEST_PORTS={RANGE}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        chosen: int = probe.getsockname()[1]
        return chosen
