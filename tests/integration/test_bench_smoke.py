"""Smoke run of every `callroom-bench` scenario with tiny sizes, so the command cannot rot.

Issue 5 acceptance: a quick run of every scenario in `make test`. Nothing here asserts a
timing: only that each scenario ran end to end over real sockets, that its messages
arrived and that no error was seen, against the bare picows relay (bench/peers) and
against `callroom serve --dev`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from callroom.auth.dev import DevKeys
from callroom_bench import servers as bench_servers
from callroom_bench.cli import bench_app
from callroom_bench.generator import Generator, JoinReply
from callroom_bench.params import StepResult, StormResult, TrafficResult
from callroom_bench.report import (
    compare_table,
    headline,
    median_round_ratios,
    median_runs,
    result_table,
)
from callroom_bench.scenarios import headline_usable
from callroom_bench.servers import BENCH_ENV
from callroom_bench.stats import CpuUse, Latency
from callroom_bench.target import BenchError

ROOT = Path(__file__).resolve().parents[2]
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
    # The dev server creates .callroom-dev-key.pem in its working directory at start;
    # the bench signs with that file (--key-file).
    workdir = tmp_path_factory.mktemp("callroom")
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


@pytest.mark.parametrize("name", list(TINY))
def test_every_scenario_runs_against_the_picows_relay(
    name: str, picows_relay: Server, tmp_path: Path
) -> None:
    urls = ["--url", picows_relay.url] * (2 if name.startswith("cluster") else 1)
    # join runs without --server-pid: the server's CPU is then simply not reported.
    pids = [] if name == "join" else [picows_relay.pid]
    target = ["--protocol", "raw", *(f"--server-pid={pid}" for pid in pids)]
    report = _bench([*TINY[name], *urls, *target], tmp_path)
    _assert_worked(name, report)
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
    report = _bench([*TINY[name], *urls, *target], tmp_path)
    _assert_worked(name, report)
    assert report["protocol"] == "callroom"


def test_a_storm_on_a_spawned_callroom_goes_through_the_lobby(tmp_path: Path) -> None:
    # Spawned for a storm, callroom runs its waiting room (the smoke server above runs
    # without it): the first of each room becomes host and admits the rest.
    args = ["storm", "--connections", "12", "--room-size", "4", "--window", "0.3"]
    report = _bench(args, tmp_path)
    result = report["result"]
    assert result["joined"] == result["connections"] == 12
    assert result["waited"] == 12 - 3  # every member but the three rooms' hosts
    assert result["errors"] == {}
    assert report["headline"]["metric"] == "p99 ms from connect to participant"
    assert report["headline"]["higher_is_better"] is False


def test_compare_runs_each_peer_and_skips_what_is_not_installed(tmp_path: Path) -> None:
    args = ["compare", "chat", "--server", "picows", "--server", "socketio", "--server", "node"]
    sizes = ["--rooms", "2", "--room-size", "3", "--rates", "40", "--duration", "0.2"]
    comparison = _bench([*args, *sizes], tmp_path)
    assert comparison["baseline"] == "picows"
    assert {"picows", "socketio"} <= set(comparison["runs"])
    assert set(comparison["runs"]) | set(comparison["skipped"]) == {"picows", "socketio", "node"}
    assert "node" in comparison["runs"] or "npm ci" in comparison["skipped"]["node"]
    for report in comparison["runs"].values():
        _assert_worked("chat", report)
    assert set(comparison["ratios"]) == set(comparison["runs"]) - {"picows"}


def test_compare_rounds_interleave_the_servers_and_keep_each_ones_median(
    tmp_path: Path,
) -> None:
    args = ["compare", "chat", "--server", "picows", "--server", "socketio", "--rounds", "3"]
    sizes = ["--rooms", "2", "--room-size", "3", "--rates", "40", "--duration", "0.2"]
    out = ["--json", str(tmp_path / "c.json")]
    # Wide enough that no cell of the table wraps.
    result = CliRunner().invoke(bench_app, [*args, *sizes, *out], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "round 3/3: socketio" in result.output
    comparison = json.loads((tmp_path / "c.json").read_text())
    rounds = comparison["rounds"]
    assert len(rounds) == len(comparison["round_ratios"]) == len(comparison["round_runs"]) == 3
    for values, reports in zip(rounds, comparison["round_runs"], strict=True):
        assert {name: report["headline"]["value"] for name, report in reports.items()} == values
        for report in reports.values():
            _assert_worked("chat", report)
    for name, report in comparison["runs"].items():
        _assert_worked("chat", report)
        values = sorted(values[name] for values in rounds)
        assert report["headline"]["value"] == values[1]  # the median of three
    assert comparison["ratios"]["socketio"] == round(
        comparison["runs"]["picows"]["headline"]["value"]
        / comparison["runs"]["socketio"]["headline"]["value"],
        3,
    )
    paired = sorted(ratios["socketio"] for ratios in comparison["round_ratios"])
    assert comparison["median_round_ratios"] == {"socketio": paired[1]}
    # The column of the paired ratios: their median, then every round's.
    assert "median (each round)" in result.output
    each = " / ".join(f"{ratios['socketio']:.2f}" for ratios in comparison["round_ratios"])
    assert f"{paired[1]:.2f}x ({each})" in result.output


@pytest.mark.parametrize(
    ("values", "higher", "chosen"),
    [
        ([3.0, 1.0, 2.0], True, 2.0),
        ([3.0, 1.0], True, 1.0),  # even: the worse middle one
        ([None, 5.0, 4.0], True, 4.0),  # no headline counts as the worst
        ([30.0, 10.0], False, 30.0),  # lower is better (idle): the worse is the larger
        ([None, 10.0, 20.0], False, 20.0),
    ],
)
def test_median_runs_picks_a_real_round(
    values: list[float | None], higher: bool, chosen: float
) -> None:
    rounds = [
        {"a": {"headline": {"value": value, "higher_is_better": higher}, "round": n}}
        for n, value in enumerate(values)
    ]
    picked = median_runs(rounds)["a"]
    assert picked["headline"]["value"] == chosen
    assert picked is rounds[picked["round"]]["a"]


@pytest.mark.parametrize(
    ("ratios", "higher", "median"),
    [
        ([0.66, 0.50, 0.99], True, 0.66),
        ([0.60, 0.80], True, 0.60),  # even: the one less favourable to the first server
        ([1.2, 0.9], False, 1.2),  # lower is better (idle): the larger ratio is the worse
        ([None, 0.7, 0.8], True, 0.7),  # a round without a ratio is left out
        ([None, None], True, None),
    ],
)
def test_median_round_ratios_pair_the_servers_within_each_round(
    ratios: list[float | None], higher: bool, median: float | None
) -> None:
    rounds = [{"other": ratio} for ratio in ratios]
    assert median_round_ratios(rounds, higher) == {"other": median}


def test_compare_skips_a_server_that_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "bogus")  # callroom refuses to start (SPEC §6)
    # Only node on PATH (the generator's), so no taskset; peers without node_modules.
    bin_dir, peers = tmp_path / "bin", tmp_path / "peers"
    bin_dir.mkdir()
    (peers / "node").mkdir(parents=True)
    node = shutil.which("node")
    assert node is not None
    (bin_dir / "node").symlink_to(node)
    (peers / "picows_relay.py").symlink_to(PEERS / "picows_relay.py")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(bench_servers, "peers_dir", lambda: peers)
    kinds = ["--server", "callroom", "--server", "node", "--server", "picows"]
    args = ["compare", "join", *kinds, "--connections", "6", "--room-size", "3"]
    comparison = _bench(args, tmp_path)
    assert "exited" in comparison["skipped"]["callroom"]
    assert "npm ci" in comparison["skipped"]["node"]
    assert comparison["baseline"] == "picows"
    assert comparison["ratios"] == {}
    assert comparison["runs"]["picows"]["pinned"] is False
    _assert_worked("join", comparison["runs"]["picows"])


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


def test_compare_spawns_callroom_as_the_baseline(tmp_path: Path) -> None:
    args = ["compare", "signal", "--server", "callroom", "--server", "picows", "--no-pin"]
    sizes = ["--pairs", "2", "--rates", "20", "--duration", "0.2"]
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
    closed = f"ws://127.0.0.1:{_free_port()}"
    result = CliRunner().invoke(bench_app, [*args, "--url", closed])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())


# The receive path of the generator, against a scripted picows server: what the server
# sends is counted where a reader of the report expects it.


class _Scripted(WSListener):
    """Sends ``frames`` on connect, then closes (1001), drops the TCP connection, or waits."""

    def __init__(self, frames: list[bytes], end: str, received: list[bytes]) -> None:
        super().__init__()
        self.frames, self.end, self.received = frames, end, received

    def on_ws_connected(self, transport: WSTransport) -> None:
        for frame in self.frames:
            transport.send(WSMsgType.TEXT, frame)
        if self.end == "close":
            transport.send_close(WSCloseCode.GOING_AWAY)
        elif self.end == "drop":
            transport.disconnect()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.received.append(frame.get_payload_as_bytes())


@contextlib.asynccontextmanager
async def _scripted(
    frames: list[bytes], end: str = "stay", status: int = 101
) -> AsyncIterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []

    def route(request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener:
        if status != 101:
            refusal = WSUpgradeResponse.create_error_response(status, b"{}")
            return WSUpgradeResponseWithListener(refusal, None)
        return _Scripted(frames, end, received)

    server = await ws_create_server(route, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/ws/zoom/r?clientId=a", received
    finally:
        server.close()


ROOM_STATE = b'{"event":"room_state","payload":{"roomId":"r"}}'
TIMED_CHAT = b'{"event":"add_chat","payload":{"chatContent":"~t0000000000000000001|x"}}'


@contextlib.asynccontextmanager
async def _joined(
    url: str, engineio: bool = False, limit_s: float = 5.0
) -> AsyncIterator[tuple[Generator, JoinReply]]:
    """Start a generator and join ``url`` with it."""
    async with Generator.start(None) as generator:
        reply = await generator.join([url], 1, engineio, limit_s=limit_s)
        yield generator, reply
        await generator.close()


async def _until(generator: Generator, check: Callable[[dict[str, int], int], bool]) -> None:
    """Poll the generator until ``check(errors, timed messages received)`` holds."""
    async with asyncio.timeout(5):
        while True:
            _, timed = await generator.status()
            if check(generator.errors, timed):
                return
            await asyncio.sleep(0.01)


async def test_error_events_and_server_closes_are_counted_by_code() -> None:
    frames = [
        ROOM_STATE,
        TIMED_CHAT,
        b'{"event":"error","payload":{"code":"rate_limited","message":"slow down"}}',
        b'{"event":"connect","payload":{"clientId":"b","displayName":"error"}}',
        b'["error"] is not an envelope',
        b'["error"]',
    ]
    async with _scripted(frames, end="close") as (url, _), _joined(url) as (generator, reply):
        assert reply.joined == [True]
        await _until(generator, lambda errors, timed: "closed:1001" in errors and timed == 1)
        assert generator.errors == {
            "error:rate_limited": 1,
            "unparseable_frame": 2,
            "closed:1001": 1,
        }


async def test_the_engineio_client_connects_answers_pings_and_counts_failures() -> None:
    frames = [
        b'0{"sid":"s","pingInterval":25000,"pingTimeout":20000}',
        b'40{"sid":"t"}',
        b'42["room_state",{"roomId":"r"}]',
        b"2",
        b'42["error",{"code":"forbidden"}]',
        b'44{"message":"not allowed"}',
    ]
    async with _scripted(frames) as (url, received), _joined(url, engineio=True) as (gen, _):
        await _until(gen, lambda errors, _: "engineio:44" in errors and b"3" in received)
        assert received[:2] == [b"40", b"3"]
        assert gen.errors == {"error:forbidden": 1, "engineio:44": 1}


async def test_a_connection_the_server_drops_is_counted() -> None:
    async with _scripted([ROOM_STATE], end="drop") as (url, _), _joined(url) as (generator, _):
        await _until(generator, lambda errors, _: errors == {"dropped": 1})


@pytest.mark.parametrize(
    ("frames", "end", "status", "expected"),
    [
        ([], "stay", 101, {"connect:timeout": 1}),
        ([], "stay", 403, {"connect:http_403": 1}),
        (
            [b'{"event":"hello","payload":{}}'],
            "close",
            101,
            {"first_frame_not_room_state": 1, "closed:1001": 1, "connect:ConnectionError": 1},
        ),
    ],
)
async def test_a_join_that_fails_is_counted_and_leaves_a_gap(
    frames: list[bytes], end: str, status: int, expected: dict[str, int]
) -> None:
    async with _scripted(frames, end, status) as (url, _), _joined(url, limit_s=0.3) as (gen, r):
        assert r.joined == [False]
        assert r.latency_ms is None
        assert gen.errors == expected


async def test_a_refused_connection_and_a_wss_url_are_counted() -> None:
    urls = [f"ws://127.0.0.1:{_free_port()}/ws/zoom/r", "wss://127.0.0.1:1/ws/zoom/r"]
    async with Generator.start(None) as generator:
        reply = await generator.join(urls, 2, False)
        await generator.close()
    assert reply.joined == [False, False]
    assert generator.errors == {
        "connect:ECONNREFUSED": 1,
        "connect:unsupported_scheme_wss": 1,
    }


async def test_a_step_before_senders_is_refused_and_a_gone_generator_reported() -> None:
    async with Generator.start(None) as generator:
        with pytest.raises(BenchError, match="no senders"):
            await generator.step(10, 0.1, lambda _: None, lambda: None)
        await generator.close()
        with pytest.raises(BenchError, match="exited"):
            await generator.status()


def _step(generator_cpu: float, core: float | None, ok: bool = True) -> StepResult:
    cpu = CpuUse(generator=generator_cpu, server=1.0, generator_core=core)
    return StepResult(
        rate=1,
        duration_s=1,
        sent=1,
        sent_per_s=1,
        expected=1,
        delivered=1,
        lost=0,
        delivered_per_s=10 * generator_cpu,
        delivered_per_server_core=10 * generator_cpu,
        redis_ceiling_per_s=None,
        latency_ms=Latency(1, 2, 3),
        cpu=cpu,
        generator_saturated=cpu.generator_busy >= 0.7,
        errors={},
        ok=ok,
    )


@pytest.mark.parametrize(
    ("steps", "best", "usable"),
    [
        ([(0.2, 0.3, True), (0.5, 0.6, False)], 0, True),
        ([(0.2, 0.3, True), (0.5, 0.75, False)], 0, False),  # the failed step decided it
        ([(0.2, 0.3, True), (0.72, None, True)], 1, False),  # the process, unpinned
        ([(0.2, 0.3, True), (0.3, 0.4, True)], 1, True),  # the top of the ladder passed
        ([(0.2, 0.3, False)], None, False),  # no best step
    ],
)
def test_a_headline_is_unusable_when_the_generator_was_at_its_limit(
    steps: list[tuple[float, float | None, bool]], best: int | None, usable: bool
) -> None:
    results = [_step(*step) for step in steps]
    chosen = None if best is None else results[best]
    assert headline_usable(results, chosen) is usable
    traffic = TrafficResult(len(results), 1, results, chosen, usable, {})
    report = {"scenario": "chat", "server": "picows", "protocol": "raw"}
    table = result_table(report, traffic)
    caption = " ".join(str(table.caption).split())
    assert ("unusable" in caption) is (chosen is not None and not usable)
    marked = [line for line in _text(table).splitlines() if "%!" in line]
    assert len(marked) == sum(step.generator_saturated for step in results)


@pytest.mark.parametrize(("joined", "p99"), [(10, 2.0), (9, None)])
def test_a_storm_has_a_figure_only_when_everyone_got_in(joined: int, p99: float | None) -> None:
    cpu = CpuUse(generator=0.2, server=0.9, generator_core=0.3)
    storm = StormResult(10, joined, 1.0, 10.0, Latency(1, 2, 3), cpu, False, {}, 0.5, 0.5, 7)
    assert headline(storm) == ("p99 ms from connect to participant", p99, False)
    report = {"scenario": "storm", "server": "callroom", "protocol": "callroom"}
    table = _text(result_table(report, storm))
    assert "0.5/0.5" in table  # opened in the window
    assert f"{joined}/10" in table


def test_the_compare_table_marks_an_unusable_headline() -> None:
    def run(value: float, usable: bool) -> dict[str, Any]:
        headline = {"value": value, "higher_is_better": True, "usable": usable}
        return {"headline": headline, "errors": {}}

    rounds = [{"a": run(10, True), "b": run(5, False)}, {"a": run(12, False), "b": run(6, True)}]
    comparison = {
        "runs": rounds[0],
        "ratios": {"b": 2.0},
        "higher_is_better": True,
        "metric": "m",
        "skipped": {},
        "rounds": [{n: r["headline"]["value"] for n, r in runs.items()} for runs in rounds],
        "round_ratios": [{"b": 2.0}, {"b": 2.0}],
        "median_round_ratios": {"b": 2.0},
        "round_runs": rounds,
    }
    text = _text(compare_table("chat", comparison))
    assert "10.0 / 12.0!" in text
    assert "5.0! / 6.0" in text
    assert "! unusable" in text


def _text(table: Table) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


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
    _assert_worked(name, report)
    assert len(set(report["urls"])) == 2
    assert len(set(report["server_pids"])) == 2


@pytest.mark.parametrize("shards", [1, 3])
def test_cluster_starts_a_redis_of_its_own_with_m_shards(shards: int, tmp_path: Path) -> None:
    """`bench cluster --shards M` starts its own Redis (one redis-server, or a Redis
    Cluster of M primaries), two callroom nodes on it whatever REDIS_URL says, and stops
    every process it started."""
    out = tmp_path / "result.json"
    unreachable = {"REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0"}  # must not be used
    args = [*TINY["cluster-chat"], "--shards", str(shards), "--json", str(out)]
    result = CliRunner().invoke(bench_app, args, env=unreachable)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(out.read_text())
    _assert_worked("cluster-chat", report)
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
