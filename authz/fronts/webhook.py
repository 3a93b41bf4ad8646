"""The Ant Media webhook door (SPEC section 9): `POST /publish` and `POST /play` with Ant
Media's JSON body -> a RequestView carrying a WebhookAsk -> the checker -> 200, 403 or 400.

Ant Media asks `settings.webhookAuthenticateURL` before it accepts an RTMP, SRT or WebRTC
publish (body: `appName`, `name`, `streamId`, `mode`, and when present `token`,
`subscriberId`, `subscriberCode`, `metaData`, `queryParams`), and
`settings.webhookPlayAuthUrl` before a WebRTC play (`streamId`, `mode`, `appName`,
`origin`, `token`, ...); any answer but 200 refuses. Only `streamId` and `token` are read.

A small HTTP/1.1 server on asyncio streams in the process's loop: Ant Media's client opens
one connection per call, so each connection carries one request (`Connection: close`);
the request head, the body (Content-Length only, at most 64 KiB) and the time to read
them are bounded. The body is UTF-8, or ISO-8859-1 as Ant Media's Java client sends it
when no charset is named.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast

from authz.core.decision import Decision, Reason, deny
from authz.core.request import RequestView, StreamKind, WebhookAsk
from authz.core.verify import TokenError, json_object
from authz.errors import AuthzError
from authz.observability import count_failed_check
from authz.settings.addresses import split_host_port

__all__ = [
    "MAX_BODY_BYTES",
    "PATHS",
    "READ_TIMEOUT_SECONDS",
    "Check",
    "WebhookFront",
    "ask_of",
    "status_of_decision",
]

log = logging.getLogger("authz.webhook")

Check = Callable[[RequestView], Awaitable[Decision]]

PATHS: dict[str, StreamKind] = {"/publish": "publish", "/play": "play"}
MAX_BODY_BYTES = 64 * 1024
# Ant Media's client gives up after 5 s (socket timeout); a request still not read by then
# is abandoned.
READ_TIMEOUT_SECONDS = 10.0
_MAX_HEAD_BYTES = 16 * 1024
# After an answer sent without reading the body: how much of it, and for how long, is
# read and dropped so the client sees the answer rather than a reset connection.
_DISCARD_BYTES = 1024 * 1024
_DISCARD_SECONDS = 2.0
_BACKLOG = 128
_ERROR = {400: "bad_request", 403: "forbidden", 503: "unavailable"}


class _RefusedError(AuthzError):
    """The request is answered `status` without a decision (404, 405, 400, 431)."""

    def __init__(self, status: int, error: str, allow: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.allow = allow


def ask_of(kind: StreamKind, body: bytes | None) -> WebhookAsk:
    """The WebhookAsk of a body (None: not read, e.g. too large); unreadable unless it is
    a JSON object whose `streamId` and `token`, when present, are strings."""
    unreadable = WebhookAsk(kind, None, None, readable=False)
    if body is None:
        return unreadable
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("latin-1")
    try:
        document = json_object(text.encode("utf-8"))
    except TokenError:
        return unreadable
    stream_id = document.get("streamId")
    token = document.get("token")
    if not isinstance(stream_id, str | None) or not isinstance(token, str | None):
        return unreadable
    return WebhookAsk(kind, stream_id or None, token or None)


def status_of_decision(decision: Decision, ask: WebhookAsk) -> int:
    """200 on allow; 400 for a body that could not be read; 503 when authz failed; else
    403 (Ant Media only tells 200 from the rest)."""
    if decision.allowed:
        return 200
    if decision.reason is Reason.MALFORMED and not ask.readable:
        return 400
    if decision.status == 503:
        return 503
    return 403


def _response(
    status: int, document: dict[str, object], extra: tuple[tuple[str, str], ...] = ()
) -> bytes:
    body = json.dumps(document, separators=(",", ":")).encode()
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in extra),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def _answer(decision: Decision, ask: WebhookAsk) -> bytes:
    status = status_of_decision(decision, ask)
    if status == 200:
        return _response(200, {"result": "allow", "reason": decision.reason.value})
    return _response(status, {"error": _ERROR[status], "reason": decision.reason.value})


class _Head:
    """The request line and headers of one request."""

    def __init__(self, data: bytes) -> None:
        lines = data[:-4].split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _RefusedError(400, "bad_request")
        self.method, target, _ = parts
        self.path = target.partition("?")[0]
        self.headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise _RefusedError(400, "bad_request")
            key = name.decode("latin-1").lower()
            self.headers.setdefault(key, []).append(value.strip(b" \t").decode("latin-1"))

    def content_length(self) -> int | None:
        """The body's length, None when it cannot be read as one Content-Length body."""
        if "transfer-encoding" in self.headers:
            return None
        lengths = self.headers.get("content-length", ["0"])
        if len(lengths) != 1 or not lengths[0].isascii() or not lengths[0].isdigit():
            return None
        return int(lengths[0])


class WebhookFront:
    """Ant Media's webhook door on `address`, deciding with `check`, in the running loop."""

    def __init__(self, address: str, check: Check) -> None:
        self.address = address
        self._host, self._port = split_host_port(address)
        self._check = check
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one picked for port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return cast(int, self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve; raises OSError if the address cannot be bound. SO_REUSEPORT
        lets `--workers` processes share the port, like the gRPC one."""
        self._server = await asyncio.start_server(
            self._serve,
            self._host,
            self._port,
            limit=_MAX_HEAD_BYTES,
            backlog=_BACKLOG,
            reuse_port=True,
        )

    async def stop(self, grace: float) -> None:
        """Stop accepting, let requests in progress answer for up to `grace` s, close."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        pending = set(self._connections)
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            if late:
                log.warning("webhook requests still running after the drain grace: closing")
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        body_left = False
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                    reply, body_left = await self._handle(reader, writer)
            except _RefusedError as refused:
                extra = (("allow", refused.allow),) if refused.allow else ()
                reply, body_left = _response(refused.status, {"error": refused.error}, extra), True
            except asyncio.LimitOverrunError:
                reply, body_left = _response(431, {"error": "headers_too_large"}), True
            except TimeoutError:
                reply = _response(408, {"error": "request_timeout"})
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(reply)
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                    await writer.drain()
                    if body_left:
                        await _discard(reader, writer)
        finally:
            writer.close()
            if task is not None:
                self._connections.discard(task)

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[bytes, bool]:
        # The answer, and whether the body was left unread.
        head = _Head(await reader.readuntil(b"\r\n\r\n"))
        kind = PATHS.get(head.path)
        if kind is None:
            raise _RefusedError(404, "not_found")
        if head.method != "POST":
            raise _RefusedError(405, "method_not_allowed", allow="POST")
        length = head.content_length()
        body: bytes | None = None
        if length is not None and length <= MAX_BODY_BYTES:
            if "100-continue" in (v.lower() for v in head.headers.get("expect", ())):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await reader.readexactly(length)
        ask = ask_of(kind, body)
        peer = writer.get_extra_info("peername")
        view = RequestView(
            authorization=None,
            source_ip=peer[0] if isinstance(peer, tuple) else None,
            path=head.path,
            method=head.method,
            webhook=ask,
        )
        try:
            decision = await self._check(view)
        except Exception as error:
            count_failed_check("webhook", error)
            decision = deny(Reason.INTERNAL_ERROR)
        return _answer(decision, ask), body is None


async def _discard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Closing with unread input makes the kernel reset the connection, which can destroy
    # the answer before the client reads it: half-close, then drop what still arrives.
    if writer.can_write_eof():
        writer.write_eof()
    dropped = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_DISCARD_SECONDS):
            while dropped < _DISCARD_BYTES:
                chunk = await reader.read(64 * 1024)
                if not chunk:
                    return
                dropped += len(chunk)
