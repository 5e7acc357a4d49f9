"""The processes a run starts for itself (servers, Redis): ports, logs, stopping."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now (the system's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bindable(port: int) -> bool:
    """Whether a listener could bind ``port`` of 127.0.0.1 now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for an error message."""
    if not path.is_file():
        return "(no log)"
    text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    return "\n".join(text) or "(no output)"


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after 10 s; reaped either way."""
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
