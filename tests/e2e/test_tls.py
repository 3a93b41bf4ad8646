"""SPEC section 11 with real parts: the real Envoy on the shipped mTLS configs
(envoy-tls.yaml, envoy-http-tls.yaml) in front of authz serving both Check doors over TLS,
certificates from a throwaway CA made here and mounted as kubelet mounts a Secret.

Refusals at the handshake (no client certificate, one from another CA, plaintext), the
rotation of authz's certificate by a symlink swap while Checks flow (new handshakes show
the new serial, established connections go on, no Check fails), and exit 2 for files that
cannot work.
"""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.credentials import SECRET, hs256
from tests.harness import (
    ROOT,
    Authz,
    Envoy,
    assert_envoy_config_valid,
    free_port,
    run_authz,
    run_envoy,
    wait_until,
)
from tests.tls import (
    ENVOY_HTTP_TLS_YAML,
    ENVOY_TLS_YAML,
    SERVER_NAME,
    Pki,
    client_context,
    envoy_tls_config,
    handshake_serial,
    make_pki,
)

pytestmark = pytest.mark.e2e

REST_PATH = "/LiveApp/rest/v2/broadcasts/list/0/10"
DOORS = ("grpc", "http")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@dataclass
class Chain:
    authz: Authz
    envoy: Envoy
    door_port: int  # the door Envoy talks to
    alpn: str


@pytest.fixture(params=DOORS)
def chain(request: pytest.FixtureRequest, pki: Pki, tmp_path: Path) -> Iterator[Chain]:
    """authz with both doors over mTLS, and Envoy on the shipped config for one of them."""
    from tests.harness import echo_upstream

    door: str = request.param
    http_door = free_port()
    env = {**pki.authz_env, "AUTHZ_HTTP_AUTHZ_ADDRESS": f"127.0.0.1:{http_door}"}
    source = ENVOY_TLS_YAML if door == "grpc" else ENVOY_HTTP_TLS_YAML
    config = envoy_tls_config(source, pki.envoy_folder, tmp_path / "envoy-tls.yaml")
    with echo_upstream() as upstream, run_authz(env) as authz:
        port = authz.grpc_port if door == "grpc" else http_door
        health = {"authz": authz.http_port} if door == "http" else None
        with run_envoy(
            {"authz": port, "ant_media": upstream}, source=config, health_check_ports=health
        ) as envoy:
            yield Chain(authz, envoy, port, "h2" if door == "grpc" else "http/1.1")


def _get(port: int, token: str | None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", REST_PATH, headers={"authorization": token} if token else {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _stat(envoy: Envoy, name: str) -> int:
    for line in envoy.stats().splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    raise AssertionError(f"no Envoy stat {name}")


def test_shipped_tls_configs_are_valid_envoy_configs(pki: Pki, tmp_path: Path) -> None:
    for source in (ENVOY_TLS_YAML, ENVOY_HTTP_TLS_YAML):
        assert_envoy_config_valid(
            envoy_tls_config(source, pki.envoy_folder, tmp_path / source.name), timeout=120
        )


def test_checks_pass_through_envoy_over_mtls(chain: Chain) -> None:
    assert _get(chain.envoy.port, hs256(SECRET)) == 200
    assert _get(chain.envoy.port, None) == 401
    assert _get(chain.envoy.port, hs256(SECRET, ttl=-3600)) == 401
    assert _stat(chain.envoy, "cluster.authz.ssl.handshake") >= 1
    assert _stat(chain.envoy, "cluster.authz.ssl.connection_error") == 0


def _grpc_health(port: int, credentials: grpc.ChannelCredentials | None) -> None:
    target = f"127.0.0.1:{port}"
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    with (
        grpc.secure_channel(target, credentials, options)
        if credentials is not None
        else grpc.insecure_channel(target)
    ) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


def _grpc_credentials(pki: Pki, client: Path | None) -> grpc.ChannelCredentials:
    ca = (pki.envoy_folder / "ca.crt").read_bytes()
    if client is None:
        return grpc.ssl_channel_credentials(ca)
    return grpc.ssl_channel_credentials(
        ca, (client / "tls.key").read_bytes(), (client / "tls.crt").read_bytes()
    )


def _http_over_tls(port: int, context: ssl.SSLContext | None) -> bytes:
    """What one request on a fresh connection gets back; b'' or an SSLError: refused."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        sock = raw if context is None else context.wrap_socket(raw, server_hostname=SERVER_NAME)
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: authz\r\n\r\n")
            return sock.recv(100)


def test_clients_without_a_good_certificate_are_refused(pki: Pki) -> None:
    http_door = free_port()
    env = {**pki.authz_env, "AUTHZ_HTTP_AUTHZ_ADDRESS": f"127.0.0.1:{http_door}"}
    with run_authz(env) as authz:
        # The control: Envoy's certificate passes on both doors.
        _grpc_health(authz.grpc_port, _grpc_credentials(pki, pki.envoy_folder))
        good = client_context(pki.envoy_folder, "http/1.1", pki.envoy_folder)
        assert _http_over_tls(http_door, good).startswith(b"HTTP/1.1 401")
        for client in (None, pki.stranger_folder):
            with pytest.raises(grpc.RpcError) as refused:
                _grpc_health(authz.grpc_port, _grpc_credentials(pki, client))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            context = client_context(client, "http/1.1", pki.envoy_folder)
            try:
                answer = _http_over_tls(http_door, context)
            except (ssl.SSLError, ConnectionResetError):
                answer = b""
            assert answer == b""
        with pytest.raises(grpc.RpcError) as plaintext:
            _grpc_health(authz.grpc_port, None)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
        try:
            answer = _http_over_tls(http_door, None)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 401")
        # The probes and /metrics stay plaintext.
        assert "authz_tls_reloads_total" in authz.metrics()
        logs = authz.logs()
    assert "PRIVATE KEY" not in logs


@dataclass
class Load:
    """Checks sent through Envoy from two threads until stopped."""

    port: int
    token: str
    sent: int = 0
    failed: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                conn.request("GET", REST_PATH, headers={"authorization": self.token})
                response = conn.getresponse()
                response.read()
                outcome = None if response.status == 200 else f"status {response.status}"
            except (OSError, http.client.HTTPException) as error:
                outcome = repr(error)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            with self._lock:
                self.sent += 1
                if outcome is not None:
                    self.failed.append(outcome)
        conn.close()

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run) for _ in range(2)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_rotation_under_load_keeps_every_check(chain: Chain, pki: Pki) -> None:
    context = client_context(pki.envoy_folder, chain.alpn, pki.envoy_folder)
    before = handshake_serial(chain.door_port, context)
    with Load(chain.envoy.port, hs256(SECRET)) as load:
        wait_until(lambda: load.sent >= 200, timeout=120, what="Checks flowing")
        connections = _stat(chain.envoy, "cluster.authz.upstream_cx_total")
        closed = _stat(chain.envoy, "cluster.authz.upstream_cx_destroy_remote")
        swapped_at = time.monotonic()
        issued = pki.rotate()
        wait_until(
            lambda: handshake_serial(chain.door_port, context) == issued.serial,
            timeout=60,
            what="a new handshake showing the new certificate",
        )
        seen_after = time.monotonic() - swapped_at
        sent_at_swap = load.sent
        # Checks keep flowing on the connections made before the swap.
        time.sleep(2)
        wait_until(lambda: load.sent >= sent_at_swap + 200, timeout=120, what="Checks after")
    assert issued.serial != before
    # authz closed no connection of Envoy's.
    assert _stat(chain.envoy, "cluster.authz.upstream_cx_destroy_remote") == closed
    print(f"\nrotation ({chain.alpn}): {load.sent} Checks sent, {len(load.failed)} failed, "
          f"new serial seen {seen_after:.2f} s after the swap")
    assert load.failed == []
    if chain.alpn == "h2":
        # Envoy's one HTTP/2 connection carried every Check across the rotation.
        assert _stat(chain.envoy, "cluster.authz.upstream_cx_total") == connections
    assert 'authz_tls_reloads_total{result="failure"} 0.0' in chain.authz.metrics()


def test_bad_files_later_keep_the_last_good_certificate(pki: Pki) -> None:
    with run_authz(pki.authz_env) as authz:
        context = client_context(pki.envoy_folder, "h2", pki.envoy_folder)
        serial = handshake_serial(authz.grpc_port, context)
        other = pki.ca.issue(SERVER_NAME, dns_names=(SERVER_NAME,))
        # A certificate whose key is someone else's: refused, the old pair stays.
        stale_key = Path(pki.authz.path("tls.key")).read_bytes()
        pki.authz.swap({"tls.crt": other.cert_pem, "tls.key": stale_key,
                        "ca.crt": pki.ca.cert_pem})
        wait_until(lambda: 'authz_tls_reloads_total{result="failure"} 1.0' in authz.metrics(),
                   timeout=60, what="the bad pair counted")
        assert handshake_serial(authz.grpc_port, context) == serial
        assert authz.process.poll() is None


def _serve_exit(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    full.update({"AUTHZ_HS256_SECRET": SECRET, "AUTHZ_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
                 "AUTHZ_HTTP_ADDRESS": f"127.0.0.1:{free_port()}", **env})
    return subprocess.run([sys.executable, "-m", "authz.cli", "serve"], env=full, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_files_that_cannot_work_stop_the_start_with_exit_2(pki: Pki, tmp_path: Path) -> None:
    cert, key, ca = (pki.authz.path(n) for n in ("tls.crt", "tls.key", "ca.crt"))
    stranger_key = str(pki.stranger_folder / "tls.key")
    unreadable = tmp_path / "unreadable.pem"
    unreadable.write_bytes(Path(key).read_bytes())
    unreadable.chmod(0)
    cases = [
        # A key that is not the certificate's.
        ("AUTHZ_TLS_KEY_FILE", {"AUTHZ_TLS_CERT_FILE": cert, "AUTHZ_TLS_KEY_FILE": stranger_key}),
        ("AUTHZ_TLS_CERT_FILE", {"AUTHZ_TLS_CERT_FILE": str(tmp_path / "missing.pem"),
                                 "AUTHZ_TLS_KEY_FILE": key}),
        # A client CA without a server certificate.
        ("AUTHZ_TLS_CLIENT_CA_FILE", {"AUTHZ_TLS_CLIENT_CA_FILE": ca}),
    ]
    if os.geteuid() != 0:  # root reads any file
        cases.append(("AUTHZ_TLS_KEY_FILE", {"AUTHZ_TLS_CERT_FILE": cert,
                                             "AUTHZ_TLS_KEY_FILE": str(unreadable)}))
    for setting, env in cases:
        done = _serve_exit(env)
        assert done.returncode == 2, (setting, done.stderr)
        assert setting in done.stderr
        assert "PRIVATE KEY" not in done.stderr + done.stdout
        assert Path(key).read_text().splitlines()[1] not in done.stderr


def test_workers_serve_tls(pki: Pki) -> None:
    with run_authz(pki.authz_env, args=("--workers", "2")) as authz:
        context = client_context(pki.envoy_folder, "h2", pki.envoy_folder)
        serials = {handshake_serial(authz.grpc_port, context) for _ in range(6)}
        assert len(serials) == 1
        _grpc_health(authz.grpc_port, _grpc_credentials(pki, pki.envoy_folder))

