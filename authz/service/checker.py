"""The Check service both fronts call: snapshot + clock + core, unknown-kid refresh, metrics, logs.

This is the one place a decision meets the outside world: it reads the clock and the
current key snapshot, may wait for a JWKS refresh, counts and logs. Fail closed: any
exception while deciding becomes the internal_error denial. `CheckThreads` is the thread
pool the gRPC server runs `check_blocking` on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Generator, Iterator
from typing import Any, NamedTuple, Protocol

from authz.core.decide import decide
from authz.core.decision import Decision, Reason, deny
from authz.core.request import RequestView
from authz.core.stream_check import StreamKeys
from authz.core.token_cache import TokenCache
from authz.keys.snapshot import STREAM_ALGS, KeySnapshot
from authz.keys.store import KeyStore
from authz.observability import count_check, count_token_cache_lookup, log_internal_error
from authz.settings.model import Settings

__all__ = [
    "ANSWER_MARGIN_SECONDS",
    "MAX_KID_WAITERS",
    "UNKNOWN_KID_WAIT_SECONDS",
    "CheckThreads",
    "Checker",
    "SnapshotSource",
]

log = logging.getLogger("authz.check")

# How long a Check may wait for a kid-triggered JWKS refresh: inside Envoy's ext_authz
# timeout (envoy.yaml sets 0.5 s), leaving room for the answer. A gRPC Check waits no
# longer than its own deadline (Envoy sends its timeout) less ANSWER_MARGIN_SECONDS either.
UNKNOWN_KID_WAIT_SECONDS = 0.35
ANSWER_MARGIN_SECONDS = 0.15

# How many `check_blocking` calls may wait for that refresh at once. Every Check that
# arrives during one refresh waits for it (SPEC section 4), and waiting costs other Checks
# nothing: a waiting call lends its place among the server's running threads to a spare
# thread (CheckThreads). This bounds what a flood of made-up kids, or a slow JWKS server,
# can take: that many spare threads, and that many of the server's MAX_CONCURRENT_RPCS
# (512) slots for ~0.35 s each. Past it an unknown kid is answered at once (unknown_kid);
# the refresh still runs and later Checks see its keys.
MAX_KID_WAITERS = 64


class SnapshotSource(Protocol):
    """Anything holding the current KeySnapshot in one attribute."""

    @property
    def snapshot(self) -> KeySnapshot: ...


class _Wait(NamedTuple):
    # How long a Check may wait for the unknown-kid refetch, and of which identity
    # provider's keys (None: the single JWKS).
    seconds: float
    issuer: str | None


def _refetch(
    refresh: Callable[..., Coroutine[Any, Any, None]], seconds: float, issuer: str | None
) -> Coroutine[Any, Any, None]:
    # A refresh for the single JWKS takes the timeout only, one of several sources the
    # issuer too (authz.keys.issuers.KeySources.refresh_unknown_kid).
    return refresh(seconds) if issuer is None else refresh(seconds, issuer)


class Checker:
    """Decides RequestViews against the live key material; shared by every front door.

    `refresh_unknown_kid(timeout)` refetches the JWKS on an unknown kid; with identity
    providers it is called `(timeout, issuer)` for the one whose keys lack the kid.
    """

    def __init__(
        self,
        settings: Settings,
        keys: SnapshotSource,
        refresh_unknown_kid: Callable[..., Coroutine[Any, Any, None]] | None = None,
        clock: Callable[[], float] = time.time,
        stream_keys: SnapshotSource | None = None,
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._refresh = refresh_unknown_kid
        self._clock = clock
        # The stream secrets (reloaded by their own watcher when `stream_keys` is a store)
        # and the cluster secret (fixed), apart from the REST keys.
        self._stream_source = stream_keys or KeyStore.of_stream_secrets(settings)
        self._cluster = (
            KeySnapshot.build(
                (settings.cluster_secret.encode(),), hmac_algs=STREAM_ALGS, purpose="cluster"
            )
            if settings.cluster_secret
            else None
        )
        self._streams = StreamKeys(self._stream_source.snapshot, self._cluster)
        # Claims beyond sub/iss/aud and the times are read only by required_claims and
        # forward_claims rules and by the stream rules (streamId, type); without any, cache
        # entries need not keep them.
        policies = (settings.default_policy, *settings.policies.values())
        keep_claims = (
            any(p.required_claims or p.forward_claims for p in policies)
            or settings.play_jwt_enabled
            or settings.publish_jwt_enabled
        )
        self._cache = TokenCache(
            settings.token_cache_size, keep_claims, on_lookup=count_token_cache_lookup
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kid_waiters = threading.BoundedSemaphore(MAX_KID_WAITERS)

    def decide_now(self, view: RequestView) -> Decision:
        """Decide without waiting on anything (may answer unknown_kid)."""
        streams = self._streams
        if streams.play is not self._stream_source.snapshot:  # the stream secrets reloaded
            streams = self._streams = StreamKeys(self._stream_source.snapshot, self._cluster)
        return decide(
            view, self._keys.snapshot, self._settings, self._clock(), self._cache, streams
        )

    def refresh_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run kid-triggered JWKS refreshes of `check_blocking` on `loop` (the key sources')."""
        self._loop = loop

    async def check(self, view: RequestView, transport: str = "http") -> Decision:
        """Decide one request arriving through `transport`, in the event loop: an unknown
        kid waits (without blocking the loop) for one JWKS refresh; never raises."""
        decided = self.check_soon(view, transport)
        return decided if isinstance(decided, Decision) else await decided

    def check_soon(
        self, view: RequestView, transport: str = "http"
    ) -> Decision | Coroutine[Any, Any, Decision]:
        """`check` without a coroutine when nothing needs to wait (nearly every request):
        the decision, or a coroutine that waits for the JWKS refresh and decides."""
        steps = self._steps(view, transport)
        wait = _first(steps)
        if isinstance(wait, Decision):
            return wait
        return self._after_refresh(steps, wait)

    async def _after_refresh(
        self, steps: Generator[_Wait, None, Decision], wait: _Wait
    ) -> Decision:
        refresh = self._refresh
        try:
            if refresh is not None:  # always: _steps waits only when there is one
                await _refetch(refresh, wait.seconds, wait.issuer)
        except Exception as error:
            return _resume(steps, error)
        return _resume(steps)

    def check_blocking(
        self,
        view: RequestView,
        time_left: Callable[[], float | None] | None = None,
        transport: str = "grpc",
    ) -> Decision:
        """`check` for a server thread: an unknown kid waits on the refresh in `refresh_on`'s
        loop, blocking only this thread (on CheckThreads, a spare thread runs other Checks
        meanwhile), at most until `time_left()` (seconds to the call's deadline) less
        ANSWER_MARGIN_SECONDS; never raises."""
        steps = self._steps(view, transport)
        wait = _first(steps)
        if isinstance(wait, Decision):
            return wait
        try:
            self._wait_blocking(min(wait.seconds, _deadline_wait(time_left)), wait.issuer)
        except Exception as error:
            return _resume(steps, error)
        return _resume(steps)

    def _steps(self, view: RequestView, transport: str) -> Generator[_Wait, None, Decision]:
        """The one decide-with-refresh path of both doors: decide; if the token's kid is
        unknown and a JWKS can be refetched, yield the longest wait for that refetch (the
        caller waits its own way, then resumes, or throws what waiting raised) and decide
        again; any exception is the internal_error denial; count and log the outcome."""
        started = time.perf_counter()
        try:
            decision = self.decide_now(view)
            if decision.reason is Reason.UNKNOWN_KID and self._refresh is not None:
                yield _Wait(UNKNOWN_KID_WAIT_SECONDS, decision.key_source)
                decision = self.decide_now(view)
        except Exception as error:
            log_internal_error(transport, error)
            decision = deny(Reason.INTERNAL_ERROR)
        count_check(transport, decision, time.perf_counter() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "decision",
                extra={
                    "transport": transport,
                    "decision": "allow" if decision.allowed else "deny",
                    "reason": decision.reason.value,
                    "status": decision.status,
                    # The query string may carry play tokens (`?token=`): never logged.
                    "path": view.path.partition("?")[0],
                    "method": view.method,
                    "source_ip": view.source_ip,
                    "sub": decision.sub,
                },
            )
        return decision

    def _wait_blocking(self, wait: float, issuer: str | None) -> None:
        # From a server thread: run the refresh in the key sources' loop and wait for it,
        # lending this thread's place to a spare; past MAX_KID_WAITERS waiters, or with no
        # time left, start (or join) the refresh without waiting for it.
        loop, refresh = self._loop, self._refresh
        if loop is None or refresh is None:
            return
        if wait <= 0 or not self._kid_waiters.acquire(blocking=False):
            asyncio.run_coroutine_threadsafe(_refetch(refresh, 0.0, issuer), loop)
            return
        try:
            with _lend_thread():
                running = asyncio.run_coroutine_threadsafe(_refetch(refresh, wait, issuer), loop)
                # refresh_unknown_kid gives up after its timeout itself; the margin only
                # covers the hop to the loop and back.
                with contextlib.suppress(concurrent.futures.TimeoutError):
                    running.result(wait + 0.05)
        finally:
            self._kid_waiters.release()


def _first(steps: Generator[_Wait, None, Decision]) -> Decision | _Wait:
    # The decision, or how long `steps` may wait for a refresh before it decides again.
    try:
        return next(steps)
    except StopIteration as done:
        decision: Decision = done.value
        return decision


def _resume(steps: Generator[_Wait, None, Decision], error: Exception | None = None) -> Decision:
    # Resume `steps` after its wait (or with what the wait raised): its decision.
    try:
        if error is None:
            steps.send(None)
        else:
            steps.throw(error)
    except StopIteration as done:
        decision: Decision = done.value
        return decision
    raise RuntimeError("the decision steps wait once")


def _deadline_wait(time_left: Callable[[], float | None] | None) -> float:
    # How long a gRPC Check may wait and still answer inside its deadline.
    left = time_left() if time_left is not None else None
    return UNKNOWN_KID_WAIT_SECONDS if left is None else left - ANSWER_MARGIN_SECONDS


_Work = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]

# The CheckThreads a thread serves, set in each of its threads.
_this_thread = threading.local()


def _lend_thread() -> contextlib.AbstractContextManager[None]:
    pool: CheckThreads | None = getattr(_this_thread, "pool", None)
    return pool.lent() if pool is not None else contextlib.nullcontext()


class CheckThreads(concurrent.futures.Executor):
    """The gRPC server's thread pool: `size` threads run calls, like a ThreadPoolExecutor of
    `size`, except that a call waiting for a kid-triggered JWKS refresh (`lent`) lends its
    place to a spare thread for as long as it waits. So waiting Checks never hold the
    threads other Checks are answered on, and once the waits end the spares do too: no more
    than `size` threads run Checks otherwise (more only fight over the GIL)."""

    def __init__(self, size: int, name: str = "check") -> None:
        self._size = size
        self._name = name
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._waiting = 0
        self._started = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any,
               ) -> concurrent.futures.Future[Any]:
        """Run `fn(*args, **kwargs)` on one of the threads."""
        if self._closed:
            raise RuntimeError("cannot submit after shutdown")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._work.put((future, fn, args, kwargs))
        if len(self._threads) - self._waiting < self._size:  # until the first `size` run
            self._grow()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the threads once the calls queued before have run (grpcio never calls it;
        queued calls are not cancelled)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._work.put(None)
        if wait:
            for thread in threads:
                thread.join()

    @contextlib.contextmanager
    def lent(self) -> Iterator[None]:
        """While inside, the calling thread (one of these) does not count as running."""
        with self._lock:
            self._waiting += 1
        try:
            self._grow()
            yield
        finally:
            with self._lock:
                self._waiting -= 1

    def _grow(self) -> None:
        with self._lock:
            if self._closed or len(self._threads) - self._waiting >= self._size:
                return
            thread = threading.Thread(target=self._serve, daemon=True,
                                      name=f"{self._name}_{self._started}")
            self._started += 1
            self._threads.add(thread)
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._threads.discard(thread)
            raise

    def _retire(self) -> bool:
        with self._lock:
            if len(self._threads) - self._waiting <= self._size:
                return False
            self._threads.discard(threading.current_thread())
            return True

    def _serve(self) -> None:
        _this_thread.pool = self
        while True:
            work = self._work.get()
            if work is None:
                return
            future, fn, args, kwargs = work
            del work
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as error:
                    future.set_exception(error)
                    del error
                else:
                    future.set_result(result)
                    del result
            del future, fn, args, kwargs
            # A spare whose waiting thread is back: one of the threads ends.
            if len(self._threads) - self._waiting > self._size and self._retire():
                return
