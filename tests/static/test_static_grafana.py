"""Grafana: the provisioned data source and dashboards (config/grafana) are what the core stack
mounts, and every panel's query is valid PromQL (`promtool check rules` parses it) over metrics
that something of ours exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from static_helpers import ROOT, require_tool

GRAFANA = ROOT / "config" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
STANDIN = ROOT / "sandbox" / "images" / "jafar-service" / "jafar_service_standin.py"

#: what the services export (the stand-in plays them; its /metrics is the contract's list),
#: what Prometheus itself makes, and node_exporter's families (with the AIDE textfile metrics)
SERVICE_METRICS = set(re.findall(r'"# TYPE (\w+) ', STANDIN.read_text()))
PROMETHEUS_METRICS = {"up", "ALERTS"}
NODE_PREFIXES = ("node_", "jafar_aide_")

#: PromQL words that are not metric names
WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "time", "vector",
    "predict_linear", "label_values", "by", "without", "on", "ignoring", "group_left",
    "group_right", "or", "and", "unless", "offset", "bool", "histogram_quantile", "topk",
}
#: Grafana's variables, given values so that promtool parses the query
VARIABLES = {"$__rate_interval": "1m", "$service": "api-service"}


def targets(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of a dashboard."""
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: label matchers, grouping labels, strings,
    durations and functions taken out."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set(re.findall(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", text))
    return {n for n in names if n not in WORDS and not re.fullmatch(r"\d+\w*", n)}


def unknown_metrics(expr: str) -> set[str]:
    return {m for m in metric_names(expr)
            if m not in SERVICE_METRICS | PROMETHEUS_METRICS and not m.startswith(NODE_PREFIXES)}


def promql_errors(exprs: list[str], tmp_path: Path) -> str:
    """promtool's complaints about the expressions (empty when all parse), each checked as the
    expression of a recording rule, with Grafana's variables given values."""
    require_tool("promtool")
    rules = []
    for i, expr in enumerate(exprs):
        for var, value in VARIABLES.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"jafar:panel_{i}", "expr": expr})
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


def test_the_service_metrics_are_read_from_the_standin():
    assert {"http_requests_total", "jafar_dependency_up", "jafar_mongo_primary_up",
            "http_requests_in_flight", "process_start_time_seconds"} <= SERVICE_METRICS


def test_three_dashboards_with_unique_uids_and_titles():
    boards = [json.loads(p.read_text()) for p in DASHBOARDS]
    assert {p.name for p in DASHBOARDS} == {"jafar-overview.json", "jafar-service.json",
                                            "jafar-data-stores.json"}
    assert len({b["uid"] for b in boards}) == len({b["title"] for b in boards}) == 3
    for board in boards:
        assert board["editable"] is False and board["timezone"] == "utc"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), board["uid"]
        assert board["panels"] and all(p.get("targets") for p in board["panels"])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_queries_the_provisioned_prometheus_with_valid_promql(path, tmp_path):
    board = json.loads(path.read_text())
    uid = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())[
        "datasources"][0]["uid"]
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]
    exprs = [e for _, e in targets(board)]
    assert promql_errors(exprs, tmp_path) == ""
    assert {title: unknown_metrics(e) for title, e in targets(board) if unknown_metrics(e)} == {}
    used = {v for _, e in targets(board) for v in re.findall(r"\$\w+", e)}
    declared = {f"${v['name']}" for v in board["templating"]["list"]} | {"$__rate_interval"}
    assert used <= declared, used - declared


def test_the_checks_catch_a_broken_query_and_an_unknown_metric(tmp_path):
    assert "panel_0" in promql_errors(['sum(rate(http_requests_total[5m])'], tmp_path)
    assert unknown_metrics('sum by (service) (rate(jafar_no_such_total{job="jafar"}[5m]))') == {
        "jafar_no_such_total"}
    assert unknown_metrics('max(jafar_mongo_primary_up{job="jafar", service=~"a.*"}) or '
                           'vector(0)') == set()


def test_the_core_stack_mounts_what_is_provisioned():
    compose = yaml.safe_load((ROOT / "compose" / "docker-compose.core.yml").read_text())
    grafana = compose["services"]["grafana"]
    assert grafana["profiles"] == ["grafana"]
    assert {"../config/grafana/provisioning:/etc/grafana/provisioning:ro",
            "../config/grafana/dashboards:/etc/grafana/dashboards:ro"} <= set(grafana["volumes"])
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/jafar.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    assert provider["providers"][0]["allowUiUpdates"] is False
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    # the Prometheus service of the same stack, on the network Grafana shares with it
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert "services" in grafana["networks"] and "services" in compose["services"][
        "prometheus"]["networks"]


def test_files_sync_uploads_the_grafana_files():
    from fabfile.sync import bundle_items
    from tests.conftest import shipped

    remotes = {i.remote for i in bundle_items(shipped("prod"), shipped("prod").hosts[1])}
    for path in (*DASHBOARDS, GRAFANA / "provisioning/datasources/prometheus.yml",
                 GRAFANA / "provisioning/dashboards/jafar.yml"):
        assert any(r.endswith(str(path.relative_to(ROOT))) for r in remotes), path
