"""The Checker: one decide-with-refresh path for both doors, failing closed, counted alike."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from authz.core.decision import Decision, Reason
from authz.core.request import RequestView
from authz.keys.jwk import parse_jwks
from authz.keys.snapshot import KeySnapshot
from authz.service.checker import Checker
from authz.settings.model import Settings
from tests.harness import internal_errors
from tests.jwks_server import jwk, jwks, rsa_key, sign

NOW = 1_800_000_000.0
SETTINGS = Settings(jwks_url="http://127.0.0.1:9/jwks.json")
KEY = rsa_key("checker")
UNKNOWN_KID = sign("RS256", KEY, {"sub": "alice", "exp": NOW + 60}, "rotated-in")
BEFORE = KeySnapshot.build(jwks_configured=True, public_keys=())
ROTATED = KeySnapshot.build(
    jwks_configured=True, public_keys=parse_jwks(jwks(jwk(KEY, "rotated-in")))
)
Refresh = Callable[[float], Coroutine[Any, Any, None]]


class Keys:
    """A key source whose snapshot the test swaps, or makes raise."""

    def __init__(self, snapshot: KeySnapshot | None) -> None:
        self.current = snapshot

    @property
    def snapshot(self) -> KeySnapshot:
        if self.current is None:
            raise RuntimeError(f"no keys for {UNKNOWN_KID}")
        return self.current


def _view(token: str) -> RequestView:
    return RequestView(authorization=f"Bearer {token}", source_ip="203.0.113.7")


def _both(checker: Checker, view: RequestView) -> tuple[Decision, Decision]:
    # The same request through the event-loop path and the server-thread path.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        checker.refresh_on(loop)
        from_loop = asyncio.run_coroutine_threadsafe(checker.check(view), loop).result(10)
        from_thread = checker.check_blocking(view, lambda: 5.0)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    return from_loop, from_thread


def _refresher(keys: Keys, then: KeySnapshot | None, fail: bool = False,
               ) -> tuple[Refresh, list[float]]:
    waits: list[float] = []

    async def refresh(wait: float) -> None:
        waits.append(wait)
        if fail:
            raise OSError(f"refresh failed for {UNKNOWN_KID}")
        keys.current = then

    return refresh, waits


def test_an_unknown_kid_is_decided_again_after_one_refresh_on_both_paths() -> None:
    keys = Keys(BEFORE)
    refresh, waits = _refresher(keys, ROTATED)
    checker = Checker(SETTINGS, keys, refresh, clock=lambda: NOW)
    from_loop, from_thread = _both(checker, _view(UNKNOWN_KID))
    assert from_loop.reason is Reason.OK and from_thread.reason is Reason.OK
    # Only the first needed the refresh; the second found the new keys at once.
    assert len(waits) == 1 and 0 < waits[0] <= 0.35


def test_a_refresh_that_raises_is_internal_error_on_both_paths(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = Keys(BEFORE)
    refresh, waits = _refresher(keys, None, fail=True)
    checker = Checker(SETTINGS, keys, refresh, clock=lambda: NOW)
    with caplog.at_level(logging.ERROR, logger="authz.check"):
        from_loop, from_thread = _both(checker, _view(UNKNOWN_KID))
    assert from_loop.reason is Reason.INTERNAL_ERROR
    assert from_thread.reason is Reason.INTERNAL_ERROR
    assert len(waits) == 2
    assert UNKNOWN_KID not in caplog.text


@pytest.mark.parametrize("transport", ["grpc", "http", "webhook"])
def test_a_decision_that_raises_is_internal_error_counted_and_logged_without_the_token(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    checker = Checker(SETTINGS, Keys(None), clock=lambda: NOW)
    view = _view(UNKNOWN_KID)
    before = internal_errors(transport)
    with caplog.at_level(logging.ERROR, logger="authz.check"):
        from_loop = asyncio.run(checker.check(view, transport))
        from_thread = checker.check_blocking(view, None, transport)
    assert from_loop.reason is Reason.INTERNAL_ERROR
    assert from_thread.reason is Reason.INTERNAL_ERROR
    assert internal_errors(transport) == (before[0] + 2, before[1] + 2)
    records = [r for r in caplog.records if r.name == "authz.check"]
    assert len(records) == 2
    for record in records:
        assert vars(record)["transport"] == transport
        assert vars(record)["error"] == "RuntimeError"
        assert record.exc_info is None
    assert UNKNOWN_KID not in caplog.text
