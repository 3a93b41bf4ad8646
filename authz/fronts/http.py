"""The HTTP front door: Envoy's `http_service` ext_authz request -> RequestView, Decision -> answer.

A thin adapter like the gRPC one (SPEC section 5, "The HTTP front door"), in the process's
asyncio loop. HTTP/1.1 (what envoy-http.yaml speaks) is served by the lean protocol in
`authz.fronts.http1` (httptools); h2c connections and the door behind TLS are served by
granian (RSGI) on a private Unix socket, piped to. Every method and path that arrives is a
Check.

Only Envoy-set headers carry trust: `x-authz-client-ip` (the client address, from
`authorization_request.headers_to_add`), `x-authz-policy` (the route's policy, what
`context_extensions[policy]` is in gRPC mode) and `x-authz-stream` (`play` on a stream
route, `context_extensions[stream]`). The Envoy config must not forward client
`x-authz-*` headers (`allowed_headers`), and `headers_to_add` replaces any it would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.embed import Server

from authz.core.decision import Decision, Reason, deny, status_of
from authz.core.headers import JWT_HEADER_PREFIX, is_header_name, legal_header_value
from authz.core.policy import POLICY_CONTEXT_KEY
from authz.core.request import CLUSTER_AUTHORIZATION_HEADER, RequestView
from authz.core.stream_check import STREAM_CONTEXT_KEY
from authz.fronts.http1 import Http1Door
from authz.fronts.tls_pipe import TlsPipe, pipe_connection
from authz.observability import count_failed_check
from authz.settings.addresses import split_host_port

__all__ = [
    "CLAIM_HEADER_PREFIX",
    "CLIENT_IP_HEADER",
    "HEADER_READ_TIMEOUT_MS",
    "ISS_HEADER",
    "POLICY_HEADER",
    "REASON_HEADER",
    "REMOVE_HEADER",
    "STREAM_HEADER",
    "SUB_HEADER",
    "Answer",
    "Check",
    "Headers",
    "HttpFront",
    "Responder",
    "Scope",
    "answer",
    "request_view",
]

log = logging.getLogger("authz.http")

# A decision now, or (when it must wait, e.g. on a JWKS refetch) an awaitable of one.
Check = Callable[[RequestView], Decision | Awaitable[Decision]]

CLIENT_IP_HEADER = "x-authz-client-ip"
POLICY_HEADER = "x-authz-policy"
STREAM_HEADER = "x-authz-stream"
# Envoy's raw-HTTP ext_authz client strips the headers named here from the upstream request.
REMOVE_HEADER = "x-envoy-auth-headers-to-remove"
# Envoy turns these into dynamic metadata (`dynamic_metadata_from_headers`) for its access
# log; the client and the upstream never see them (allowed_client/upstream_headers).
REASON_HEADER = "x-authz-reason"
SUB_HEADER = "x-authz-sub"
ISS_HEADER = "x-authz-iss"
# Each claim the policy forwards, as x-authz-claim-<claim name, lowercased> (SPEC section 10).
CLAIM_HEADER_PREFIX = "x-authz-claim-"

# Envoy forwards at most its max_request_headers_kb (60 KiB by default) of request headers;
# only the allowed ones reach authz, but they must all fit, or the client would get the
# server's 431 instead of authz's decision (an 8 KiB+ token is a `malformed` 401).
_MAX_HEADER_BYTES = 96 * 1024
# granian's header read timer also runs while a keep-alive connection waits idle for its
# next request, so it is the idle timeout too: longer than Envoy's idle_timeout for the
# cluster (30 s in envoy-http.yaml), so Envoy closes idle connections first and a Check
# never races a server-side close.
HEADER_READ_TIMEOUT_MS = 45_000
_BACKLOG = 1024


_NO_CONTEXT: Mapping[str, str] = MappingProxyType({})
# Envoy-set headers standing for the gRPC door's context_extensions.
_CONTEXT_HEADERS = {POLICY_HEADER: POLICY_CONTEXT_KEY, STREAM_HEADER: STREAM_CONTEXT_KEY}
_VIEW_HEADERS = frozenset(
    {"authorization", "cookie", CLUSTER_AUTHORIZATION_HEADER, CLIENT_IP_HEADER, *_CONTEXT_HEADERS}
)


class Headers(Protocol):
    """The part of granian's RSGI header map the adapter reads."""

    def items(self) -> list[tuple[str, str]]: ...


class Scope(Protocol):
    """The part of granian's RSGI HTTP scope the adapter reads."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query_string(self) -> str: ...
    @property
    def http_version(self) -> str: ...
    @property
    def headers(self) -> Headers: ...


class Responder(Protocol):
    """The part of granian's RSGI HTTP protocol the adapter writes."""

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None: ...
    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...


def request_view(method: str, path: str, query: str, headers: list[tuple[str, str]]) -> RequestView:
    """The RequestView of one Envoy authorization request.

    Repeated values are joined with "," as the gRPC door's header map does (cookies with
    "; ", RFC 6265 section 5.4): for `authorization` that is what the gRPC door decides on;
    a joined `x-authz-client-ip`, `x-authz-policy` or `x-authz-stream` (only a
    misconfigured Envoy sends two) names no address, policy or stream kind, so it is
    refused (ip_not_allowed while the IP filter is on, unknown_policy).
    """
    found: dict[str, list[str]] = {}
    jwt_headers: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key in _VIEW_HEADERS:
            found.setdefault(key, []).append(value)
        elif key.startswith(JWT_HEADER_PREFIX) and key not in jwt_headers:
            jwt_headers.append(key)
    context = {
        context_key: ",".join(found[header])
        for header, context_key in _CONTEXT_HEADERS.items()
        if header in found
    }
    return RequestView(
        authorization=_joined(found, "authorization", ","),
        source_ip=_joined(found, CLIENT_IP_HEADER, ","),
        jwt_headers=tuple(jwt_headers),
        path=f"{path}?{query}" if query else path,
        method=method,
        context=MappingProxyType(context) if context else _NO_CONTEXT,
        cookie=_joined(found, "cookie", "; "),
        cluster_authorization=_joined(found, CLUSTER_AUTHORIZATION_HEADER, ","),
    )


_WANTED_NAMES = frozenset(name.encode() for name in _VIEW_HEADERS)
_JWT_PREFIX = JWT_HEADER_PREFIX.encode()


def wanted_header(name: bytes) -> bool:
    """Whether request_view reads a header of this (raw) name."""
    key = name.lower()
    return key in _WANTED_NAMES or key.startswith(_JWT_PREFIX)


def _joined(found: dict[str, list[str]], key: str, separator: str) -> str | None:
    values = found.get(key)
    return separator.join(values) if values else None


@dataclass(frozen=True, slots=True)
class Answer:
    """The HTTP answer Envoy enforces: status, headers, body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _metadata_headers(decision: Decision) -> list[tuple[str, str]]:
    headers = [(REASON_HEADER, decision.reason.value)]
    if decision.sub is not None and legal_header_value(decision.sub):
        headers.append((SUB_HEADER, decision.sub))
    if decision.iss is not None and legal_header_value(decision.iss):
        headers.append((ISS_HEADER, decision.iss))
    for claim, value in decision.claims:
        name = CLAIM_HEADER_PREFIX + claim.lower()
        if is_header_name(name):
            headers.append((name, value))
    return headers


def answer(decision: Decision) -> Answer:
    """The HTTP answer for `decision`.

    Allow: 200, the headers to set, and `x-envoy-auth-headers-to-remove` naming the
    client-sent x-jwt-* headers (never one that is also set: Envoy would drop it after
    setting). Deny: the SPEC status, headers (content-type, WWW-Authenticate) and body.
    Both carry the x-authz-* metadata headers.
    """
    headers = list(decision.headers_to_set)
    if decision.allowed:
        if decision.headers_to_remove:
            set_names = {name for name, _ in headers}
            remove = [name for name in decision.headers_to_remove if name not in set_names]
            if remove:
                headers.append((REMOVE_HEADER, ",".join(remove)))
        return Answer(200, headers + _metadata_headers(decision), b"")
    return Answer(decision.status, headers + _metadata_headers(decision), decision.body.encode())


# Denials are shared objects (authz.core.decision builds each once): so are their answers.
_DENIAL_ANSWERS: dict[Reason, Answer] = {
    reason: answer(deny(reason)) for reason in Reason if status_of(reason) != 200
}
_INTERNAL_ERROR = _DENIAL_ANSWERS[Reason.INTERNAL_ERROR]
_CONNECTION_CLOSE = ("connection", "close")


def _answer_of(decision: Decision) -> Answer:
    if not decision.allowed and decision is deny(decision.reason):
        return _DENIAL_ANSWERS[decision.reason]
    return answer(decision)


def _wire(reply: Answer, close: bool) -> bytes:
    """The HTTP/1.1 bytes of `reply`; raises ValueError on a header that could split."""
    lines = [f"HTTP/1.1 {reply.status} {_PHRASES[reply.status]}\r\n"]
    for name, value in reply.headers:
        if name not in _CHECKED_NAMES:
            if not is_header_name(name):
                raise ValueError(f"refusing to send header {name!r}")
            _CHECKED_NAMES.add(name)
        lines.append(f"{name}: {value}\r\n")
    values = "".join(lines)
    # One line per header: no value brought its own line break (or a NUL).
    if values.count("\n") != len(lines) or values.count("\r") != len(lines) or "\0" in values:
        raise ValueError("refusing to send a header value with a line break")
    end = f"content-length: {len(reply.body)}\r\nconnection: close\r\n\r\n" if close else (
        f"content-length: {len(reply.body)}\r\n\r\n"
    )
    return (values + end).encode("latin-1") + reply.body


_PHRASES = {status.value: status.phrase for status in HTTPStatus}
# Header names already found legal (the names come from the code and the settings: few).
_CHECKED_NAMES: set[str] = set()
# The shared denials' bytes, with and without `Connection: close`.
_DENIAL_WIRES: dict[Reason, tuple[bytes, bytes]] = {
    reason: (_wire(reply, False), _wire(reply, True)) for reason, reply in _DENIAL_ANSWERS.items()
}


def _wire_of(decision: Decision, close: bool) -> bytes:
    if not decision.allowed and decision is deny(decision.reason):
        return _DENIAL_WIRES[decision.reason][close]
    return _wire(answer(decision), close)


def _failed(error: Exception, close: bool) -> bytes:
    count_failed_check("http", error)
    return _DENIAL_WIRES[Reason.INTERNAL_ERROR][close]


class _App:
    """The RSGI application (granian: h2c, and the door behind TLS): one Check per
    request, fail closed."""

    def __init__(self, check: Check) -> None:
        self._check = check
        # Set while a `--workers` worker hands over: each HTTP/1.1 answer then closes its
        # connection, so the client's next Check opens one to a sibling.
        self.closing = False

    async def __rsgi__(self, scope: Scope, protocol: Responder) -> None:
        try:
            view = request_view(scope.method, scope.path, scope.query_string, scope.headers.items())
            decided = self._check(view)
            reply = _answer_of(decided if isinstance(decided, Decision) else await decided)
        except Exception as error:
            count_failed_check("http", error)
            reply = _INTERNAL_ERROR
        headers = reply.headers
        if self.closing and scope.http_version != "2":
            headers = [*headers, _CONNECTION_CLOSE]
        if reply.body:
            protocol.response_bytes(reply.status, headers, reply.body)
        else:
            protocol.response_empty(reply.status, headers)


class HttpFront:
    """Envoy's HTTP ext_authz door on `address`, deciding with `check`, in the running loop.

    Plaintext: HTTP/1.1 is served by the lean protocol (`authz.fronts.http1`), h2c
    connections are piped to granian on a private Unix socket. With `tls`, the door accepts
    TLS itself (`authz.fronts.tls_pipe`: the context follows certificate reloads) and pipes
    every connection to granian.
    """

    def __init__(self, address: str, check: Check, tls: ssl.SSLContext | None = None) -> None:
        host, port = split_host_port(address)
        self.address = address
        self.port = port
        self._check = check
        # mkdtemp: a folder only this user can enter (0700) holds granian's socket.
        self._folder: str | None = tempfile.mkdtemp(prefix="authz-http-")
        socket_path = str(Path(self._folder) / "door.sock")
        self._pipe_tasks: set[asyncio.Task[None]] = set()
        self._pipe = (
            TlsPipe(host, port, tls, socket_path, _BACKLOG) if tls is not None else None
        )
        self._door = (
            Http1Door(
                host,
                port,
                request_view,
                self._render,
                wanted=wanted_header,
                backlog=_BACKLOG,
                max_header_bytes=_MAX_HEADER_BYTES,
                idle_seconds=HEADER_READ_TIMEOUT_MS / 1000,
                h2=partial(pipe_connection, socket_path, self._pipe_tasks),
            )
            if tls is None
            else None
        )
        self._app = _App(check)
        self._server = Server(
            self._app,
            address=host,
            port=port,
            uds=Path(socket_path),  # granian serves only there
            interface=Interfaces.RSGI,
            # h2c (prior knowledge) or, behind TLS, HTTP/1.1 too.
            http=HTTPModes.auto,
            websockets=False,
            backlog=_BACKLOG,
            http1_settings=HTTP1Settings(
                header_read_timeout=HEADER_READ_TIMEOUT_MS,
                keep_alive=True,
                max_buffer_size=_MAX_HEADER_BYTES,
            ),
            # granian's own lines go through the process's JSON logging (root handler).
            log_dictconfig={"loggers": {"_granian": {"handlers": [], "propagate": True}}},
            log_level=LogLevels.warning,
        )
        self._task: asyncio.Task[None] | None = None

    def _render(self, view: RequestView, close: bool) -> bytes | Awaitable[bytes]:
        try:
            decided = self._check(view)
        except Exception as error:
            return _failed(error, close)
        if isinstance(decided, Decision):
            try:
                return _wire_of(decided, close)
            except Exception as error:
                return _failed(error, close)
        return self._render_later(decided, close)

    async def _render_later(self, decided: Awaitable[Decision], close: bool) -> bytes:
        try:
            return _wire_of(await decided, close)
        except Exception as error:
            return _failed(error, close)

    async def start(self) -> None:
        """Bind and serve; raises OSError if the address cannot be bound."""
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        # granian binds the socket and spawns its worker on the task's first steps.
        for _ in range(3):
            await asyncio.sleep(0)
        if self._task.done():
            error = self._task.exception()
            self._task = None
            # granian raises RuntimeError with a Rust backtrace: keep its first line.
            detail = str(error).splitlines()[0] if str(error) else repr(error)
            raise OSError(f"cannot serve on {self.address}: {detail}") from None
        front = self._door or self._pipe
        assert front is not None
        try:
            await front.start()
        except OSError as error:
            await self.stop(0)
            raise OSError(f"cannot serve on {self.address}: {error.strerror}") from None

    def accept_queued(self) -> int:
        """Accept, now, every connection waiting in the plaintext door's listen queue (a
        handover, right before its listener is swapped out); how many."""
        return self._door.accept_queued() if self._door is not None else 0

    def close_connections(self) -> None:
        """From now on each HTTP/1.1 answer carries `Connection: close` and ends its
        connection (a handover: the client reconnects, to a sibling)."""
        self._app.closing = True
        if self._door is not None:
            self._door.closing = True

    async def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight Checks answer for up to `grace` s, close connections."""
        if self._door is not None:
            await self._door.stop(grace)
        if self._pipe is not None:
            # No new TLS connections; established ones end when granian closes its side.
            self._pipe.close()
        if self._task is None:
            self._remove_folder()
            return
        task, self._task = self._task, None
        self._server.stop()  # type: ignore[no-untyped-call]  # granian leaves it unannotated
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            log.warning("checks still running after the drain grace: closing")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pipe is not None:
            await self._pipe.wait_closed()
        for pipe_task in self._pipe_tasks:
            pipe_task.cancel()
        await asyncio.gather(*self._pipe_tasks, return_exceptions=True)
        self._remove_folder()

    def _remove_folder(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
