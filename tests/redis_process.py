"""A redis-server of a test's own, as a real process: start it, ``kill -9`` it, start a
new empty one on the same port (issue 18: "a real Redis the tests start, ``kill -9`` and
restart empty").

Debian's ``redis-server`` runs on a free 127.0.0.1 port with no persistence (``--save ''
--appendonly no``) in a directory of the test's own, so a restart is empty like a Redis
that lost its memory, and its run id changes (what the nodes use to tell a restart from
a broken connection, ``callroom.cluster.link``). No step waits a fixed time: a start
polls ``INFO`` until this very process answers (bounded), a kill waits until the process is reaped.

    async with RedisProcess(tmp_path / "redis") as redis:
        url = redis.url(9)
        await redis.kill9()     # SIGKILL, reaped: the port refuses connections
        await redis.restart()   # a new, empty process on the same port, answering
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
from pathlib import Path
from types import TracebackType

import reaping
from ports import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_SECONDS = 10.0  # until a started process answers
PORT_ATTEMPTS = 5  # a free port found may be taken by someone else before Redis binds it


class RedisFailed(RuntimeError):
    """The redis-server could not be started (its log's tail says why)."""


async def server_pid(port: int, timeout: float = 0.5) -> int | None:
    """The process id of the Redis answering on 127.0.0.1:``port`` now (``INFO server``),
    or None when nothing answers. Asking its pid, not just PING, tells our process from
    another Redis that took the port first."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"INFO server\r\n")
                header = await reader.readline()  # $<length> of one bulk string
                if not header.startswith(b"$"):
                    return None
                body = await reader.readexactly(int(header[1:]) + 2)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
        return None
    found = re.search(rb"^process_id:(\d+)", body, re.MULTILINE)
    return None if found is None else int(found.group(1))


class RedisProcess:
    """One redis-server process at a time, always on the same port once chosen."""

    def __init__(self, directory: Path, *, executable: str = REDIS_SERVER) -> None:
        self.directory = directory
        self.executable = executable
        self.port = 0  # chosen by the first start, kept by every restart
        self.starts = 0
        self._process: asyncio.subprocess.Process | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start redis-server on a free port (a new one at each failed attempt); return
        once it answers."""
        assert not self.running, "already running"
        for attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            try:
                await self._spawn()
                return
            except RedisFailed:
                if attempt == PORT_ATTEMPTS - 1:
                    raise

    async def restart(self) -> None:
        """A NEW redis-server, empty, on the same port (after ``kill9`` or ``stop``)."""
        assert self.port, "never started"
        assert not self.running, "kill9() or stop() it first"
        await self._spawn()

    async def kill9(self) -> None:
        """SIGKILL, as ``kill -9`` does: no shutdown, no goodbye to the clients (the
        kernel resets their connections); returns once the process is reaped."""
        process = self._process
        assert process is not None, "never started"
        await reaping.kill9(process)

    async def stop(self) -> None:
        """Make sure no process of ours is left (SIGTERM, then SIGKILL); idempotent."""
        process = self._process
        if process is not None:
            await reaping.end(process)

    async def __aenter__(self) -> RedisProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _spawn(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = self.directory / f"redis-{self.port}-{self.starts}.log"
        self._process = await asyncio.create_subprocess_exec(
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(log),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_SECONDS
        while await server_pid(self.port) != self._process.pid:
            if self._process.returncode is not None or time.monotonic() > deadline:
                await self.stop()
                tail = log.read_text()[-600:] if log.exists() else "(no log)"
                raise RedisFailed(f"redis-server on port {self.port} did not start: {tail}")
            await asyncio.sleep(0.01)  # polling a state with a deadline, not a wait for time
