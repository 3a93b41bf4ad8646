"""The operator's HTTP endpoint: `/metrics`, `/healthz` (alive) and `/readyz` (serving).

Runs in its own threads so a scrape never competes with the Check event loop.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from authz.settings.addresses import split_host_port

__all__ = ["HttpEndpoint", "StartResponse"]

StartResponse = Callable[..., Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # `authz serve --workers N`: every worker binds the same port (authz/service/workers.py).
    allow_reuse_port = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    # Access lines would go to stderr unstructured; probes every few seconds are noise.
    def log_message(self, format: str, *args: Any) -> None:
        return


class HttpEndpoint:
    """Serves metrics from `registry` and probes that ask `is_ready`."""

    def __init__(
        self, address: str, registry: CollectorRegistry, is_ready: Callable[[], bool]
    ) -> None:
        self._address = address
        self._registry = registry
        self._is_ready = is_ready
        self._server: WSGIServer | None = None

    @property
    def port(self) -> int:
        """The bound port (after `start`)."""
        assert self._server is not None, "HttpEndpoint.port before start()"
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve (a worker binds only once it can decide)."""
        host, port = split_host_port(self._address)
        server = make_server(
            host,
            port,
            self._app,
            server_class=_Server6 if ":" in host else _Server,
            handler_class=_QuietHandler,
        )
        self._server = server
        threading.Thread(
            target=server.serve_forever, name="authz-http-endpoint", daemon=True
        ).start()

    def stop(self) -> None:
        """Close the port; a second call does nothing."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body = generate_latest(self._registry)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            if self._is_ready():
                return _text(start_response, "200 OK", "ready\n")
            return _text(start_response, "503 Service Unavailable", "not ready\n")
        return _text(start_response, "404 Not Found", "not found\n")


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    )
    return [data]
