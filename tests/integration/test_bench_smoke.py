"""Smoke run of every `callroom bench` scenario with tiny sizes, so the command cannot rot.

Issue 5 acceptance: a quick run of every scenario in `make test`. Nothing here asserts a
timing: only that each scenario ran end to end over real sockets, that its messages
arrived and that no error was seen, against the bare picows relay (bench/peers) and
against `callroom serve --dev`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from typer.testing import CliRunner

from callroom.auth.dev import DevKeys
from callroom.bench.cli import bench_app
from callroom.bench.servers import BENCH_ENV

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "bench" / "peers"

# One short step per traffic scenario; sizes of a few connections.
TINY: dict[str, list[str]] = {
    "join": ["join", "--connections", "6", "--room-size", "3", "--concurrency", "3"],
    "chat": ["chat", "--rooms", "2", "--room-size", "3", "--rates", "40", "--duration", "0.3"],
    "bigroom": ["bigroom", "--room-size", "5", "--rates", "20", "--duration", "0.3"],
    "signal": ["signal", "--pairs", "3", "--rates", "40", "--duration", "0.3"],
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
        "0.3",
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
        "0.3",
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
    "latency_ms",
    "cpu",
    "errors",
    "ok",
}


class Server(NamedTuple):
    url: str
    pid: int
    workdir: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /ws/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _serve(command: list[str], workdir: Path, port: int) -> Iterator[Server]:
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
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def picows_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    command = [sys.executable, str(PEERS / "picows_relay.py"), "--port", str(port)]
    yield from _serve(command, tmp_path_factory.mktemp("relay"), port)


@pytest.fixture(scope="module")
def callroom_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("callroom")
    # The dev server signs with .callroom-dev-key.pem of its working directory.
    DevKeys.load_or_create(workdir / ".callroom-dev-key.pem")
    port = _free_port()
    command = [sys.executable, "-m", "callroom", "serve", "--dev", "--port", str(port)]
    yield from _serve(command, workdir, port)


def _bench(args: list[str], tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "result.json"
    result = CliRunner().invoke(bench_app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def _assert_worked(name: str, report: dict[str, Any]) -> None:
    assert set(report) == REPORT_KEYS
    assert report["errors"] == {}
    assert set(report["headline"]) == {"metric", "value", "higher_is_better"}
    result = report["result"]
    assert result["errors"] == {}
    if name == "join":
        assert result["joined"] == result["connections"] == 6
        assert result["joins_per_s"] > 0
        assert set(result["latency_ms"]) == {"p50", "p99", "max"}
        assert set(result["cpu"]) == {"generator", "server"}
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


@pytest.mark.parametrize("name", list(TINY))
def test_every_scenario_runs_against_the_picows_relay(
    name: str, picows_relay: Server, tmp_path: Path
) -> None:
    urls = ["--url", picows_relay.url] * (2 if name.startswith("cluster") else 1)
    target = ["--protocol", "raw", "--server-pid", str(picows_relay.pid)]
    report = _bench([*TINY[name], *urls, *target], tmp_path)
    _assert_worked(name, report)
    assert report["server_pids"] == [picows_relay.pid]


@pytest.mark.parametrize("name", list(TINY))
def test_every_scenario_runs_against_callroom(
    name: str, callroom_server: Server, tmp_path: Path
) -> None:
    urls = ["--url", callroom_server.url] * (2 if name.startswith("cluster") else 1)
    key = ["--key-file", str(callroom_server.workdir / ".callroom-dev-key.pem")]
    target = [*key, "--server-pid", str(callroom_server.pid)]
    report = _bench([*TINY[name], *urls, *target], tmp_path)
    _assert_worked(name, report)
    assert report["protocol"] == "callroom"


def test_compare_runs_each_peer_and_skips_what_is_not_installed(tmp_path: Path) -> None:
    args = ["compare", "chat", "--server", "picows", "--server", "socketio", "--server", "node"]
    sizes = ["--rooms", "2", "--room-size", "3", "--rates", "40", "--duration", "0.3"]
    comparison = _bench([*args, *sizes], tmp_path)
    assert comparison["baseline"] == "picows"
    assert {"picows", "socketio"} <= set(comparison["runs"])
    assert set(comparison["runs"]) | set(comparison["skipped"]) == {"picows", "socketio", "node"}
    assert "node" in comparison["runs"] or "npm ci" in comparison["skipped"]["node"]
    for report in comparison["runs"].values():
        _assert_worked("chat", report)
    assert set(comparison["ratios"]) == set(comparison["runs"]) - {"picows"}


def test_compare_spawns_callroom_as_the_baseline(tmp_path: Path) -> None:
    args = ["compare", "signal", "--server", "callroom", "--server", "picows", "--no-pin"]
    sizes = ["--pairs", "2", "--rates", "20", "--duration", "0.3"]
    comparison = _bench([*args, *sizes], tmp_path)
    assert comparison["skipped"] == {}
    assert comparison["baseline"] == "callroom"
    _assert_worked("signal", comparison["runs"]["callroom"])
    assert comparison["ratios"]["picows"] is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["chat", "--rates", "fast"], "not a list of numbers"),
        (["chat", "--rates", "0"], "at least one rate"),
        (["cluster"], "nodes must share rooms"),
    ],
)
def test_bad_options_are_refused(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    result = CliRunner().invoke(bench_app, args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["idle", "--protocol", "raw", "--connections", "2"], "pass --server-pid"),
        (["chat", "--protocol", "raw", "--rooms", "1"], "no connection could join"),
        (["join", "--key-file", "/nonexistent/key.pem"], "no signing key"),
    ],
)
def test_a_run_that_cannot_go_on_says_why(args: list[str], message: str) -> None:
    closed = f"ws://127.0.0.1:{_free_port()}"
    result = CliRunner().invoke(bench_app, [*args, "--url", closed])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())
