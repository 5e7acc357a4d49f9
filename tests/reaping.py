"""Ending a process a test started (a callroom node, PostgreSQL, Redis, a bench server):
asked first, killed if it does not end in time, reaped either way."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from typing import Any

REAP_SECONDS = 10.0  # until an asked or killed process is gone


async def kill9(process: asyncio.subprocess.Process) -> None:
    """SIGKILL: no shutdown, no goodbye (the kernel resets its sockets); reaped."""
    assert process.returncode is None, "not running"
    process.send_signal(signal.SIGKILL)
    async with asyncio.timeout(REAP_SECONDS):
        await process.wait()


async def end(process: asyncio.subprocess.Process, ask: int = signal.SIGTERM) -> None:
    """Send ``ask`` (PostgreSQL's fast shutdown is SIGINT), SIGKILL after
    ``REAP_SECONDS``; nothing if it has ended already."""
    if process.returncode is not None:
        return
    process.send_signal(ask)
    try:
        async with asyncio.timeout(REAP_SECONDS):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


def end_child(process: subprocess.Popen[Any]) -> None:
    """``end`` for a child of ``subprocess.Popen`` (the synchronous fixtures): SIGTERM,
    SIGKILL after ``REAP_SECONDS``; nothing if it has ended already."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(REAP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
