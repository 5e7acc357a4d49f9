"""`callroom-bench compare` and the tables of a report: the compare runs spawn the servers
they name (skipping what cannot start), keep each server's median round and pair the
ratios within a round; the report's tables mark a headline the generator could not vouch
for. The scenarios themselves: tests/integration/test_bench_smoke.py.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from bench_runs import PEERS, assert_worked, run_bench
from callroom_bench import servers as bench_servers
from callroom_bench.cli import bench_app
from callroom_bench.params import StepResult, StormResult, TrafficResult
from callroom_bench.report import (
    compare_table,
    headline,
    median_round_ratios,
    median_runs,
    result_table,
)
from callroom_bench.scenarios import headline_usable
from callroom_bench.stats import CpuUse, Latency


def test_compare_runs_each_peer_and_skips_what_is_not_installed(tmp_path: Path) -> None:
    args = ["compare", "chat", "--server", "picows", "--server", "socketio", "--server", "node"]
    sizes = ["--rooms", "2", "--room-size", "3", "--rates", "40", "--duration", "0.2"]
    comparison = run_bench([*args, *sizes], tmp_path)
    assert comparison["baseline"] == "picows"
    assert {"picows", "socketio"} <= set(comparison["runs"])
    assert set(comparison["runs"]) | set(comparison["skipped"]) == {"picows", "socketio", "node"}
    assert "node" in comparison["runs"] or "npm ci" in comparison["skipped"]["node"]
    for report in comparison["runs"].values():
        assert_worked("chat", report)
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
            assert_worked("chat", report)
    for name, report in comparison["runs"].items():
        assert_worked("chat", report)
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
    comparison = run_bench(args, tmp_path)
    assert "exited" in comparison["skipped"]["callroom"]
    assert "npm ci" in comparison["skipped"]["node"]
    assert comparison["baseline"] == "picows"
    assert comparison["ratios"] == {}
    assert comparison["runs"]["picows"]["pinned"] is False
    assert_worked("join", comparison["runs"]["picows"])


def test_compare_spawns_callroom_as_the_baseline(tmp_path: Path) -> None:
    args = ["compare", "signal", "--server", "callroom", "--server", "picows", "--no-pin"]
    sizes = ["--pairs", "2", "--rates", "20", "--duration", "0.2"]
    comparison = run_bench([*args, *sizes], tmp_path)
    assert comparison["skipped"] == {}
    assert comparison["baseline"] == "callroom"
    assert_worked("signal", comparison["runs"]["callroom"])
    assert comparison["ratios"]["picows"] is not None


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
