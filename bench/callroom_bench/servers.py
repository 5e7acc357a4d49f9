"""Start the server under test: callroom in dev mode or a reference peer of bench/peers.

A spawned server gets a fresh working directory (its dev key, its SQLite file, its log),
the abuse limits of SPEC §6 raised so that the bench measures speed rather than the rate
limiter, and, when ``taskset`` exists and there are at least two CPUs, its own core:
servers on the first cores, the generator on the last one (docs/performance.md, "Method").
``cluster --shards M`` starts its own Redis first (``redis_topology``), whose processes
take the cores after the nodes', never the generator's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from importlib.util import find_spec
from pathlib import Path

from callroom_bench.client import Protocol
from callroom_bench.processes import free_port, open_log, stop, tail
from callroom_bench.redis_topology import RedisTopology, start_redis
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


@dataclass(frozen=True)
class Placement:
    """CPU of each server node, of each Redis process and of the generator (None: not
    pinned)."""

    servers: list[int | None]
    generator: int | None
    redis: list[int | None]


def plan_cpus(nodes: int, pin: bool, shards: int = 0) -> Placement:
    """The generator on the last CPU; the nodes, then the Redis processes, round-robin
    over the others: each its own core when there are enough, and on two CPUs all of
    them on the first (the generator's core stays its own). All None when pinning is
    not possible."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
        return Placement([None] * nodes, None, [None] * shards)
    rest = cpus[:-1]
    placed: list[int | None] = [rest[i % len(rest)] for i in range(nodes + shards)]
    return Placement(placed[:nodes], cpus[-1], placed[nodes:])


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
    redis: RedisTopology | None = None


def _health_ok(port: int, path: str) -> bool:
    # A blocking probe in a thread: simpler than asyncio streams, and a refused connect
    # raised inside uvloop before a success confuses coverage's tracer on Python 3.11.
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request.encode())
            return sock.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


async def _wait_ready(
    kind: ServerKind, process: asyncio.subprocess.Process, port: int, log: Path
) -> None:
    # callroom: /readyz (SPEC §4), which waits for its Redis subscriber too; a node that
    # only answers /ws/health would refuse the first messages with `unavailable`. The
    # peers have /ws/health only.
    path = "/readyz" if kind is ServerKind.CALLROOM else "/ws/health"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_SECONDS
    while loop.time() < deadline:
        if process.returncode is not None:
            raise BenchError(f"the server exited with code {process.returncode}:\n{tail(log)}")
        if await asyncio.to_thread(_health_ok, port, path):
            return
        await asyncio.sleep(0.1)
    raise BenchError(f"the server did not answer GET {path} in time:\n{tail(log)}")


@asynccontextmanager
async def spawn(
    kind: ServerKind,
    nodes: int = 1,
    pin: bool = True,
    shards: int = 0,
    *,
    lobby: bool = False,
) -> AsyncIterator[Spawned]:
    """Start ``nodes`` servers of ``kind`` (on a Redis of ``shards`` shards started first,
    when given), wait until they serve, stop them all on exit; ``lobby``: with
    callroom's waiting room on (the storm scenario)."""
    workdir = Path(tempfile.mkdtemp(prefix="callroom-bench-"))
    placement = plan_cpus(nodes, pin, shards)
    env = os.environ | BENCH_ENV | ({"LOBBY_ENABLED": "true"} if lobby else {})
    env.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.db'}")
    # The dev server creates its key in its working directory at start; the bench mints
    # with that file once the server answers.
    key_file = workdir / DEV_KEY_FILE
    processes: list[tuple[asyncio.subprocess.Process, int, Path]] = []
    redis: RedisTopology | None = None
    stack = AsyncExitStack()
    try:
        if shards:
            redis = await stack.enter_async_context(start_redis(shards, placement.redis, workdir))
            env["REDIS_URL"] = redis.url
        for node, cpu in enumerate(placement.servers):
            port = free_port()
            command = server_command(kind, port)
            if cpu is not None:
                command = ["taskset", "-c", str(cpu), *command]
            log = workdir / f"server-{node}.log"
            fd = open_log(log)
            try:
                process = await asyncio.create_subprocess_exec(
                    *command, cwd=workdir, env=env, stdout=fd, stderr=asyncio.subprocess.STDOUT
                )
            finally:
                os.close(fd)
            processes.append((process, port, log))
        for process, port, log in processes:
            await _wait_ready(kind, process, port, log)
        yield Spawned(
            kind=kind,
            urls=tuple(f"ws://127.0.0.1:{port}" for _, port, _ in processes),
            pids=tuple(process.pid for process, _, _ in processes),
            key_file=key_file,
            generator_cpu=placement.generator,
            redis=redis,
        )
    finally:
        await asyncio.gather(*(stop(process) for process, _, _ in processes))
        await stack.aclose()  # Redis after the nodes: they leave their rooms on SIGTERM
        shutil.rmtree(workdir, ignore_errors=True)
