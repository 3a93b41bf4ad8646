"""The transport floor: a gRPC server that answers every Check with fixed bytes.

It parses nothing and decides nothing, so its CPU per call is what grpcio itself costs,
built exactly as authz builds its server (options, load-shedding bound, threads); authz's
own cost is measured against it. `--flavour` picks grpcio's thread-pool server with
authz's thread count (what authz runs) or grpc.aio, for the comparison that chose
authz's flavour.

Run: python -m bench.floor --port 9101 [--flavour threads|aio] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from typing import Any

import grpc

from authz._pb.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from authz.fronts.grpc import CHECK_METHOD_PATH
from authz.service.server import GRPC_OPTIONS, GRPC_THREADS, MAX_CONCURRENT_RPCS, grpc_server

_SERVICE, _, _METHOD = CHECK_METHOD_PATH[1:].rpartition("/")
ALLOW_BYTES = CheckResponse(status={"code": 0}, ok_response={}).SerializeToString()


def _handler(behaviour: Any) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        _SERVICE, {_METHOD: grpc.unary_unary_rpc_method_handler(behaviour)}
    )


async def _serve_aio(address: str) -> None:
    async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return ALLOW_BYTES

    server = grpc.aio.server(options=GRPC_OPTIONS, maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
    server.add_generic_rpc_handlers((_handler(answer),))
    server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(None)


def _serve_threads(address: str, threads: int) -> None:
    def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
        return ALLOW_BYTES

    server = grpc_server(threads)
    server.add_generic_rpc_handlers((_handler(answer),))
    server.add_insecure_port(address)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(None)


def main() -> None:
    """Serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--flavour", choices=("threads", "aio"), default="threads")
    parser.add_argument("--threads", type=int, default=GRPC_THREADS)
    args = parser.parse_args()
    address = f"127.0.0.1:{args.port}"
    if args.flavour == "aio":
        asyncio.run(_serve_aio(address))
    else:
        _serve_threads(address, args.threads)


if __name__ == "__main__":
    main()
