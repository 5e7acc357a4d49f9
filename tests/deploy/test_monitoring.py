"""devops/monitoring: the alert rules pass `promtool check rules` and their unit tests
(`promtool test rules`, every alert tested firing), the Prometheus configuration passes
`promtool check config`, and every metric a rule or a dashboard panel names is exported
by a live node's /metrics (issue 15)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from deploy_support import (
    MONITORING,
    exported_metric_names,
    load_yaml,
    promql_metric_names,
    run,
    tool,
)

from callroom_testing import metrics_text

ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts.test.yml"
DASHBOARD = MONITORING / "grafana" / "callroom-dashboard.json"
# Series Prometheus makes itself for every target: no server exports them.
PROMETHEUS_OWN = frozenset({"up"})


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_expressions() -> list[str]:
    """Every panel target's expression, and every query of the template variables."""
    exprs = [
        target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["query"]["query"])
    return exprs


def used_metric_names() -> dict[str, set[str]]:
    """Metric name -> where it is used (alert names, panel titles)."""
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in promql_metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for expr in dashboard_expressions():
        for name in promql_metric_names(expr):
            used.setdefault(name, set()).add("dashboard")
    return used


def promtool_test(rules_dir: Path) -> tuple[int, str]:
    result = run(tool("promtool"), "test", "rules", "alerts.test.yml", cwd=rules_dir)
    return result.returncode, result.stdout + result.stderr


def test_alert_rules_pass_promtool_check() -> None:
    result = run(tool("promtool"), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_alert_unit_tests_pass() -> None:
    code, output = promtool_test(MONITORING)
    assert code == 0, output
    assert "SUCCESS" in output


def test_every_alert_is_tested_firing(tmp_path: Path) -> None:
    """Each alert has a unit test that expects it to fire: without the alert in the
    rule file, the unit tests fail."""
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    expected_firing = {
        case["alertname"]
        for test in load_yaml(ALERT_TESTS)["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(names) == expected_firing
    source = ALERTS.read_text()
    for name in names:
        shutil.copy(ALERT_TESTS, tmp_path / "alerts.test.yml")
        (tmp_path / "alerts.yml").write_text(source.replace(f"alert: {name}\n", "alert: Gone\n"))
        code, output = promtool_test(tmp_path)
        assert code != 0, f"the unit tests do not notice {name} missing"
        assert name in output


def test_the_issue_s_alerts_are_there() -> None:
    """Auth-failure spikes, handler error rate, saturation against MAX_CONNECTIONS,
    slow-consumer closes, store or Redis not ready, JWKS refresh failing."""
    by_metric = used_metric_names()
    for metric in (
        "callroom_auth_failures_total",
        "callroom_handler_errors_total",
        "callroom_max_connections",
        "callroom_slow_consumer_closes_total",
        "callroom_ready",
        "callroom_redis_up",
        "callroom_jwks_fetches_total",
    ):
        assert any(where.startswith("alert ") for where in by_metric.get(metric, ())), metric


def test_prometheus_config_passes_promtool_check() -> None:
    result = run(tool("promtool"), "check", "config", "prometheus.yml", cwd=MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_a_grafana_dashboard_over_the_issue_s_metrics() -> None:
    data = dashboard()
    panels = data["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    graphs = [panel for panel in panels if panel["type"] != "row"]
    for panel in graphs:
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], panel["title"]
    # Connections, rooms, joins, messages in/out, handling latency, errors by event and
    # code, store commit latency, refusals by code.
    used = used_metric_names()
    for metric in (
        "callroom_ws_connections",
        "callroom_rooms_active",
        "callroom_join_seconds_bucket",
        "callroom_messages_received_total",
        "callroom_messages_sent_total",
        "callroom_message_handling_seconds_bucket",
        "callroom_handler_errors_total",
        "callroom_chat_store_commit_seconds_bucket",
        "callroom_handshake_refusals_total",
    ):
        assert "dashboard" in used.get(metric, set()), metric


def test_metric_names_are_found_in_promql() -> None:
    """Control of the name extraction the scrape test relies on."""
    expr = (
        'sum by (job, le) (rate(callroom_x_bucket{job="$job", a=~"b|c"}[5m])) '
        "/ ignoring(code) clamp_min(callroom_y, 1) > 0.5 unless on(instance) up == 0"
    )
    assert promql_metric_names(expr) == {"callroom_x_bucket", "callroom_y", "up"}
    assert promql_metric_names('label_values(callroom_z{job="$job"}, instance)') == {"callroom_z"}


async def test_every_metric_of_the_rules_and_the_dashboard_is_exported(
    start_cluster: Any,
) -> None:
    """A live node on Redis (so that its Redis metrics exist) exports every metric
    that an alert rule or a dashboard panel names."""
    (node,) = await start_cluster(count=1)
    exported = exported_metric_names(await metrics_text(node))
    assert "callroom_ws_connections" in exported  # the scrape itself worked
    used = used_metric_names()
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    for name in PROMETHEUS_OWN:
        missing.pop(name, None)
    assert not missing, f"not exported by /metrics: {json.dumps(missing, indent=1)}"


@pytest.mark.parametrize(
    ("exposition", "expected"),
    [
        ("# TYPE a_total counter\n", {"a_total"}),
        ("# TYPE h histogram\n", {"h_bucket", "h_sum", "h_count", "h_created"}),
        ("# TYPE g gauge\ng 1\n", {"g"}),
    ],
)
def test_exported_names_come_from_type_lines(exposition: str, expected: set[str]) -> None:
    assert exported_metric_names(exposition) == expected
