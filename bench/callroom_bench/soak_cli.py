"""``callroom-bench soak``: the command of the soak scenario (callroom_bench/soak.py)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from callroom_bench.report import write_json
from callroom_bench.runner import run_sync
from callroom_bench.soak import Limits, SoakParams, soak
from callroom_bench.target import BenchError


def soak_command(
    minutes: Annotated[float, typer.Option(min=0.05, help="Length of the load.")] = 30.0,
    rooms: Annotated[int, typer.Option(min=1, help="Meetings at once.")] = 20,
    room_size: Annotated[int, typer.Option(min=2, help="Members per meeting.")] = 4,
    meeting_seconds: Annotated[float, typer.Option(min=0.5, help="Length of a meeting.")] = 4.0,
    chat_rate: Annotated[float, typer.Option(min=0, help="add_chat frames/s in total.")] = 150.0,
    signal_rate: Annotated[float, typer.Option(min=0, help="candidate frames/s in total.")] = 150.0,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between samples.")] = 5.0,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of samples not judged.")] = 30.0,
    url: Annotated[str | None, typer.Option(help="A running server (else one is spawned).")] = None,
    server_pid: Annotated[int | None, typer.Option(help="PID of the --url server.")] = None,
    key_file: Annotated[Path | None, typer.Option(help="Token key of --url's server.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result.")] = None,
    pin: Annotated[bool, typer.Option(help="Pin the server and the clients apart.")] = True,
) -> None:
    """Steady joins, leaves, chat and signaling; fails if RSS, fds or tasks grow."""
    params = SoakParams(
        minutes * 60, rooms, room_size, meeting_seconds, chat_rate, signal_rate, interval, warmup
    )
    err = Console(stderr=True)
    urls = (url,) if url else ()
    pids = (server_pid,) if server_pid else ()
    try:
        report = run_sync(soak(params, Limits(), secrets.token_hex(3), urls, pids, key_file, pin))
    except BenchError as exc:
        err.print(f"[red]bench failed:[/red] {exc}")
        raise typer.Exit(1) from None
    if json_path is not None:
        write_json(json_path, report)
        err.print(f"wrote {json_path}")
    before, after, totals = report["before"], report["after"], report["totals"]
    print(
        f"soak {minutes:g} min: joins {totals['joins']}, leaves {totals['leaves']}, "
        f"chat {totals['chat_sent']}, candidates {totals['candidates_sent']}; "
        f"RSS {before['rss_kb']} -> {after['rss_kb']} KiB, fds {before['fds']} -> "
        f"{after['fds']}, tasks {before['tasks']} -> {after['tasks']}"
    )
    if not report["passed"]:
        print("soak FAILED: " + "; ".join(report["reasons"]))
        raise typer.Exit(1)
    print("soak passed: no growth")
