"""Running `callroom-bench` in the bench tests: the tiny size of every scenario, the keys
of a report, a server process to bench against, and the check that a run worked. Users:
tests/integration/test_bench_smoke.py, tests/integration/test_bench_compare.py,
tests/integration/test_bench_generator.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from typer.testing import CliRunner

import reaping
from callroom_bench.cli import bench_app
from callroom_bench.servers import BENCH_ENV

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"

# One short step per traffic scenario; sizes of a few connections.
TINY: dict[str, list[str]] = {
    "join": ["join", "--connections", "6", "--room-size", "3", "--concurrency", "3"],
    "storm": ["storm", "--connections", "6", "--room-size", "3", "--window", "0.2"],
    "chat": ["chat", "--rooms", "2", "--room-size", "3", "--rates", "40", "--duration", "0.2"],
    "bigroom": ["bigroom", "--room-size", "5", "--rates", "20", "--duration", "0.2"],
    "signal": ["signal", "--pairs", "3", "--rates", "40", "--duration", "0.2"],
    "idle": ["idle", "--connections", "6", "--room-size", "3", "--duration", "0.2"],
    "cluster-chat": [
        "cluster",
        "--rooms",
        "2",
        "--room-size",
        "4",
        "--rates",
        "40",
        "--duration",
        "0.2",
    ],
    "cluster-signal": [
        "cluster",
        "--workload",
        "signal",
        "--pairs",
        "2",
        "--rates",
        "20",
        "--duration",
        "0.2",
    ],
}
REPORT_KEYS = {
    "tool",
    "version",
    "scenario",
    "started_at",
    "machine",
    "server",
    "protocol",
    "urls",
    "server_pids",
    "pinned",
    "generator",
    "redis",
    "params",
    "headline",
    "result",
    "errors",
}
STEP_KEYS = {
    "rate",
    "duration_s",
    "sent",
    "sent_per_s",
    "expected",
    "delivered",
    "lost",
    "delivered_per_s",
    "delivered_per_server_core",
    "redis_ceiling_per_s",
    "latency_ms",
    "cpu",
    "generator_saturated",
    "errors",
    "ok",
}

CPU_KEYS = {"generator", "server", "generator_core", "redis"}


class Server(NamedTuple):
    url: str
    pid: int
    workdir: Path


def _healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /ws/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def serve(command: list[str], workdir: Path, port: int) -> Iterator[Server]:
    env = os.environ | BENCH_ENV | {"DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}"}
    with (workdir / "server.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not _healthy(port):
            log_text = (workdir / "server.log").read_text(errors="replace")
            assert process.poll() is None, f"server exited: {log_text}"
            assert time.monotonic() < deadline, f"server not healthy in 30 s: {log_text}"
            time.sleep(0.05)
        yield Server(f"ws://127.0.0.1:{port}", process.pid, workdir)
    finally:
        reaping.end_child(process)


def run_bench(args: list[str], tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "result.json"
    result = CliRunner().invoke(bench_app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def assert_worked(name: str, report: dict[str, Any]) -> None:
    assert set(report) == REPORT_KEYS
    assert report["errors"] == {}
    assert set(report["headline"]) == {"metric", "value", "higher_is_better", "usable"}
    assert report["generator"]["program"] == "bench/node/generator.mjs"
    assert report["generator"]["node"].startswith("v")
    result = report["result"]
    assert result["errors"] == {}
    if name in ("join", "storm"):
        assert result["joined"] == result["connections"] == 6
        assert result["joins_per_s"] > 0
        assert set(result["latency_ms"]) == {"p50", "p99", "max"}
        assert set(result["cpu"]) == CPU_KEYS
        if name == "storm":  # everyone got in: the headline is the p99
            assert report["headline"]["value"] == result["latency_ms"]["p99"]
            assert result["opened_s"] > 0
    elif name == "idle":
        assert result["open_after_hold"] == result["joined"] == 6
        assert result["rss_after_kb"] > 0
    else:
        assert result["joined"] == result["connections"]
        (step,) = result["steps"]
        assert set(step) == STEP_KEYS
        assert step["delivered"] > 0
        assert step["delivered"] == step["expected"]
        assert step["lost"] == 0
        assert step["errors"] == {}
        assert set(step["latency_ms"]) == {"p50", "p99", "max"}
        assert set(step["cpu"]) == CPU_KEYS
        assert step["cpu"]["generator"] > 0  # the generator's own CPU, from Node
        assert result["usable"] == report["headline"]["usable"]
