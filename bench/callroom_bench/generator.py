"""The load generator: ``bench/node/generator.mjs``, a Node process driven over pipes.

The Python side plans a run (who joins which room with which pre-minted token, the
frames, the rates, the step search) and the Node program does the per-frame work on raw
sockets: one JSON command per line on its stdin, one ``{"event": "done", ...}`` line per
command on its stdout (bench/node/generator.mjs lists the commands). A Python client
spent about as much CPU per received frame as a relay spends per sent one, so at the
servers' saturation step it was the limit (docs/performance.md, "The generator").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from callroom_bench.stats import Latency
from callroom_bench.target import BenchError

JOIN_LIMIT_SECONDS = 30.0
_STDOUT_LIMIT = 1 << 24  # a join's reply lists every connection


def generator_script() -> Path:
    """``bench/node/generator.mjs`` beside this package, else of the working directory."""
    tree = Path(__file__).resolve().parents[1] / "node" / "generator.mjs"
    return tree if tree.is_file() else Path.cwd() / "bench" / "node" / "generator.mjs"


@dataclass(frozen=True)
class JoinReply:
    joined: list[bool]
    elapsed_s: float
    latency_ms: Latency | None
    generator_cpu: float
    opened_s: float = 0.0  # a storm's: when its last connection was opened
    waited: int = 0  # a storm's: connections that were in the waiting room first


@dataclass(frozen=True)
class StepReply:
    sent: int
    elapsed_s: float
    expected: int
    delivered: int
    window_s: float
    latency_ms: Latency | None
    generator_cpu: float
    errors: dict[str, int]


@dataclass(frozen=True)
class Sender:
    """Connection ``conn`` sends ``prefix + stamp + suffix``; each message makes ``fanout``
    deliveries."""

    conn: int
    prefix: bytes
    suffix: bytes
    fanout: int


def _latency(value: dict[str, float] | None) -> Latency | None:
    return None if value is None else Latency(value["p50"], value["p99"], value["max"])


def _join_reply(reply: dict[str, Any], opened_s: float = 0.0, waited: int = 0) -> JoinReply:
    """The generator's answer to ``join`` or ``storm``."""
    return JoinReply(
        joined=[bool(joined) for joined in reply["joined"]],
        elapsed_s=float(reply["elapsed_s"]),
        latency_ms=_latency(reply["latency_ms"]),
        generator_cpu=float(reply["generator_cpu"]),
        opened_s=opened_s,
        waited=waited,
    )


Progress = Callable[[float], None]


class Generator:
    """One running generator process, pinned to ``cpu`` (None: not pinned); ``errors`` are
    its counters so far, by code."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path, cpu: int | None) -> None:
        self._process = process
        self._log = log
        self.cpu = cpu
        self.node = ""  # Node's version, from the first reply
        self.errors: dict[str, int] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, cpu: int | None) -> AsyncIterator[Generator]:
        """Start the generator (under ``taskset -c CPU`` when given); stop it on exit."""
        node = shutil.which("node")
        if node is None:
            raise BenchError("the load generator runs on Node.js: put `node` (>= 18) on PATH")
        script = generator_script()
        if not script.is_file():
            raise BenchError(f"{script} not found: run the bench from the project checkout")
        command = [node, str(script)]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        workdir = Path(tempfile.mkdtemp(prefix="callroom-generator-"))
        log = workdir / "generator.log"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=fd,
                limit=_STDOUT_LIMIT,
            )
        finally:
            os.close(fd)
        try:
            yield cls(process, log, cpu)
        finally:
            await _stop(process)
            shutil.rmtree(workdir, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        """The generator as the report names it."""
        return {"program": "bench/node/generator.mjs", "node": self.node, "cpu": self.cpu}

    async def _request(
        self,
        command: dict[str, Any],
        progress: Progress | None = None,
        paced: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None
        assert stdout is not None
        try:
            stdin.write(orjson.dumps(command) + b"\n")
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise self._gone() from None
        while True:
            line = await stdout.readline()
            if not line:
                raise self._gone()
            message: dict[str, Any] = orjson.loads(line)
            event = message.get("event")
            if event == "progress":
                if progress is not None:
                    progress(float(message["done"]))
            elif event == "paced":
                if paced is not None:
                    paced()
            elif event == "error":
                raise BenchError(f"the load generator refused a command: {message['message']}")
            else:
                self.errors = dict(message["errors"])
                self.node = str(message["node"])
                return message

    def _gone(self) -> BenchError:
        text = self._log.read_text(errors="replace").strip().splitlines()[-15:]
        tail = "\n".join(text) or "(no output)"
        return BenchError(f"the load generator exited ({self._process.returncode}):\n{tail}")

    async def join(
        self,
        urls: list[str],
        concurrency: int,
        engineio: bool,
        progress: Progress | None = None,
        limit_s: float = JOIN_LIMIT_SECONDS,
    ) -> JoinReply:
        """Connect ``urls`` (C handshakes in flight) and wait for each first room_state;
        a join that takes longer than ``limit_s`` is given up (``connect:timeout``)."""
        command = {
            "op": "join",
            "urls": urls,
            "concurrency": concurrency,
            "engineio": engineio,
            "limit_s": limit_s,
        }
        return _join_reply(await self._request(command, progress))

    async def storm(
        self,
        urls: list[str],
        window_s: float,
        engineio: bool,
        progress: Progress | None = None,
        limit_s: float = JOIN_LIMIT_SECONDS,
    ) -> JoinReply:
        """Open ``urls`` in order, evenly over ``window_s`` (open loop); hosts admit the
        waiting; each join is done at its first ``room_state`` as participant, or given
        up after ``limit_s``. ``elapsed_s`` runs to the last join's outcome."""
        command = {"op": "storm", "urls": urls, "window_s": window_s, "limit_s": limit_s}
        reply = await self._request({**command, "engineio": engineio}, progress)
        return _join_reply(reply, float(reply["opened_s"]), int(reply["waited"]))

    async def settle(self, quiet_s: float = 0.3, limit_s: float = 60.0) -> None:
        """Wait until the join traffic (room_state, connect broadcasts) has died down."""
        await self._request({"op": "settle", "quiet_s": quiet_s, "limit_s": limit_s})

    async def senders(self, senders: list[Sender]) -> None:
        listed = [
            {
                "conn": s.conn,
                "prefix": s.prefix.decode(),
                "suffix": s.suffix.decode(),
                "fanout": s.fanout,
            }
            for s in senders
        ]
        await self._request({"op": "senders", "senders": listed})

    async def step(
        self, rate: float, duration: float, progress: Progress, paced: Callable[[], None]
    ) -> StepReply:
        """Send at ``rate`` for ``duration``; ``paced`` runs when the sending window ends,
        the reply comes after the deliveries in flight have drained."""
        command = {"op": "step", "rate": rate, "duration": duration}
        reply = await self._request(command, progress, paced)
        return StepReply(
            sent=int(reply["sent"]),
            elapsed_s=float(reply["elapsed_s"]),
            expected=int(reply["expected"]),
            delivered=int(reply["delivered"]),
            window_s=float(reply["window_s"]),
            latency_ms=_latency(reply["latency_ms"]),
            generator_cpu=float(reply["generator_cpu"]),
            errors=dict(reply["step_errors"]),
        )

    async def status(self) -> tuple[int, int]:
        """(joined connections still open, timed messages received since the last step
        began); refreshes ``errors``."""
        reply = await self._request({"op": "status"})
        return int(reply["open"]), int(reply["timed"])

    async def close(self) -> None:
        """Leave (close code 1000) on every connection and wait for the ends."""
        await self._request({"op": "close"})


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), 40)  # close waits up to 30 s for servers
    except TimeoutError:
        process.kill()
        await process.wait()
