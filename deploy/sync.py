"""Regenerate the files in deploy/ that are derived from others: `python deploy/sync.py [--check]`.

- `kubernetes/base/gateway-envoy.yaml` from the top-level `envoy.yaml`: the same Envoy
  configuration with the loopback addresses of a single machine replaced by cluster ones
  (see `gateway_config`), plus a listener that exposes only `/stats/prometheus` and `/ready`
  of the loopback-only admin interface to Prometheus and the kubelet.
- `kubernetes/base/authz-prometheusrule.yaml` from `prometheus/authz-rules.yaml`: the same
  rule groups wrapped in a Prometheus Operator `PrometheusRule`.
- The mTLS variants (SPEC section 11), which differ from their source only in the `authz`
  cluster's upstream TLS transport socket (`with_upstream_tls`): the top-level
  `envoy-tls.yaml` from `envoy.yaml` and `envoy-http-tls.yaml` from `envoy-http.yaml`
  (files read at start), and
  `kubernetes/overlays/mtls/gateway-envoy.yaml` from the gateway config (files delivered by
  SDS from the mounted cert-manager Secret and reloaded when kubelet swaps it), with its two
  SDS files.

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

ENVOY_TLS_COPY = ROOT / "envoy-tls.yaml"
ENVOY_HTTP_SOURCE = ROOT / "envoy-http.yaml"
ENVOY_HTTP_TLS_COPY = ROOT / "envoy-http-tls.yaml"
MTLS_OVERLAY = DEPLOY / "kubernetes" / "overlays" / "mtls"
MTLS_ENVOY_COPY = MTLS_OVERLAY / "gateway-envoy.yaml"
# The name authz's certificate carries and Envoy asks for (SNI) and checks (SAN): on one
# machine `authz`; in the cluster the headless Service's name (cert-manager puts it first).
SINGLE_HOST_AUTHZ_NAME = "authz"
GATEWAY_AUTHZ_NAME = AUTHZ_HOST
# Where the certificate files are: cert-manager's names (tls.crt, tls.key, ca.crt).
SINGLE_HOST_TLS_FOLDER = "/etc/envoy/tls"
GATEWAY_TLS_FOLDER = "/etc/envoy-tls"
GATEWAY_SDS_FOLDER = "/etc/envoy"  # beside envoy.yaml, in the same ConfigMap
SDS_CERTIFICATE = "authz_client_certificate"
SDS_CA = "authz_ca"
_TLS_SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


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


def _tls_files(folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
    certificate = {
        "certificate_chain": {"filename": f"{folder}/tls.crt"},
        "private_key": {"filename": f"{folder}/tls.key"},
    }
    return certificate, {"trusted_ca": {"filename": f"{folder}/ca.crt"}}


def _sds(name: str) -> dict[str, Any]:
    # watched_directory: kubelet swaps the `..data` symlink, so the files' own inotify
    # events never come; a move in the folder triggers the reload.
    return {
        "name": name,
        "sds_config": {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": f"{GATEWAY_SDS_FOLDER}/{_sds_file(name)}",
                "watched_directory": {"path": GATEWAY_SDS_FOLDER},
            },
        },
    }


def _sds_file(name: str) -> str:
    return f"sds-{name.replace('_', '-')}.yaml"


def sds_secrets() -> dict[str, dict[str, Any]]:
    """The gateway's SDS files (file name -> content): its client certificate and the CA
    it trusts for authz, read from the cert-manager Secret mounted at GATEWAY_TLS_FOLDER."""
    certificate, validation = _tls_files(GATEWAY_TLS_FOLDER)
    watched = {"watched_directory": {"path": GATEWAY_TLS_FOLDER}}
    secrets = {
        SDS_CERTIFICATE: {"tls_certificate": {**certificate, **watched}},
        SDS_CA: {"validation_context": {**validation, **watched}},
    }
    return {
        _sds_file(name): {"resources": [{"@type": _TLS_SECRET, "name": name, **body}]}
        for name, body in secrets.items()
    }


def upstream_tls(server_name: str, folder: str | None, alpn: str = "h2") -> dict[str, Any]:
    """The authz cluster's transport socket: TLS 1.2+, SNI `server_name`, authz's certificate
    checked against the CA and its SAN, Envoy's client certificate for authz's mTLS.
    `folder` holds the files (read at start); None takes them from SDS files instead."""
    san = [{"san_type": "DNS", "matcher": {"exact": server_name}}]
    common: dict[str, Any] = {
        # gRPC needs h2 negotiated; the HTTP door's HTTP/1.1 cluster says http/1.1.
        "alpn_protocols": [alpn],
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
    }
    if folder is not None:
        certificate, validation = _tls_files(folder)
        common["tls_certificates"] = [certificate]
        common["validation_context"] = {**validation, "match_typed_subject_alt_names": san}
    else:
        common["tls_certificate_sds_secret_configs"] = [_sds(SDS_CERTIFICATE)]
        common["combined_validation_context"] = {
            "default_validation_context": {"match_typed_subject_alt_names": san},
            "validation_context_sds_secret_config": _sds(SDS_CA),
        }
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
            "UpstreamTlsContext",
            "sni": server_name,
            "common_tls_context": common,
        },
    }


def with_upstream_tls(
    source: dict[str, Any], server_name: str, folder: str | None
) -> dict[str, Any]:
    """`source` with the `authz` cluster talking TLS (`upstream_tls`); nothing else changes."""
    config = copy.deepcopy(source)
    clusters = config.get("static_resources", {}).get("clusters", [])
    found = [c for c in clusters if c.get("name") == AUTHZ_CLUSTER]
    if len(found) != 1:
        raise SyncError(f"expected one cluster named {AUTHZ_CLUSTER!r}")
    if "transport_socket" in found[0]:
        raise SyncError(f"cluster {AUTHZ_CLUSTER!r} already has a transport socket")
    if folder is None:
        # SDS subscriptions need a node identity, even file-based ones.
        config.setdefault("node", {"id": "envoy-gateway", "cluster": "envoy-gateway"})
    cluster = found[0]
    http_door = any("http_health_check" in check for check in cluster.get("health_checks", []))
    cluster["transport_socket"] = upstream_tls(
        server_name, folder, "http/1.1" if http_door else "h2"
    )
    if http_door:
        # The HTTP door's cluster checks /readyz on the probe port, which stays plaintext.
        cluster["transport_socket_matches"] = [copy.deepcopy(_PLAINTEXT_PROBE)]
        for check in cluster["health_checks"]:
            check["transport_socket_match_criteria"] = dict(_PLAINTEXT_PROBE["match"])
    return config


_PLAINTEXT_PROBE: dict[str, Any] = {
    "name": "plaintext_probe",
    "match": {"authz_probe": "plaintext"},
    "transport_socket": {
        "name": "envoy.transport_sockets.raw_buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3."
            "RawBuffer"
        },
    },
}


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
    generated = (
        "# Generated by deploy/sync.py from envoy.yaml. DO NOT EDIT: edit envoy.yaml, rerun.\n"
    )
    gateway = gateway_config(envoy)
    sds = {
        MTLS_OVERLAY / name: _render(
            "# Generated by deploy/sync.py (SDS for the gateway's authz cluster). DO NOT EDIT.\n",
            document,
        )
        for name, document in sds_secrets().items()
    }
    return {
        ENVOY_COPY: _render(generated, gateway),
        ENVOY_TLS_COPY: _render(
            generated + "# envoy.yaml with mTLS to authz (SPEC section 11): the authz cluster's "
            "transport_socket\n# is the only difference. Certificate files in "
            f"{SINGLE_HOST_TLS_FOLDER} are read at start.\n",
            with_upstream_tls(envoy, SINGLE_HOST_AUTHZ_NAME, SINGLE_HOST_TLS_FOLDER),
        ),
        ENVOY_HTTP_TLS_COPY: _render(
            generated.replace("envoy.yaml", "envoy-http.yaml") + "# envoy-http.yaml with mTLS "
            "to authz's HTTP door: the authz cluster's transport sockets\n# are the only "
            f"difference (/readyz stays plaintext). Files in {SINGLE_HOST_TLS_FOLDER}, read at "
            "start.\n",
            with_upstream_tls(
                yaml.safe_load(ENVOY_HTTP_SOURCE.read_text(encoding="utf-8")),
                SINGLE_HOST_AUTHZ_NAME,
                SINGLE_HOST_TLS_FOLDER,
            ),
        ),
        MTLS_ENVOY_COPY: _render(
            generated + "# The gateway config with mTLS to authz: certificates by SDS from the "
            "cert-manager Secret.\n",
            with_upstream_tls(gateway, GATEWAY_AUTHZ_NAME, None),
        ),
        **sds,
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
