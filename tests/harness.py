"""Real parts for end-to-end tests: authz and Envoy processes, an echoing upstream.

Everything listens on 127.0.0.1 with free ports; every process is stopped by its
context manager. Envoy runs the project's own envoy.yaml with only addresses changed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from authz._support import loopback
from authz._support.envoy_config import (
    PROJECT_ENVOY_YAML,
    envoy_binary,
    envoy_command,
    render_envoy_config,
)
from authz._support.loopback import cluster_healthy, echo_server, stop_process
from authz._support.loopback import free_port as free_port  # re-exported for the tests
from tests.credentials import SECRET

ROOT = Path(__file__).resolve().parent.parent
ENVOY_YAML = PROJECT_ENVOY_YAML
# The http_service variant: the same routes and policies over Envoy's HTTP ext_authz mode.
ENVOY_HTTP_YAML = ROOT / "envoy-http.yaml"
# authz's metrics in SPEC section 6 (histogram series by their exposed names).
AUTHZ_METRICS = {
    "authz_checks_total",
    "authz_check_duration_seconds_bucket",
    "authz_jwks_refreshes_total",
    "authz_jwks_keys",
    "authz_jwks_last_success_timestamp_seconds",
    "authz_token_cache_lookups_total",
    "authz_build_info",
}


def wait_until(
    predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition"
) -> None:
    """loopback.wait_until with a bound for a loaded 2-core CI machine: it returns as soon
    as `predicate` holds, so only a condition that never comes waits this long."""
    loopback.wait_until(predicate, timeout, what)


def internal_errors(transport: str) -> tuple[float, float]:
    """This process's authz_checks_total for internal_error and its
    authz_checks_by_transport_total for `transport`, as counted so far."""
    from prometheus_client import REGISTRY

    by_reason = REGISTRY.get_sample_value(
        "authz_checks_total", {"decision": "deny", "reason": "internal_error"}
    )
    by_transport = REGISTRY.get_sample_value(
        "authz_checks_by_transport_total", {"transport": transport}
    )
    return by_reason or 0.0, by_transport or 0.0


# envoy.yaml and envoy-http.yaml route /StrictApp/rest/... to this policy of authz's settings.
POLICIES_YAML = """
policies:
  admin:
    required_claims:
      - {claim: role, one_of: [admin]}
    forward_claims:
      role: x-jwt-role
"""


def assert_envoy_config_valid(path: Path, timeout: float = 60) -> None:
    """The real Envoy accepts the config at `path` (`envoy --mode validate`)."""
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    path: str,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    timeout: float = 30.0,
) -> Response:
    """One HTTP/1.1 request to 127.0.0.1:`port`; header names in the answer are lowercase."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=dict(headers or {}))
        answer = conn.getresponse()
        body = answer.read()
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, body)
    finally:
        conn.close()


class RawResponse(NamedTuple):
    """One HTTP/1.x answer read off a raw socket; header names as the server sent them."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    target: str | bytes,
    method: str = "GET",
    headers: tuple[tuple[str, str], ...] = (),
    host: str | None = "127.0.0.1",
) -> bytes:
    """The bytes of an HTTP/1.1 request with `target` exactly as given (no quoting or
    normalising), a Host header unless `host` is None, then `headers` as spelled."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    lines = [f"{method} ".encode() + target + b" HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}".encode("latin-1"))
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def send_raw(port: int, data: bytes, timeout: float = 10.0) -> RawResponse:
    """Send `data` byte for byte to 127.0.0.1:`port` and read one answer (length, chunked or
    to close). A server that closes without answering raises http.client.RemoteDisconnected."""
    method = data.split(b" ", 1)[0].decode("latin-1")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = http.client.HTTPResponse(sock, method=method)
        try:
            answer.begin()
            return RawResponse(answer.status, answer.getheaders(), answer.read())
        finally:
            answer.close()


def _echo_body(method: str, path: str, headers: list[tuple[str, str]]) -> dict[str, Any]:
    seen: dict[str, list[str]] = {}
    for name, value in headers:
        seen.setdefault(name, []).append(value)
    return {"method": method, "path": path, "headers": seen}


def echo_upstream() -> contextlib.AbstractContextManager[int]:
    """A stand-in media server on 127.0.0.1 that answers 200 with the headers it got."""
    return echo_server(_echo_body)


@dataclass
class Authz:
    """A running `authz serve` process."""

    process: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        return request(self.http_port, "/metrics").body.decode()

    @property
    def http_authz_port(self) -> int:
        """The HTTP ext_authz door's port (AUTHZ_HTTP_AUTHZ_ADDRESS in `env`)."""
        return int(self.env["AUTHZ_HTTP_AUTHZ_ADDRESS"].rpartition(":")[2])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


@contextlib.contextmanager
def run_authz(
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    wait_ready: bool = True,
) -> Iterator[Authz]:
    """Start `authz serve` on free loopback ports with `env` (HS256 secret by default)."""
    grpc_port, http_port = free_port(), free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    full_env.update(
        {
            "AUTHZ_GRPC_ADDRESS": f"127.0.0.1:{grpc_port}",
            "AUTHZ_HTTP_ADDRESS": f"127.0.0.1:{http_port}",
            "AUTHZ_HS256_SECRET": SECRET,
            # SIGTERM closes the ports at once; the drain tests set their own delay.
            "AUTHZ_DRAIN_DELAY_SECONDS": "0",
        }
    )
    full_env.update(env or {})
    full_env = {k: v for k, v in full_env.items() if v is not None}
    # `env` may name the ports (an instance replaced on the same ports).
    grpc_port = int(full_env["AUTHZ_GRPC_ADDRESS"].rpartition(":")[2])
    http_port = int(full_env["AUTHZ_HTTP_ADDRESS"].rpartition(":")[2])
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "authz.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "authz.cli", "serve", *args],
                env=full_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
            authz = Authz(process, grpc_port, http_port, log_path, full_env)
            try:
                if wait_ready:
                    wait_until(
                        lambda: process.poll() is None
                        and request(http_port, "/readyz").status == 200,
                        what="authz ready",
                    )
                yield authz
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()


@dataclass
class Envoy:
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stats(self) -> str:
        return request(self.admin_port, "/stats").body.decode()


@contextlib.contextmanager
def run_envoy(
    clusters: Mapping[str, int | Sequence[int]],
    source: Path = ENVOY_YAML,
    wait_cluster_healthy: str | None = "authz",
    health_check_ports: Mapping[str, int | Sequence[int]] | None = None,
) -> Iterator[Envoy]:
    """Run the real Envoy on `source` with the named clusters pointed at local ports.

    `health_check_ports` moves a cluster's health checks to other local ports, one per
    endpoint (the HTTP door's cluster checks authz's /readyz on the probe port, not on the
    door).
    """
    port, admin_port = free_port(), free_port()
    config = render_envoy_config(source, port, admin_port, clusters)
    # Further listeners (the Kubernetes gateway's stats listener) move to loopback too.
    for listener in config["static_resources"]["listeners"][1:]:
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=free_port())
    for cluster in config["static_resources"]["clusters"]:
        health_ports = (health_check_ports or {}).get(cluster["name"])
        if health_ports is None:
            continue
        if isinstance(health_ports, int):
            health_ports = [health_ports]
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint, health_port in zip(group["lb_endpoints"], health_ports, strict=True):
                endpoint["endpoint"]["health_check_config"] = {"port_value": health_port}
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "envoy.yaml"
        config_path.write_text(yaml.safe_dump(config))
        log_path = Path(tmp) / "envoy.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                envoy_command(config_path),
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            envoy = Envoy(process, port, admin_port, log_path)
            try:
                wait_until(
                    lambda: process.poll() is None
                    and request(admin_port, "/ready").status == 200,
                    what="envoy ready",
                )
                if wait_cluster_healthy is not None:
                    wait_until(
                        lambda: cluster_healthy(
                            request(admin_port, "/clusters").body.decode(), wait_cluster_healthy
                        ),
                        what=f"envoy cluster {wait_cluster_healthy} healthy",
                    )
                yield envoy
            finally:
                stop_process(process)

