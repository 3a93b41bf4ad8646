"""A real Prometheus on loopback scrapes a running `authz serve` and the gateway Envoy (its
deploy/ config, stats listener included), loads deploy/prometheus/authz-rules.yaml, and
answers PromQL over its HTTP API with the counts of a known sequence of Checks.

Needs the `prometheus` binary (deploy/install-tools.sh installs it; missing fails, not skips).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from authz._pb.envoy.service.auth.v3 import external_auth_pb2
from authz._support.envoy_config import envoy_command, render_envoy_config
from tests.credentials import OTHER_SECRET, SECRET, hs256
from tests.harness import (
    AUTHZ_METRICS,
    ROOT,
    Authz,
    echo_upstream,
    free_port,
    request,
    run_authz,
    wait_until,
)

RULES = ROOT / "deploy" / "prometheus" / "authz-rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "authz-dashboard.json"
BASE = ROOT / "deploy" / "kubernetes" / "base"
CHECK = "/envoy.service.auth.v3.Authorization/Check"
GRPC_OK, GRPC_UNAUTHENTICATED = 0, 16


# ---- the processes ----


@dataclass
class Gateway:
    listen_port: int
    stats_port: int


@contextlib.contextmanager
def _running(command: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running with its output in `log_path`; SIGTERM and a 15 s wait at the end."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            process.wait(timeout=15)


@contextlib.contextmanager
def run_gateway(authz_grpc_port: int, upstream_port: int) -> Iterator[Gateway]:
    """Envoy on deploy/'s gateway config, every address moved to a free loopback port."""
    listen_port, admin_port, stats_port = free_port(), free_port(), free_port()
    config = render_envoy_config(
        BASE / "gateway-envoy.yaml",
        listen_port,
        admin_port,
        {"authz": authz_grpc_port, "ant_media": upstream_port, "envoy_admin": admin_port},
    )
    stats = next(
        x for x in config["static_resources"]["listeners"] if x["name"] == "prometheus_stats"
    )
    stats["address"]["socket_address"].update(address="127.0.0.1", port_value=stats_port)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "envoy.yaml"
        path.write_text(yaml.safe_dump(config))
        with _running(envoy_command(path), Path(tmp) / "envoy.log") as process:
            # Through the stats listener, as the kubelet's readiness probe asks.
            wait_until(
                lambda: process.poll() is None and request(stats_port, "/ready").status == 200,
                timeout=30,
                what="envoy ready",
            )
            wait_until(
                lambda: (
                    "authz::127.0.0.1:" in (clusters := _clusters(admin_port))
                    and "::health_flags::healthy" in clusters
                ),
                timeout=30,
                what="authz healthy in envoy",
            )
            yield Gateway(listen_port, stats_port)


def _clusters(admin_port: int) -> str:
    lines = request(admin_port, "/clusters").body.decode().splitlines()
    return "\n".join(line for line in lines if line.startswith("authz::"))


@dataclass
class Prometheus:
    port: int

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as answer:
            document = json.load(answer)
        assert document["status"] == "success", document
        return document["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=promql)
        result: list[dict[str, Any]] = data["result"]
        return result


@contextlib.contextmanager
def run_prometheus(targets: dict[str, tuple[int, str]]) -> Iterator[Prometheus]:
    """Prometheus on loopback scraping each job's (port, metrics path) every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: run deploy/install-tools.sh")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": path,
                "static_configs": [{"targets": [f"127.0.0.1:{target}"]}],
            }
            for job, (target, path) in targets.items()
        ],
    }
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        command = [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={Path(tmp) / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        with _running(command, Path(tmp) / "prometheus.log") as process:
            wait_until(
                lambda: process.poll() is None and request(port, "/-/ready").status == 200,
                timeout=30,
                what="prometheus ready",
            )
            yield Prometheus(port)


# ---- Checks ----


def _check(channel: grpc.Channel, token: str | None) -> int:
    """One Check as Envoy sends it (raw protobuf bytes); the gRPC status code of the answer."""
    message = external_auth_pb2.CheckRequest()
    address = message.attributes.source.address.socket_address
    address.address, address.port_value = "127.0.0.1", 40000
    http = message.attributes.request.http
    http.method, http.path, http.host = "GET", "/LiveApp/rest/v2/broadcasts/list/0/10", "ams"
    if token is not None:
        http.headers["authorization"] = token
    raw = channel.unary_unary(CHECK)(message.SerializeToString(), timeout=5)
    code: int = external_auth_pb2.CheckResponse.FromString(raw).status.code
    return code


def _by_label(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {sample["metric"][label]: float(sample["value"][1]) for sample in result}


def _settle(prometheus: Prometheus, promql: str, label: str, expected: dict[str, float]) -> None:
    seen: dict[str, float] = {}

    def matches() -> bool:
        nonlocal seen
        seen = _by_label(prometheus.query(promql), label)
        return seen == expected

    try:
        wait_until(matches, timeout=30, what=promql)
    except TimeoutError:
        pytest.fail(f"{promql}: got {seen}, expected {expected}")


def _probe_paths() -> dict[str, str]:
    deployment = yaml.safe_load((BASE / "authz-deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {
        probe: container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    }


# ---- the test ----


def _send_known_sequence(authz: Authz, gateway: Gateway) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{authz.grpc_port}") as channel:
        assert [_check(channel, hs256(SECRET, sub="alice")) for _ in range(3)] == [GRPC_OK] * 3
        assert [_check(channel, None) for _ in range(2)] == [GRPC_UNAUTHENTICATED] * 2
        assert _check(channel, hs256(SECRET, ttl=-3600, sub="alice")) == GRPC_UNAUTHENTICATED
        assert _check(channel, hs256(OTHER_SECRET, sub="alice")) == GRPC_UNAUTHENTICATED
    path = "/LiveApp/rest/v2/version"
    allowed = {"authorization": hs256(SECRET, sub="alice")}
    assert request(gateway.listen_port, path, allowed).status == 200
    assert request(gateway.listen_port, path).status == 401


def test_prometheus_scrapes_authz_and_envoy_and_evaluates_the_rules() -> None:
    with (
        run_authz() as authz,
        echo_upstream() as upstream,
        run_gateway(authz.grpc_port, upstream) as gateway,
    ):
        for probe, path in _probe_paths().items():
            assert request(authz.http_port, path).status == 200, probe
        # The stats listener exposes the admin's /stats/prometheus and /ready, nothing else.
        assert request(gateway.stats_port, "/stats").status == 404
        with run_prometheus(
            {
                "authz": (authz.http_port, "/metrics"),
                "envoy-gateway": (gateway.stats_port, "/stats/prometheus"),
            }
        ) as prometheus:
            # Checks after the first scrapes, so that rates (and the rules on them) move.
            _settle(prometheus, "up == 1", "job", {"authz": 1, "envoy-gateway": 1})
            _send_known_sequence(authz, gateway)
            # 3 allowed + 1 through Envoy; 2 without a token + 1 through Envoy; 1 expired;
            # 1 signed with another secret.
            _settle(
                prometheus,
                'sum by (reason) (authz_checks_total{job="authz"}) > 0',
                "reason",
                {"ok": 4, "missing_token": 3, "expired": 1, "bad_signature": 1},
            )
            _settle(
                prometheus,
                'sum by (decision) (authz_checks_total{job="authz"}) > 0',
                "decision",
                {"allow": 4, "deny": 5},
            )
            _settle(
                prometheus,
                "sum by (__name__) ({__name__=~'envoy_http_ext_authz_(ok|denied|error|"
                "failure_mode_allowed)', job='envoy-gateway'})",
                "__name__",
                {
                    "envoy_http_ext_authz_ok": 1,
                    "envoy_http_ext_authz_denied": 1,
                    "envoy_http_ext_authz_error": 0,
                    "envoy_http_ext_authz_failure_mode_allowed": 0,
                },
            )
            _assert_every_spec_metric_is_scraped(prometheus)
            _assert_rules_load_and_evaluate(prometheus)
            _assert_dashboard_queries_run(prometheus)
            # With authz gone the down alerts start: evaluated on real scrapes.
            assert authz.stop(signal.SIGTERM) == 0
            _settle(
                prometheus,
                'ALERTS{alertname=~"AuthzTargetDown|AuthzDown", alertstate="pending"}',
                "alertname",
                {"AuthzTargetDown": 1, "AuthzDown": 1},
            )


def _assert_every_spec_metric_is_scraped(prometheus: Prometheus) -> None:
    found = _by_label(
        prometheus.query('count by (__name__) ({job="authz", __name__=~"authz_.+"})'), "__name__"
    )
    assert set(found) >= AUTHZ_METRICS, sorted(AUTHZ_METRICS - set(found))


def _rules_in_file() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(g["name"], r.get("alert") or r["record"]) for g in groups for r in g["rules"]]


def _assert_rules_load_and_evaluate(prometheus: Prometheus) -> None:
    expected = _rules_in_file()
    loaded: list[dict[str, Any]] = []

    def all_evaluated() -> bool:
        nonlocal loaded
        loaded = [
            {"group": g["name"], **r}
            for g in prometheus.get("/api/v1/rules")["groups"]
            for r in g["rules"]
        ]
        return all(r["health"] != "unknown" for r in loaded)

    wait_until(all_evaluated, timeout=30, what="every rule evaluated")
    assert sorted((r["group"], r["name"]) for r in loaded) == sorted(expected)
    broken = {r["name"]: r.get("lastError") for r in loaded if r["health"] != "ok"}
    assert not broken
    reasons = {"ok", "missing_token", "expired", "bad_signature"}
    wait_until(
        lambda: (
            set(_by_label(prometheus.query('authz:checks:rate5m{job="authz"} > 0'), "reason"))
            == reasons
        ),
        timeout=30,
        what="recorded Check rates by reason",
    )
    wait_until(
        lambda: prometheus.query('authz:check_duration_seconds:p99_5m{job="authz"} > 0') != [],
        timeout=30,
        what="recorded p99 Check latency",
    )
    firing = prometheus.query('ALERTS{alertstate="firing"}')
    assert firing == []


def _assert_dashboard_queries_run(prometheus: Prometheus) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    must_have_data = {
        "Checks per second by decision",
        "Decisions by reason",
        "Check decision time quantiles",
        "Token cache hit ratio",
        "Envoy ext_authz outcomes",
    }
    with_data = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            promql = target["expr"].replace("$__rate_interval", "1m").replace("$namespace", ".*")
            # A query that fails to parse or evaluate raises inside `query`.
            if prometheus.query(promql):
                with_data.add(panel["title"])
    assert must_have_data <= with_data, sorted(must_have_data - with_data)
