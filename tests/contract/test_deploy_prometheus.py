"""deploy/prometheus and deploy/grafana: `promtool check rules` and `promtool test rules` on the
real promtool, and the dashboard's queries read only metrics that exist.

Needs `promtool` (deploy/install-tools.sh installs it; missing fails, not skips).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import AUTHZ_METRICS, ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "authz-rules.yaml"
RULE_TESTS = PROMETHEUS / "authz-rules.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "authz-dashboard.json"

# Envoy's ext_authz counters, beside authz's own (harness.AUTHZ_METRICS).
ENVOY_METRICS = {
    f"envoy_http_ext_authz_{name}" for name in ("ok", "denied", "error", "failure_mode_allowed")
}
_METRIC = re.compile(r"\b((?:authz|envoy)_[a-z_]+)\b")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool not found: run deploy/install-tools.sh")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def test_promtool_check_rules() -> None:
    done = _promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def test_promtool_test_rules() -> None:
    done = _promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_catches_a_wrong_expectation(tmp_path: Path) -> None:
    # The unit tests can fail: the same tests with one severity changed must not pass.
    shutil.copy(RULES, tmp_path / RULES.name)
    text = RULE_TESTS.read_text().replace("severity: critical, job: authz}", "severity: page}", 1)
    (tmp_path / RULE_TESTS.name).write_text(text)
    done = _promtool("test", "rules", str(tmp_path / RULE_TESTS.name))
    assert done.returncode != 0
    assert "AuthzDown" in done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - firing == set(), "alerts never seen firing"
    assert names - quiet == set(), "alerts never seen staying quiet"


def test_every_alert_has_severity_summary_and_runbook() -> None:
    for rule in _alerts():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        assert "\n" not in annotations["runbook"].strip(), rule["alert"]


def test_rules_read_only_metrics_that_exist() -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    for rule in _rules():
        used = set(_METRIC.findall(rule["expr"]))
        assert used <= AUTHZ_METRICS | ENVOY_METRICS, (rule.get("alert") or rule["record"], used)
    assert all(":" in name for name in recorded), "recording rules follow level:metric:operations"


def _dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def test_dashboard_shows_what_operators_ask_for() -> None:
    dashboard = _dashboard()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}
    assert "by (reason)" in exprs["Decisions by reason"]
    assert exprs["Check decision time quantiles"].count("histogram_quantile") == 3
    assert "authz_jwks_last_success_timestamp_seconds" in exprs["JWKS key set age"]
    assert 'result="hit"' in exprs["Token cache hit ratio"]
    assert set(_METRIC.findall(exprs["Envoy ext_authz outcomes"])) == ENVOY_METRICS
    # Every panel reads the data source chosen in the dashboard, never a fixed one.
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_reads_only_metrics_that_exist() -> None:
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            used = set(_METRIC.findall(target["expr"]))
            assert used <= AUTHZ_METRICS | ENVOY_METRICS, (panel["title"], used)
            # Prometheus' own `up` is the only other series a panel may read.
            assert used or "up{" in target["expr"], panel["title"]


def test_install_tools_is_idempotent_and_quiet() -> None:
    # CI calls it on every run: once the tools are there it must change nothing and say nothing.
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "install-tools.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
