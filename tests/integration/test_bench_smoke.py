"""Smoke run of every `callroom-bench` scenario with tiny sizes, so the command cannot rot.

Issue 5 acceptance: a quick run of every scenario in `make test`. Nothing here asserts a
timing: only that each scenario ran end to end over real sockets, that its messages
arrived and that no error was seen, against the bare picows relay (bench/peers), against
`callroom serve --dev`, and over the nodes `bench cluster` spawns (with `--shards`, on a
Redis of its own). The compare runs and the report's tables:
tests/integration/test_bench_compare.py; the generator's receive path:
tests/integration/test_bench_generator.py; what they share: tests/bench_runs.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench_runs import PEERS, TINY, Server, assert_worked, run_bench, serve
from callroom.auth.dev import DevKeys
from callroom_bench.cli import bench_app
from callroom_bench.processes import free_port


@pytest.fixture(scope="module")
def picows_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    command = [sys.executable, str(PEERS / "picows_relay.py"), "--port", str(port)]
    yield from serve(command, tmp_path_factory.mktemp("relay"), port)


@pytest.fixture(scope="module")
def callroom_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The dev server creates .callroom-dev-key.pem in its working directory at start;
    # the bench signs with that file (--key-file).
    workdir = tmp_path_factory.mktemp("callroom")
    port = free_port()
    command = [sys.executable, "-m", "callroom", "serve", "--dev", "--port", str(port)]
    yield from serve(command, workdir, port)


@pytest.mark.parametrize("name", list(TINY))
def test_every_scenario_runs_against_the_picows_relay(
    name: str, picows_relay: Server, tmp_path: Path
) -> None:
    urls = ["--url", picows_relay.url] * (2 if name.startswith("cluster") else 1)
    # join runs without --server-pid: the server's CPU is then simply not reported.
    pids = [] if name == "join" else [picows_relay.pid]
    target = ["--protocol", "raw", *(f"--server-pid={pid}" for pid in pids)]
    report = run_bench([*TINY[name], *urls, *target], tmp_path)
    assert_worked(name, report)
    assert report["server_pids"] == pids
    assert report["redis"] is None  # the bench started no Redis
    assert all(step["redis_ceiling_per_s"] is None for step in report["result"].get("steps", []))
    assert ("workload" in report["params"]) == name.startswith("cluster")
    if name == "join":
        assert report["result"]["cpu"]["server"] is None


@pytest.mark.parametrize("name", list(TINY))
def test_every_scenario_runs_against_callroom(
    name: str, callroom_server: Server, tmp_path: Path
) -> None:
    urls = ["--url", callroom_server.url] * (2 if name.startswith("cluster") else 1)
    key = ["--key-file", str(callroom_server.workdir / ".callroom-dev-key.pem")]
    target = [*key, "--server-pid", str(callroom_server.pid)]
    report = run_bench([*TINY[name], *urls, *target], tmp_path)
    assert_worked(name, report)
    assert report["protocol"] == "callroom"


def test_a_storm_on_a_spawned_callroom_goes_through_the_lobby(tmp_path: Path) -> None:
    # Spawned for a storm, callroom runs its waiting room (the smoke server above runs
    # without it): the first of each room becomes host and admits the rest.
    args = ["storm", "--connections", "12", "--room-size", "4", "--window", "0.3"]
    report = run_bench(args, tmp_path)
    result = report["result"]
    assert result["joined"] == result["connections"] == 12
    assert result["waited"] == 12 - 3  # every member but the three rooms' hosts
    assert result["errors"] == {}
    assert report["headline"]["metric"] == "p99 ms from connect to participant"
    assert report["headline"]["higher_is_better"] is False


def test_the_generator_must_be_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no node
    result = CliRunner().invoke(bench_app, ["join", "--spawn", "picows", "--connections", "2"])
    assert result.exit_code == 1, result.output
    assert "put `node`" in " ".join(result.output.split())


def test_tokens_the_server_does_not_trust_are_reported(
    callroom_server: Server, tmp_path: Path
) -> None:
    DevKeys.load_or_create(tmp_path / "stranger.pem")
    args = ["join", "--connections", "2", "--url", callroom_server.url]
    result = CliRunner().invoke(bench_app, [*args, "--key-file", str(tmp_path / "stranger.pem")])
    assert result.exit_code == 1, result.output
    assert "connect:http_401" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["chat", "--rates", "fast"], "not a list of numbers"),
        (["chat", "--rates", "0"], "at least one rate"),
        (["cluster"], "nodes must share rooms"),
        (["cluster", "--shards", "2"], "at least 3 primaries"),
        (["cluster", "--shards", "1", "--url", "ws://127.0.0.1:1"], "leave out --url"),
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
    closed = f"ws://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(bench_app, [*args, "--url", closed])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "callroom_bench"],
        # The console script of bench/pyproject.toml, beside this interpreter.
        [str(Path(sys.executable).with_name("callroom-bench"))],
    ],
    ids=["module", "script"],
)
def test_the_bench_is_its_own_command(command: list[str]) -> None:
    result = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: callroom-bench" in result.stdout
    for scenario in ("join", "chat", "bigroom", "signal", "idle", "cluster", "soak", "compare"):
        assert scenario in result.stdout


@pytest.mark.parametrize("name", ["cluster-chat", "cluster-signal"])
def test_cluster_spawns_nodes_sharing_rooms_through_redis(
    name: str, redis_url: str, tmp_path: Path
) -> None:
    """Without --url, `bench cluster` spawns two callroom nodes on REDIS_URL and spreads
    every room over both: each message reaches the members on the other node."""
    out = tmp_path / "result.json"
    result = CliRunner().invoke(
        bench_app, [*TINY[name], "--json", str(out)], env={"REDIS_URL": redis_url}
    )
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(out.read_text())
    assert_worked(name, report)
    assert len(set(report["urls"])) == 2
    assert len(set(report["server_pids"])) == 2


@pytest.mark.parametrize("shards", [1, 3])
def test_cluster_starts_a_redis_of_its_own_with_m_shards(shards: int, tmp_path: Path) -> None:
    """`bench cluster --shards M` starts its own Redis (one redis-server, or a Redis
    Cluster of M primaries), two callroom nodes on it whatever REDIS_URL says, and stops
    every process it started."""
    out = tmp_path / "result.json"
    unreachable = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # must not be used
    args = [*TINY["cluster-chat"], "--shards", str(shards), "--json", str(out)]
    result = CliRunner().invoke(bench_app, args, env=unreachable)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(out.read_text())
    assert_worked("cluster-chat", report)
    redis = report["redis"]
    assert redis["shards"] == shards
    assert redis["mode"] == ("single" if shards == 1 else "cluster")
    assert redis["url"].startswith("redis://" if shards == 1 else "redis+cluster://")
    assert len(set(redis["ports"])) == len(set(redis["pids"])) == len(redis["cpus"]) == shards
    assert len(set(report["server_pids"])) == 2
    (step,) = report["result"]["steps"]
    assert len(step["cpu"]["redis"]) == shards
    assert all(share >= 0 for share in step["cpu"]["redis"])
    ceiling = step["redis_ceiling_per_s"]  # None when every share rounded to 0
    assert ceiling is None or ceiling >= step["delivered_per_s"]  # a share <= one core
    for pid in [*redis["pids"], *report["server_pids"]]:
        assert not Path(f"/proc/{pid}").exists()  # stopped and reaped


def _children(command: str) -> list[int]:
    """PIDs of this process's children running ``command`` (from /proc/PID/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            name, _, rest = stat.read_text().partition(") ")
            if name.endswith(f"({command}") and int(rest.split()[1]) == os.getpid():
                found.append(int(stat.parent.name))
    return found


def test_cluster_stops_its_redis_when_a_node_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "bogus")  # callroom refuses to start (SPEC §6)
    result = CliRunner().invoke(bench_app, [*TINY["cluster-chat"], "--shards", "3"])
    assert result.exit_code == 1, result.output
    assert "the server exited" in " ".join(result.output.split())
    assert _children("redis-server") == []
