"""authz.service.listeners against the real kernel: SO_REUSEPORT groups, a sibling process,
grpc's own listener."""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authz.service.listeners import connections_on, leave_ports, wait_connections_closed
from authz.service.server import grpc_server
from tests.harness import free_port

CONNECTIONS = 40

# A sibling worker: binds the same port with SO_REUSEPORT and answers b"sibling".
_SIBLING = """
import socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(64)
print("ready", flush=True)
while True:
    conn, _ = sock.accept()
    conn.sendall(b"sibling")
    conn.close()
"""


def _listener(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


@contextlib.contextmanager
def _sibling(port: int) -> Iterator[None]:
    process = subprocess.Popen([sys.executable, "-c", _SIBLING, str(port)],
                               stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        yield
    finally:
        process.kill()
        process.wait()


def _answered_by(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        return conn.recv(16).decode()


def _serve(sock: socket.socket, stop: threading.Event) -> None:
    """This process's worker: answers b"self" until stopped. It waits in epoll, as grpc,
    granian and asyncio do (a thread blocked in accept() would hold the listener open)."""
    sock.setblocking(False)
    with selectors.EpollSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        while not stop.is_set():
            if not selector.select(timeout=0.05):
                continue
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.setblocking(True)
                conn.sendall(b"self")


def test_after_leave_ports_new_connections_go_to_the_sibling() -> None:
    port = free_port()
    own = _listener(port)
    stop = threading.Event()
    worker = threading.Thread(target=_serve, args=(own, stop))
    with _sibling(port):
        worker.start()
        try:
            before = {_answered_by(port) for _ in range(CONNECTIONS)}
            assert before == {"self", "sibling"}  # the kernel spreads them over both
            assert leave_ports({port}) == 1
            after = {_answered_by(port) for _ in range(CONNECTIONS)}
            assert after == {"sibling"}
        finally:
            stop.set()
            worker.join(30)
            own.close()


def test_leave_ports_touches_only_the_listeners_of_those_ports() -> None:
    port, other_port = free_port(), free_port()
    with _listener(port) as sock, _listener(other_port) as other:
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        accepted, _ = sock.accept()
        assert leave_ports({port}) == 1
        assert leave_ports({port}) == 0  # already gone
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=30)
        # The accepted connection still carries data; the other port still accepts.
        client.sendall(b"ping")
        assert accepted.recv(4) == b"ping"
        with socket.create_connection(("127.0.0.1", other_port), timeout=30):
            other.accept()[0].close()
        client.close()
        accepted.close()


def test_connections_on_counts_accepted_connections_until_they_close() -> None:
    port = free_port()
    with _listener(port) as sock:
        assert connections_on({port}) == 0
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        accepted, _ = sock.accept()
        # The accepted end (local port `port`), not the client's (an ephemeral port).
        assert connections_on({port}) == 1
        assert asyncio.run(wait_connections_closed({port}, timeout=0.2)) == 1
        client.close()
        accepted.close()  # what a server does when its client has gone
        assert asyncio.run(wait_connections_closed({port}, timeout=30)) == 0


def test_a_grpc_server_keeps_serving_its_connections_and_stops_cleanly(
    capfd: pytest.CaptureFixture[str],
) -> None:
    server = grpc_server()
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            serving = health_pb2.HealthCheckResponse.SERVING
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=30).status == serving
            assert leave_ports({port}) == 1
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=30)
            assert connections_on({port}) == 1
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=30).status == serving
    finally:
        assert server.stop(grace=5).wait(30)
    # grpc's acceptor never saw an error (a shutdown() of its listener would log
    # "Failed accept4: Invalid argument" on stderr).
    assert "accept" not in capfd.readouterr().err


def _descriptors() -> Counter[str]:
    """How many of this process's descriptors refer to each open file."""
    found: Counter[str] = Counter()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            found[os.readlink(f"/proc/self/fd/{name}")] += 1
    return found


def test_no_descriptor_is_left_open() -> None:
    port = free_port()
    with _listener(port) as sock:
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        accepted, _ = sock.accept()
        before = _descriptors()
        for _ in range(20):
            assert connections_on({port}) == 1
            assert leave_ports({free_port()}) == 0
        after = _descriptors()
        # A left-over duplicate would be one more descriptor on a file already open (other
        # threads of the process, grpc's, may open and close their own meanwhile).
        assert {target: after[target] - count for target, count in before.items()
                if after[target] > count} == {}
        client.close()
        accepted.close()
