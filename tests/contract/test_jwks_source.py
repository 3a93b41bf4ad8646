"""The JWKS refresher against a real HTTP server on 127.0.0.1 that each test drives:
first fetch and readiness, rotation, every kind of bad answer, backoff, max-age, the
unknown-kid single flight, TLS, and the algorithm bindings end to end through the Checker."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from prometheus_client import REGISTRY

from authz._pb.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from authz.core.decision import Decision, Reason
from authz.core.mint import mint_hmac
from authz.core.request import RequestView
from authz.fronts.grpc import CHECK_METHOD_PATH, add_threaded_authorization_service
from authz.keys.jwks_source import IO_TIMEOUT_SECONDS, MAX_BODY_BYTES, JWKSSource
from authz.keys.store import KeyStore
from authz.service import checker as checker_module
from authz.service.checker import Checker
from authz.service.server import grpc_server
from authz.settings.load import load_settings
from authz.settings.model import Settings
from tests.credentials import OTHER_SECRET
from tests.jwks_server import (
    JWKSServer,
    PrivateKey,
    b64u,
    free_port,
    jwk,
    jwks,
    loopback_tls,
    rsa_key,
    sign,
)

KEY_A = rsa_key("A")
KEY_B = rsa_key("B")
EC256 = ec.generate_private_key(ec.SECP256R1())
EC384 = ec.generate_private_key(ec.SECP384R1())
EC521 = ec.generate_private_key(ec.SECP521R1())
ED = ed25519.Ed25519PrivateKey.generate()
SET_A = jwks(jwk(KEY_A, "a"))
SET_B = jwks(jwk(KEY_B, "b"))
CLAIMS = {"sub": "alice", "exp": time.time() + 3600}
HS_SECRET = "s" * 40

# Small timings keep the suite fast; the production defaults are exercised by their math.
FAST: dict[str, Any] = {"io_timeout": 0.5, "total_timeout": 1.0}


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    # The single JWKS URL's series carry issuer="" (no AUTHZ_ISSUER in these settings).
    wanted = {"issuer": "", **(labels or {})} if name.startswith("authz_jwks_") else labels
    return REGISTRY.get_sample_value(name, wanted or {}) or 0.0


def failures() -> float:
    return metric("authz_jwks_refreshes_total", {"result": "failure"})


def successes() -> float:
    return metric("authz_jwks_refreshes_total", {"result": "success"})


def kids(store: KeyStore) -> list[str | None]:
    return [k.kid for k in store.snapshot.public_keys]


async def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def settings_for(url: str, secret: str | None = None) -> Settings:
    environ = {"AUTHZ_JWKS_URL": url}
    if secret is not None:
        environ["AUTHZ_HS256_SECRET"] = secret
    return load_settings(None, None, environ)


Scenario = Callable[[JWKSSource, KeyStore, Checker], Awaitable[None]]


def run(url: str, scenario: Scenario, refresh: float = 300.0, secret: str | None = None,
        settings_url: str | None = None, **options: Any) -> None:
    """Start a source for `url` (with a Checker wired as the server does), run `scenario`.

    The settings name `settings_url` when given (for a `url` they would refuse)."""
    async def main() -> None:
        settings = settings_for(settings_url or url, secret)
        store = KeyStore(settings)
        source = JWKSSource(url, store, refresh_seconds=refresh, **{**FAST, **options})
        checker = Checker(settings, store, source.refresh_unknown_kid)
        source.start()
        try:
            await scenario(source, store, checker)
        finally:
            await source.stop()

    asyncio.run(main())


async def reason(checker: Checker, token: str) -> Reason:
    decision = await checker.check(RequestView(authorization=f"Bearer {token}",
                                               source_ip="127.0.0.1"))
    return decision.reason


def test_first_fetch_loads_the_set_and_publishes_metrics() -> None:
    started = time.time()
    before = successes()
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            assert source.ready and kids(store) == ["a"]
            assert await reason(checker, sign("RS256", KEY_A, CLAIMS, "a")) is Reason.OK
            assert successes() == before + 1
            assert metric("authz_jwks_keys") == 1
            assert metric("authz_jwks_last_success_timestamp_seconds") >= started
            assert metric("authz_jwks_consecutive_failures") == 0
            assert server.requests == 1

        run(server.url, scenario)


def test_rotation_new_kid_is_fetched_once_and_the_removed_kid_is_denied() -> None:
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            server.body = SET_B
            assert await reason(checker, sign("RS256", KEY_B, CLAIMS, "b")) is Reason.OK
            assert server.requests == 2
            assert kids(store) == ["b"]
            assert await reason(checker, sign("RS256", KEY_A, CLAIMS, "a")) is Reason.UNKNOWN_KID
            assert await reason(checker, sign("RS256", KEY_B, CLAIMS, "b")) is Reason.OK
            assert server.requests == 2, "the denied old kid may not refetch inside the window"

        run(server.url, scenario)


def test_background_refresh_picks_up_a_rotation() -> None:
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            server.body = jwks(jwk(KEY_A, "a"), jwk(KEY_B, "b"))
            await eventually(lambda: kids(store) == ["a", "b"])
            server.body = SET_B
            await eventually(lambda: kids(store) == ["b"])

        run(server.url, scenario, refresh=0.1)


def test_server_down_after_the_first_fetch_keeps_the_old_keys() -> None:
    server = JWKSServer(SET_A)

    async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
        assert await source.wait_ready(30)
        before = failures()
        server.close()
        await eventually(lambda: failures() >= before + 3)
        assert metric("authz_jwks_consecutive_failures") >= 3
        assert source.ready and kids(store) == ["a"]
        assert await reason(checker, sign("RS256", KEY_A, CLAIMS, "a")) is Reason.OK

    try:
        run(server.url, scenario, refresh=0.05)
    finally:
        server.close()


BAD_ANSWERS: dict[str, tuple[int, bytes]] = {
    "500": (500, SET_B),
    "404": (404, SET_B),
    "204": (204, b""),
    "garbage": (200, b"\x00\xff garbage <html>"),
    "not-a-jwks": (200, json.dumps({"issuer": "x", "jwks_uri": "y"}).encode()),
    "keys-not-array": (200, b'{"keys": "b"}'),
    "none-usable": (200, jwks(jwk(rsa_key("weak", 1024), "weak"), {"kty": "oct", "k": "AAAA"})),
    "over-1MiB": (200, jwks(jwk(KEY_B, "b"), {"kty": "pad", "p": "x" * MAX_BODY_BYTES})),
    "over-100-keys": (200, jwks(jwk(KEY_B, "b"), *(jwk(ED, f"ed{i}") for i in range(100)))),
}


@pytest.mark.parametrize("answer", list(BAD_ANSWERS))
def test_a_bad_answer_never_replaces_the_last_good_set(answer: str) -> None:
    status, body = BAD_ANSWERS[answer]
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            good = store.snapshot
            before_fail, before_ok = failures(), successes()
            server.status, server.body = status, body
            seen = server.requests
            await eventually(lambda: server.requests >= seen + 3 and failures() >= before_fail + 3)
            assert store.snapshot is good
            assert successes() == before_ok
            assert await reason(checker, sign("RS256", KEY_A, CLAIMS, "a")) is Reason.OK
            assert await reason(checker, sign("RS256", KEY_B, CLAIMS, "b")) is Reason.UNKNOWN_KID

        run(server.url, scenario, refresh=0.05)


@pytest.mark.parametrize("answer", ["500", "garbage", "none-usable", "over-1MiB"])
def test_a_bad_first_answer_leaves_the_source_not_ready(answer: str) -> None:
    status, body = BAD_ANSWERS[answer]
    with JWKSServer(body) as server:
        server.status = status

        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            await eventually(lambda: server.requests >= 2)
            assert not source.ready
            token = sign("RS256", KEY_B, CLAIMS, "b")
            assert await reason(checker, token) is Reason.JWKS_UNAVAILABLE
            server.status, server.body = 200, SET_B
            assert await source.wait_ready(30)
            assert await reason(checker, token) is Reason.OK

        run(server.url, scenario, refresh=0.05)


def test_a_set_over_the_key_cap_is_refused_with_a_log_line_and_a_metric(
    caplog: pytest.LogCaptureFixture,
) -> None:
    status, body = BAD_ANSWERS["over-100-keys"]
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            good = store.snapshot
            refused = metric("authz_jwks_too_many_keys_total")
            before = failures()
            server.status, server.body = status, body
            with caplog.at_level(logging.WARNING, logger="authz.keys.jwks_source"):
                # The first kid-triggered refresh is always allowed: one fetch, awaited.
                await source.refresh_unknown_kid(5)
            assert store.snapshot is good
            assert metric("authz_jwks_too_many_keys_total") == refused + 1
            assert failures() == before + 1
            lines = [r for r in caplog.records if "keeping the last good key set" in r.message]
            assert len(lines) == 1
            assert "more than 100 usable keys" in lines[0].__dict__["error"]

        run(server.url, scenario)


def _p521_with_a_short_coordinate() -> dict[str, Any]:
    """A P-521 JWK whose x lacks its leading zero byte, as some libraries export it
    (RFC 7518 6.2.1.2 wants the full 66 bytes)."""
    while True:
        key = ec.generate_private_key(ec.SECP521R1())
        x = key.public_key().public_numbers().x
        if x.bit_length() <= 520:
            entry = jwk(key, "p521-short")
            entry["x"] = b64u(x.to_bytes(65, "big"))
            return entry


def skipped_gauge(why: str) -> float:
    return metric("authz_jwks_keys_skipped", {"reason": why})


def test_each_skipped_key_is_logged_once_per_change_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    short_p521 = _p521_with_a_short_coordinate()
    weak = jwk(rsa_key("weak", 1024), "weak")
    enc = jwk(KEY_B, "enc", use="enc")
    with JWKSServer(jwks(jwk(KEY_A, "a"), short_p521, weak, enc)) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            def skip_lines() -> list[logging.LogRecord]:
                return [r for r in caplog.records if r.message == "JWKS key skipped"]

            with caplog.at_level(logging.INFO, logger="authz.keys.jwks_source"):
                assert await source.wait_ready(30)
                assert kids(store) == ["a"]
                lines = skip_lines()
                assert [(r.__dict__["kid"], r.__dict__["kty"]) for r in lines] == [
                    ("p521-short", "EC"), ("weak", "RSA"), ("enc", "RSA")]
                whys = [r.__dict__["why"] for r in lines]
                assert "wrong length" in whys[0] and "2048" in whys[1] and "'sig'" in whys[2]
                # Never key material: no coordinate or modulus in any line, whatever field.
                material = [short_p521["x"], short_p521["y"], weak["n"], enc["n"]]
                for record in caplog.records:
                    text = json.dumps(record.__dict__, default=str)
                    assert not any(value in text for value in material)
                assert skipped_gauge("malformed") == 1
                assert skipped_gauge("rsa_size") == 1
                assert skipped_gauge("not_for_signatures") == 1

                # The same document again changes nothing: no new lines.
                caplog.clear()
                await source.refresh_unknown_kid(5)
                assert server.requests == 2 and skip_lines() == []

                # The issuer drops the enc key: the set changed, the remaining two are told.
                server.body = jwks(jwk(KEY_A, "a"), short_p521, weak)
                caplog.clear()
                await source.refresh_unknown_kid(5)
                assert server.requests == 3
                assert [r.__dict__["kid"] for r in skip_lines()] == ["p521-short", "weak"]
                assert skipped_gauge("not_for_signatures") == 0
                assert skipped_gauge("malformed") == 1
            assert await reason(checker, sign("RS256", KEY_A, CLAIMS, "a")) is Reason.OK

        run(server.url, scenario, kid_refresh_interval=0.0)


def test_oversized_answer_is_cut_off_without_a_content_length() -> None:
    # A chunked answer announces no size: the reader must stop at the cap by itself.
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            good = store.snapshot
            before = failures()
            server.body = b" " * (MAX_BODY_BYTES + 10) + SET_B
            server.send_length = False
            await eventually(lambda: failures() >= before + 1)
            assert store.snapshot is good

        run(server.url, scenario, refresh=0.05)


def test_exactly_1_mib_is_accepted() -> None:
    body = jwks(jwk(KEY_B, "b"))
    body = body[:-1] + b" " * (MAX_BODY_BYTES - len(body)) + body[-1:]
    assert len(body) == MAX_BODY_BYTES
    with JWKSServer(body) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            assert kids(store) == ["b"]

        run(server.url, scenario)


def test_hanging_server_times_out_and_the_check_waits_only_its_deadline() -> None:
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            server.delay = 60
            before = failures()
            started = time.monotonic()
            # Envoy's budget: the Checker waits UNKNOWN_KID_WAIT_SECONDS (0.35 s) at most.
            assert await reason(checker, sign("RS256", KEY_B, CLAIMS, "b")) is Reason.UNKNOWN_KID
            # Far below the fetch's own timeouts (5 s per read, 10 s in all), with room for
            # a loaded machine.
            assert time.monotonic() - started < IO_TIMEOUT_SECONDS / 2, "the Check waited"
            await eventually(lambda: failures() >= before + 1, timeout=8)
            assert kids(store) == ["a"]

        run(server.url, scenario, io_timeout=3.0, total_timeout=5.0)


def fetch_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "authz-jwks-fetch"}


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_dribbling_server_cannot_stretch_a_fetch_past_the_total_timeout(
    scheme: str, tmp_path: Path
) -> None:
    # One byte every 0.1 s: every socket read returns well inside io_timeout (0.5 s), so
    # only the total timeout (1 s) can end the fetch, from the status line on.
    total = FAST["total_timeout"]
    tls, ca_file = loopback_tls(tmp_path) if scheme == "https" else (None, None)
    with JWKSServer(SET_A, tls=tls) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            good = store.snapshot
            before = failures()
            earlier = fetch_threads()
            server.headers["X-Padding"] = "p" * 100
            server.dribble = 0.1
            most_alive = 0
            deadline = time.monotonic() + 20
            while len(server.hangups) < 3:
                assert time.monotonic() < deadline, f"fetches ended: {server.hangups}"
                most_alive = max(most_alive, len(fetch_threads() - earlier))
                await asyncio.sleep(0.01)
            # Each fetch hung up when its total timeout ran out (a generous margin for a
            # busy machine), its failure was counted and the old keys stayed.
            assert all(took < total + 1.0 for took in server.hangups), server.hangups
            assert failures() >= before + 3
            assert store.snapshot is good
            assert await reason(checker, sign("RS256", KEY_A, CLAIMS, "a")) is Reason.OK
            # Fetch threads end with their fetch: the one in flight, and at most the one
            # just timing out beside it (retries come 0.025-0.05 s apart here).
            assert most_alive <= 2, most_alive

        run(server.url, scenario, refresh=0.05, ca_file=str(ca_file) if ca_file else None)


def test_hanging_at_start_is_not_ready_until_the_server_answers() -> None:
    with JWKSServer(SET_A) as server:
        server.delay = 60

        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            before = failures()
            await eventually(lambda: failures() >= before + 1, timeout=3)
            assert not source.ready
            server.delay = 0
            assert await source.wait_ready(30)

        run(server.url, scenario, refresh=0.05)


def test_never_reachable_at_start_then_ready_when_the_server_comes_up() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/keys"

    async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
        before = failures()
        await eventually(lambda: failures() >= before + 2)
        assert not source.ready and not store.snapshot.jwks_loaded
        token = sign("ES256", EC256, CLAIMS, "ec")
        assert await reason(checker, token) is Reason.JWKS_UNAVAILABLE
        with JWKSServer(jwks(jwk(EC256, "ec")), port=port):
            assert await source.wait_ready(30)
            assert await reason(checker, token) is Reason.OK

    run(url, scenario, refresh=0.05)


def test_unknown_kid_flood_fetches_at_most_once_per_window() -> None:
    now = [0.0]  # the kid window's clock: it moves only when the test moves it
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            assert server.requests == 1
            # 500 concurrent Checks with random kids, then 100 one after another.
            tokens = [sign("ES256", EC256, CLAIMS, f"random-{i}") for i in range(600)]
            results = await asyncio.gather(*(reason(checker, t) for t in tokens[:500]))
            assert set(results) == {Reason.UNKNOWN_KID}
            for token in tokens[500:]:
                assert await reason(checker, token) is Reason.UNKNOWN_KID
            assert server.requests == 2
            # Next window: one more fetch for the next flood, no more.
            now[0] += 0.6
            await asyncio.gather(*(source.refresh_unknown_kid(10.0) for _ in range(200)))
            assert server.requests == 3

        run(server.url, scenario, kid_refresh_interval=0.5, clock=lambda: now[0])


def test_default_kid_window_is_30_seconds_and_the_first_kid_refresh_is_free() -> None:
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            server.body = SET_B
            await source.refresh_unknown_kid(10.0)
            assert kids(store) == ["b"] and server.requests == 2
            server.body = SET_A
            await source.refresh_unknown_kid(10.0)
            assert kids(store) == ["b"] and server.requests == 2

        run(server.url, scenario)


@contextmanager
def grpc_serving(checker: Checker, arrived: threading.Semaphore | None = None) -> Iterator[int]:
    """`checker` on the gRPC server authz serves Checks with, wired as authz.service.server wires it
    (refreshes on the running loop); its port. `arrived` is released as each Check reaches
    the Checker."""
    server = grpc_server()

    def check(*args: Any) -> Decision:
        if arrived is not None:
            arrived.release()
        return checker.check_blocking(*args)

    add_threaded_authorization_service(server, check)
    checker.refresh_on(asyncio.get_running_loop())
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def check_bytes(token: str) -> bytes:
    request = CheckRequest()
    request.attributes.request.http.headers["authorization"] = f"Bearer {token}"
    request.attributes.source.address.socket_address.address = "127.0.0.1"
    data: bytes = request.SerializeToString()
    return data


async def grpc_reasons(port: int, tokens: list[str], timeout: float = 10.0) -> list[str]:
    """The reasons authz answers for `tokens`, all sent at once."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(CHECK_METHOD_PATH)
        answers = await asyncio.gather(*(call(check_bytes(t), timeout=timeout) for t in tokens))
    return [CheckResponse.FromString(a).dynamic_metadata.fields["reason"].string_value
            for a in answers]


def kid_b_tokens(count: int) -> list[str]:
    """`count` distinct tokens signed by KEY_B under kid "b" (none a cache hit of another)."""
    return [sign("RS256", KEY_B, {**CLAIMS, "sub": f"user-{i}"}, "b") for i in range(count)]


async def arrivals(arrived: threading.Semaphore, count: int, timeout: float = 10.0) -> None:
    """Wait (without blocking the loop) until `count` Checks reached the Checker."""
    def take() -> bool:
        return all(arrived.acquire(timeout=timeout) for _ in range(count))

    assert await asyncio.get_running_loop().run_in_executor(None, take), "Checks missing"


@pytest.fixture
def long_kid_wait(monkeypatch: pytest.MonkeyPatch) -> float:
    """A Check may wait 3 s for a kid refresh (not 0.35): a busy machine must not matter."""
    monkeypatch.setattr(checker_module, "UNKNOWN_KID_WAIT_SECONDS", 3.0)
    return 3.0


@pytest.mark.usefixtures("long_kid_wait")
def test_a_burst_with_a_freshly_rotated_kid_waits_for_one_refresh() -> None:
    # SPEC section 4: every Check with the new kid waits for the one refresh, which here
    # comes 0.5 s late.
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            server.body, server.delay = jwks(jwk(KEY_A, "a"), jwk(KEY_B, "b")), 0.5
            with grpc_serving(checker) as port:
                assert await grpc_reasons(port, kid_b_tokens(16)) == ["ok"] * 16
            assert server.requests == 2

        run(server.url, scenario, io_timeout=5.0, total_timeout=5.0)


@pytest.mark.usefixtures("long_kid_wait")
def test_checks_with_known_keys_are_answered_while_many_wait_on_a_hung_jwks() -> None:
    # More Checks wait for the refresh than the server has threads: they must not take the
    # threads that Checks with a known key or an HS256 token are answered on.
    waiting = 16
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            server.delay = 60
            arrived = threading.Semaphore(0)
            known = [sign("RS256", KEY_A, CLAIMS, "a"), mint_hmac(CLAIMS, HS_SECRET.encode())]
            with grpc_serving(checker, arrived) as port:
                parked = asyncio.ensure_future(grpc_reasons(port, kid_b_tokens(waiting)))
                await arrivals(arrived, waiting)
                assert await grpc_reasons(port, known * 4) == ["ok"] * 8
                assert not parked.done(), "the waiting Checks gave up early"
                assert await parked == ["unknown_kid"] * waiting
            assert server.requests == 2

        run(server.url, scenario, secret=HS_SECRET, io_timeout=10.0, total_timeout=10.0)


def test_the_wait_for_a_refresh_ends_within_the_checks_deadline(long_kid_wait: float) -> None:
    # The Check's own gRPC deadline (Envoy sends its ext_authz timeout) bounds the wait:
    # the answer, unknown_kid, still arrives before the caller gives up.
    deadline = long_kid_wait / 2
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            server.delay = 60
            token = sign("RS256", KEY_B, CLAIMS, "b")
            with grpc_serving(checker) as port:
                started = time.monotonic()
                assert await grpc_reasons(port, [token], deadline) == ["unknown_kid"]
                assert time.monotonic() - started > deadline / 2, "it did not wait"

        run(server.url, scenario, io_timeout=10.0, total_timeout=10.0)


def refreshes_in_a_second(cache_control: str, refresh: float, max_age_floor: float) -> int:
    """Fetches in the second after the first, the set served with `cache_control`."""
    with JWKSServer(SET_A) as server:
        server.headers["Cache-Control"] = cache_control
        counted: list[int] = []

        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            start = server.requests
            await asyncio.sleep(1.0)
            counted.append(server.requests - start)

        run(server.url, scenario, refresh=refresh, max_age_floor=max_age_floor)
    return counted[0]


@pytest.mark.parametrize("cache_control", ["public, max-age=0", "no-store",
                                           "no-cache, max-age=600", "max-age=\"0\""])
def test_max_age_brings_the_refresh_forward_down_to_the_floor(cache_control: str) -> None:
    # Floor 0.2 s with jitter [85 %, 100 %]: at most 6 refreshes in 1 s (a loaded machine
    # may manage fewer), and more than the 0 a 300 s period gives.
    assert 2 <= refreshes_in_a_second(cache_control, refresh=300, max_age_floor=0.2) <= 6


@pytest.mark.parametrize("cache_control", ["max-age=3600", "max-age=abc", "private", ""])
def test_a_long_or_unusable_max_age_never_stretches_the_configured_period(
    cache_control: str,
) -> None:
    assert 2 <= refreshes_in_a_second(cache_control, refresh=0.2, max_age_floor=0.05) <= 6


def test_failures_back_off_exponentially_with_jitter() -> None:
    with JWKSServer(SET_A) as server:
        server.status = 503

        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            await eventually(lambda: server.requests >= 4, timeout=10)
            t = server.arrivals
            gaps = [b - a for a, b in itertools.pairwise(t)][:3]
            # Steps of 1, 2, 4 s, each drawn from [50 %, 100 %] of the step.
            for gap, step in zip(gaps, (1, 2, 4), strict=True):
                assert step * 0.5 - 0.05 <= gap <= step + 0.5, gaps

        run(server.url, scenario, refresh=300)


def test_backoff_is_capped_by_the_configured_period() -> None:
    with JWKSServer(SET_A) as server:
        server.status = 503

        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            # Period 0.1 s: retries every 0.05-0.1 s (8 in under a second), never the 1, 2,
            # 4 s steps (8 of those take 63.5 s at the least).
            await eventually(lambda: server.requests >= 8, timeout=30)

        run(server.url, scenario, refresh=0.1)


def test_out_of_order_answers_never_install_an_older_set() -> None:
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            # The next scheduled fetch gets the old set, slowly...
            server.delay, server.body = 0.6, jwks(jwk(KEY_A, "a-old"))
            await eventually(lambda: server.requests == 2)
            # ...while a kid refresh gets the new set at once and installs it.
            server.delay, server.body = 0, SET_B
            await source.refresh_unknown_kid(10.0)
            assert kids(store) == ["b"]
            seen: set[str | None] = set()
            deadline = time.monotonic() + 0.9
            while time.monotonic() < deadline:
                seen.update(kids(store))
                await asyncio.sleep(0.005)
            assert seen == {"b"}

        run(server.url, scenario, refresh=0.3, total_timeout=2.0, io_timeout=1.0)


def test_https_is_verified_against_the_ca_file(tmp_path: Path) -> None:
    tls, ca_file = loopback_tls(tmp_path)
    with JWKSServer(SET_A, tls=tls) as server:
        assert server.url.startswith("https://")

        async def untrusted(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            before = failures()
            await eventually(lambda: failures() >= before + 1)
            assert not source.ready

        run(server.url, untrusted, refresh=0.05)

        async def trusted(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            assert kids(store) == ["a"]

        run(server.url, trusted, ca_file=str(ca_file))


def test_redirects_are_followed_but_never_from_https_to_http(tmp_path: Path) -> None:
    tls, ca_file = loopback_tls(tmp_path)
    with JWKSServer(SET_A) as plain, JWKSServer(SET_A, tls=tls) as secure:
        secure.status, secure.headers["Location"] = 302, plain.url
        secure.body = b""

        async def downgrade(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            await eventually(lambda: secure.requests >= 2)
            assert not source.ready
            assert plain.requests == 0

        run(secure.url, downgrade, refresh=0.05, ca_file=str(ca_file))

        with JWKSServer(SET_B) as hop:
            hop.status, hop.headers["Location"], hop.body = 301, plain.url, b""

            async def same_scheme(source: JWKSSource, store: KeyStore, ch: Checker) -> None:
                assert await source.wait_ready(30)
                assert kids(store) == ["a"] and plain.requests == 1

            run(hop.url, same_scheme)


LEAKY = ("leaky-user", "leaky-password-7c1e", "leaky-query-key-93ad")


def test_failure_logs_never_quote_a_url(caplog: pytest.LogCaptureFixture) -> None:
    # urllib's and http.client's messages quote URLs, userinfo and query included: a
    # redirect to a URL with a password (http.client reads "password@host" as a port),
    # and a URL that http.client refuses for a control character.
    user, password, query_key = LEAKY
    with JWKSServer(SET_A) as target, JWKSServer(b"") as redirector:
        redirector.status = 302
        redirector.headers["Location"] = (
            f"http://{user}:{password}@127.0.0.1/keys?api_key={query_key}"
        )
        bad_path = f"http://127.0.0.1:{target.port}/keys\x01?api_key={query_key}"

        async def failing(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            before = failures()
            await eventually(lambda: failures() >= before + 2)
            assert not source.ready

        with caplog.at_level(logging.WARNING, logger="authz.keys.jwks_source"):
            run(f"{redirector.url}?api_key={query_key}", failing, refresh=0.05)
            run(bad_path, failing, refresh=0.05, settings_url=target.url)
    logged = [r for r in caplog.records if r.name == "authz.keys.jwks_source"]
    texts = [record.getMessage() + repr(vars(record)) for record in logged]
    leaks = [(secret, text) for text in texts for secret in LEAKY if secret in text]
    assert leaks == []
    # What failed is still said: the exception's class.
    assert any("InvalidURL" in r.__dict__["error"] for r in logged), texts


def test_redirects_to_other_schemes_are_not_followed() -> None:
    # urllib follows a redirect to ftp:// by itself; the fetch's deadlines cover HTTP only.
    with socket.create_server(("127.0.0.1", 0)) as listener, JWKSServer(b"") as server:
        listener.setblocking(False)
        server.status = 302
        server.headers["Location"] = f"ftp://127.0.0.1:{listener.getsockname()[1]}/jwks.json"

        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            await eventually(lambda: server.requests >= 3)
            assert not source.ready

        run(server.url, scenario, refresh=0.05)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever connected


def test_an_explicitly_empty_set_withdraws_every_key() -> None:
    with JWKSServer(SET_A) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            server.body = b'{"keys": []}'
            await eventually(lambda: kids(store) == [])
            assert source.ready and metric("authz_jwks_keys") == 0
            assert await reason(checker, sign("RS256", KEY_A, CLAIMS, "a")) is Reason.UNKNOWN_KID

        run(server.url, scenario, refresh=0.05)


ALL_KEYS = jwks(jwk(KEY_A, "rsa"), jwk(EC256, "p256"), jwk(EC384, "p384"), jwk(EC521, "p521"),
                jwk(ED, "ed"), jwk(KEY_B, "rsa-enc", use="enc"),
                jwk(rsa_key("weak", 1024), "weak"), jwk(KEY_B, "ps-only", alg="PS256"),
                {"kty": "oct", "kid": "oct", "k": b64u(HS_SECRET.encode())})


def test_every_algorithm_verifies_with_its_served_key() -> None:
    cases: list[tuple[str, PrivateKey, str]] = [(alg, KEY_A, "rsa") for alg in
             ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")]
    cases += [("ES256", EC256, "p256"), ("ES384", EC384, "p384"), ("ES512", EC521, "p521"),
              ("EdDSA", ED, "ed"), ("PS256", KEY_B, "ps-only")]
    with JWKSServer(ALL_KEYS) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            for alg, key, kid in cases:
                assert await reason(checker, sign(alg, key, CLAIMS, kid)) is Reason.OK, alg
                assert await reason(checker, sign(alg, key, CLAIMS)) is Reason.OK, f"{alg} no kid"

        run(server.url, scenario)


def test_key_bindings_and_confusions_are_denied() -> None:
    public = KEY_A.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk_json = json.dumps(jwk(KEY_A, "rsa")).encode()
    head, body, sig = sign("ES256", EC256, CLAIMS, "p256").split(".")
    raw_sig = base64.urlsafe_b64decode(sig + "==")
    r, s = int.from_bytes(raw_sig[:32], "big"), int.from_bytes(raw_sig[32:], "big")
    with JWKSServer(ALL_KEYS) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            denied = {
                # HS256 signed with the RSA public key, as PEM, DER or JWK: never a secret.
                "hs-pem": (mint_hmac(CLAIMS, pem, header={"kid": "rsa"}), Reason.BAD_SIGNATURE),
                "hs-der": (mint_hmac(CLAIMS, der, header={"kid": "rsa"}), Reason.BAD_SIGNATURE),
                "hs-jwk": (mint_hmac(CLAIMS, jwk_json), Reason.BAD_SIGNATURE),
                # An oct key in the JWKS is never an HMAC secret.
                "hs-oct": (mint_hmac(CLAIMS, OTHER_SECRET, header={"kid": "oct"}),
                           Reason.BAD_SIGNATURE),
                # ES256 with a malformed signature (truncated, DER-shaped, another curve).
                "es-short": (f"{head}.{body}.{b64u(raw_sig[:-1])}", Reason.BAD_SIGNATURE),
                "es-der": (f"{head}.{body}.{b64u(encode_dss_signature(r, s))}",
                           Reason.BAD_SIGNATURE),
                "es-zero": (f"{head}.{body}.{b64u(bytes(64))}", Reason.BAD_SIGNATURE),
                "es-curve": (sign("ES384", EC384, CLAIMS, "p256"), Reason.BAD_SIGNATURE),
                # Keys the parser skipped are not in the set.
                "rsa-1024": (sign("RS256", rsa_key("weak", 1024), CLAIMS, "weak"),
                             Reason.UNKNOWN_KID),
                "use-enc": (sign("RS256", KEY_B, CLAIMS, "rsa-enc"), Reason.UNKNOWN_KID),
                # A key's stated alg binds it.
                "ps-only-rs": (sign("RS256", KEY_B, CLAIMS, "ps-only"), Reason.BAD_SIGNATURE),
                "rsa-as-ec": (sign("ES256", EC256, CLAIMS, "rsa"), Reason.BAD_SIGNATURE),
            }
            for name, (token, expected) in denied.items():
                assert await reason(checker, token) is expected, name

        run(server.url, scenario, secret=HS_SECRET)


def test_hmac_tokens_without_secrets_are_not_verified_by_jwks_keys() -> None:
    with JWKSServer(ALL_KEYS) as server:
        async def scenario(source: JWKSSource, store: KeyStore, checker: Checker) -> None:
            assert await source.wait_ready(30)
            token = mint_hmac(CLAIMS, HS_SECRET.encode(), header={"kid": "oct"})
            assert await reason(checker, token) is Reason.ALG_NOT_ALLOWED

        run(server.url, scenario)


def test_stop_is_prompt_whenever_it_lands() -> None:
    # stop() racing a fetch that is just finishing must still end the refresh loop (on
    # Python 3.11 asyncio.wait_for can swallow such a cancellation).
    with JWKSServer(SET_A) as server:
        async def main() -> None:
            settings = settings_for(server.url)
            for _ in range(200):
                source = JWKSSource(server.url, KeyStore(settings), refresh_seconds=300, **FAST)
                source.start()
                await asyncio.sleep(random.uniform(0, 0.004))
                stopping = asyncio.ensure_future(source.stop())
                _, pending = await asyncio.wait([stopping], timeout=2)
                assert not pending, "stop() did not end the refresh loop"

        asyncio.run(main())
