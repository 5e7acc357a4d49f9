"""Stopping a task for sure."""

from __future__ import annotations

import asyncio
from typing import Any


async def finish(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for its end, cancelling it again while it runs on.

    One ``cancel()`` is not enough: redis-py's socket timeout (an ``asyncio.wait_for`` on
    Python 3.11) swallows a cancellation that lands as a command completes, and the task
    carries on. A liveness loop would then beat forever: the stopping node would wait
    for it until its shutdown grace ran out and never say goodbye (the others would
    take it for alive and keep its members' places)."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.05)
    if not task.cancelled():
        task.exception()  # retrieved: the task's own end, nothing left to report
