"""Planned restarts through a real Envoy lose no Check, in both doors (docs/drain.md).

- A worker of `authz serve --workers 2` gets SIGTERM, once each, under load: its successor
  binds once it has its keys, then the leaving worker leaves the shared ports' listener
  groups and waits for Envoy's connections to move (gRPC: the connections' age; the HTTP
  door: `Connection: close`) before it closes.
- A rolling update: two single-process instances behind one Envoy cluster; each in turn
  gets SIGTERM (readiness off, the drain delay while Envoy's health check takes it out,
  then close) and is replaced by a new process on the same ports, which Envoy's health
  check brings back before the next one goes.

Load: threads with keep-alive connections through Envoy, each request a valid token, so
every answer but 200 is a lost Check.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from tests.credentials import SECRET, hs256
from tests.harness import (
    ENVOY_HTTP_YAML,
    ENVOY_YAML,
    Authz,
    Envoy,
    echo_upstream,
    free_port,
    request,
    run_authz,
    run_envoy,
    wait_until,
)
from tests.reliability import REST

pytestmark = pytest.mark.e2e

LOAD_THREADS = 4
PAUSE_SECONDS = 0.005  # between one thread's requests: paced, not flat out
DRAIN_DELAY_SECONDS = 5  # the shipped default: above Envoy's 1 s x 2 health check


@dataclass
class Load:
    """Requests through Envoy on `port` from LOAD_THREADS threads until stopped."""

    port: int
    statuses: list[int] = field(default_factory=list)
    failures: list[tuple[float, int | str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        headers = {"Authorization": hs256(SECRET)}
        while not self._stop.is_set():
            self._one_connection(headers)

    def _one_connection(self, headers: dict[str, str]) -> None:
        """Requests on one keep-alive connection until it closes or the load stops."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        with contextlib.closing(conn):
            while not self._stop.is_set():
                try:
                    conn.request("GET", REST, headers=headers)
                    answer = conn.getresponse()
                    answer.read()
                except (OSError, http.client.HTTPException) as error:
                    # The client's own connection to Envoy failed: counted as lost too.
                    self._record(type(error).__name__)
                    return
                self._record(answer.status)
                time.sleep(PAUSE_SECONDS)
                if answer.will_close:
                    return

    def _record(self, status: int | str) -> None:
        self.statuses.append(status if isinstance(status, int) else 0)
        if status != 200:
            self.failures.append((time.monotonic(), status))

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run) for _ in range(LOAD_THREADS)]
        for thread in self._threads:
            thread.start()
        wait_until(lambda: len(self.statuses) >= 50, what="load running")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def answered(self) -> int:
        return len(self.statuses)

    def wait_answered(self, more: int, what: str) -> None:
        """Wait until `more` further requests were answered."""
        target = self.answered() + more
        wait_until(lambda: self.answered() >= target, what=what)


def _workers(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def _replaced(supervisor: int, victim: int) -> bool:
    workers = _workers(supervisor)
    return victim not in workers and len(workers) == 2


def _host_healthy(envoy: Envoy, cluster: str, port: int) -> bool:
    clusters = request(envoy.admin_port, "/clusters").body.decode()
    return f"{cluster}::127.0.0.1:{port}::health_flags::healthy" in clusters.splitlines()


def _door_env(door: str) -> dict[str, str]:
    return {"AUTHZ_HTTP_AUTHZ_ADDRESS": f"127.0.0.1:{free_port()}"} if door == "http" else {}


def _check_port(authz: Authz, door: str) -> int:
    return authz.http_authz_port if door == "http" else authz.grpc_port


@contextlib.contextmanager
def _envoy(door: str, instances: list[Authz], upstream: int) -> Iterator[Envoy]:
    ports = [_check_port(authz, door) for authz in instances]
    if door == "http":
        # The HTTP door's cluster checks /readyz on each instance's probe port.
        health = {"authz": [authz.http_port for authz in instances]}
        with run_envoy({"authz": ports, "ant_media": upstream}, ENVOY_HTTP_YAML,
                       wait_cluster_healthy=None, health_check_ports=health) as envoy:
            yield envoy
    else:
        with run_envoy({"authz": ports, "ant_media": upstream}, ENVOY_YAML,
                       wait_cluster_healthy=None) as envoy:
            yield envoy


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_worker_restarts_lose_nothing(door: str) -> None:
    with echo_upstream() as upstream, run_authz(
        _door_env(door), args=("--workers", "2")
    ) as authz, _envoy(door, [authz], upstream) as envoy:
        supervisor = authz.process.pid
        wait_until(lambda: len(_workers(supervisor)) == 2, what="two workers")
        wait_until(lambda: _host_healthy(envoy, "authz", _check_port(authz, door)),
                   what="authz healthy in Envoy")
        with Load(envoy.port) as load:
            for index in (0, 1):
                victim = _workers(supervisor)[index]
                os.kill(victim, signal.SIGTERM)
                wait_until(partial(_replaced, supervisor, victim),
                           what="the worker handed over and left")
                load.wait_answered(100, what="load answered after the handover")
        assert load.failures == [], load.failures[:10]
        handovers = [line for line in authz.logs().splitlines() if '"msg": "handing over"' in line]
        assert len(handovers) == 2
        if door == "grpc":
            # Envoy's one HTTP/2 connection moved to a sibling before each worker closed.
            assert all('"connections_still_open": 0' in line for line in handovers), handovers


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_a_rolling_update_loses_nothing(door: str) -> None:
    env = {"AUTHZ_DRAIN_DELAY_SECONDS": str(DRAIN_DELAY_SECONDS)}
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(echo_upstream())
        instances = [stack.enter_context(run_authz({**env, **_door_env(door)}))
                     for _ in range(2)]
        envoy = stack.enter_context(_envoy(door, instances, upstream))
        ports = [_check_port(authz, door) for authz in instances]
        for port in ports:
            wait_until(partial(_host_healthy, envoy, "authz", port),
                       what=f"instance on {port} healthy in Envoy")
        with Load(envoy.port) as load:
            for old, port in zip(instances, ports, strict=True):
                assert old.stop() == 0
                # The replacement: a new process on the same ports, like a new pod behind
                # the same Service address.
                new = stack.enter_context(run_authz(old.env))
                wait_until(partial(_host_healthy, envoy, "authz", port),
                           what="the replacement healthy in Envoy")
                load.wait_answered(100, what="load answered after the replacement")
                assert "draining" in old.logs() and new.process.poll() is None
        assert load.failures == [], load.failures[:10]
