"""The control channel between `authz serve --workers N`'s supervisor and each worker.

A restarted worker is ready before its predecessor stops accepting: the kernel spreads new
connections over every socket bound to the port (SO_REUSEPORT), so a successor must not
bind before it can decide, and its predecessor must not close before the successor is
there. One Unix stream socket per worker, one line per message:

- worker -> supervisor `ready`: the worker's key material is loaded and its ports are
  bound (it binds only then).
- worker -> supervisor `leaving`: the worker got SIGTERM; it keeps serving and waits.
- supervisor -> worker `handover`: the successor started for the `leaving` worker is ready:
  the worker drains now (probe port first, so the pod's readiness never flaps).
- supervisor -> worker `stop`: the whole process is stopping: the worker drains like a
  single `authz serve` (readiness off, the drain delay, then the ports close).

A worker whose channel closes (the supervisor died) or whose successor is not ready within
HANDOVER_TIMEOUT_SECONDS drains anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Literal

__all__ = [
    "CONTROL_FD_ENV",
    "HANDOVER",
    "HANDOVER_TIMEOUT_SECONDS",
    "LEAVING",
    "LISTEN_WAIT_SECONDS",
    "READY",
    "STOP",
    "Order",
    "WorkerChannel",
]

# The environment variable naming the worker's end of its control socket.
CONTROL_FD_ENV = "_AUTHZ_CONTROL_FD"
# The messages; each travels as one line (the message and a newline).
READY = b"ready"
LEAVING = b"leaving"
HANDOVER = b"handover"
STOP = b"stop"
# A worker binds its ports once every key source has loaded, or after this long anyway
# (then it answers like a single process whose JWKS is down: jwks_unavailable, fail closed).
LISTEN_WAIT_SECONDS = 15.0
# A leaving worker waits this long for its successor (its key wait plus starting).
HANDOVER_TIMEOUT_SECONDS = LISTEN_WAIT_SECONDS + 15.0

Order = Literal["handover", "stop"]


class WorkerChannel:
    """A worker's end of its control socket (asyncio)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    def from_environment(cls) -> WorkerChannel | None:
        """The channel the supervisor passed this process, or None when not supervised."""
        fd = os.environ.get(CONTROL_FD_ENV)
        if not fd:
            return None
        # Not inherited further: a worker's own children (none today) must not hold it.
        os.environ.pop(CONTROL_FD_ENV)
        return cls(socket.socket(fileno=int(fd)))

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_unix_connection(sock=self._sock)
        return self._reader, self._writer

    async def _send(self, message: bytes) -> None:
        _, writer = await self._open()
        with contextlib.suppress(OSError):
            writer.write(message + b"\n")
            await writer.drain()

    async def ready(self) -> None:
        """Tell the supervisor this worker serves."""
        await self._send(READY)

    async def leave(self) -> Order:
        """Tell the supervisor this worker got SIGTERM and wait for its order: `handover`
        once the successor is ready, `stop` when the whole process stops (also when the
        channel closes or no order comes within HANDOVER_TIMEOUT_SECONDS)."""
        await self._send(LEAVING)
        reader, _ = await self._open()
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(HANDOVER_TIMEOUT_SECONDS):
                while line := await reader.readline():
                    message = line.rstrip(b"\n")
                    if message == HANDOVER:
                        return "handover"
                    if message == STOP:
                        return "stop"
        return "stop"

    def close(self) -> None:
        """Close this end."""
        if self._writer is not None:
            self._writer.close()
        else:
            self._sock.close()
