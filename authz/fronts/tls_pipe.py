"""TLS in front of the HTTP door: Python's `ssl` accepts on the door's address and pipes the
plaintext bytes to granian, which serves the door on a private Unix socket. The plaintext
door's h2c connections take the same pipe (`pipe_connection`).

Why not granian's own TLS (it has it: rustls, with client CA verification): it reads the
certificate once when its worker starts, and the only way to a new one is a new worker,
which closes every established connection. Envoy's HTTP/1.1 connections to the door would
race that close and lose Checks (the door's idle timeout is set so Envoy always closes
first for that reason). Python's `ssl` serves each new handshake from the current material
(`authz.fronts.tls.TlsCredentials`) and leaves established connections alone. The price is
this hop (measured in bench/README.md); the plaintext door is served by granian directly,
as before.

Each accepted connection gets its own connection to granian; a close or half-close on
either side is passed on, and each side stops reading while the other cannot take more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

__all__ = ["HANDSHAKE_TIMEOUT_SECONDS", "TlsPipe", "pipe_connection"]

log = logging.getLogger("authz.http")

# A client that opens a connection and never finishes the handshake holds it this long.
HANDSHAKE_TIMEOUT_SECONDS = 10.0


class _Side(asyncio.Protocol):
    """One end of a pipe: what it receives goes to `peer`'s transport."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self._pending: list[bytes] = []
        self._eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self._pending.append(data)
            return
        peer.transport.write(data)

    def eof_received(self) -> bool:
        peer = self.peer
        if peer is None or peer.transport is None:
            self._eof = True
        elif peer.transport.can_write_eof():
            peer.transport.write_eof()
        else:
            peer.transport.close()
        return True  # keep our own side open for the answer still coming back

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()

    # Flow control: our transport's buffer is full, so the peer stops reading.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def attach(self, peer: _Side) -> None:
        """Join with `peer` and pass on what arrived before it was there."""
        self.peer = peer
        assert peer.transport is not None
        for data in self._pending:
            peer.transport.write(data)
        self._pending.clear()
        if self._eof:
            self.eof_received()


class _ClientSide(_Side):
    def __init__(self, upstream: str, tasks: set[asyncio.Task[None]]) -> None:
        super().__init__()
        self._upstream = upstream
        self._tasks = tasks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        task = asyncio.get_running_loop().create_task(self._connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_unix_connection(_Side, self._upstream)
        except OSError as exc:
            log.warning("HTTP door unreachable behind its pipe", extra={"error": str(exc)})
            if self.transport is not None:
                self.transport.close()
            return
        if self.transport is None:  # the client left meanwhile
            assert upstream.transport is not None
            upstream.transport.close()
            return
        upstream.attach(self)
        self.attach(upstream)


def pipe_connection(
    upstream: str, tasks: set[asyncio.Task[None]], transport: asyncio.Transport, first: bytes
) -> None:
    """Carry on an accepted connection, whose first bytes were `first`, to the Unix socket
    `upstream` (the plaintext door's h2c connections, to granian)."""
    side = _ClientSide(upstream, tasks)
    transport.set_protocol(side)
    side.connection_made(transport)
    side.data_received(first)


class TlsPipe:
    """Accepts TLS on `host`:`port` (SO_REUSEPORT, for `--workers`) with `context` and pipes
    each connection to the Unix socket `upstream`."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, upstream: str,
                 backlog: int) -> None:
        self._host, self._port = host, port
        self._context = context
        self._upstream = upstream
        self._backlog = backlog
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and accept; raises OSError if the address cannot be bound."""
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _ClientSide(self._upstream, self._tasks),
            self._host,
            self._port,
            ssl=self._context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS,
            reuse_port=True,
            backlog=self._backlog,
        )

    def close(self) -> None:
        """Stop accepting; established connections go on until their ends close them."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        """Wait for the pending connects to end."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
