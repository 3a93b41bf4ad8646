"""Lifecycle of one authz process: start the fronts and key sources, drain on SIGTERM.

Readiness (`/readyz` and gRPC health) is true once the key material is loaded and the
gRPC server accepts Checks; SIGTERM turns it false, lets in-flight Checks finish, exits 0.
A second SIGTERM exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY, CollectorRegistry

from authz.checker import Checker
from authz.grpc_front import add_authorization_service, add_health_service
from authz.http_endpoint import HttpEndpoint
from authz.http_front import HttpFront
from authz.keys.jwks_source import JWKSSource
from authz.keys.secret_file import SecretFileWatcher
from authz.keys.store import KeyStore
from authz.observability import counted_by_transport, init_metrics
from authz.settings import Settings

log = logging.getLogger("authz.server")

# In-flight Checks get this long to finish after SIGTERM (Envoy's ext_authz timeout is
# far shorter, so nothing legitimate is cut off).
DRAIN_GRACE_SECONDS = 5.0
_HEALTH_SERVICES = ("", "envoy.service.auth.v3.Authorization")

# gRPC server options measured for an Envoy peer: one long-lived HTTP/2 connection with
# many streams, kept alive by Envoy's own pings.
_GRPC_OPTIONS = [
    ("grpc.so_reuseport", 1),
    ("grpc.max_concurrent_streams", 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.max_receive_message_length", 1 << 20),
]

# Load shedding: past this many Checks in progress the server answers RESOURCE_EXHAUSTED at
# once (Envoy: status_on_error, 503) instead of queueing. One process decides ~4,000
# Checks/s (about 0.25 ms of event-loop time each, measured over loopback), so the last
# of 512 admitted Checks is answered within ~0.15 s, inside Envoy's 0.5 s ext_authz
# timeout; at 1,024 it was already ~0.5 s, an answer Envoy would no longer wait for.
# Checks parked on a kid-triggered JWKS refresh (<= 0.35 s each) hold a slot too.
MAX_CONCURRENT_RPCS = 512


class Service:
    """One authz process: gRPC front, metrics/probe endpoint, key sources."""

    def __init__(self, settings: Settings, registry: CollectorRegistry = REGISTRY) -> None:
        self.settings = settings
        self.store = KeyStore(settings)
        self.jwks = (
            JWKSSource(
                settings.jwks_url,
                self.store,
                refresh_seconds=settings.jwks_refresh_seconds,
                ca_file=settings.jwks_ca_file,
            )
            if settings.jwks_url
            else None
        )
        self.checker = Checker(
            settings, self.store, self.jwks.refresh_unknown_kid if self.jwks else None
        )
        self.watcher = (
            SecretFileWatcher(settings.hs256_secret_file, self.store)
            if settings.hs256_secret_file
            else None
        )
        self.grpc_server = grpc.aio.server(
            options=_GRPC_OPTIONS, maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS
        )
        add_authorization_service(
            self.grpc_server, counted_by_transport(self.checker.check, "grpc")
        )
        self.health = add_health_service(self.grpc_server)
        self.grpc_port = self.grpc_server.add_insecure_port(settings.grpc_address)
        self.endpoint = HttpEndpoint(settings.http_address, registry, self.ready)
        self.http_front = (
            HttpFront(
                settings.http_authz_address, counted_by_transport(self.checker.check, "http")
            )
            if settings.http_authz_address
            else None
        )
        self._accepting = False
        self._draining = False
        self._stopped = asyncio.Event()
        self._extra_stops: list[Callable[[], Awaitable[None]]] = []

    def ready(self) -> bool:
        """Key material loaded, Checks accepted, not draining."""
        keys_ready = self.jwks is None or self.jwks.ready
        return self._accepting and not self._draining and keys_ready

    async def start(self) -> None:
        """Start serving; readiness follows the first JWKS fetch."""
        init_metrics()
        self.endpoint.start()
        await self.grpc_server.start()
        if self.http_front is not None:
            await self.http_front.start()
            self.add_stop(self.http_front.stop)
        self._accepting = True
        if self.watcher is not None:
            self.watcher.start()
        if self.jwks is not None:
            self.jwks.start()
        asyncio.get_running_loop().create_task(self._follow_readiness())
        log.info(
            "serving",
            extra={
                "grpc_address": self.settings.grpc_address,
                "http_address": self.settings.http_address,
                "http_authz_address": self.settings.http_authz_address,
                "jwks": self.jwks is not None,
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
                    await self.health.set(name, status)
                log.info("readiness", extra={"ready": now_ready})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=0.2)

    async def drain(self) -> None:
        """Turn not-ready, finish in-flight Checks, stop everything."""
        self._draining = True
        for name in _HEALTH_SERVICES:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        log.info("draining")
        for stop in self._extra_stops:
            await stop()
        await self.grpc_server.stop(grace=DRAIN_GRACE_SECONDS)
        if self.watcher is not None:
            await self.watcher.stop()
        if self.jwks is not None:
            await self.jwks.stop()
        self._stopped.set()
        self.endpoint.stop()
        log.info("stopped")


async def run(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT, then drain; the process exit code."""
    service = Service(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second signal: exiting at once")
            os._exit(1)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    await service.start()
    await stop.wait()
    await service.drain()
    return 0
