"""`authz serve --workers 2`: two real worker processes on one port, merged metrics, drain."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.multiprocess import MultiProcessCollector

from authz._pb.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from authz.core.mint import mint_hmac
from authz.fronts.grpc import CHECK_METHOD_PATH
from authz.service.workers import parse_workers
from tests.credentials import SECRET
from tests.harness import Authz, request, run_authz, wait_until
from tests.jwks_server import JWKSServer, jwk, jwks

CONNECTIONS = 24
CHECKS_PER_CONNECTION = 5


def _check_request(authorization: str) -> bytes:
    message = CheckRequest()
    http = message.attributes.request.http
    http.method, http.path = "GET", "/LiveApp/rest/v2/version"
    http.headers["authorization"] = authorization
    message.attributes.source.address.socket_address.address = "127.0.0.1"
    return message.SerializeToString()


def _worker_pids(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children]


def _checks_in(files: list[str]) -> float:
    """authz_checks_total summed over the given metric files."""
    total = 0.0
    for metric in MultiProcessCollector.merge(files, accumulate=True):  # type: ignore[no-untyped-call]
        if metric.name == "authz_checks":
            total += sum(s.value for s in metric.samples if s.name == "authz_checks_total")
    return total


def _scraped_checks(authz: Authz, decision: str) -> float:
    text = authz.metrics()
    return sum(
        float(value)
        for value in re.findall(
            rf'^authz_checks_total\{{decision="{decision}",reason="[a-z_]+"\}} (\S+)$',
            text,
            re.MULTILINE,
        )
    )


def _gauge_of(metrics_dir: Path, pid: int, name: str) -> float | None:
    """The value gauge `name` has in worker `pid`'s own metric file."""
    files = [str(f) for f in metrics_dir.glob(f"gauge_*_{pid}.db")]
    for metric in MultiProcessCollector.merge(files, accumulate=True):  # type: ignore[no-untyped-call]
        for sample in metric.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def _scraped(authz: Authz, name: str) -> float:
    # The single AUTHZ_JWKS_URL's series: issuer="" (no AUTHZ_ISSUER).
    match = re.search(rf'^{name}{{issuer=""}} (\S+)$', authz.metrics(), re.MULTILINE)
    assert match is not None, f"{name} not in the scrape"
    return float(match[1])


def _both_listening(authz: Authz, metrics_dir: Path) -> bool:
    pids = _worker_pids(authz.process.pid)
    # Each worker writes its build-info gauge right before it binds its ports.
    started = all(list(metrics_dir.glob(f"*_{pid}.db")) for pid in pids)
    return len(pids) == 2 and started and request(authz.http_port, "/readyz").status == 200


def test_parse_workers() -> None:
    assert parse_workers("3") == 3
    assert parse_workers("auto") >= 1
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError):
            parse_workers(bad)


def test_two_workers_share_the_port_merge_metrics_and_drain(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    good = mint_hmac({"sub": "worker-test", "exp": time.time() + 600}, SECRET.encode())
    with run_authz(
        {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, args=("--workers", "2")
    ) as authz:
        wait_until(lambda: _both_listening(authz, metrics_dir), what="both workers listening")
        time.sleep(0.5)  # the gRPC port binds just after the metrics file appears
        workers = _worker_pids(authz.process.pid)
        target = f"127.0.0.1:{authz.grpc_port}"
        allowed = denied = 0
        for _ in range(CONNECTIONS):
            # A channel of its own per round: a new TCP connection the kernel may hand to
            # either worker.
            options = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(target, options=options) as channel:
                call = channel.unary_unary(CHECK_METHOD_PATH)
                for index in range(CHECKS_PER_CONNECTION):
                    token = good if index else "not-a-token"
                    answer = CheckResponse.FromString(call(_check_request(token), timeout=5))
                    if answer.status.code == 0:
                        allowed += 1
                    else:
                        denied += 1
        assert (allowed, denied) == (CONNECTIONS * 4, CONNECTIONS)

        per_worker = [
            _checks_in([str(f) for f in metrics_dir.glob(f"counter_{pid}.db")])
            for pid in workers
        ]
        assert all(count > 0 for count in per_worker), per_worker
        assert sum(per_worker) == allowed + denied
        # Whichever worker answers the scrape, it reports both workers' Checks.
        for _ in range(4):
            assert _scraped_checks(authz, "allow") == allowed
            assert _scraped_checks(authz, "deny") == denied

        assert authz.stop(signal.SIGTERM) == 0
        # The parent waited for its workers, so none is left behind.
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_dead_worker_is_restarted() -> None:
    with run_authz(args=("--workers", "2")) as authz:
        wait_until(lambda: len(_worker_pids(authz.process.pid)) == 2, what="two workers")
        victim = _worker_pids(authz.process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(pids := _worker_pids(authz.process.pid)) == 2 and victim not in pids,
            what="a replacement worker",
        )
        time.sleep(1.0)  # let the replacement start serving before the drain
        assert authz.stop(signal.SIGTERM) == 0
        assert "worker died: restarted" in authz.logs()


FAILURES = "authz_jwks_consecutive_failures"
KEYS = "authz_jwks_keys"


def test_a_dead_workers_gauges_leave_the_scrape(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    key_a, key_b = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    with JWKSServer(jwks(jwk(key_a, "a"), jwk(key_b, "b"))) as server, run_authz(
        {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "AUTHZ_JWKS_URL": server.url,
         "AUTHZ_JWKS_REFRESH_SECONDS": "1"},
        args=("--workers", "2"),
    ) as authz:
        wait_until(lambda: _both_listening(authz, metrics_dir), timeout=30,
                   what="both workers listening")
        workers = _worker_pids(authz.process.pid)
        wait_until(lambda: all(_gauge_of(metrics_dir, pid, KEYS) == 2 for pid in workers),
                   what="both workers holding the two keys")
        # The JWKS fails: both workers count failures; then one of them dies.
        server.status = 503
        wait_until(
            lambda: all((_gauge_of(metrics_dir, pid, FAILURES) or 0) >= 1 for pid in workers),
            what="both workers failing",
        )
        victim, survivor = workers
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(pids := _worker_pids(authz.process.pid)) == 2 and victim not in pids,
            what="a replacement worker",
        )
        (replacement,) = set(_worker_pids(authz.process.pid)) - {survivor}
        # The JWKS recovers with one key; the live workers load it.
        server.body = jwks(jwk(key_a, "a"))
        server.status = 200
        wait_until(
            lambda: all(
                (_gauge_of(metrics_dir, pid, FAILURES), _gauge_of(metrics_dir, pid, KEYS)) == (0, 1)
                for pid in (survivor, replacement)
            ),
            timeout=30,
            what="the live workers to recover",
        )
        # Whichever worker answers, the dead one's failures and stale key count are gone.
        for _ in range(4):
            assert _scraped(authz, FAILURES) == 0
            assert _scraped(authz, KEYS) == 1
        assert not list(metrics_dir.glob(f"gauge_*_{victim}.db"))
        # Its counters stay: a counter must never go down.
        assert list(metrics_dir.glob(f"counter_{victim}.db"))
        assert authz.stop(signal.SIGTERM) == 0


def test_workers_do_not_outlive_a_killed_parent() -> None:
    with run_authz(args=("--workers", "2")) as authz:
        wait_until(lambda: len(_worker_pids(authz.process.pid)) == 2, what="two workers")
        workers = _worker_pids(authz.process.pid)
        authz.stop(signal.SIGKILL)
        wait_until(
            lambda: not any(_alive(pid) for pid in workers), what="the workers to exit"
        )


def _alive(pid: int) -> bool:
    # An exited worker is reaped by init once orphaned; a zombie counts as gone.
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status
