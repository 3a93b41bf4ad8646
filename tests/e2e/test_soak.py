"""Soak with faults: real Envoy + `authz serve --workers 2` + a JWKS server, all on loopback.

Bounded concurrent load (threads with keep-alive http.client connections through Envoy)
mixes tokens whose right answer the load generator knows at every instant: valid HS256
(the plain secret, and each generation of the rotated secret file), valid RS256 (each
generation of the JWKS), expired, forged (wrong secret, right kid with a rogue key),
unknown kid, alg none, tampered payload. Meanwhile a fault driver, on a schedule scaled
to the run: SIGTERMs a worker five times, one and then the other (planned restarts: the
supervisor starts a successor, which binds the shared ports once it has its keys, and only
then tells the leaving worker to hand over: it leaves the ports' listener groups, waits
for Envoy's connection to move to a sibling, then closes), SIGKILLs one (a crash), rotates the HS256
secret file (old secret denied, new allowed after the watcher's poll) and the JWKS (adds
key b, then retires key a), then makes the JWKS answer 500, then garbage, then hang (the
last good key set must stay in use throughout).

Where a change makes a token's answer flip, the oracle accepts either answer within a
window after the change (key sources poll: AUTHZ_JWKS_REFRESH_SECONDS=1, the secret file
watcher's POLL_SECONDS); everywhere else exactly one answer is right.

Pass: zero wrong decisions, zero 5xx (every Check was answered by authz, also across the
planned worker restarts; around the crash only the moment of the kill may fail: what was
in flight on the dead worker and what Envoy sent into its closing sockets, which the report
counts), worker RSS growth under 10 % from after warm-up to the
end, open fds flat. `test_soak_short` (20 s) runs by default; `test_soak_long` (60 s) is
marked long.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from authz.core.base64url import b64url
from authz.keys.secret_file import POLL_SECONDS
from tests.credentials import OTHER_SECRET, SECRET, hs256
from tests.harness import Authz, echo_upstream, request, run_authz, run_envoy, wait_until
from tests.reliability import REST, jwks_of, open_fds, rs256, rss_bytes

pytestmark = pytest.mark.e2e

SECRET_V1 = "soak-rotated-secret-generation-1-0123456789"
SECRET_V2 = "soak-rotated-secret-generation-2-0123456789"
JWKS_REFRESH_SECONDS = 1.0
# A change to the JWKS is in every worker's key set within one refresh period, one failed
# fetch's backoff (capped at the period) and the fetch itself; a secret file change within
# one poll. The margins absorb scheduling on a busy machine.
JWKS_WINDOW = 2 * JWKS_REFRESH_SECONDS + 1.0
SECRET_WINDOW = POLL_SECONDS + 1.0
# A worker restart's window, from its signal until this long after its successor runs.
RESTART_MARGIN = 1.0
# A crashed worker's sockets are gone within moments of the SIGKILL: a Check sent later
# than this after it must not fail (generous for a loaded machine).
CRASH_SETTLE_SECONDS = 5.0
PLANNED_RESTARTS = 5
# The share of the schedule the restarts get (on a busy machine they take longer, and the
# rest of the schedule waits for them).
RESTARTS_END = 0.30
LOAD_THREADS = 8
# Paced, not flat out: on a small CI machine a saturated CPU alone would push Checks past
# Envoy's 0.5 s ext_authz timeout, and the test is about authz, not the machine.
REQUESTS_PER_SECOND = 320
POOL = 16  # tokens per kind: repeated use exercises the token cache


# --- the JWKS server the test drives --------------------------------------------------

class FaultyJWKS:
    """A loopback JWKS endpoint whose answer the test switches: ok, 500, garbage, hang."""

    def __init__(self, body: bytes) -> None:
        self.mode = "ok"
        self.body = body
        self.served: Counter[str] = Counter()
        self._changed = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with outer._changed:
                    if outer.mode == "hang":
                        outer.served["hang"] += 1
                    while outer.mode == "hang":
                        outer._changed.wait()
                    mode, body = outer.mode, outer.body
                if mode == "500":
                    status, body = 500, b"oops"
                elif mode == "garbage":
                    status, body = 200, b'{"keys": "not a list"' + os.urandom(64)
                else:
                    status = 200
                outer.served[mode] += 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/.well-known/jwks.json"

    def set(self, mode: str, body: bytes | None = None) -> None:
        with self._changed:
            self.mode = mode
            if body is not None:
                self.body = body
            self._changed.notify_all()

    def close(self) -> None:
        self.set("ok")
        self._httpd.shutdown()
        self._httpd.server_close()


# --- the oracle --------------------------------------------------------------------------

@dataclass
class Kind:
    """One kind of token: its pool, and its right status over time.

    `changes` are (from, until, status): from `from` on the status is `status`, and
    between `from` and `until` the previous status is still right too.
    """

    name: str
    tokens: list[str]
    initial: int
    changes: list[tuple[float, float, int]] = field(default_factory=list)

    def right(self, sent: float, done: float) -> set[int]:
        """Every status that is right for a request in flight from `sent` to `done`."""
        status = self.initial
        allowed: set[int] = set()
        for start, until, new in self.changes:
            if until <= sent:
                status = new
            elif start <= done:
                allowed |= {status, new}
        return allowed | {status}


@dataclass(frozen=True)
class Result:
    kind: str
    sent: float
    done: float
    status: int
    body: bytes


def _none_token() -> str:
    return (b64url(b'{"alg":"none","typ":"JWT"}') + "."
            + b64url(json.dumps({"sub": "admin", "exp": time.time() + 3600}).encode()) + ".")


def make_kinds() -> dict[str, Kind]:
    def pool(mint: Callable[[int], str]) -> list[str]:
        return [mint(i) for i in range(POOL)]

    kinds = [
        Kind("hs_plain", pool(lambda i: hs256(SECRET, sub=f"p{i}")), 200),
        Kind("hs_v1", pool(lambda i: hs256(SECRET_V1, sub=f"v1-{i}")), 200),
        Kind("hs_v2", pool(lambda i: hs256(SECRET_V2, sub=f"v2-{i}")), 401),
        Kind("rs_a", pool(lambda i: rs256("a", sub=f"a{i}")), 200),
        Kind("rs_b", pool(lambda i: rs256("b", sub=f"b{i}")), 401),
        Kind("expired", pool(lambda i: hs256(SECRET, ttl=-120 - i)), 401),
        Kind("forged_hs", pool(lambda i: hs256(OTHER_SECRET, sub=f"f{i}")), 401),
        Kind("forged_rs", pool(lambda i: rs256("rogue", sub=f"r{i}")), 401),
        Kind("unknown_kid", pool(lambda i: rs256(f"kid-{i}")), 401),
        Kind("alg_none", [_none_token()], 401),
        Kind("tampered", pool(lambda i: _tamper(hs256(SECRET, sub=f"t{i}"))), 401),
    ]
    return {kind.name: kind for kind in kinds}


def _tamper(token: str) -> str:
    head, _, rest = token.partition(".")
    payload, _, signature = rest.partition(".")
    claims = json.loads(_b64decode(payload))
    claims["sub"] = "admin"
    return f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"


def _b64decode(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# --- load ----------------------------------------------------------------------------

def _load(port: int, kinds: list[Kind], stop: threading.Event, out: list[Result],
          seed: int) -> None:
    rng = random.Random(seed)
    conn: http.client.HTTPConnection | None = None
    interval = LOAD_THREADS / REQUESTS_PER_SECOND
    next_at = time.monotonic() + rng.uniform(0, interval)
    while not stop.is_set():
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        next_at = max(next_at + interval, time.monotonic() - interval)
        kind = rng.choice(kinds)
        token = rng.choice(kind.tokens)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        sent = time.monotonic()
        try:
            conn.request("GET", REST, headers={"Authorization": f"Bearer {token}"})
            answer = conn.getresponse()
            body = answer.read()
            status = answer.status
        except (OSError, http.client.HTTPException):
            # A dropped keep-alive connection is the client's business: retry on a new one.
            conn.close()
            conn = None
            continue
        out.append(Result(kind.name, sent, time.monotonic(), status, body))
        if answer.will_close:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()


# --- the run -------------------------------------------------------------------------

def _keys_loaded(authz: Authz) -> int:
    """How many times a process of `authz` logged loading a JWKS key set."""
    return authz.logs().count('"msg": "JWKS key set loaded"')


def _workers(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return sorted(int(pid) for pid in children)


@dataclass
class Figures:
    requests: int = 0
    wrong: list[Result] = field(default_factory=list)
    errors: list[Result] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    rss_before: int = 0
    rss_after: int = 0
    fds_before: int = 0
    fds_after: int = 0
    restarted: list[tuple[int, int]] = field(default_factory=list)
    crashed: list[tuple[int, int]] = field(default_factory=list)
    jwks_served: Counter[str] = field(default_factory=Counter)
    events: list[tuple[float, str]] = field(default_factory=list)
    t0: float = 0.0
    # (from, until) around each worker SIGTERM (planned: nothing may fail) and SIGKILL
    # (a crash: the Checks in flight on that worker may fail, and are counted).
    restart_windows: list[tuple[float, float]] = field(default_factory=list)
    crash_windows: list[tuple[float, float]] = field(default_factory=list)
    crash_errors: list[Result] = field(default_factory=list)
    restart_errors: list[Result] = field(default_factory=list)

    def report(self, seconds: float) -> str:
        return (
            f"soak {seconds:.0f}s: {self.requests} requests ({self.requests / seconds:.0f}/s), "
            f"{len(self.wrong)} wrong decisions, {len(self.errors)} 5xx "
            f"+{len(self.restart_errors)} 5xx around {len(self.restart_windows)} planned "
            "worker restarts "
            f"+{len(self.crash_errors)} 5xx around a worker's SIGKILL; "
            f"worker RSS {self.rss_before / 2**20:.1f} -> {self.rss_after / 2**20:.1f} MiB, "
            f"fds {self.fds_before} -> {self.fds_after}; "
            f"worker restarts {self.restarted}, crash {self.crashed}; "
            f"JWKS answers {dict(self.jwks_served)}; "
            f"by kind {dict(sorted(self.by_kind.items()))}"
        )


@contextlib.contextmanager
def _stack(secret_file: Path, jwks: FaultyJWKS) -> Iterator[tuple[Authz, int]]:
    with echo_upstream() as upstream, run_authz(
        {
            "AUTHZ_HS256_SECRET_FILE": str(secret_file),
            "AUTHZ_JWKS_URL": jwks.url,
            "AUTHZ_JWKS_REFRESH_SECONDS": str(JWKS_REFRESH_SECONDS),
        },
        args=("--workers", "2"),
    ) as authz, run_envoy(
        {"authz": authz.grpc_port, "ant_media": upstream}, wait_cluster_healthy=None
    ) as envoy:
        wait_until(lambda: len(_workers(authz.process.pid)) == 2, what="two workers")
        wait_until(
            lambda: request(envoy.port, REST, {"Authorization": hs256(SECRET)}).status == 200,
            what="served through Envoy",
        )
        yield authz, envoy.port


def soak(seconds: float) -> Figures:
    """Run the soak for `seconds` and return its figures (asserts nothing itself)."""
    kinds = make_kinds()
    figures = Figures()
    jwks = FaultyJWKS(jwks_of("a"))
    with tempfile.TemporaryDirectory() as tmp, contextlib.closing(jwks):
        secret_file = Path(tmp) / "hs256"
        secret_file.write_text(SECRET_V1 + "\n")
        with _stack(secret_file, jwks) as (authz, port):
            supervisor = authz.process.pid
            results: list[Result] = []
            stop = threading.Event()
            t0 = figures.t0 = time.monotonic()

            # Where the schedule's fractions count from. The restarts take as long as the
            # machine needs; the key changes and JWKS faults after them keep their spacing
            # (each key change a healthy JWKS for its whole window) by shifting this.
            base = [t0]

            def at(fraction: float, event: str) -> None:
                delay = base[0] + fraction * seconds - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                figures.events.append((time.monotonic() - t0, event))

            def change(names: tuple[str, ...], window: float, status: dict[str, int]) -> None:
                now = time.monotonic()
                for name in names:
                    kinds[name].changes.append((now, now + window, status[name]))

            def restart(index: int, sig: signal.Signals) -> None:
                victim = _workers(supervisor)[index]
                loaded = _keys_loaded(authz)
                started = time.monotonic()
                os.kill(victim, sig)
                wait_until(lambda: victim not in _workers(supervisor)
                           and len(_workers(supervisor)) == 2, timeout=60,
                           what="worker replaced")
                # The next fault waits until the successor has its keys (an event, not a
                # delay). A planned successor is ready before its predecessor leaves; a
                # crashed worker's successor starts after it died.
                wait_until(lambda: _keys_loaded(authz) > loaded, timeout=60,
                           what="successor loaded its JWKS")
                replaced = (victim, max(_workers(supervisor)))
                window = (started, time.monotonic() + RESTART_MARGIN)
                if sig == signal.SIGKILL:
                    figures.crashed.append(replaced)
                    figures.crash_windows.append(window)
                else:
                    figures.restarted.append(replaced)
                    figures.restart_windows.append(window)

            def sample() -> tuple[int, int]:
                pids = _workers(supervisor)
                return sum(rss_bytes(p) for p in pids), sum(open_fds(p) for p in pids)

            loaders = [
                threading.Thread(target=_load, args=(port, list(kinds.values()), stop,
                                                     results, seed))
                for seed in range(LOAD_THREADS)
            ]
            for thread in loaders:
                thread.start()
            try:
                for number in range(PLANNED_RESTARTS):
                    at(0.02 + 0.05 * number, f"SIGTERM worker ({number + 1})")
                    restart(number % 2, signal.SIGTERM)
                at(0.28, "SIGKILL worker")
                restart(0, signal.SIGKILL)
                wait_until(lambda: request(authz.http_port, "/readyz").status == 200,
                           what="ready after restarts")
                base[0] = max(t0, time.monotonic() - RESTARTS_END * seconds)
                at(RESTARTS_END + 0.03, "JWKS: a+b; secret file rotated")
                jwks.set("ok", jwks_of("a", "b"))
                change(("rs_b",), JWKS_WINDOW, {"rs_b": 200})
                tmp_file = secret_file.with_suffix(".new")
                tmp_file.write_text(SECRET_V2 + "\n")
                tmp_file.replace(secret_file)
                change(("hs_v1", "hs_v2"), SECRET_WINDOW, {"hs_v1": 401, "hs_v2": 200})
                # Each key change gets a healthy JWKS for its whole window; faults follow.
                # Warm-up over: both restarted workers have run for a while under load.
                at(0.42, "RSS and fds sampled")
                workers_measured = _workers(supervisor)
                figures.rss_before, figures.fds_before = sample()
                at(0.52, "JWKS: b only")
                jwks.set("ok", jwks_of("b"))
                change(("rs_a",), JWKS_WINDOW, {"rs_a": 401})
                at(0.75, "JWKS: 500")
                jwks.set("500")
                # Each fault is held until a refresh has met it (an event: fetch times move
                # with jitter and backoff), then the schedule goes on.
                wait_until(lambda: jwks.served["500"] > 0, timeout=20, what="a 500 served")
                at(0.82, "JWKS: garbage")
                jwks.set("garbage")
                wait_until(lambda: jwks.served["garbage"] > 0, timeout=20,
                           what="garbage served")
                at(0.89, "JWKS: hang")
                jwks.set("hang")
                at(0.96, "JWKS: answers again")
                jwks.set("ok")
                at(0.99, "end")
            finally:
                stop.set()
                for thread in loaders:
                    thread.join(15)
            assert _workers(supervisor) == workers_measured, "a worker died during the run"
            time.sleep(0.5)  # let fetches in flight finish before counting fds
            figures.rss_after, figures.fds_after = sample()
            figures.jwks_served = jwks.served
    figures.requests = len(results)
    for result in results:
        figures.by_kind[result.kind] += 1
        if result.status >= 500:
            in_crash = any(start <= result.done and result.sent <= until
                           for start, until in figures.crash_windows)
            in_restart = any(start <= result.done and result.sent <= until
                             for start, until in figures.restart_windows)
            if in_crash:
                figures.crash_errors.append(result)
            elif in_restart:
                figures.restart_errors.append(result)
            else:
                figures.errors.append(result)
        elif result.status not in kinds[result.kind].right(result.sent, result.done):
            figures.wrong.append(result)
    return figures


def check(figures: Figures, seconds: float) -> None:
    print(figures.report(seconds))
    print("schedule:", [(round(t, 1), e) for t, e in figures.events])
    print("failures (kind, sent, done, status):", [
        (r.kind, round(r.sent - figures.t0, 3), round(r.done - figures.t0, 3), r.status)
        for r in (figures.errors + figures.restart_errors + figures.crash_errors
                  + figures.wrong)[:10]])
    assert figures.errors == [], figures.errors[:5]
    assert len(figures.restart_windows) == PLANNED_RESTARTS
    # Planned restarts lose nothing: the leaving worker takes its listener out of the
    # port's group, and closes only once Envoy has moved its connection to a sibling.
    assert figures.restart_errors == [], figures.restart_errors[:5]
    # A crash fails what was in flight on the dead worker, and what Envoy sent on the
    # connections it reopened while the kernel was still closing the dead process's
    # sockets (a connection queued on its listener is reset with it; Linux's
    # net.ipv4.tcp_migrate_req=1 would hand it to the sibling). Measured: 0-12 with 8 load
    # threads, all within a few ms. Counted and reported; nothing sent later may fail.
    [(killed_at, _)] = figures.crash_windows
    assert all(r.sent - killed_at <= CRASH_SETTLE_SECONDS for r in figures.crash_errors), [
        round(r.sent - killed_at, 3) for r in figures.crash_errors]
    assert figures.wrong == [], figures.wrong[:5]
    assert figures.requests > 50 * seconds
    assert all(figures.by_kind[k] > 0 for k in make_kinds())
    assert figures.rss_after < figures.rss_before * 1.10
    # A few fds of slack: a refresh fetch's socket may be open at either sample.
    assert abs(figures.fds_after - figures.fds_before) <= 4
    assert figures.jwks_served["500"] and figures.jwks_served["garbage"]


def test_soak_short() -> None:
    check(soak(20), 20)


@pytest.mark.long
def test_soak_long() -> None:
    check(soak(60), 60)


def test_oracle_windows() -> None:
    kind = Kind("k", [], 200, [(10.0, 12.0, 401)])
    assert kind.right(1, 2) == {200}
    assert kind.right(9, 10.5) == {200, 401}
    assert kind.right(11, 11.5) == {200, 401}
    assert kind.right(12.5, 13) == {401}
