"""A Redis Cluster of the tests' own, from Debian's ``redis-server`` (issue 19).

Three primaries and three replicas (or primaries only) on free 127.0.0.1 ports of
``CALLROOM_TEST_CLUSTER_PORTS`` (default 7100-7199; each node's cluster bus is its port
plus 10000), in a directory of the test's own, no persistence, ``cluster-node-timeout``
1000 ms, created with ``redis-cli --cluster create``. No step waits a fixed time: each
polls a condition with a deadline (``cluster_state:ok`` and one map on every node, the
replicas' links up, a slot's new primary after a failover).

The processes are plain ``subprocess.Popen``: a session fixture starts the cluster once
(synchronously), the fault helpers (``kill9``, ``wait_failover``, ``restart``) are async,
so the callroom nodes of the test run while they wait.

    cluster = RedisTestCluster(tmp / "cluster"); cluster.start()
    url = cluster.url                          # redis+cluster://127.0.0.1:<port>
    node = cluster.primary_of(slot_of("callroom:{meeting:x}:room"))
    await cluster.kill9(node); seconds = await cluster.wait_failover(node, slot)
    await cluster.restart(node)                # same port, its nodes.conf, no data
    cluster.stop()
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

import reaping
from ports import bindable

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
PORTS = os.environ.get("CALLROOM_TEST_CLUSTER_PORTS", "7100-7199")
READY_SECONDS = 30.0  # until a created cluster is ok on every node
FAILOVER_SECONDS = 15.0  # until a replica took over a killed primary
BUS_OFFSET = 10000
SLOTS = 16384


class ClusterFailed(RuntimeError):
    """The cluster did not come up (the log tails say why)."""


def free_ports(count: int) -> list[int]:
    """``count`` ports of the range whose cluster bus port is free too."""
    low, _, high = PORTS.partition("-")
    found = [
        port
        for port in range(int(low), int(high) + 1)
        if bindable(port) and bindable(port + BUS_OFFSET)
    ][:count]
    if len(found) < count:
        raise ClusterFailed(f"not {count} free ports in {PORTS}")
    return found


def _poll(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise ClusterFailed(f"{what}: not reached within {seconds} s")
        time.sleep(0.02)  # polling a condition with a deadline, not a wait for time


def _state_ok(info: bytes) -> bool:
    """``CLUSTER INFO`` says ``cluster_state:ok``."""
    return b"cluster_state:ok" in info.split(b"\r\n")


@dataclass(eq=False)
class ClusterNode:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for data in ("dump.rdb", "appendonlydir"):  # a restart is empty
            shutil.rmtree(self.directory / data, ignore_errors=True)
        self.starts += 1
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "1000",
                "--cluster-require-full-coverage", "no",
                "--save", "",
                "--appendonly", "no",
                "--repl-diskless-sync-delay", "0",
                "--dir", str(self.directory),
                "--logfile", str(self.directory / f"redis-{self.starts}.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def answers(self) -> bool:
        try:
            with self.client() as client:
                info = client.info("server")
        except Exception:
            return False
        return self.process is not None and info.get("process_id") == self.process.pid

    def info(self, section: str) -> dict[str, object]:
        with self.client() as client:
            found: dict[str, object] = client.info(section)
            return found

    def stop(self) -> None:
        if self.process is not None:
            reaping.end_child(self.process)


class RedisTestCluster:
    """One Redis Cluster on 127.0.0.1, its nodes real processes."""

    def __init__(self, directory: Path, *, primaries: int = 3, replicas: int = 1) -> None:
        self.directory = directory
        self.primaries = primaries
        self.replicas = replicas
        self.nodes: list[ClusterNode] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        count = self.primaries * (1 + self.replicas)
        ports = free_ports(count)
        self.nodes = [ClusterNode(port, self.directory / str(port)) for port in ports]
        try:
            for node in self.nodes:
                node.spawn()
            for node in self.nodes:
                _poll(node.answers, READY_SECONDS, f"redis-server on {node.port}")
            created = subprocess.run(
                [
                    REDIS_CLI, "--cluster", "create",
                    *[f"127.0.0.1:{node.port}" for node in self.nodes],
                    "--cluster-replicas", str(self.replicas),
                    "--cluster-yes",
                ],
                capture_output=True,
                timeout=READY_SECONDS,
                check=False,
            )  # fmt: skip
            if created.returncode != 0:
                raise ClusterFailed(created.stdout.decode()[-800:] + created.stderr.decode())
            _poll(self.healthy, READY_SECONDS, "cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    # -- the cluster's state --------------------------------------------------------

    def healthy(self) -> bool:
        """Every running node says ok and names the same primary for every slot, every
        replica's link to its primary is up, and there are as many replicas as asked."""
        maps = []
        replicas = 0
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with node.client() as client:
                    if not _state_ok(client.execute_command("CLUSTER", "INFO")):
                        return False
                    maps.append(self._owners(client))
                    replication = client.info("replication")
            except Exception:
                return False
            if replication.get("role") == "slave":
                if replication.get("master_link_status") != "up":
                    return False
                replicas += 1
        running = sum(1 for node in self.nodes if node.running)
        covered = all(owner is not None for owner in maps[0]) if maps else False
        expected = running - self.primaries
        return covered and all(m == maps[0] for m in maps) and replicas == expected

    @staticmethod
    def _owners(client: Redis) -> list[int | None]:
        owners: list[int | None] = [None] * SLOTS
        for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):  # type: ignore[no-untyped-call]
            owners[start : end + 1] = [int(primary[1])] * (end - start + 1)
        return owners

    def primary_of(self, slot: int) -> ClusterNode:
        for node in self.nodes:
            if node.running:
                with node.client() as client:
                    port = self._owners(client)[slot]
                return next(n for n in self.nodes if n.port == port)
        raise ClusterFailed("no node running")

    def replica_of(self, primary: ClusterNode) -> ClusterNode:
        for node in self.nodes:
            if node.running and node is not primary:
                replication = node.info("replication")
                if (
                    replication.get("role") == "slave"
                    and replication.get("master_port") == primary.port
                ):
                    return node
        raise ClusterFailed(f"no replica of {primary.port}")

    def flush(self) -> None:
        """Every primary emptied (between tests sharing the cluster)."""
        for node in self.nodes:
            if node.running and node.info("replication").get("role") == "master":
                with node.client() as client:
                    client.flushall()

    # -- faults (async: the test's callroom nodes run meanwhile) --------------------

    async def kill9(self, node: ClusterNode) -> None:
        """SIGKILL, reaped."""
        process = node.process
        assert process is not None
        assert process.poll() is None
        process.send_signal(signal.SIGKILL)
        await self._until(lambda: process.poll() is not None, 5.0, "reaped")

    async def wait_failover(self, killed: ClusterNode, slot: int) -> float:
        """Until a running node names another primary for ``slot`` and says ok; the
        seconds it took."""
        began = time.monotonic()

        async def taken_over() -> bool:
            for node in self.nodes:
                if not node.running:
                    continue
                client = AsyncRedis(host="127.0.0.1", port=node.port, socket_timeout=1)
                try:
                    info = await client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
                    slots = await client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
                except Exception:
                    return False
                finally:
                    await client.aclose()
                owner = next((int(p[1]) for s, e, p, *_ in slots if s <= slot <= e), None)
                if not _state_ok(info) or owner in (None, killed.port):
                    return False
            return True

        await self._until(taken_over, FAILOVER_SECONDS, f"failover of slot {slot}")
        return time.monotonic() - began

    async def restart(self, node: ClusterNode) -> None:
        """The same node (its nodes.conf) started again, empty; answering."""
        assert not node.running
        node.spawn()
        await self._until(node.answers, READY_SECONDS, f"restart of {node.port}")

    async def wait_healthy(self, seconds: float = READY_SECONDS) -> None:
        await self._until(self.healthy, seconds, "cluster healthy")

    @staticmethod
    async def _until(condition: object, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while True:
            result = condition()  # type: ignore[operator]
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                raise ClusterFailed(f"{what}: not reached within {seconds} s")
            await asyncio.sleep(0.02)  # polling a condition with a deadline
