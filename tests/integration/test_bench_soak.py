"""`callroom-bench soak` (issue 21): a short real run in `make test`, and its verdict.

The smoke run spawns `callroom serve --dev` and churns a few tiny meetings for 15 s: it
must sample the server (RSS, fds, tasks, rooms, connections), see rooms and connections
come and go, and pass. ``check_growth`` is a pure function: growing samples of each kind
must fail it, flat ones pass.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from callroom_bench.cli import bench_app
from callroom_bench.soak import Limits, Sample, check_growth, parse_gauges
from callroom_bench.target import BenchError

TINY = [
    "soak",
    "--minutes",
    "0.25",
    "--rooms",
    "3",
    "--room-size",
    "2",
    "--meeting-seconds",
    "1",
    "--chat-rate",
    "20",
    "--signal-rate",
    "20",
    "--interval",
    "0.5",
    "--warmup",
    "3",
]


def test_a_short_soak_samples_the_server_and_passes(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    result = CliRunner().invoke(bench_app, [*TINY, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "soak passed" in result.output
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["passed"] is True
    assert report["reasons"] == []
    assert report["scenario"] == "soak"
    assert len(report["machine"]["load_average"]) == 2  # at the start and at the end
    samples = report["samples"]
    assert len(samples) >= 10  # 15 s every 0.5 s (fewer on a slow machine: a scrape waits)
    assert max(s["rooms"] for s in samples) >= 2
    assert max(s["connections"] for s in samples) >= 4
    assert all(s["rss_kb"] > 0 and s["fds"] > 0 and s["tasks"] > 0 for s in samples)
    totals = report["totals"]
    assert totals["joins"] >= 3 * 2 * 5  # 3 meetings of 2, a new one every second or so
    assert totals["joins"] == totals["leaves"]
    assert totals["join_failures"] == totals["errors"] == totals["send_failures"] == 0
    assert totals["farewells_lost"] == 0  # every member had its last message back
    assert totals["chat_sent"] > 0
    assert totals["candidates_sent"] > 0
    # Chat reaches the room, sender included; a candidate its target.
    assert totals["frames_received"] >= totals["chat_sent"] + totals["candidates_sent"]
    for quiet in (report["before"], report["after"]):
        assert (quiet["rooms"], quiet["connections"]) == (0, 0)


def test_a_soak_too_short_for_its_warmup_fails_with_the_reason() -> None:
    args = [*TINY[:2], "0.05", *TINY[3:-2], "--warmup", "60"]
    result = CliRunner().invoke(bench_app, args)
    assert result.exit_code == 1, result.output
    assert "soak FAILED: only 0 samples after the warm-up" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "ws://127.0.0.1:9"], "--key-file is needed with --url"),
        (["--url", "ws://127.0.0.1:9", "--key-file", "KEY"], "the soak watches one server"),
    ],
)
def test_a_soak_of_a_given_server_needs_its_key_and_pid(
    args: list[str], message: str, tmp_path: Path
) -> None:
    from callroom.auth.dev import DevKeys

    key = tmp_path / "key.pem"
    DevKeys.load_or_create(key)
    args = [str(key) if arg == "KEY" else arg for arg in args]
    result = CliRunner().invoke(bench_app, ["soak", "--minutes", "0.05", *args])
    assert result.exit_code == 1
    assert message in result.output


FLAT = Sample(seconds=0, rss_kb=100_000, fds=60, tasks=40, rooms=20, connections=80)
QUIET = Sample(seconds=0, rss_kb=90_000, fds=25, tasks=6, rooms=0, connections=0)


def run_of(**growth: int) -> list[Sample]:
    """Twelve samples under load, each field growing by ``growth[field]`` per sample."""
    return [
        replace(
            FLAT,
            seconds=5 * i,
            **{name: getattr(FLAT, name) + step * i for name, step in growth.items()},
        )
        for i in range(12)
    ]


def test_flat_samples_and_a_quiet_server_back_where_it_was_pass() -> None:
    assert check_growth(run_of(), QUIET, QUIET) == []
    # Noise within the limits: RSS up 8 MiB over the run, a few fds and tasks.
    assert check_growth(run_of(rss_kb=700, fds=1, tasks=2), QUIET, replace(QUIET, fds=27)) == []


@pytest.mark.parametrize(
    ("growth", "reason"),
    [
        ({"rss_kb": 2000}, "RSS grew from"),
        ({"fds": 3}, "fds grew from 64 to 88"),
        ({"tasks": 5}, "tasks grew from"),
    ],
)
def test_growing_samples_fail(growth: dict[str, int], reason: str) -> None:
    reasons = check_growth(run_of(**growth), QUIET, QUIET)
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith(reason), reasons


@pytest.mark.parametrize(
    ("after", "reason"),
    [
        (replace(QUIET, rooms=1), "rooms did not return to 0 after the load: 1"),
        (replace(QUIET, connections=3), "connections did not return to 0 after the load: 3"),
        (replace(QUIET, fds=40), "quiet fds went from 25 to 40"),
        (replace(QUIET, tasks=30), "quiet tasks went from 6 to 30"),
    ],
)
def test_a_server_that_does_not_return_to_quiet_fails(after: Sample, reason: str) -> None:
    reasons = check_growth(run_of(), QUIET, after)
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith(reason), reasons


def test_too_few_samples_fail_and_limits_are_settable() -> None:
    assert check_growth(run_of()[:2], QUIET, QUIET) == [
        "only 2 samples after the warm-up: run longer"
    ]
    strict = Limits(rss_fraction=0, rss_kb=0, fds=0, tasks=0)
    assert len(check_growth(run_of(rss_kb=1, fds=1, tasks=1), QUIET, QUIET, strict)) == 3


def test_the_gauges_are_read_from_prometheus_text() -> None:
    text = '# HELP a x\na 3.0\na_other{x="1"} 9\nb 7\n'
    assert parse_gauges(text, ["a", "b"]) == {"a": 3.0, "b": 7.0}
    with pytest.raises(BenchError, match="/metrics has no c: is it callroom"):
        parse_gauges(text, ["a", "c"])
