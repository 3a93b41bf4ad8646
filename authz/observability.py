"""Metrics (SPEC section 6) and structured logging. Nothing here ever sees a token or a secret."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from authz import __version__
from authz.core.decision import Decision, Reason, status_of

__all__ = [
    "BUILD_INFO",
    "CHECKS",
    "CHECKS_BY_REASON",
    "CHECKS_BY_TRANSPORT",
    "CHECK_DURATION",
    "JWKS_CONSECUTIVE_FAILURES",
    "JWKS_KEYS",
    "JWKS_KEYS_SKIPPED",
    "JWKS_LAST_SUCCESS",
    "JWKS_REFRESHES",
    "JWKS_TOO_MANY_KEYS",
    "SECRET_RELOADS",
    "SECRET_RELOAD_FAILURE",
    "SECRET_RELOAD_SUCCESS",
    "TLS_RELOADS",
    "TLS_RELOAD_FAILURE",
    "TLS_RELOAD_SUCCESS",
    "TOKEN_CACHE_HIT",
    "TOKEN_CACHE_LOOKUPS",
    "TOKEN_CACHE_MISS",
    "TRANSPORTS",
    "count_check",
    "count_failed_check",
    "count_token_cache_lookup",
    "init_metrics",
    "log_internal_error",
    "setup_logging",
]

CHECKS = Counter(
    "authz_checks",
    "Checks decided, by decision and reason.",
    ["decision", "reason"],
)
CHECK_DURATION = Histogram(
    "authz_check_duration_seconds",
    "Time to decide one Check, from request parsed to response built.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
# Every JWKS series has an `issuer` label (SPEC section 10): the identity provider's `iss`,
# or for the single AUTHZ_JWKS_URL the AUTHZ_ISSUER value ("" when it is not set).
JWKS_REFRESHES = Counter(
    "authz_jwks_refreshes", "JWKS fetches, by issuer and result.", ["issuer", "result"]
)
# Gauges under `--workers N`: each worker writes its own value, a scrape shows the largest
# of the live workers' (a dead worker's file is dropped when the supervisor reaps it, so
# its last value, e.g. a failure count, does not linger). Largest means: the key count and
# last success of the freshest worker, the failure count of the worst one.
JWKS_KEYS = Gauge(
    "authz_jwks_keys", "Usable signing keys in the current JWKS key set, by issuer.",
    ["issuer"],
    multiprocess_mode="livemax",
)
JWKS_LAST_SUCCESS = Gauge(
    "authz_jwks_last_success_timestamp_seconds",
    "Unix time of the last successful JWKS fetch, by issuer.",
    ["issuer"],
    multiprocess_mode="livemax",
)
JWKS_CONSECUTIVE_FAILURES = Gauge(
    "authz_jwks_consecutive_failures",
    "JWKS fetches failed in a row since the last success (0 = the key set is fresh), by "
    "issuer.",
    ["issuer"],
    multiprocess_mode="livemax",
)
JWKS_KEYS_SKIPPED = Gauge(
    "authz_jwks_keys_skipped",
    "Entries of the current JWKS document that are not used, by reason "
    "(not_for_signatures, unsupported, alg_mismatch, rsa_size, malformed), by issuer.",
    ["issuer", "reason"],
    multiprocess_mode="livemax",
)
JWKS_TOO_MANY_KEYS = Counter(
    "authz_jwks_too_many_keys",
    "JWKS answers refused for holding more usable keys than the cap (100); the last good "
    "key set stays in use. By issuer.",
    ["issuer"],
)
SECRET_RELOADS = Counter(
    "authz_secret_reloads",
    "Secret file loads, HS256 and stream (at start, after each change), by result.",
    ["result"],
)
# Not in SPEC section 6 (which names none for TLS): the authz_secret_reloads_total pattern.
TLS_RELOADS = Counter(
    "authz_tls_reloads",
    "Loads of the TLS certificate, key and client CA files (at start, after each change), "
    "by result; on failure the last good ones stay in use.",
    ["result"],
)
TOKEN_CACHE_LOOKUPS = Counter(
    "authz_token_cache_lookups", "Verified-token cache lookups, by result.", ["result"]
)
# Beside authz_checks_total rather than a label on it: SPEC section 6 fixes that label set.
CHECKS_BY_TRANSPORT = Counter(
    "authz_checks_by_transport",
    "Checks decided, by the door the request came through (grpc/http/webhook).",
    ["transport"],
)
# The doors (SPEC section 6, the `transport` label).
TRANSPORTS = ("grpc", "http", "webhook")
BUILD_INFO = Gauge(
    "authz_build_info", "Always 1; the version label names the running build.", ["version"],
    multiprocess_mode="livemax",
)

# Label children bound once: the hot path never looks a label set up.
CHECKS_BY_REASON: dict[Reason, Any] = {
    r: CHECKS.labels("allow" if status_of(r) == 200 else "deny", r.value) for r in Reason
}
SECRET_RELOAD_SUCCESS = SECRET_RELOADS.labels("success")
SECRET_RELOAD_FAILURE = SECRET_RELOADS.labels("failure")
TLS_RELOAD_SUCCESS = TLS_RELOADS.labels("success")
TLS_RELOAD_FAILURE = TLS_RELOADS.labels("failure")
TOKEN_CACHE_HIT = TOKEN_CACHE_LOOKUPS.labels("hit")
TOKEN_CACHE_MISS = TOKEN_CACHE_LOOKUPS.labels("miss")
_BY_TRANSPORT: dict[str, Any] = {t: CHECKS_BY_TRANSPORT.labels(t) for t in TRANSPORTS}

_check_log = logging.getLogger("authz.check")


def count_token_cache_lookup(hit: bool) -> None:
    """The core's TokenCache reports each lookup here (its `on_lookup`)."""
    (TOKEN_CACHE_HIT if hit else TOKEN_CACHE_MISS).inc()


def count_check(transport: str, decision: Decision, seconds: float) -> None:
    """One answered Check: by decision and reason, by transport, and its duration."""
    CHECKS_BY_REASON[decision.reason].inc()
    _BY_TRANSPORT[transport].inc()
    CHECK_DURATION.observe(seconds)


def log_internal_error(transport: str, error: BaseException) -> None:
    """Log a Check answered internal_error: the error's type and where it was raised, never
    its message (it may quote request data such as a token)."""
    frames = traceback.extract_tb(error.__traceback__)
    _check_log.error(
        "check failed, answering internal_error",
        extra={
            "transport": transport,
            "error": type(error).__name__,
            "where": f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?",
        },
    )


def count_failed_check(transport: str, error: BaseException) -> None:
    """A Check a door answered internal_error because it failed outside the Checker (a
    request that does not parse, an answer that does not encode): logged, and counted like
    every other Check."""
    log_internal_error(transport, error)
    CHECKS_BY_REASON[Reason.INTERNAL_ERROR].inc()
    _BY_TRANSPORT[transport].inc()


def init_metrics(jwks_configured: bool = True) -> None:
    """Publish build info so every series exists from the first scrape. Each JWKS source
    makes its issuer's series; without any, the SPEC section 6 JWKS series still exist,
    at zero, under `issuer=""` (the single-JWKS label), as they did before the label."""
    # `_created` series double every counter's exposition and no dashboard uses them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    BUILD_INFO.labels(__version__).set(1)
    if not jwks_configured:
        for result in ("success", "failure"):
            JWKS_REFRESHES.labels(issuer="", result=result)
        JWKS_KEYS.labels(issuer="")
        JWKS_LAST_SUCCESS.labels(issuer="")
        JWKS_CONSECUTIVE_FAILURES.labels(issuer="")


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and any `extra` fields."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str) -> None:
    """Structured logs to stderr at `level` (debug/info/warning/error)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.Formatter.converter = time.gmtime
