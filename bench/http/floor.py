"""The HTTP floor: ext_authz servers that answer every request 200 with nothing, on one loop.

They parse only what the server library parses and decide nothing, so their req/s through
Envoy is the ceiling any HTTP ext_authz server on that library can reach. Each runs the way
authz would run it: inside one asyncio event loop in one process.

Run: python -m bench.http.floor --server granian-rsgi|granian-asgi|uvicorn --port 9201 [--h2]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

SERVERS = ("granian-rsgi", "granian-asgi", "uvicorn")


class _Rsgi:
    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        protocol.response_empty(200, [])


async def _asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _serve_granian(port: int, rsgi: bool, h2: bool, rust_tasks: bool) -> None:
    from granian.constants import HTTPModes, Interfaces, TaskImpl
    from granian.log import LogLevels
    from granian.server.embed import Server

    server = Server(
        _Rsgi() if rsgi else _asgi,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.RSGI if rsgi else Interfaces.ASGINL,
        http=HTTPModes.http2 if h2 else HTTPModes.http1,
        websockets=False,
        backlog=1024,
        log_level=LogLevels.warning,
        task_impl=TaskImpl.rust if rust_tasks else TaskImpl.asyncio,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, server.stop)
    await server.serve()


async def _serve_uvicorn(port: int) -> None:
    import uvicorn

    config = uvicorn.Config(
        _asgi,
        host="127.0.0.1",
        port=port,
        http="httptools",
        loop="asyncio",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=1024,
    )
    await uvicorn.Server(config).serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", choices=SERVERS, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--h2", action="store_true", help="h2c instead of HTTP/1.1 (granian)")
    parser.add_argument("--rust-tasks", action="store_true", help="granian's Rust task impl")
    args = parser.parse_args()
    if args.server == "uvicorn":
        asyncio.run(_serve_uvicorn(args.port))
    else:
        asyncio.run(
            _serve_granian(args.port, args.server == "granian-rsgi", args.h2, args.rust_tasks)
        )


if __name__ == "__main__":
    main()
