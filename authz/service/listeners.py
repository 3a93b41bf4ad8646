"""This process's TCP sockets on its Check ports, found through /proc/self/fd (Linux).

A leaving `--workers` worker shares its ports with its siblings (SO_REUSEPORT). Closing
them through its servers would reject the Checks a client sends before it has read the
GOAWAY (grpc fails every call that arrives after its server's shutdown began: UNAVAILABLE,
Envoy's 503). So the worker first takes its listening sockets out of the port's group
(`leave_ports`), then waits until its clients have moved their connections to the siblings
(`wait_connections_closed`), and only then stops its servers (docs/drain.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Collection, Iterator

__all__ = ["connections_on", "leave_ports", "wait_connections_closed"]

_POLL_SECONDS = 0.05


@contextlib.contextmanager
def _sockets_on(ports: Collection[int]) -> Iterator[list[tuple[int, socket.socket]]]:
    """(fd, a duplicate of it) for each of this process's TCP sockets whose local port is
    in `ports`; the duplicates are closed on exit."""
    found: list[tuple[int, socket.socket]] = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # not Linux: nothing to find
        names = []
    try:
        ours: set[int] = set()  # the duplicates made here (one may take a listed number)
        for name in names:
            fd = int(name)
            if fd in ours:
                continue
            try:
                if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                    continue
                duplicate = os.dup(fd)
            except OSError:  # closed meanwhile
                continue
            ours.add(duplicate)
            try:
                sock = socket.socket(fileno=duplicate)
            except OSError:  # reused meanwhile by something else
                os.close(duplicate)
                continue
            try:
                if (
                    sock.family in (socket.AF_INET, socket.AF_INET6)
                    and sock.type == socket.SOCK_STREAM
                    and sock.getsockname()[1] in ports
                ):
                    found.append((fd, sock))
                    continue
            except OSError:
                pass
            sock.close()
        yield found
    finally:
        for _, sock in found:
            sock.close()


def _listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def leave_ports(ports: Collection[int]) -> int:
    """Take this process's listening sockets on `ports` out of their SO_REUSEPORT groups at
    once; returns how many. The kernel sends new connections to the siblings' sockets from
    then on; the connections already accepted stay open and served.

    Each listener's fd is swapped (dup2, atomic) for a fresh unbound socket: the listener
    closes, its event loop's registration goes with it, so the server that owned it (grpc,
    granian, asyncio) never sees an accept error and later closes the stand-in. A connection
    the kernel had queued but the server not yet accepted is reset, as on any close (Linux's
    `net.ipv4.tcp_migrate_req=1` moves those to a sibling instead).
    """
    left = 0
    with _sockets_on(ports) as sockets:
        for fd, sock in sockets:
            if not _listening(sock):
                continue
            with socket.socket(sock.family, socket.SOCK_STREAM) as stand_in:
                os.dup2(stand_in.fileno(), fd)
            left += 1
    return left


def connections_on(ports: Collection[int]) -> int:
    """How many of this process's accepted connections on `ports` are still open."""
    with _sockets_on(ports) as sockets:
        return sum(1 for _, sock in sockets if not _listening(sock))


async def wait_connections_closed(ports: Collection[int], timeout: float) -> int:
    """Wait until no accepted connection on `ports` is open, or `timeout` s passed; the
    number still open."""
    deadline = time.monotonic() + timeout
    while (open_now := connections_on(ports)) and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_SECONDS)
    return open_now
