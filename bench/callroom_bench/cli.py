"""``callroom-bench SCENARIO [options]`` and ``callroom-bench compare SCENARIO``.

``main`` is the ``callroom-bench`` console script (bench/pyproject.toml) and
``python -m callroom_bench``. Without ``--url`` the bench starts the server itself
(``--spawn``); see docs/performance.md for the method and the environment a spawned
server gets.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from callroom.auth.dev import DEV_AUDIENCE, DEV_ISSUER
from callroom_bench.client import Protocol
from callroom_bench.options import (
    Audience,
    Comparable,
    Concurrency,
    Connections,
    Duration,
    Issuer,
    JsonOut,
    KeyFile,
    Pairs,
    PayloadBytes,
    PayloadOverride,
    Pin,
    ProtocolOpt,
    Rates,
    Rooms,
    RoomSize,
    ServerPid,
    Spawn,
    Url,
    Workload,
)
from callroom_bench.params import DEFAULTS, Params, Scenario
from callroom_bench.redis_topology import shards_problem
from callroom_bench.report import compare_table, result_table, write_json
from callroom_bench.runner import Source, bench, compare, run_sync
from callroom_bench.servers import ServerKind
from callroom_bench.soak_cli import soak_command
from callroom_bench.target import DEV_KEY_FILE, BenchError

PROG_NAME = "callroom-bench"

bench_app = typer.Typer(
    name=PROG_NAME,
    help="Load-test callroom (or a reference server) over real WebSockets.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _rates(text: str | None, scenario: Scenario) -> tuple[float, ...]:
    if text is None:
        return DEFAULTS[scenario].rates
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        message = f"{text!r} is not a list of numbers"
        raise typer.BadParameter(message, param_hint="--rates") from None
    if not rates or min(rates) <= 0:
        raise typer.BadParameter("give at least one rate, all above 0", param_hint="--rates")
    return rates


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _execute(params: Params, source: Source, json_path: Path | None) -> None:
    err = Console(stderr=True)
    try:
        with _progress(err) as progress:
            report, result = run_sync(bench(params, source, progress))
    except BenchError as exc:
        err.print(f"[red]bench failed:[/red] {exc}")
        raise typer.Exit(1) from None
    Console().print(result_table(report, result))
    if json_path is not None:
        write_json(json_path, report)
        err.print(f"wrote {json_path}")


def _source(
    url: list[str] | None,
    spawn: ServerKind,
    protocol: Protocol,
    server_pid: list[int] | None,
    key_file: Path,
    issuer: str,
    audience: str,
    pin: bool,
    nodes: int = 1,
    shards: int = 0,
) -> Source:
    return Source(
        urls=tuple(url or ()),
        spawn=spawn,
        nodes=nodes,
        shards=shards,
        protocol=protocol,
        server_pids=tuple(server_pid or ()),
        key_file=key_file,
        issuer=issuer,
        audience=audience,
        pin=pin,
    )


@bench_app.command()
def join(
    connections: Connections = DEFAULTS[Scenario.JOIN].connections,
    room_size: RoomSize = DEFAULTS[Scenario.JOIN].room_size,
    concurrency: Concurrency = 100,
    url: Url = None,
    spawn: Spawn = ServerKind.CALLROOM,
    protocol: ProtocolOpt = Protocol.CALLROOM,
    server_pid: ServerPid = None,
    key_file: KeyFile = DEV_KEY_FILE,
    issuer: Issuer = DEV_ISSUER,
    audience: Audience = DEV_AUDIENCE,
    json_path: JsonOut = None,
    pin: Pin = True,
) -> None:
    """N connections into rooms of M: joins/s, p50/p99 connect -> first room_state."""
    params = Params(
        Scenario.JOIN, connections=connections, room_size=room_size, concurrency=concurrency
    )
    source = _source(url, spawn, protocol, server_pid, key_file, issuer, audience, pin)
    _execute(params, source, json_path)


@bench_app.command()
def storm(
    connections: Connections = DEFAULTS[Scenario.STORM].connections,
    room_size: RoomSize = DEFAULTS[Scenario.STORM].room_size,
    window: Annotated[
        float, typer.Option(min=0.05, help="Seconds over which every connection is opened.")
    ] = DEFAULTS[Scenario.STORM].duration,
    url: Url = None,
    spawn: Spawn = ServerKind.CALLROOM,
    protocol: ProtocolOpt = Protocol.CALLROOM,
    server_pid: ServerPid = None,
    key_file: KeyFile = DEV_KEY_FILE,
    issuer: Issuer = DEV_ISSUER,
    audience: Audience = DEV_AUDIENCE,
    json_path: JsonOut = None,
    pin: Pin = True,
) -> None:
    """The top of the hour: N connections into rooms of M opened within --window, the
    lobby on, hosts admitting: p99 connect -> room_state as participant."""
    params = Params(Scenario.STORM, connections=connections, room_size=room_size, duration=window)
    source = _source(url, spawn, protocol, server_pid, key_file, issuer, audience, pin)
    _execute(params, source, json_path)


@bench_app.command()
def chat(
    rooms: Rooms = DEFAULTS[Scenario.CHAT].rooms,
    room_size: RoomSize = DEFAULTS[Scenario.CHAT].room_size,
    rates: Rates = None,
    duration: Duration = 5.0,
    payload_bytes: PayloadBytes = DEFAULTS[Scenario.CHAT].payload_bytes,
    concurrency: Concurrency = 100,
    url: Url = None,
    spawn: Spawn = ServerKind.CALLROOM,
    protocol: ProtocolOpt = Protocol.CALLROOM,
    server_pid: ServerPid = None,
    key_file: KeyFile = DEV_KEY_FILE,
    issuer: Issuer = DEV_ISSUER,
    audience: Audience = DEV_AUDIENCE,
    json_path: JsonOut = None,
    pin: Pin = True,
) -> None:
    """R rooms x M members, every member sends add_chat: delivered/s and latency per step."""
    params = Params(
        Scenario.CHAT,
        rooms=rooms,
        room_size=room_size,
        rates=_rates(rates, Scenario.CHAT),
        duration=duration,
        payload_bytes=payload_bytes,
        concurrency=concurrency,
    )
    source = _source(url, spawn, protocol, server_pid, key_file, issuer, audience, pin)
    _execute(params, source, json_path)


@bench_app.command()
def bigroom(
    room_size: RoomSize = DEFAULTS[Scenario.BIGROOM].room_size,
    rates: Rates = None,
    duration: Duration = 5.0,
    payload_bytes: PayloadBytes = DEFAULTS[Scenario.BIGROOM].payload_bytes,
    concurrency: Concurrency = 100,
    url: Url = None,
    spawn: Spawn = ServerKind.CALLROOM,
    protocol: ProtocolOpt = Protocol.CALLROOM,
    server_pid: ServerPid = None,
    key_file: KeyFile = DEV_KEY_FILE,
    issuer: Issuer = DEV_ISSUER,
    audience: Audience = DEV_AUDIENCE,
    json_path: JsonOut = None,
    pin: Pin = True,
) -> None:
    """One room, one sender, everyone receives: delivered/s and latency per step."""
    params = Params(
        Scenario.BIGROOM,
        room_size=room_size,
        rates=_rates(rates, Scenario.BIGROOM),
        duration=duration,
        payload_bytes=payload_bytes,
        concurrency=concurrency,
    )
    source = _source(url, spawn, protocol, server_pid, key_file, issuer, audience, pin)
    _execute(params, source, json_path)


@bench_app.command()
def signal(
    pairs: Pairs = DEFAULTS[Scenario.SIGNAL].pairs,
    rates: Rates = None,
    duration: Duration = 5.0,
    payload_bytes: PayloadBytes = DEFAULTS[Scenario.SIGNAL].payload_bytes,
    concurrency: Concurrency = 100,
    url: Url = None,
    spawn: Spawn = ServerKind.CALLROOM,
    protocol: ProtocolOpt = Protocol.CALLROOM,
    server_pid: ServerPid = None,
    key_file: KeyFile = DEV_KEY_FILE,
    issuer: Issuer = DEV_ISSUER,
    audience: Audience = DEV_AUDIENCE,
    json_path: JsonOut = None,
    pin: Pin = True,
) -> None:
    """Pairs exchanging ~2 KB candidate messages: relayed/s and latency per step."""
    params = Params(
        Scenario.SIGNAL,
        pairs=pairs,
        rates=_rates(rates, Scenario.SIGNAL),
        duration=duration,
        payload_bytes=payload_bytes,
        concurrency=concurrency,
    )
    source = _source(url, spawn, protocol, server_pid, key_file, issuer, audience, pin)
    _execute(params, source, json_path)


@bench_app.command()
def idle(
    connections: Connections = DEFAULTS[Scenario.IDLE].connections,
    room_size: RoomSize = DEFAULTS[Scenario.IDLE].room_size,
    duration: Duration = 5.0,
    concurrency: Concurrency = 100,
    url: Url = None,
    spawn: Spawn = ServerKind.CALLROOM,
    protocol: ProtocolOpt = Protocol.CALLROOM,
    server_pid: ServerPid = None,
    key_file: KeyFile = DEV_KEY_FILE,
    issuer: Issuer = DEV_ISSUER,
    audience: Audience = DEV_AUDIENCE,
    json_path: JsonOut = None,
    pin: Pin = True,
) -> None:
    """N idle connections held for --duration: server RSS per connection."""
    params = Params(
        Scenario.IDLE,
        connections=connections,
        room_size=room_size,
        duration=duration,
        concurrency=concurrency,
    )
    source = _source(url, spawn, protocol, server_pid, key_file, issuer, audience, pin)
    _execute(params, source, json_path)


@bench_app.command()
def cluster(
    workload: Annotated[Workload, typer.Option(help="Traffic pattern.")] = Workload.CHAT,
    nodes: Annotated[int, typer.Option(min=2, help="Nodes to spawn (needs REDIS_URL).")] = 2,
    shards: Annotated[
        int,
        typer.Option(
            min=0,
            help="Start a Redis of M shards for the run (1: one redis-server; 3 or more: a "
            "Redis Cluster) instead of using REDIS_URL; 0: REDIS_URL.",
        ),
    ] = 0,
    rooms: Rooms = DEFAULTS[Scenario.CHAT].rooms,
    room_size: RoomSize = DEFAULTS[Scenario.CHAT].room_size,
    pairs: Pairs = DEFAULTS[Scenario.SIGNAL].pairs,
    rates: Rates = None,
    duration: Duration = 5.0,
    payload_bytes: PayloadOverride = None,
    concurrency: Concurrency = 100,
    url: Url = None,
    protocol: ProtocolOpt = Protocol.CALLROOM,
    server_pid: ServerPid = None,
    key_file: KeyFile = DEV_KEY_FILE,
    issuer: Issuer = DEV_ISSUER,
    audience: Audience = DEV_AUDIENCE,
    json_path: JsonOut = None,
    pin: Pin = True,
) -> None:
    """chat or signal with every room spread round-robin over the nodes (--url per node)."""
    if problem := shards_problem(shards, bool(url)):
        raise typer.BadParameter(problem, param_hint="--shards")
    if not url and not shards and not os.environ.get("REDIS_URL"):
        raise typer.BadParameter(
            "nodes must share rooms: pass --url for each node, or set REDIS_URL (or give "
            "--shards) so that the bench spawns callroom nodes on that Redis",
            param_hint="--url",
        )
    traffic = Scenario(workload.value)
    params = Params(
        Scenario.CLUSTER,
        rooms=rooms,
        room_size=room_size,
        pairs=pairs,
        rates=_rates(rates, traffic),
        duration=duration,
        payload_bytes=payload_bytes or DEFAULTS[traffic].payload_bytes,
        concurrency=concurrency,
        workload=traffic,
    )
    spawn = ServerKind.CALLROOM
    source = _source(
        url, spawn, protocol, server_pid, key_file, issuer, audience, pin, nodes, shards
    )
    _execute(params, source, json_path)


bench_app.command("soak")(soak_command)  # callroom_bench/soak_cli.py, soak.py


@bench_app.command("compare")
def compare_command(
    scenario: Annotated[Comparable, typer.Argument(help="Scenario to run on every server.")],
    server: Annotated[
        list[ServerKind] | None,
        typer.Option(help="Servers in order (repeatable); the first is the ratio baseline."),
    ] = None,
    connections: Annotated[int | None, typer.Option(min=1, help="join/idle size.")] = None,
    rooms: Annotated[int | None, typer.Option(min=1, help="chat rooms.")] = None,
    room_size: Annotated[int | None, typer.Option(min=1, help="Members per room.")] = None,
    pairs: Annotated[int | None, typer.Option(min=1, help="signal pairs.")] = None,
    rates: Rates = None,
    duration: Duration = 5.0,
    payload_bytes: PayloadOverride = None,
    concurrency: Concurrency = 100,
    json_path: JsonOut = None,
    pin: Pin = True,
    rounds: Annotated[
        int,
        typer.Option(
            min=1, help="Run every server this many times, interleaved; report the medians."
        ),
    ] = 1,
) -> None:
    """Run SCENARIO over callroom and each reference server back to back, print ratios."""
    kind = Scenario(scenario.value)
    overrides: dict[str, Any] = {
        "connections": connections,
        "rooms": rooms,
        "room_size": room_size,
        "pairs": pairs,
        "payload_bytes": payload_bytes,
    }
    sizes = {name: value for name, value in overrides.items() if value is not None}
    params = replace(
        DEFAULTS[kind],
        **sizes,
        rates=_rates(rates, kind),
        duration=duration,
        concurrency=concurrency,
    )
    servers = server or list(ServerKind)
    err = Console(stderr=True)
    with _progress(err) as progress:
        comparison = run_sync(compare(params, servers, pin, progress, rounds))
    Console().print(compare_table(kind.value, comparison))
    if json_path is not None:
        write_json(json_path, comparison)
        err.print(f"wrote {json_path}")


def main() -> None:
    bench_app(prog_name=PROG_NAME)  # the same name under `python -m callroom_bench`
