"""The JWKS refresher: fetches the key set at start, refreshes it in the background and on
an unknown kid, and swaps each good set into the KeyStore.

Refresh behaviour (all per process):
- First fetch at `start()`; until one succeeds the store has no key set (Checks that need
  it answer 503 jwks_unavailable, /readyz is 503) and failures are retried with backoff.
- After a success the next refresh is due after the configured period P
  (AUTHZ_JWKS_REFRESH_SECONDS, any value >= 1 s as configured). `Cache-Control: max-age=M`
  (or `no-cache`/`no-store`, read as M = 0) may bring it forward to M, but never below
  MAX_AGE_FLOOR_SECONDS (nor above P): P stays the longest a removed key keeps verifying.
  Jitter: the delay is drawn from [85 %, 100 %] of that, so replicas spread out and P is
  never exceeded.
- After a failure: retry after 1, 2, 4, ... s, capped at min(P, 60 s), each drawn from
  [50 %, 100 %] of the step. The last good key set stays in use meanwhile.
- A fetch fails on: connection or TLS error, non-200 status (redirects are followed, to
  http(s) only and never from https to http), no response within IO_TIMEOUT_SECONDS per
  socket operation or TOTAL_TIMEOUT_SECONDS overall, a body over 1 MiB, a body that is
  not a JWKS, a non-empty `keys` array with no usable key, or more than MAX_JWKS_KEYS
  usable keys (also counted in authz_jwks_too_many_keys_total). An explicitly empty
  `keys` array is a valid answer: the issuer has withdrawn every key.
- The total timeout covers the whole fetch inside its thread, not only the wait for it:
  every socket operation (connect, TLS handshake, request, status line, headers, body,
  each redirect) waits at most min(IO_TIMEOUT_SECONDS, time left), so a server sending one
  byte every few seconds cannot keep a fetch thread alive past it. Name resolution is the
  one step it cannot cut short (getaddrinfo blocks for the resolver's own timeouts).
- Unknown kid: `refresh_unknown_kid` starts one fetch that concurrent callers share, at
  most once per KID_REFRESH_INTERVAL_SECONDS (the first one is always allowed).
- Fetches that finish out of order never install an older answer over a newer one.
- Identity providers (SPEC section 10): one source per issuer, each with all of the above
  on its own, installing into that issuer's part of the snapshot. With `discovery`, each
  fetch first reads `<issuer>/.well-known/openid-configuration` (OpenID Connect Discovery
  1.0 section 4: the issuer's trailing slash removed before the path is appended), uses
  it only when its `issuer` is exactly the configured one (section 4.3, RFC 8414 section
  3.3: no trailing-slash or case leniency), then fetches its `jwks_uri` (never http when
  the document came over https), both inside the one total timeout.

HTTP is stdlib urllib run in a daemon thread: one GET every few minutes needs no new
dependency, and a daemon thread (unlike asyncio.to_thread) cannot hold up process exit
when a fetch hangs. TLS is verified against the system trust store, or only against
AUTHZ_JWKS_CA_FILE when that is set; proxies come from the usual *_proxy variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException, HTTPMessage, HTTPResponse
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

from authz import __version__
from authz.errors import AuthzError
from authz.keys.jwk import SKIP_REASONS, JWKSError, JWKSTooManyKeys, SkippedKey, read_jwks
from authz.keys.snapshot import PublicKey
from authz.keys.store import KeyStore
from authz.observability import (
    JWKS_CONSECUTIVE_FAILURES,
    JWKS_KEYS,
    JWKS_KEYS_SKIPPED,
    JWKS_LAST_SUCCESS,
    JWKS_REFRESHES,
    JWKS_TOO_MANY_KEYS,
)

__all__ = [
    "BACKOFF_CAP_SECONDS",
    "BACKOFF_FIRST_SECONDS",
    "DISCOVERY_PATH",
    "IO_TIMEOUT_SECONDS",
    "KID_REFRESH_INTERVAL_SECONDS",
    "MAX_AGE_FLOOR_SECONDS",
    "MAX_BODY_BYTES",
    "TOTAL_TIMEOUT_SECONDS",
    "JWKSFetchError",
    "JWKSSource",
    "discovery_url",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
IO_TIMEOUT_SECONDS = 5.0
TOTAL_TIMEOUT_SECONDS = 10.0
KID_REFRESH_INTERVAL_SECONDS = 30.0
MAX_AGE_FLOOR_SECONDS = 30.0
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
_READ_CHUNK = 64 * 1024
DISCOVERY_PATH = "/.well-known/openid-configuration"

_T = TypeVar("_T")


class JWKSFetchError(AuthzError):
    """One fetch did not produce a usable key set; the message is safe to log."""


@dataclass(frozen=True, slots=True)
class _Answer:
    keys: tuple[PublicKey, ...]
    skipped: tuple[SkippedKey, ...]
    max_age: float | None


class _NoDowngradeRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
        headers: HTTPMessage, newurl: str,
    ) -> urllib.request.Request | None:
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            # urllib itself would follow ftp://, outside the fetch's deadlines.
            raise JWKSFetchError(f"HTTP {code} redirect to a non-HTTP URL refused")
        if req.full_url.lower().startswith("https:") and scheme != "https":
            raise JWKSFetchError(f"HTTP {code} redirect from https to a non-https URL refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass(frozen=True, slots=True)
class _Budget:
    deadline: float  # time.monotonic()
    io_timeout: float

    def timeout(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the fetch's total timeout ran out")
        return min(self.io_timeout, left)


# The budget of the fetch running in this thread (each fetch has a thread of its own).
_budgets = threading.local()


def _arm(sock: socket.socket) -> None:
    # Before each blocking socket operation of a fetch: wait at most min(io, time left).
    budget: _Budget | None = getattr(_budgets, "current", None)
    if budget is not None:
        sock.settimeout(budget.timeout())


class _BudgetSocket(socket.socket):
    # makefile() reads through recv_into; http.client sends through sendall.
    def connect(self, address: Any) -> None:
        _arm(self)
        super().connect(address)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        _arm(self)
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        _arm(self)
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        _arm(self)
        return super().send(data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        _arm(self)
        super().sendall(data, flags)


class _BudgetSSLSocket(ssl.SSLSocket):
    # wrap_socket() makes this from the _BudgetSocket's descriptor; recv/recv_into read
    # through read(), sendall() through send().
    def do_handshake(self, block: bool = False) -> None:
        _arm(self)
        super().do_handshake(block)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        _arm(self)
        return super().read(len, buffer)

    def send(self, data: Any, flags: int = 0) -> int:
        _arm(self)
        return super().send(data, flags)


def _budget_connection(
    address: tuple[str, int], timeout: float | None, source_address: Any = None
) -> socket.socket:
    """socket.create_connection, with a _BudgetSocket for each address tried."""
    host, port = address
    error: OSError = OSError("no address to connect to")
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = _BudgetSocket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
        else:
            return sock
    raise error


class _BudgetHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _budget_connection


class _BudgetHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _budget_connection


class _BudgetHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> HTTPResponse:
        return self.do_open(_BudgetHTTPConnection, req)


class _BudgetHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, ca_file: str | None, eager: bool) -> None:
        super().__init__()
        self._ca_file = ca_file
        # Built once: loading a trust store costs tens of ms, too much per kid refresh.
        # For a plain-http URL only when a redirect leads to https.
        self._tls = self._new_context() if eager else None

    def _new_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self._ca_file)
        context.sslsocket_class = _BudgetSSLSocket
        return context

    def https_open(self, req: urllib.request.Request) -> HTTPResponse:
        if self._tls is None:
            self._tls = self._new_context()
        return self.do_open(_BudgetHTTPSConnection, req, context=self._tls)


def discovery_url(issuer: str) -> str:
    """Where an issuer's OpenID Provider metadata is (OpenID Connect Discovery 1.0 section
    4): `https://a.example/` and `https://a.example` both give
    `https://a.example/.well-known/openid-configuration`."""
    return issuer.rstrip("/") + DISCOVERY_PATH


class JWKSSource:
    """Keeps `store` supplied with the key set at `url`; see the module docstring.

    `issuer`: the identity provider whose part of the snapshot this source fills (None:
    the single JWKS); `discovery`: `url` is found through that issuer's discovery
    document. `label` is the `issuer` label of the JWKS metrics."""

    def __init__(
        self,
        url: str,
        store: KeyStore,
        *,
        refresh_seconds: float,
        issuer: str | None = None,
        discovery: bool = False,
        label: str | None = None,
        ca_file: str | None = None,
        io_timeout: float = IO_TIMEOUT_SECONDS,
        total_timeout: float = TOTAL_TIMEOUT_SECONDS,
        kid_refresh_interval: float = KID_REFRESH_INTERVAL_SECONDS,
        max_age_floor: float = MAX_AGE_FLOOR_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuer = issuer
        self._discovery = discovery_url(issuer) if discovery and issuer is not None else None
        self._url = url
        self._shown_url = _shown(self._discovery or url)
        self._store = store
        name = label if label is not None else (issuer or "")
        self._log_issuer = name
        self._refresh_success = JWKS_REFRESHES.labels(issuer=name, result="success")
        self._refresh_failure = JWKS_REFRESHES.labels(issuer=name, result="failure")
        self._keys_gauge = JWKS_KEYS.labels(issuer=name)
        self._last_success = JWKS_LAST_SUCCESS.labels(issuer=name)
        self._consecutive = JWKS_CONSECUTIVE_FAILURES.labels(issuer=name)
        self._too_many = JWKS_TOO_MANY_KEYS.labels(issuer=name)
        self._skipped_gauges = {
            why: JWKS_KEYS_SKIPPED.labels(issuer=name, reason=why) for why in SKIP_REASONS
        }
        # Every series exists from the first scrape, so "no success yet" is visible.
        self._refresh_success.inc(0)
        self._refresh_failure.inc(0)
        self._consecutive.set(0)
        self._period = refresh_seconds
        self._io_timeout = io_timeout
        self._total_timeout = total_timeout
        self._kid_interval = kid_refresh_interval
        self._max_age_floor = max_age_floor
        self._clock = clock
        https = ca_file is not None or (self._discovery or url).lower().startswith("https:")
        self._opener = urllib.request.build_opener(
            _NoDowngradeRedirect(), _BudgetHTTPHandler(), _BudgetHTTPSHandler(ca_file, https)
        )
        self._failures = 0
        self._started_seq = 0
        self._installed_seq = 0
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._kid_task: asyncio.Task[_Answer | None] | None = None
        self._last_kid_refresh: float | None = None
        self._skipped: tuple[SkippedKey, ...] = ()

    @property
    def ready(self) -> bool:
        """True once a key set has been loaded (it stays loaded: failures keep the old one)."""
        snapshot = self._store.snapshot
        if self._issuer is None:
            return snapshot.jwks_loaded
        provider = snapshot.issuers.get(self._issuer)
        return provider is not None and provider.loaded

    def start(self) -> None:
        """Begin fetching in the running event loop: the first fetch, then the refresh cycle."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="jwks-refresh")

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the first key set; True when it is loaded."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._loaded.wait()
        return self.ready

    async def stop(self) -> None:
        """Stop refreshing. A fetch in flight is abandoned (its thread ends on its timeout)."""
        tasks = [t for t in (self._task, self._kid_task) if t is not None]
        self._task = self._kid_task = None
        for task in tasks:
            task.cancel()
        # asyncio.wait, not `await task` under suppress(CancelledError): that would also
        # swallow a cancellation of the caller itself.
        if tasks:
            await asyncio.wait(tasks)

    async def refresh_unknown_kid(self, timeout: float) -> None:
        """Refetch now because a token named an unknown kid, waiting at most `timeout` s.

        Concurrent callers share one fetch; a new fetch starts at most once per
        kid-refresh interval, otherwise this returns at once. Never raises on failure:
        the caller decides again against whatever key set is current afterwards.
        """
        task = self._kid_task
        if task is None or task.done():
            now = self._clock()
            last = self._last_kid_refresh
            if last is not None and now - last < self._kid_interval:
                return
            self._last_kid_refresh = now
            task = asyncio.get_running_loop().create_task(self._refresh("unknown_kid"))
            self._kid_task = task
        # shield: a caller giving up (its deadline) must not cancel the fetch others share.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)

    async def _run(self) -> None:
        while True:
            answer = await self._refresh("scheduled")
            if answer is not None:
                delay = self._next_refresh_delay(answer.max_age)
            else:
                step = BACKOFF_FIRST_SECONDS * 2 ** min(self._failures - 1, 16)
                delay = min(step, BACKOFF_CAP_SECONDS, self._period) * random.uniform(0.5, 1.0)
            await asyncio.sleep(delay)

    def _next_refresh_delay(self, max_age: float | None) -> float:
        interval = self._period
        if max_age is not None:
            interval = min(interval, max(max_age, self._max_age_floor))
        return interval * random.uniform(0.85, 1.0)

    async def _refresh(self, trigger: str) -> _Answer | None:
        self._started_seq += 1
        seq = self._started_seq
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # (stop) that races with the fetch finishing, and the refresh loop would go on.
            async with asyncio.timeout(self._total_timeout):
                answer = await _in_daemon_thread(self._fetch)
        except Exception as exc:
            # Any failure, expected or not, must leave the refresh cycle running.
            self._failures += 1
            self._refresh_failure.inc()
            self._consecutive.set(self._failures)
            if isinstance(exc, JWKSFetchError):
                error = str(exc)
            elif isinstance(exc, TimeoutError):
                error = f"no complete answer within {self._total_timeout} s"
            else:
                error = _summary(exc)
            log.warning(
                "JWKS fetch failed; keeping the last good key set",
                extra={"url": self._shown_url, "issuer": self._log_issuer, "trigger": trigger,
                       "error": error, "consecutive_failures": self._failures,
                       "loaded": self.ready},
            )
            return None
        self._failures = 0
        self._refresh_success.inc()
        self._consecutive.set(0)
        self._last_success.set(time.time())
        if seq > self._installed_seq:
            self._installed_seq = seq
            was_ready = self.ready
            before = self._current_keys()
            if self._issuer is None:
                self._store.set_public_keys(answer.keys)
            else:
                self._store.set_issuer_keys(self._issuer, answer.keys)
            self._keys_gauge.set(len(answer.keys))
            for why, gauge in self._skipped_gauges.items():
                gauge.set(sum(s.reason == why for s in answer.skipped))
            self._loaded.set()
            if (
                not was_ready
                or [k.ident for k in before] != [k.ident for k in answer.keys]
                or answer.skipped != self._skipped
            ):
                self._log_loaded(trigger, answer)
            self._skipped = answer.skipped
        return answer

    def _current_keys(self) -> tuple[PublicKey, ...]:
        snapshot = self._store.snapshot
        if self._issuer is None:
            return snapshot.public_keys
        provider = snapshot.issuers.get(self._issuer)
        return provider.public_keys if provider is not None else ()

    def _log_loaded(self, trigger: str, answer: _Answer) -> None:
        # Only when the set changed: the same document is re-read every refresh.
        log.info("JWKS key set loaded",
                 extra={"url": self._shown_url, "issuer": self._log_issuer, "trigger": trigger,
                        "keys": len(answer.keys),
                        "skipped": len(answer.skipped),
                        "kids": [k.kid for k in answer.keys[:20]]})
        for skip in answer.skipped:
            # A skipped key's tokens answer unknown_kid: say which and why (never its
            # material: the entry's kid and kty only).
            log.warning("JWKS key skipped",
                        extra={"url": self._shown_url, "index": skip.index, "kid": skip.kid,
                               "kty": skip.kty, "reason": skip.reason, "why": skip.why})
        if not answer.keys:
            log.warning("JWKS key set is empty: no RS/PS/ES/EdDSA token can verify",
                        extra={"url": self._shown_url})

    def _fetch(self) -> _Answer:
        # Runs in a worker thread: blocking I/O, no event-loop state touched.
        _budgets.current = _Budget(time.monotonic() + self._total_timeout, self._io_timeout)
        try:
            url = self._url
            if self._discovery is not None:
                document, _ = self._get(self._discovery)
                url = _jwks_uri(document, self._issuer or "", self._discovery)
            body, max_age = self._get(url)
        finally:
            _budgets.current = None
        try:
            key_set = read_jwks(body)
        except JWKSTooManyKeys as exc:
            self._too_many.inc()
            raise JWKSFetchError(f"key set refused: {exc}") from None
        except JWKSError as exc:
            raise JWKSFetchError(f"not a usable JWKS: {exc}") from None
        return _Answer(key_set.keys, key_set.skipped, max_age)

    def _get(self, url: str) -> tuple[bytes, float | None]:
        # One GET inside the fetch's budget: the body (capped) and its Cache-Control max-age.
        request = urllib.request.Request(
            url, headers={"Accept": "application/json", "User-Agent": f"authz/{__version__}"},
        )
        try:
            response: HTTPResponse = self._opener.open(request, timeout=self._io_timeout)
            with response:
                if response.status != 200:
                    raise JWKSFetchError(f"HTTP {response.status}")
                body = _read_capped(response)
                max_age = _max_age(response.headers.get_all("Cache-Control") or [])
        except urllib.error.HTTPError as exc:
            exc.close()
            raise JWKSFetchError(f"HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason if isinstance(exc.reason, OSError) else exc
            raise JWKSFetchError(f"cannot fetch: {_summary(reason)}") from None
        except (OSError, HTTPException, ValueError) as exc:
            # OSError covers socket timeouts and TLS errors; ValueError a bad URL or header.
            raise JWKSFetchError(f"cannot fetch: {_summary(exc)}") from None
        return body, max_age


def _jwks_uri(document: bytes, issuer: str, where: str) -> str:
    """The `jwks_uri` of an OpenID Provider metadata document, once its `issuer` is exactly
    `issuer`; JWKSFetchError otherwise (the message never quotes what the server sent)."""
    try:
        metadata = json.loads(document.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise JWKSFetchError("discovery document is not JSON") from None
    if not isinstance(metadata, dict):
        raise JWKSFetchError("discovery document is not a JSON object")
    if metadata.get("issuer") != issuer:
        # RFC 8414 3.3, OpenID Connect Discovery 4.3: a document naming another issuer
        # (a trailing slash more or less included) may be an attacker's; never used.
        raise JWKSFetchError("discovery document names another issuer than the configured one")
    uri = metadata.get("jwks_uri")
    if not isinstance(uri, str) or not uri:
        raise JWKSFetchError("discovery document has no jwks_uri")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise JWKSFetchError("discovery document's jwks_uri is not an http(s) URL")
    if where.lower().startswith("https:") and scheme != "https":
        raise JWKSFetchError("discovery document over https names a non-https jwks_uri")
    return uri


def _read_capped(response: HTTPResponse) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > MAX_BODY_BYTES:
        raise JWKSFetchError(f"body over {MAX_BODY_BYTES} bytes (Content-Length)")
    chunks: list[bytes] = []
    size = 0
    while True:
        # read1 returns after one socket read: the cap is checked as the body arrives.
        chunk = response.read1(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise JWKSFetchError(f"body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)


def _max_age(cache_control: list[str]) -> float | None:
    """Seconds from `Cache-Control` (no-cache/no-store count as 0); None when absent."""
    max_age: float | None = None
    for header in cache_control:
        for directive in header.split(","):
            name, _, value = directive.strip().partition("=")
            name = name.strip().lower()
            if name in ("no-cache", "no-store"):
                return 0.0
            value = value.strip().strip('"')
            if name == "max-age" and value.isdigit():
                max_age = float(value) if max_age is None else min(max_age, float(value))
    return max_age


def _summary(error: BaseException) -> str:
    """A failure as logged: the exception's class, and for OS and TLS errors the system's
    own short text. Never str(error): urllib's and http.client's messages quote the URL
    (userinfo and query included) or whatever the server sent."""
    detail: str | None = None
    if isinstance(error, ssl.SSLError):
        detail = getattr(error, "verify_message", None) or error.reason
    elif isinstance(error, TimeoutError):
        detail = "timed out"
    elif isinstance(error, OSError):
        detail = error.strerror  # strerror()/gai_strerror() text; None for a free message
    name = type(error).__name__
    return f"{name}: {detail}" if detail else name


def _shown(url: str) -> str:
    # Logged form of the URL: no userinfo, query or fragment (they may carry credentials).
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def _in_daemon_thread(fn: Callable[[], _T]) -> _T:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    # Both check done(): the awaiting side may have given up (timeout, stop).
    def set_result(result: _T) -> None:
        if not future.done():
            future.set_result(result)

    def set_error(error: Exception) -> None:
        if not future.done():
            future.set_exception(error)

    def work() -> None:
        deliver: Callable[[], None]
        try:
            result = fn()
        except Exception as exc:
            deliver = functools.partial(set_error, exc)
        else:
            deliver = functools.partial(set_result, result)
        # The loop may have closed while we fetched; then nobody is waiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver)

    threading.Thread(target=work, name="authz-jwks-fetch", daemon=True).start()
    return await future
