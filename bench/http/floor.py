"""The HTTP floor: ext_authz servers that answer every request 200 with nothing, on one loop.

They parse only what the server library parses and decide nothing, so their req/s through
Envoy is the ceiling any HTTP ext_authz server on that library can reach. Each runs the way
authz would run it: inside one asyncio event loop in one process.

`httptools` is the leanest: a bare asyncio protocol over httptools (llhttp), the stack of
authz's own HTTP/1.1 door (authz/fronts/http1.py), answering every request at once.

Run: python -m bench.http.floor --server httptools|granian-rsgi|granian-asgi|uvicorn
     --port 9201 [--h2] [--answer-headers]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

SERVERS = ("httptools", "granian-rsgi", "granian-asgi", "uvicorn")
_EMPTY_200 = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
# --answer-headers: the headers authz's allow carries for the bench token (one header for
# the upstream, two for Envoy's dynamic metadata), to price what Envoy does with them.
_AUTHZ_LIKE_200 = (
    b"HTTP/1.1 200 OK\r\nx-jwt-sub: bench\r\nx-authz-reason: ok\r\nx-authz-sub: bench\r\n"
    b"content-length: 0\r\n\r\n"
)


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


class _Httptools(asyncio.Protocol):
    def __init__(self, answer: bytes) -> None:
        import httptools

        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_complete(self) -> None:
        assert self._transport is not None
        self._transport.write(self._answer)


async def _serve_httptools(port: int, answer_headers: bool) -> None:
    loop = asyncio.get_running_loop()
    answer = _AUTHZ_LIKE_200 if answer_headers else _EMPTY_200
    server = await loop.create_server(
        lambda: _Httptools(answer), "127.0.0.1", port, backlog=1024
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


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
    parser.add_argument("--answer-headers", action="store_true",
                        help="answer with the headers authz's allow carries (httptools)")
    args = parser.parse_args()
    if args.server == "uvicorn":
        asyncio.run(_serve_uvicorn(args.port))
    elif args.server == "httptools":
        asyncio.run(_serve_httptools(args.port, args.answer_headers))
    else:
        asyncio.run(
            _serve_granian(args.port, args.server == "granian-rsgi", args.h2, args.rust_tasks)
        )


if __name__ == "__main__":
    main()
