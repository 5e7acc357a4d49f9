"""A callroom node as a real process (``python -m callroom serve``), for the faults that
need one: ``kill9`` is a real ``kill -9`` (issue 21).

Its JSON log lines (stderr) are read as they come, so the pipe never fills; ``port``
and ``url`` make it usable wherever the tests take an in-process ``Node`` for its
address (``room_url``, ``http_call``, tests/restart_members.py's ``Member``).

    node = await NodeProcess.start(env, cwd)
    await node.kill9()     # SIGKILL, reaped: its sockets are gone, no goodbye
    await node.stop()      # SIGTERM (the shutdown of SPEC §8), SIGKILL if it hangs
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

import reaping
from ports import free_port

START_SECONDS = 180.0  # a cold start imports a lot: ~4 s, but minutes on a loaded machine


class NodeProcess:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.logs: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, env: dict[str, str], cwd: Path) -> NodeProcess:
        """Start a node on a free port; return once its ``/readyz`` answers 200."""
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callroom",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            env={**env, "LOG_FORMAT": "json"},
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        node = cls(process, port)
        try:
            await node.wait_ready()
        except BaseException:
            await node.stop()
            raise
        return node

    @property
    def node_id(self) -> str:
        for line in self.logs:
            if line.get("event") == "listening":
                return str(line["node_id"])
        raise AssertionError("the node has not said it listens")

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        async with aiohttp.ClientSession() as http:
            while True:
                if self.process.returncode is not None:
                    raise AssertionError(f"node exited {self.process.returncode}: {self.logs}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise AssertionError(f"node not ready in time: {self.logs[-5:]}")
                await asyncio.sleep(0.05)  # polling a state with a deadline

    def errors(self) -> list[dict[str, Any]]:
        """Its log lines of level error or above."""
        return [line for line in self.logs if line.get("level") in ("error", "critical")]

    async def kill9(self) -> None:
        """SIGKILL: no shutdown, no goodbye (its sockets are reset by the kernel)."""
        await reaping.kill9(self.process)
        await self._reader

    async def stop(self) -> None:
        await reaping.end(self.process)
        with contextlib.suppress(Exception):
            await self._reader

    async def _read(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        while raw := await stream.readline():
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": "not_json", "raw": raw.decode(errors="replace")}
            self.logs.append(line)
