"""Lifecycle of one authz process: start the fronts and key sources, drain on SIGTERM.

Readiness (`/readyz` and gRPC health) is true once the key material is loaded and the
gRPC server accepts Checks; SIGTERM turns it false, keeps answering for the drain delay
(while Envoy and Kubernetes stop sending), closes the ports, lets in-flight Checks finish
and exits 0 (docs/drain.md). A second SIGTERM exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from functools import partial

import grpc
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY, CollectorRegistry

from authz.fronts.grpc import add_threaded_authorization_service, add_threaded_health_service
from authz.fronts.http import HttpFront
from authz.fronts.probes import HttpEndpoint
from authz.fronts.tls import TlsCredentials, TlsWatcher
from authz.fronts.webhook import WebhookFront
from authz.keys.issuers import key_sources
from authz.keys.secret_file import SecretFileWatcher
from authz.keys.store import KeyStore
from authz.observability import init_metrics
from authz.service.checker import Checker, CheckThreads
from authz.service.handover import LISTEN_WAIT_SECONDS, WorkerChannel
from authz.service.listeners import leave_ports, wait_connections_closed
from authz.settings.model import Settings

__all__ = [
    "CLIENTS_LEAVE_SECONDS",
    "CONNECTION_AGE_SECONDS",
    "DRAIN_GRACE_SECONDS",
    "GRPC_OPTIONS",
    "GRPC_THREADS",
    "MAX_CONCURRENT_RPCS",
    "Service",
    "grpc_server",
    "run",
]

log = logging.getLogger("authz.server")

# In-flight Checks get this long to finish after SIGTERM, in both doors (Envoy's ext_authz
# timeout is far shorter, so nothing legitimate is cut off).
DRAIN_GRACE_SECONDS = 5.0
_HEALTH_SERVICES = ("", "envoy.service.auth.v3.Authorization")

# In a `--workers` worker, a gRPC connection is asked to reconnect (a graceful GOAWAY; the
# streams on it finish) once it is this old, plus up to 10 % jitter: a leaving worker waits
# for its clients to move over (docs/drain.md), and the connections spread over the workers
# again. A single process keeps its connections (no sibling to move to).
CONNECTION_AGE_SECONDS = 2.0
# A leaving worker waits this long for its clients' connections to move to its siblings.
CLIENTS_LEAVE_SECONDS = 2 * CONNECTION_AGE_SECONDS + 1.0

# gRPC server options measured for an Envoy peer: one long-lived HTTP/2 connection with
# many streams, kept alive by Envoy's own pings. SO_REUSEPORT lets `--workers` processes
# share the port.
GRPC_OPTIONS = [
    ("grpc.so_reuseport", 1),
    ("grpc.max_concurrent_streams", 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.max_receive_message_length", 1 << 20),
]

# Load shedding: past this many Checks in progress the server answers RESOURCE_EXHAUSTED at
# once (Envoy: status_on_error, 503) instead of queueing. Measured on grpc.aio, one process
# decided ~4,000 Checks/s (0.25 ms each), so the last of 512 admitted Checks was answered
# within ~0.15 s, inside Envoy's 0.5 s ext_authz timeout (at 1,024: ~0.5 s, too late); the
# thread-pool server below decides faster, so 512 keeps that margin. Checks parked on a
# kid-triggered JWKS refresh (<= 0.35 s each) hold a slot too. The bound costs the
# thread-pool server ~0.01 ms CPU per Check under load (bench/README.md).
MAX_CONCURRENT_RPCS = 512

# The gRPC front runs on grpcio's thread-pool server, not grpc.aio: measured with h2load
# replaying Envoy's CheckRequest bytes on one HTTP/2 connection with 32 streams (bench/),
# Python CPU per Check for a repeated valid token was 0.195 ms on grpc.aio (0.19 with
# uvloop) and 0.10-0.12 ms on the thread-pool server; even a grpc.aio server answering fixed
# bytes cost 0.14 ms. grpc.aio pays for an asyncio task, futures and loop wake-ups per call;
# the thread-pool server hands the call to a thread straight from the completion queue. With
# one stream (unloaded) the p50 was 0.20 ms (aio) vs 0.17 ms. 4 threads measured best of
# 2/4/16 (0.107/0.096/0.126 ms): few enough that they rarely fight over the GIL. Checks
# waiting on a kid-triggered JWKS refresh do not count against them: CheckThreads runs a
# spare thread for each (up to authz.service.checker.MAX_KID_WAITERS).
GRPC_THREADS = 4


def grpc_server(threads: int = GRPC_THREADS, connection_age: float | None = None) -> grpc.Server:
    """An empty gRPC server built as authz serves Checks: GRPC_OPTIONS, the load-shedding
    bound and CheckThreads of `threads` (the tests and the benchmark floor use it too);
    with `connection_age`, connections that old are asked to reconnect."""
    options = list(GRPC_OPTIONS)
    if connection_age is not None:
        options += [
            ("grpc.max_connection_age_ms", int(connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(DRAIN_GRACE_SECONDS * 1000)),
        ]
    return grpc.server(
        CheckThreads(threads), options=options, maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS
    )


class Service:
    """One authz process: gRPC front, the optional HTTP and webhook doors, metrics/probe
    endpoint, key sources."""

    def __init__(
        self, settings: Settings, registry: CollectorRegistry = REGISTRY, worker: bool = False
    ) -> None:
        """`worker`: a `--workers` worker, which hands over to a successor on SIGTERM."""
        self.settings = settings
        self.store = KeyStore(settings)
        # The single AUTHZ_JWKS_URL, or one source per identity provider (SPEC section 10).
        self.jwks = key_sources(settings, self.store)
        self.stream_store = KeyStore.of_stream_secrets(settings)
        self.checker = Checker(
            settings,
            self.store,
            self.jwks.refresh_unknown_kid if self.jwks else None,
            stream_keys=self.stream_store,
        )
        self.watcher = (
            SecretFileWatcher(settings.hs256_secret_file, self.store)
            if settings.hs256_secret_file
            else None
        )
        self.stream_watcher = (
            SecretFileWatcher(
                settings.stream_secret_file, self.stream_store, setting="AUTHZ_STREAM_SECRET_FILE"
            )
            if settings.stream_secret_file
            else None
        )
        # SPEC section 11: both Check doors over TLS when the files are set; the probes and
        # /metrics stay plaintext.
        self.tls = (
            TlsCredentials(settings.tls_material) if settings.tls_material is not None else None
        )
        self.tls_watcher = (
            TlsWatcher(settings.tls_files, self.tls)
            if self.tls is not None and settings.tls_files is not None
            else None
        )
        self.grpc_server = grpc_server(connection_age=CONNECTION_AGE_SECONDS if worker else None)
        add_threaded_authorization_service(self.grpc_server, self.checker.check_blocking)
        self.health = add_threaded_health_service(self.grpc_server)
        self.endpoint = HttpEndpoint(settings.http_address, registry, self.ready)
        self.http_front = (
            HttpFront(
                settings.http_authz_address,
                self.checker.check_soon,
                tls=self.tls.ssl_context() if self.tls is not None else None,
            )
            if settings.http_authz_address
            else None
        )
        self.webhook_front = (
            WebhookFront(
                settings.ams_webhook_address, partial(self.checker.check, transport="webhook")
            )
            if settings.ams_webhook_address
            else None
        )
        self._accepting = False
        self._draining = False
        self._check_ports: list[int] = []
        self._stopped = asyncio.Event()
        self._extra_stops: list[Callable[[], Awaitable[None]]] = []

    def ready(self) -> bool:
        """Key material loaded (every identity provider's once), Checks accepted, not
        draining."""
        keys_ready = self.jwks is None or self.jwks.ready
        return self._accepting and not self._draining and keys_ready

    async def start(self, wait_for_keys: bool = False) -> None:
        """Start the key sources, then bind the ports and serve. Readiness follows the first
        JWKS fetch; with `wait_for_keys` (a `--workers` worker, whose ports the kernel
        shares with its siblings) nothing is bound before the key sources are ready, or
        LISTEN_WAIT_SECONDS passed."""
        init_metrics(jwks_configured=self.jwks is not None)
        self.checker.refresh_on(asyncio.get_running_loop())
        if self.watcher is not None:
            self.watcher.start()
        if self.stream_watcher is not None:
            self.stream_watcher.start()
        if self.tls_watcher is not None:
            self.tls_watcher.start()
        if self.jwks is not None:
            self.jwks.start()
            if wait_for_keys:
                await self.jwks.wait_ready(LISTEN_WAIT_SECONDS)
        self.endpoint.start()
        if self.tls is not None:
            credentials = self.tls.grpc_credentials()
            port = self.grpc_server.add_secure_port(self.settings.grpc_address, credentials)
        else:
            port = self.grpc_server.add_insecure_port(self.settings.grpc_address)
        self._check_ports.append(port)
        self.grpc_server.start()
        if self.http_front is not None:
            await self.http_front.start()
            front = self.http_front
            self._check_ports.append(front.port)
            self.add_stop(lambda: front.stop(DRAIN_GRACE_SECONDS))
        if self.webhook_front is not None:
            await self.webhook_front.start()
            webhook = self.webhook_front
            self._check_ports.append(webhook.port)
            self.add_stop(lambda: webhook.stop(DRAIN_GRACE_SECONDS))
        self._accepting = True
        asyncio.get_running_loop().create_task(self._follow_readiness())
        log.info(
            "serving",
            extra={
                "grpc_address": self.settings.grpc_address,
                "http_address": self.settings.http_address,
                "http_authz_address": self.settings.http_authz_address,
                "ams_webhook_address": self.settings.ams_webhook_address,
                "jwks": self.jwks is not None,
                "tls": self.tls is not None,
                "mtls": self.tls is not None and self.tls.material.requires_client_certificate,
                "secrets": len(self.store.snapshot.secrets),
            },
        )

    def add_stop(self, stop: Callable[[], Awaitable[None]]) -> None:
        """Run `stop` while draining (other fronts attached to this process)."""
        self._extra_stops.append(stop)

    async def _follow_readiness(self) -> None:
        serving: bool | None = None
        while not self._stopped.is_set():
            now_ready = self.ready()
            if now_ready != serving:
                serving = now_ready
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if now_ready
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                for name in _HEALTH_SERVICES:
                    self.health.set(name, status)
                log.info("readiness", extra={"ready": now_ready})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=0.2)

    async def drain(self, handover: bool = False) -> None:
        """Stop serving without losing a Check (docs/drain.md).

        Whole process: turn not-ready (`/readyz` 503, gRPC health NOT_SERVING), keep
        answering for `drain_delay_seconds` while Envoy's health check and Kubernetes take
        this instance out of rotation, then close the ports (HTTP/2 GOAWAY) and let the
        in-flight Checks finish. `handover` (a worker whose successor already serves on
        the same ports): close the probe port first, so the pod's probes and scrapes land
        on the siblings; take the Check ports' listeners out of their SO_REUSEPORT groups,
        so new connections go to the siblings; keep serving while the clients move their
        connections over (the gRPC connections' age, the HTTP door's `Connection: close`),
        then close. Readiness stays on: Envoy's health check of the shared address may
        reach this worker until its connections have left.
        """
        if handover:
            self.endpoint.stop()
            # No await between these two: a connection the kernel completed is accepted
            # (and served) rather than left in the queue the swap resets.
            if self.http_front is not None:
                self.http_front.accept_queued()
            left = leave_ports(self._check_ports)
            if self.http_front is not None:
                self.http_front.close_connections()
            still_open = await wait_connections_closed(self._check_ports, CLIENTS_LEAVE_SECONDS)
            log.info(
                "handing over",
                extra={"listeners_left": left, "connections_still_open": still_open},
            )
        else:
            self._draining = True
            for name in _HEALTH_SERVICES:
                self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            log.info("draining", extra={"delay_seconds": self.settings.drain_delay_seconds})
            await asyncio.sleep(self.settings.drain_delay_seconds)
        log.info("closing ports", extra={"handover": handover})
        for stop in self._extra_stops:
            await stop()
        stopped = self.grpc_server.stop(grace=DRAIN_GRACE_SECONDS)
        # In-flight Checks may wait on a kid-triggered refresh that runs on this loop, so
        # the loop keeps running while they finish.
        await asyncio.get_running_loop().run_in_executor(None, stopped.wait)
        if self.watcher is not None:
            await self.watcher.stop()
        if self.stream_watcher is not None:
            await self.stream_watcher.stop()
        if self.tls_watcher is not None:
            await self.tls_watcher.stop()
        if self.jwks is not None:
            await self.jwks.stop()
        self._stopped.set()
        self.endpoint.stop()
        log.info("stopped")


async def run(settings: Settings, registry: CollectorRegistry = REGISTRY) -> int:
    """Serve until SIGTERM/SIGINT, then drain; the process exit code. A `--workers`
    worker binds once it can decide and, on SIGTERM, waits for its supervisor's order
    (authz/service/handover.py)."""
    channel = WorkerChannel.from_environment()
    service = Service(settings, registry, worker=channel is not None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second signal: exiting at once")
            os._exit(1)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    await service.start(wait_for_keys=channel is not None)
    if channel is None:
        await stop.wait()
        await service.drain()
        return 0
    await channel.ready()
    await stop.wait()
    order = await channel.leave()
    await service.drain(handover=order == "handover")
    channel.close()
    return 0
