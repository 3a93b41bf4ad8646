"""Loopback parts of `authz demo`, shared with the tests and the benches.

Everything here listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["EchoBody", "cluster_healthy", "echo_server", "free_port", "stop_process", "wait_until"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition"
) -> None:
    """Poll `predicate` until it is true or fail after `timeout` seconds; connection errors
    (OSError, HTTP protocol errors) count as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if predicate():
                return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM `process` and wait; SIGKILL it if it has not exited within `timeout` s."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cluster_healthy(clusters: str, cluster: str) -> bool:
    """Whether Envoy's admin /clusters text shows a host of `cluster` healthy."""
    return any(
        line.startswith(f"{cluster}::") and line.endswith("::health_flags::healthy")
        for line in clusters.splitlines()
    )


# What an echo server answers: built from the request's method, path and headers (names
# lowercased, in arrival order, repeats kept).
EchoBody = Callable[[str, str, list[tuple[str, str]]], Any]


@contextlib.contextmanager
def echo_server(body: EchoBody, separators: tuple[str, str] | None = None) -> Iterator[int]:
    """A stand-in Ant Media Server on a free 127.0.0.1 port, yielded while it runs: every
    request gets 200 with `body(method, path, headers)` as JSON (dumped with `separators`)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "ant-media-stand-in"

        def _echo(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            headers = [(name.lower(), value) for name, value in self.headers.items()]
            answer = json.dumps(
                body(self.command, self.path, headers), separators=separators
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _echo

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="stand-in", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
