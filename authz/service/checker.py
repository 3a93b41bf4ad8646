"""The Check service both fronts call: snapshot + clock + core, unknown-kid refresh, metrics, logs.

This is the one place a decision meets the outside world: it reads the clock and the
current key snapshot, may wait for a JWKS refresh, counts and logs. Fail closed: any
exception while deciding becomes the internal_error denial.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from authz.core.decide import decide
from authz.core.decision import Decision, Reason, deny
from authz.core.request import RequestView
from authz.core.token_cache import TokenCache
from authz.keys.snapshot import KeySnapshot
from authz.observability import CHECK_DURATION, CHECKS_BY_REASON
from authz.settings.model import Settings

log = logging.getLogger("authz.check")

# How long a Check may wait for a kid-triggered JWKS refresh: inside Envoy's ext_authz
# timeout (envoy.yaml sets 0.5 s), leaving room for the answer.
UNKNOWN_KID_WAIT_SECONDS = 0.35

# How many `check_blocking` calls may wait for that refresh at once. Each waiting call holds
# a server thread; past this number an unknown kid is answered at once (unknown_kid), so
# tokens with made-up kids, or a slow JWKS server, can never park every thread and stall
# all Checks. The refresh itself still runs and later Checks see its keys.
MAX_KID_WAITERS = 2


class SnapshotSource(Protocol):
    """Anything holding the current KeySnapshot in one attribute."""

    @property
    def snapshot(self) -> KeySnapshot: ...


class Checker:
    """Decides RequestViews against the live key material; shared by the gRPC and HTTP fronts."""

    def __init__(
        self,
        settings: Settings,
        keys: SnapshotSource,
        refresh_unknown_kid: Callable[[float], Coroutine[Any, Any, None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._refresh = refresh_unknown_kid
        self._clock = clock
        # Claims beyond sub/iss/aud and the times are read only by required_claims and
        # forward_claims rules; without any, cache entries need not keep them.
        policies = (settings.default_policy, *settings.policies.values())
        keep_claims = any(p.required_claims or p.forward_claims for p in policies)
        self._cache = TokenCache(settings.token_cache_size, keep_claims)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kid_waiters = threading.BoundedSemaphore(MAX_KID_WAITERS)

    def decide_now(self, view: RequestView) -> Decision:
        """Decide without waiting on anything (may answer unknown_kid)."""
        return decide(view, self._keys.snapshot, self._settings, self._clock(), self._cache)

    def refresh_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run kid-triggered JWKS refreshes of `check_blocking` on `loop` (the key sources')."""
        self._loop = loop

    async def check(self, view: RequestView) -> Decision:
        """Decide one request, refreshing the JWKS once for an unknown kid; never raises."""
        started = time.perf_counter()
        try:
            decision = self.decide_now(view)
            if decision.reason is Reason.UNKNOWN_KID and self._refresh is not None:
                await self._refresh(UNKNOWN_KID_WAIT_SECONDS)
                decision = self.decide_now(view)
        except Exception:
            log.exception("internal error while deciding")
            decision = deny(Reason.INTERNAL_ERROR)
        return self._record(view, decision, started)

    def check_blocking(self, view: RequestView) -> Decision:
        """`check` for a server thread: an unknown kid waits on the refresh in `refresh_on`'s
        loop, blocking only this thread; never raises."""
        started = time.perf_counter()
        try:
            decision = self.decide_now(view)
            loop = self._loop
            if (
                decision.reason is Reason.UNKNOWN_KID
                and self._refresh is not None
                and loop is not None
            ):
                if self._kid_waiters.acquire(blocking=False):
                    try:
                        refresh = asyncio.run_coroutine_threadsafe(
                            self._refresh(UNKNOWN_KID_WAIT_SECONDS), loop
                        )
                        # refresh_unknown_kid gives up after its timeout itself; the margin
                        # only covers the hop to the loop and back.
                        with contextlib.suppress(concurrent.futures.TimeoutError):
                            refresh.result(UNKNOWN_KID_WAIT_SECONDS + 0.05)
                    finally:
                        self._kid_waiters.release()
                    decision = self.decide_now(view)
                else:
                    # Start (or join) the refresh without waiting for it.
                    asyncio.run_coroutine_threadsafe(self._refresh(0.0), loop)
        except Exception:
            log.exception("internal error while deciding")
            decision = deny(Reason.INTERNAL_ERROR)
        return self._record(view, decision, started)

    def _record(self, view: RequestView, decision: Decision, started: float) -> Decision:
        CHECKS_BY_REASON[decision.reason].inc()
        CHECK_DURATION.observe(time.perf_counter() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "decision",
                extra={
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
