"""HTTP/1.1 for the HTTP door: an asyncio protocol over httptools (llhttp), in the loop.

Measured against granian's embedded server (bench/README.md, "The HTTP door's server"):
Envoy's `http_service` speaks HTTP/1.1 over a few keep-alive connections, and per request
granian paid for a Python task, its Rust<->Python hand-off and loop wake-ups, several
times the work of the decision. Here one `data_received` parses the request and, when the
decision needs no JWKS refetch (nearly always), answers in the same call: no task, no
future. A decision that waits (an unknown kid) runs as a task and the connection reads no
further request until it is answered, so answers keep their order.

h2c (prior knowledge, the cluster's `http2_protocol_options`) is not parsed here: a
connection that opens with the HTTP/2 preface is piped to granian on a private Unix socket
(`authz.fronts.tls_pipe.pipe_connection`).

What a malformed request gets: 400 (unparsable, a non-ASCII target, an upgrade), 431 (the
headers exceed `max_header_bytes`); either way the connection closes. A connection that
sends nothing for `idle_seconds`, or never completes its headers, is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import httptools

from authz.core.request import RequestView

__all__ = ["H2_PREFACE_START", "Http1Door", "Render"]

log = logging.getLogger("authz.http")

# The first bytes of an HTTP/2 connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").
H2_PREFACE_START = b"PRI "

# Answers a RequestView: the wire bytes of the HTTP/1.1 answer (status line, headers, body;
# `close` adds `Connection: close`), or an awaitable of them when the decision must wait.
Render = Callable[[RequestView, bool], "bytes | Awaitable[bytes]"]
# Builds a RequestView: method, path, query, headers.
ViewOf = Callable[[str, str, str, list[tuple[str, str]]], RequestView]
# Whether a request header (its raw name) can matter to the view; the others are skipped.
Wanted = Callable[[bytes], bool]

_SWEEP_SECONDS = 5.0


def _plain_answer(status: HTTPStatus) -> bytes:
    return (
        f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-length: 0\r\n"
        "connection: close\r\n\r\n"
    ).encode("ascii")


_BAD_REQUEST = _plain_answer(HTTPStatus.BAD_REQUEST)
_TOO_LARGE = _plain_answer(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)


class _Connection(asyncio.Protocol):
    """One client connection: parse, answer, keep alive."""

    __slots__ = (
        "_door",
        "_header_bytes",
        "_headers",
        "_parser",
        "_queue",
        "_time",
        "_url",
        "_waiting",
        "last_active",
        "transport",
    )

    def __init__(self, door: Http1Door) -> None:
        self._door = door
        # The loop's clock, looked up once (the door has started: it made this connection).
        self._time = door.loop.time
        self.transport: asyncio.Transport | None = None
        self._parser: httptools.HttpRequestParser | None = None
        self._headers: list[tuple[str, str]] = []
        self._url = b""
        self._header_bytes = 0
        # Requests parsed while an earlier one waits for its decision (pipelining).
        self._queue: list[tuple[RequestView, bool]] = []
        self._waiting = False
        self.last_active = 0.0

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.last_active = self._time()
        self._door.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._door.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = self._time()
        parser = self._parser
        if parser is None:
            if data.startswith(H2_PREFACE_START) and self._door.h2 is not None:
                transport, self.transport = self.transport, None
                self._door.connections.discard(self)
                assert transport is not None
                self._door.h2(transport, data)
                return
            parser = self._parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(_BAD_REQUEST)
        except httptools.HttpParserError:
            self._refuse(_BAD_REQUEST)

    # --- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self._url = b""
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        if self._door.wanted(name):
            self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_message_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        try:
            target = self._url.decode("ascii")
        except UnicodeDecodeError:
            raise httptools.HttpParserError("non-ASCII request target") from None
        path, _, query = target.partition("?")
        view = self._door.view_of(parser.get_method().decode("ascii"), path, query,
                                  self._headers)
        keep_alive = parser.should_keep_alive()
        if self._waiting:
            self._queue.append((view, keep_alive))
            return
        self._answer(view, keep_alive)

    # --- answering ----------------------------------------------------------------------
    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self._door.max_header_bytes:
            self._refuse(_TOO_LARGE)
            raise httptools.HttpParserCallbackError("headers too large")

    def _refuse(self, answer: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(answer)
            transport.close()

    def _answer(self, view: RequestView, keep_alive: bool) -> None:
        close = not keep_alive or self._door.closing
        wire = self._door.render(view, close)
        if isinstance(wire, bytes):
            self._send(wire, close)
            return
        self._waiting = True
        if self.transport is not None:
            self.transport.pause_reading()
        task = self._door.loop.create_task(self._answer_later(wire, close))
        self._door.tasks.add(task)
        task.add_done_callback(self._door.tasks.discard)

    async def _answer_later(self, wire: Awaitable[bytes], close: bool) -> None:
        self._send(await wire, close)
        self._waiting = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        while self._queue and not self._waiting:
            view, keep_alive = self._queue.pop(0)
            self._answer(view, keep_alive)

    def _send(self, wire: bytes, close: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(wire)
        if close:
            transport.close()

    def idle_since(self, moment: float) -> bool:
        """Nothing arrived since `moment` and no answer is pending."""
        return not self._waiting and self.last_active < moment

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Http1Door:
    """Serves HTTP/1.1 on `host`:`port` (SO_REUSEPORT, for `--workers`) in the running loop,
    answering each request with `render(view_of(...), close)`, the headers filtered by
    `wanted`; `h2(transport, first_bytes)` takes the connections that open with the HTTP/2
    preface."""

    def __init__(
        self,
        host: str,
        port: int,
        view_of: ViewOf,
        render: Render,
        *,
        wanted: Wanted,
        backlog: int,
        max_header_bytes: int,
        idle_seconds: float,
        h2: Callable[[asyncio.Transport, bytes], None] | None = None,
    ) -> None:
        self._host, self._port = host, port
        self.view_of = view_of
        self.render = render
        self.wanted = wanted
        self.h2 = h2
        self.max_header_bytes = max_header_bytes
        self._backlog = backlog
        self._idle_seconds = idle_seconds
        # While set (a `--workers` handover), every answer closes its connection.
        self.closing = False
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one picked for port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the door serves in (set by `start`)."""
        assert self._loop is not None, "Http1Door.start() first"
        return self._loop

    async def start(self) -> None:
        """Bind and serve; raises OSError if the address cannot be bound."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: _Connection(self),
            self._host,
            self._port,
            reuse_port=True,
            backlog=self._backlog,
        )
        self._sweeper = self._loop.create_task(self._sweep())

    def accept_queued(self) -> int:
        """Accept every connection waiting in the listen queue now, without yielding to the
        loop; how many. Called right before the listener is swapped out (a handover), so
        no connection the kernel has already completed is left in the queue to be reset."""
        if self._server is None or self._loop is None:
            return 0
        taken = 0
        for listener in self._server.sockets:
            with socket.socket(fileno=os.dup(listener.fileno())) as sock:
                sock.setblocking(False)
                while True:
                    try:
                        conn, _ = sock.accept()
                    except ConnectionAbortedError:  # that one is gone; the next
                        continue
                    except OSError:  # empty (EAGAIN), or out of descriptors
                        break
                    conn.setblocking(False)
                    task = self._loop.create_task(self._adopt(conn))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                    taken += 1
        return taken

    async def _adopt(self, conn: socket.socket) -> None:
        await self.loop.connect_accepted_socket(lambda: _Connection(self), conn)

    async def _sweep(self) -> None:
        """Close the connections idle (or stuck in their headers) for `idle_seconds`."""
        while True:
            await asyncio.sleep(min(_SWEEP_SECONDS, self._idle_seconds / 2))
            since = self.loop.time() - self._idle_seconds
            for connection in [c for c in self.connections if c.idle_since(since)]:
                connection.close()

    async def stop(self, grace: float) -> None:
        """Stop accepting, let the pending answers go out for up to `grace` s, close the
        connections."""
        if self._loop is None:  # never started
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.closing = True
        for connection in [c for c in self.connections if c.idle_since(self.loop.time())]:
            connection.close()
        if self.tasks:
            _, late = await asyncio.wait(set(self.tasks), timeout=grace)
            if late:
                log.warning("checks still running after the drain grace: closing")
            for task in late:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*late, return_exceptions=True)
        for connection in list(self.connections):
            connection.close()
        if server is not None:
            await server.wait_closed()

