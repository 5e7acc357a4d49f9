"""Start the server under test: callroom in dev mode or a reference peer of bench/peers.

A spawned server gets a fresh working directory (its dev key, its SQLite file, its log),
the abuse limits of SPEC §6 raised so that the bench measures speed rather than the rate
limiter, and, when ``taskset`` exists and there are at least two CPUs, its own core:
servers on the first cores, the generator on the last one (docs/performance.md, "Method").
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from importlib.util import find_spec
from pathlib import Path

from callroom_bench.client import Protocol
from callroom_bench.target import DEV_KEY_FILE, BenchError

READY_TIMEOUT_SECONDS = 90.0
"""A server's start is mostly imports: two callroom nodes took over 30 s on a 2-core
machine at a load average of 14 (2026-12-07)."""


class ServerKind(StrEnum):
    """The servers the bench can start; every one speaks the SPEC §1/§3 envelope."""

    CALLROOM = "callroom"
    PICOWS = "picows"
    SOCKETIO = "socketio"
    NODE = "node"


PROTOCOLS = {
    ServerKind.CALLROOM: Protocol.CALLROOM,
    ServerKind.PICOWS: Protocol.RAW,
    ServerKind.SOCKETIO: Protocol.SOCKETIO,
    ServerKind.NODE: Protocol.RAW,
}

# SPEC §6 limits that would otherwise refuse or throttle the load: the lobby is off so
# every joiner is admitted (the storm turns it on: ``spawn(lobby=True)``), rate and
# connection limits are far above any bench load.
BENCH_ENV = {
    "LOBBY_ENABLED": "false",
    "RATE_LIMIT_PER_SECOND": "1000000",
    "RATE_LIMIT_BURST": "1000000",
    "MAX_CONNECTIONS_PER_IP": "1000000",
    "MAX_CONNECTIONS": "1000000",
    "MAX_ROOM_SIZE": "100000",
    "LOG_LEVEL": "WARNING",
    "SHUTDOWN_GRACE_SECONDS": "2",
}


class PeerUnavailable(BenchError):
    """A reference server cannot run here (not installed); ``compare`` skips it."""


def peers_dir() -> Path:
    """``bench/peers`` beside this package in the source tree, else of the working directory."""
    tree = Path(__file__).resolve().parents[1] / "peers"
    return tree if tree.is_dir() else Path.cwd() / "bench" / "peers"


def server_command(kind: ServerKind, port: int) -> list[str]:
    """The command that serves ``kind`` on 127.0.0.1:``port``; PeerUnavailable if it can't."""
    if kind is ServerKind.CALLROOM:
        return [sys.executable, "-m", "callroom", "serve", "--dev", "--port", str(port)]
    peers = peers_dir()
    if kind is ServerKind.NODE:
        node = shutil.which("node")
        if node is None or not (peers / "node" / "node_modules" / "ws").is_dir():
            raise PeerUnavailable(
                "node or bench/peers/node/node_modules is missing: run `npm ci` in bench/peers/node"
            )
        return [node, str(peers / "node" / "server.js"), "--port", str(port)]
    if kind is ServerKind.SOCKETIO and not (find_spec("socketio") and find_spec("uvicorn")):
        raise PeerUnavailable("python-socketio and uvicorn are not installed (dev group)")
    script = peers / ("picows_relay.py" if kind is ServerKind.PICOWS else "socketio_server.py")
    if not script.is_file():
        raise PeerUnavailable(f"{script} not found: run the bench from the project checkout")
    return [sys.executable, str(script), "--port", str(port)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def plan_cpus(nodes: int, pin: bool) -> tuple[list[int | None], int | None]:
    """CPU of each server node and of the generator; all None when pinning is not possible."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
        return [None] * nodes, None
    return [cpus[i % (len(cpus) - 1)] for i in range(nodes)], cpus[-1]


@contextmanager
def pinned_generator(cpu: int | None) -> Iterator[None]:
    """Run the generator thread on ``cpu`` (if given), restoring the old affinity after."""
    before = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclass(frozen=True)
class Spawned:
    kind: ServerKind
    urls: tuple[str, ...]
    pids: tuple[int, ...]
    key_file: Path
    generator_cpu: int | None


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    return "\n".join(text) or "(no output)"


def _health_ok(port: int) -> bool:
    # A blocking probe in a thread: simpler than asyncio streams, and a refused connect
    # raised inside uvloop before a success confuses coverage's tracer on Python 3.11.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /ws/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return sock.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


async def _wait_ready(process: asyncio.subprocess.Process, port: int, log: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_SECONDS
    while loop.time() < deadline:
        if process.returncode is not None:
            raise BenchError(f"the server exited with code {process.returncode}:\n{_tail(log)}")
        if await asyncio.to_thread(_health_ok, port):
            return
        await asyncio.sleep(0.1)
    raise BenchError(f"the server did not answer GET /ws/health in time:\n{_tail(log)}")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


@asynccontextmanager
async def spawn(
    kind: ServerKind, nodes: int = 1, pin: bool = True, *, lobby: bool = False
) -> AsyncIterator[Spawned]:
    """Start ``nodes`` servers of ``kind``, wait until they serve, stop them on exit;
    ``lobby``: with callroom's waiting room on (the storm scenario)."""
    workdir = Path(tempfile.mkdtemp(prefix="callroom-bench-"))
    server_cpus, generator_cpu = plan_cpus(nodes, pin)
    env = os.environ | BENCH_ENV | ({"LOBBY_ENABLED": "true"} if lobby else {})
    env.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.db'}")
    # The dev server creates its key in its working directory at start; the bench mints
    # with that file once the server answers.
    key_file = workdir / DEV_KEY_FILE
    processes: list[tuple[asyncio.subprocess.Process, int, Path]] = []
    try:
        for node, cpu in enumerate(server_cpus):
            port = free_port()
            command = server_command(kind, port)
            if cpu is not None:
                command = ["taskset", "-c", str(cpu), *command]
            log = workdir / f"server-{node}.log"
            fd = _open_log(log)
            try:
                process = await asyncio.create_subprocess_exec(
                    *command, cwd=workdir, env=env, stdout=fd, stderr=asyncio.subprocess.STDOUT
                )
            finally:
                os.close(fd)
            processes.append((process, port, log))
        for process, port, log in processes:
            await _wait_ready(process, port, log)
        yield Spawned(
            kind=kind,
            urls=tuple(f"ws://127.0.0.1:{port}" for _, port, _ in processes),
            pids=tuple(process.pid for process, _, _ in processes),
            key_file=key_file,
            generator_cpu=generator_cpu,
        )
    finally:
        await asyncio.gather(*(_stop(process) for process, _, _ in processes))
        shutil.rmtree(workdir, ignore_errors=True)
