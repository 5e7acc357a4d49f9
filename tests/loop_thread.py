"""An event loop in a thread of its own, for hypothesis tests over live nodes.

Hypothesis runs synchronous tests, and starting nodes for every example would cost more
than the example: the nodes and the members live on this loop for a whole module, and
each example (or each step of a state machine) runs there to its end with ``run``.
Users: tests/integration/test_fuzz_live.py, tests/integration/test_model_live.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop running in a thread of its own; ``run`` waits for a coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
