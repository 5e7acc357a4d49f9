"""The Redis that ``callroom-bench cluster --shards M`` starts for its run (issue 19).

- M = 1: one plain ``redis-server``; the nodes get ``REDIS_URL=redis://127.0.0.1:PORT/0``.
- M >= 3: a Redis Cluster of M primaries and no replicas, created with ``redis-cli
  --cluster create ... --cluster-replicas 0 --cluster-yes``; the nodes get
  ``REDIS_URL=redis+cluster://127.0.0.1:PORT`` (docs/operations.md "On a Redis Cluster").
  ``redis-cli`` refuses to create a cluster of fewer than three primaries, so M = 2 is
  refused before anything starts.

Every process listens on a free port of 127.0.0.1 (a cluster node's bus port, its port
plus 10000, must be free too), keeps its files in a directory of the run's own, persists
nothing, and runs under ``taskset -c`` where the run's placement puts it
(``servers.plan_cpus``). The ideas are those of tests/redis_cluster.py (the bench does
not import the tests): no step waits a fixed time, each polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callroom_bench.processes import bindable, free_port, open_log, stop, tail
from callroom_bench.target import BenchError

READY_SECONDS = 30.0
"""Until a started redis-server answers, and until a created cluster is ok everywhere."""
BUS_OFFSET = 10000
SLOTS = 16384
MIN_CLUSTER = 3  # redis-cli --cluster create: "Redis Cluster requires at least 3 master nodes"


def shards_problem(shards: int, urls: bool) -> str | None:
    """Why ``--shards`` cannot be used as given (None: it can)."""
    if 1 < shards < MIN_CLUSTER:
        return (
            f"a Redis Cluster needs at least {MIN_CLUSTER} primaries (redis-cli --cluster "
            "create): give --shards 1 (one Redis) or 3 and more"
        )
    if shards and urls:
        return "--shards starts its own Redis and callroom nodes: leave out --url"
    if shards and (shutil.which("redis-server") is None or shutil.which("redis-cli") is None):
        return "--shards needs redis-server and redis-cli on PATH (Debian: redis-server)"
    return None


@dataclass(frozen=True)
class RedisTopology:
    """The Redis of one run: its URL for the nodes and its processes."""

    shards: int
    url: str
    ports: tuple[int, ...]
    pids: tuple[int, ...]
    cpus: tuple[int | None, ...]

    def describe(self) -> dict[str, Any]:
        """The Redis as the report names it."""
        return {
            "shards": self.shards,
            "mode": "cluster" if self.shards > 1 else "single",
            "url": self.url,
            "ports": list(self.ports),
            "pids": list(self.pids),
            "cpus": list(self.cpus),
        }


def _ports(count: int, cluster: bool) -> list[int]:
    """``count`` distinct free ports; for a cluster, ports whose bus port is free too."""
    found: list[int] = []
    for _ in range(count * 50):
        port = free_port()
        bus_free = port + BUS_OFFSET <= 65535 and bindable(port + BUS_OFFSET)
        if port not in found and (bus_free or not cluster):
            found.append(port)
            if len(found) == count:
                return found
    raise BenchError(f"found no {count} free ports for Redis on 127.0.0.1")


def _complete(data: bytes) -> bool:
    """A whole RESP reply: a bulk string of its announced length, or one line."""
    if data.startswith(b"$"):
        header, found, rest = data.partition(b"\r\n")
        return bool(found) and len(rest) >= int(header[1:]) + 2
    return data.endswith(b"\r\n")


def _ask(port: int, command: bytes) -> bytes:
    """One inline command's reply, b"" while Redis does not answer (blocking: a thread)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(command + b"\r\n")
            data = b""
            while not _complete(data):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
            return data
    except OSError:
        return b""


def _answers(port: int, process: asyncio.subprocess.Process, log: Path) -> bool:
    """PONG; BenchError when the process exited (its port taken, a bad option)."""
    if process.returncode is not None:
        code = process.returncode
        raise BenchError(f"redis-server on {port} exited with code {code}:\n{tail(log)}")
    return _ask(port, b"PING") == b"+PONG\r\n"


def _cluster_ok(port: int, shards: int) -> bool:
    """The node says ok, every slot served, every primary known."""
    lines = set(_ask(port, b"CLUSTER INFO").split(b"\r\n"))
    wanted = {b"cluster_state:ok", b"cluster_slots_ok:%d" % SLOTS}
    return wanted <= lines and b"cluster_known_nodes:%d" % shards in lines


async def _until(check: Callable[[], bool], seconds: float, what: str, logs: list[Path]) -> None:
    """Poll ``check()`` (run in a thread) until it holds; BenchError with the logs if not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await asyncio.to_thread(check):
        if loop.time() > deadline:
            tails = "\n".join(f"{log.parent.name}:\n{tail(log)}" for log in logs)
            raise BenchError(f"Redis: {what} not reached within {seconds:g} s\n{tails}")
        await asyncio.sleep(0.05)  # polling a condition with a deadline


def _command(port: int, directory: Path, cluster: bool) -> list[str]:
    command = [
        shutil.which("redis-server") or "redis-server",
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        "--logfile", str(directory / "redis.log"),
    ]  # fmt: skip
    if cluster:
        command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    return command


async def _create_cluster(ports: list[int], logs: list[Path]) -> None:
    created = await asyncio.create_subprocess_exec(
        shutil.which("redis-cli") or "redis-cli",
        "--cluster", "create",
        *(f"127.0.0.1:{port}" for port in ports),
        "--cluster-replicas", "0",
        "--cluster-yes",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(created.communicate(), READY_SECONDS)
    except TimeoutError:
        await stop(created)
        raise BenchError("redis-cli --cluster create did not finish in time") from None
    if created.returncode != 0:
        raise BenchError(f"redis-cli --cluster create failed:\n{output.decode()[-800:]}")
    for port in ports:
        ok = functools.partial(_cluster_ok, port, len(ports))
        await _until(ok, READY_SECONDS, f"cluster_state:ok on {port}", logs)


@asynccontextmanager
async def start_redis(
    shards: int, cpus: list[int | None], directory: Path
) -> AsyncIterator[RedisTopology]:
    """Start the Redis of ``shards`` shards (process ``i`` on ``cpus[i]``), wait until it
    serves, stop every process on exit (an error or Ctrl-C included)."""
    cluster = shards > 1
    ports = _ports(shards, cluster)
    processes: list[asyncio.subprocess.Process] = []
    logs: list[Path] = []
    try:
        for port, cpu in zip(ports, cpus, strict=True):
            home = directory / f"redis-{port}"
            home.mkdir(parents=True)
            logs.append(home / "redis.log")
            command = _command(port, home, cluster)
            if cpu is not None:
                command = ["taskset", "-c", str(cpu), *command]
            # The log file gets what redis-server prints before it opens it (Redis appends).
            fd = open_log(logs[-1])
            try:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        *command, stdout=fd, stderr=asyncio.subprocess.STDOUT
                    )
                )
            finally:
                os.close(fd)
        for port, process, log in zip(ports, processes, logs, strict=True):
            ready = functools.partial(_answers, port, process, log)
            await _until(ready, READY_SECONDS, f"PONG on {port}", logs)
        if cluster:
            await _create_cluster(ports, logs)
            url = f"redis+cluster://127.0.0.1:{ports[0]}"
        else:
            url = f"redis://127.0.0.1:{ports[0]}/0"
        yield RedisTopology(
            shards=shards,
            url=url,
            ports=tuple(ports),
            pids=tuple(process.pid for process in processes),
            cpus=tuple(cpus),
        )
    finally:
        await asyncio.gather(*(stop(process) for process in processes))
