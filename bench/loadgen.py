"""A gRPC load generator for requests that differ per call (never-seen tokens).

h2load repeats one request body; a cache-miss benchmark needs a new token per Check, so
this client sends a list of serialized CheckRequests, each once, with at most a fixed
number of calls in flight on one HTTP/2 connection (as Envoy does). With `rate` the calls
are paced to that many per second, so two servers compared see the same arrival pattern
(a server's CPU per call depends on how many calls each wake-up finds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc

from authz._pb.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from authz.fronts.grpc import CHECK_METHOD_PATH
from bench.measure import Load, percentile


async def _drive(port: int, payloads: Sequence[bytes], in_flight: int,
                 rate: float | None) -> tuple[Load, int]:
    latencies: list[float] = []
    allowed = failed = 0
    position = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(CHECK_METHOD_PATH)
        began = time.perf_counter()

        async def caller() -> None:
            nonlocal allowed, failed, position
            while position < len(payloads):
                index = position
                position += 1
                if rate is not None:
                    delay = began + index / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                payload = payloads[index]
                started = time.perf_counter()
                try:
                    raw = await call(payload, timeout=10)
                except grpc.RpcError:
                    failed += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                if CheckResponse.FromString(raw).status.code == 0:
                    allowed += 1

        await channel.channel_ready()
        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(in_flight)))
        elapsed = time.perf_counter() - began
    load = Load(len(latencies), elapsed, percentile(latencies, 0.5),
                percentile(latencies, 0.99), failed)
    return load, allowed


def send_each(port: int, payloads: Sequence[bytes], in_flight: int = 32,
              rate: float | None = None) -> tuple[Load, int]:
    """Send every payload once (paced to `rate` per second if given); the load figures and
    how many Checks were allowed."""
    return asyncio.run(_drive(port, payloads, in_flight, rate))
