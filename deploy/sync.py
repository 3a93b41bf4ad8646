"""Regenerate the files in deploy/ that are derived from others: `python deploy/sync.py [--check]`.

- `kubernetes/base/gateway-envoy.yaml` from the top-level `envoy.yaml`: the same Envoy
  configuration with the loopback addresses of a single machine replaced by cluster ones
  (see `gateway_config`), plus a listener that exposes only `/stats/prometheus` and `/ready`
  of the loopback-only admin interface to Prometheus and the kubelet.
- `kubernetes/base/authz-prometheusrule.yaml` from `prometheus/authz-rules.yaml`: the same
  rule groups wrapped in a Prometheus Operator `PrometheusRule`.

With `--check` nothing is written; the exit code is 1 and the stale files are named when a
committed copy differs from what would be generated.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
ENVOY_SOURCE = ROOT / "envoy.yaml"
ENVOY_COPY = DEPLOY / "kubernetes" / "base" / "gateway-envoy.yaml"
RULES_SOURCE = DEPLOY / "prometheus" / "authz-rules.yaml"
RULES_COPY = DEPLOY / "kubernetes" / "base" / "authz-prometheusrule.yaml"

# The single-machine config reaches both services on loopback; in the cluster Envoy resolves
# Services instead. authz through its headless Service, so Envoy sees every pod and balances
# each Check (a ClusterIP would pin the one HTTP/2 connection to one pod).
AUTHZ_CLUSTER = "authz"
AUTHZ_HOST = "authz-grpc"
AMS_PORT = 5080
AMS_HOST = "ant-media"
# Where Prometheus and the kubelet reach the admin's read-only endpoints.
STATS_LISTENER = "prometheus_stats"
STATS_PORT = 9902
ADMIN_CLUSTER = "envoy_admin"
ADMIN_PATHS = ("/stats/prometheus", "/ready")

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class SyncError(Exception):
    """The source file does not have the shape this script rewrites."""


def _socket_addresses(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for group in cluster.get("load_assignment", {}).get("endpoints", []):
        for lb_endpoint in group.get("lb_endpoints", []):
            found.append(lb_endpoint["endpoint"]["address"]["socket_address"])
    return found


def _point_at(cluster: dict[str, Any], host: str) -> None:
    addresses = _socket_addresses(cluster)
    if not addresses or any(a["address"] not in LOOPBACK for a in addresses):
        raise SyncError(f"cluster {cluster['name']!r} does not point at loopback")
    for address in addresses:
        address["address"] = host
    # A hostname needs DNS resolution; STRICT_DNS keeps every resolved address as a host and
    # re-resolves on dns_refresh_rate, so new and drained pods are followed.
    cluster["type"] = "STRICT_DNS"


def _stats_listener() -> dict[str, Any]:
    routes = [
        {"match": {"path": path}, "route": {"cluster": ADMIN_CLUSTER}} for path in ADMIN_PATHS
    ]
    return {
        "name": STATS_LISTENER,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": STATS_PORT}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                            "http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": STATS_LISTENER,
                            "route_config": {
                                "virtual_hosts": [
                                    {"name": "admin", "domains": ["*"], "routes": routes}
                                ]
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions."
                                        "filters.http.router.v3.Router"
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }


def _admin_cluster(admin_port: int) -> dict[str, Any]:
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}
    return {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
        },
    }


def gateway_config(source: dict[str, Any]) -> dict[str, Any]:
    """The in-cluster Envoy config derived from the single-machine one.

    Changes, and only these: the `authz` cluster resolves `authz-grpc`, the cluster on
    loopback port 5080 resolves `ant-media` (both STRICT_DNS, ports kept), listeners bound to
    loopback bind all addresses, and the admin's `/stats/prometheus` and `/ready` are routed
    from a listener on port 9902. The admin itself stays on loopback.
    """
    config = copy.deepcopy(source)
    static = config.get("static_resources", {})
    clusters: list[dict[str, Any]] = static.get("clusters", [])
    listeners: list[dict[str, Any]] = static.get("listeners", [])
    by_name = {c["name"]: c for c in clusters}
    if AUTHZ_CLUSTER not in by_name:
        raise SyncError(f"no cluster named {AUTHZ_CLUSTER!r}")
    _point_at(by_name[AUTHZ_CLUSTER], AUTHZ_HOST)
    ams = [
        c for c in clusters if any(a.get("port_value") == AMS_PORT for a in _socket_addresses(c))
    ]
    if len(ams) != 1:
        raise SyncError(f"expected one cluster on port {AMS_PORT}, found {len(ams)}")
    _point_at(ams[0], AMS_HOST)
    left = [
        c["name"] for c in clusters if any(a["address"] in LOOPBACK for a in _socket_addresses(c))
    ]
    if left:
        # In a pod, loopback is the pod itself: such a cluster needs a Service mapping here.
        raise SyncError(f"clusters on loopback with no in-cluster address: {left}")
    for listener in listeners:
        address = listener["address"]["socket_address"]
        if address["address"] in LOOPBACK:
            address["address"] = "0.0.0.0"
    taken = {c["name"] for c in clusters} | {listener["name"] for listener in listeners}
    if {ADMIN_CLUSTER, STATS_LISTENER} & taken:
        raise SyncError(f"{ADMIN_CLUSTER!r} or {STATS_LISTENER!r} already exists")
    try:
        admin_port = int(config["admin"]["address"]["socket_address"]["port_value"])
    except (KeyError, TypeError) as exc:
        raise SyncError("no admin socket address") from exc
    listeners.append(_stats_listener())
    clusters.append(_admin_cluster(admin_port))
    return config


def prometheus_rule(rules: dict[str, Any]) -> dict[str, Any]:
    """The rule file's groups as a Prometheus Operator `PrometheusRule` object."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "authz", "labels": {"app.kubernetes.io/name": "authz"}},
        "spec": {"groups": rules["groups"]},
    }


def _render(header: str, document: dict[str, Any]) -> str:
    body = yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True)
    return header + body


def _outputs() -> dict[Path, str]:
    envoy = yaml.safe_load(ENVOY_SOURCE.read_text(encoding="utf-8"))
    rules = yaml.safe_load(RULES_SOURCE.read_text(encoding="utf-8"))
    return {
        ENVOY_COPY: _render(
            "# Generated by deploy/sync.py from envoy.yaml. DO NOT EDIT: edit envoy.yaml, rerun.\n",
            gateway_config(envoy),
        ),
        RULES_COPY: _render(
            "# Generated by deploy/sync.py from deploy/prometheus/authz-rules.yaml. DO NOT EDIT.\n",
            prometheus_rule(rules),
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a copy is stale")
    args = parser.parse_args(argv)
    try:
        outputs = _outputs()
    except (OSError, SyncError, yaml.YAMLError) as exc:
        print(f"sync: {exc}", file=sys.stderr)
        return 2
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(
                f"sync: {path.relative_to(ROOT)} is stale: run python deploy/sync.py",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in stale:
        path.write_text(outputs[path], encoding="utf-8")
        print(f"sync: wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
