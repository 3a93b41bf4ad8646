"""Capture the CheckRequest bytes a real Envoy sends, running the project's envoy.yaml.

A recording gRPC server stands in for authz: it keeps the raw request bytes of the first
Check and answers allow. Benchmarks replay those bytes, so the direct load has exactly
the size and fields of Envoy's requests, with the token swapped for one of the same length.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import grpc

from authz._pb.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from authz.fronts.grpc import CHECK_METHOD_PATH
from tests.harness import echo_upstream, free_port, request, run_envoy

_SERVICE, _, _METHOD = CHECK_METHOD_PATH[1:].rpartition("/")
_ALLOW = CheckResponse(status={"code": 0}, ok_response={}).SerializeToString()


def _serve_recorder(port: int, seen: list[bytes], started: threading.Event,
                    stop: threading.Event) -> None:
    async def main() -> None:
        async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            seen.append(raw)
            return _ALLOW

        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            _SERVICE, {_METHOD: grpc.unary_unary_rpc_method_handler(handle)}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await server.stop(None)

    asyncio.run(main())


def capture_check_request(authorization: str, path: str = "/LiveApp/rest/v2/broadcasts/list/0/10"
                          ) -> bytes:
    """The serialized CheckRequest Envoy sends for GET `path` with this Authorization header."""
    seen: list[bytes] = []
    started, stop = threading.Event(), threading.Event()
    port = free_port()
    thread = threading.Thread(target=_serve_recorder, args=(port, seen, started, stop),
                              daemon=True)
    thread.start()
    started.wait(10)
    try:
        with echo_upstream() as upstream, run_envoy(
            {"authz": port, "ant_media": upstream}, wait_cluster_healthy=None
        ) as envoy:
            for _ in range(100):
                answer = request(envoy.port, path, {"Authorization": authorization,
                                                    "User-Agent": "bench"})
                if seen and answer.status == 200:
                    return seen[-1]
            raise RuntimeError("Envoy sent no Check to the recorder")
    finally:
        stop.set()
        thread.join(10)


def token_variants(template: bytes, token: str, tokens: Iterator[str]) -> Iterator[bytes]:
    """`template` with `token` replaced by each of `tokens` (all of the same length)."""
    old = token.encode()
    if template.count(old) != 1:
        raise ValueError("the token must occur exactly once in the captured request")
    for new in tokens:
        encoded = new.encode()
        if len(encoded) != len(old):
            raise ValueError("replacement tokens must have the template token's length")
        yield template.replace(old, encoded)
