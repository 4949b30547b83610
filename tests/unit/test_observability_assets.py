"""The alert rules and the Grafana dashboard the chart ships: every alert is complete (for, severity, runbook), every
query names only devmlops metrics (or ``up`` and ``time()``), the dashboard is valid JSON with unique panel ids,
and every metric the assets use is documented. Whether the running processes expose those metrics is
tests/integration/test_observability.py's job."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

CHART = ROOT / "charts" / "devmlops"
RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "dashboards" / "devmlops.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"

EXPECTED_ALERTS = {
    "DevmlopsWebhookErrors",
    "DevmlopsAdmissionLatencyNearTimeout",
    "DevmlopsFailClosedDenials",
    "DevmlopsWebhookCertificateExpiresSoon",
    "DevmlopsWebhookCertificateExpiresVerySoon",
    "DevmlopsModelDeploymentsDegraded",
    "DevmlopsWebhookDown",
    "DevmlopsOperatorReconcileErrors",
    "DevmlopsGuardBlockedSpike",
    "DevmlopsGuardSchemaBurst",
    "DevmlopsGuardProbing",
    "DevmlopsGuardInputDrift",
    "DevmlopsRolloutRolledBack",
}
RUNBOOK = "https://github.com/devmlops/devmlops/blob/main/docs/operations.md#"
RUNBOOK_ANCHORS = {
    "webhook-down",
    "fail-closed-denials",
    "certificate-expiry",
    "degraded-modeldeployments",
    "latency",
    "guard-blocked-spike",
    "guard-rate-limited",
    "guard-schema-burst",
    "guard-probing",
    "guard-input-drift",
    "rollout-rolled-back",
}

_FUNCTIONS = {
    "absent",
    "avg",
    "clamp_min",
    "count",
    "histogram_quantile",
    "increase",
    "irate",
    "label_values",
    "max",
    "min",
    "rate",
    "sum",
    "time",
}
_KEYWORDS = {"and", "or", "unless", "bool", "offset"}
_METRIC = re.compile(r"^(devmlops_[a-z_]+|up)$")


def metric_identifiers(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, function names) of a PromQL expression; label matchers, grouping and ranges are dropped."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\$\w+", "", text)  # Grafana variables ($__rate_interval)
    text = re.sub(r"label_values\(([^,()]*),\s*\w+\s*\)", r"label_values(\1)", text)  # Grafana: the label
    functions = set(re.findall(r"\b([a-zA-Z_]\w*)\s*\(", text))
    names = {
        word
        for word in re.findall(r"\b([a-zA-Z_]\w*)\b(?!\s*\()", text)
        if word not in _KEYWORDS and not re.fullmatch(r"\d+[a-z]*", word)
    }
    return names, functions


def load_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in panels:
        found.append(panel)
        found.extend(all_panels(panel.get("panels") or []))
    return found


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in all_panels(dashboard["panels"]) for t in p.get("targets") or [] if t.get("expr")]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            exprs.append(str(query))
    return exprs


def test_the_rules_file_is_a_prometheus_rule_file_with_named_groups() -> None:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names))
    assert all(group["rules"] for group in document["groups"])


def test_every_alert_the_issue_names_is_in_the_rules_file_once() -> None:
    alerts = [rule["alert"] for rule in load_rules()]
    assert len(alerts) == len(set(alerts))
    assert EXPECTED_ALERTS - set(alerts) == set()


@pytest.mark.parametrize("rule", load_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_waits_names_a_severity_and_links_its_runbook(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    url = annotations["runbook_url"]
    assert url.startswith(RUNBOOK)
    assert url.removeprefix(RUNBOOK) in RUNBOOK_ANCHORS


@pytest.mark.parametrize("rule", load_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_expression_uses_only_devmlops_metrics_up_and_time(rule: dict[str, Any]) -> None:
    names, functions = metric_identifiers(rule["expr"])
    assert names, f"{rule['alert']}: no metric in {rule['expr']!r}"
    assert all(_METRIC.match(name) for name in names), names
    assert functions <= _FUNCTIONS, functions - _FUNCTIONS
    assert rule["expr"].count("(") == rule["expr"].count(")")


def test_the_certificate_alerts_escalate_from_warning_at_14_days_to_critical_at_3() -> None:
    rules = {rule["alert"]: rule for rule in load_rules()}
    soon, very_soon = rules["DevmlopsWebhookCertificateExpiresSoon"], rules["DevmlopsWebhookCertificateExpiresVerySoon"]
    assert "< 14 * 86400" in soon["expr"]
    assert soon["labels"]["severity"] == "warning"
    assert "< 3 * 86400" in very_soon["expr"]
    assert very_soon["labels"]["severity"] == "critical"


def test_the_latency_alert_uses_the_histogram_buckets_and_stays_below_the_webhook_timeout() -> None:
    rule = {r["alert"]: r for r in load_rules()}["DevmlopsAdmissionLatencyNearTimeout"]
    assert "histogram_quantile(0.99" in rule["expr"]
    assert "devmlops_admission_duration_seconds_bucket" in rule["expr"]
    threshold = float(rule["expr"].rsplit(">", 1)[1])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert threshold < values["webhook"]["decisionTimeoutSeconds"] < values["webhook"]["timeoutSeconds"]


def test_the_dashboard_parses_and_its_panel_ids_are_unique() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "devmlops"
    assert dashboard["title"] == "devmlops"
    assert dashboard["schemaVersion"] == 39
    ids = [panel["id"] for panel in all_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) for i in ids)


def test_the_dashboard_queries_a_selectable_prometheus_data_source() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in all_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


def test_the_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(load_dashboard()["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_dashboard_query_uses_only_devmlops_metrics() -> None:
    exprs = dashboard_expressions(load_dashboard())
    assert len(exprs) >= 10
    for expr in exprs:
        names, functions = metric_identifiers(expr)
        assert names, expr
        assert all(name.startswith("devmlops_") for name in names), expr
        assert functions <= _FUNCTIONS, expr
        assert expr.count("(") == expr.count(")"), expr


def test_the_dashboard_shows_the_webhook_timeout_as_a_latency_threshold() -> None:
    panels = {p["title"]: p for p in all_panels(load_dashboard()["panels"])}
    latency = panels["Admission latency p50 / p99"]
    steps = [step["value"] for step in latency["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["webhook"]["timeoutSeconds"] in steps
    assert latency["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"


def test_every_metric_the_assets_use_is_documented() -> None:
    exprs = [rule["expr"] for rule in load_rules()] + dashboard_expressions(load_dashboard())
    used = {re.sub(r"_(bucket|sum|count)$", "", n) for e in exprs for n in re.findall(r"devmlops_[a-z_]+", e)}
    documented = METRICS_DOC.read_text()
    assert {name for name in used if f"`{name}`" not in documented} == set()


def test_the_expression_scanner_finds_metrics_and_ignores_labels_grouping_and_functions() -> None:
    names, functions = metric_identifiers(
        'histogram_quantile(0.99, sum by (namespace, le) (rate(devmlops_x_bucket{gate="up", a=~"b|c"}[5m]))) > 5'
        " and on(namespace) absent(up) or time() - devmlops_y < 3 * 86400 + label_values(devmlops_z, namespace)"
    )
    assert names == {"devmlops_x_bucket", "up", "devmlops_y", "devmlops_z"}
    assert functions == {"histogram_quantile", "sum", "rate", "absent", "time", "label_values"}


def test_the_chart_loads_the_files_the_assets_live_in() -> None:
    templates = CHART / "templates" / "monitoring"
    assert '.Files.Get "files/prometheus-rules.yaml"' in (templates / "prometheusrule.yaml").read_text()
    assert '.Files.Get "dashboards/devmlops.json"' in (templates / "dashboard-configmap.yaml").read_text()
