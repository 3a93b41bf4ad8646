"""The decision core: one request view, key snapshots and a clock value in, a Decision out.

No I/O: the fronts build the RequestView, the key sources provide the snapshots, the
caller reads the clock. Every SPEC rule is reachable from `decide` in a unit test.
"""

from __future__ import annotations

from typing import Protocol

from authz.core.authenticate import authenticate
from authz.core.decision import Decision, Reason, allow, deny, unknown_kid_of
from authz.core.extract import find_token
from authz.core.policy import (
    PolicyTable,
    check_required_claims,
    forwarded,
    ip_allowed,
    select_policy,
)
from authz.core.request import RequestView
from authz.core.stream_check import (
    NO_STREAM_KEYS,
    StreamKeys,
    StreamRules,
    decide_stream,
    is_stream_request,
)
from authz.core.token_cache import TokenCache
from authz.core.verify import TokenError, check_claims, check_issuer
from authz.keys.snapshot import KeySnapshot

__all__ = ["DecisionRules", "decide"]


class DecisionRules(PolicyTable, StreamRules, Protocol):
    """What `decide` reads of the settings (the settings model is one): the policies, the
    time rules and the stream switches, nothing else."""

    @property
    def require_exp(self) -> bool: ...


def decide(
    view: RequestView,
    keys: KeySnapshot,
    settings: DecisionRules,
    now: float,
    cache: TokenCache | None = None,
    streams: StreamKeys = NO_STREAM_KEYS,
) -> Decision:
    """Decide one request: a stream route or webhook question by the stream rules against
    `streams`, anything else by its policy against `keys`. Never raises for bad input:
    every refusal is a Decision."""
    if is_stream_request(view):
        return decide_stream(view, streams, settings, now, cache)
    try:
        policy = select_policy(view.context, settings)
        if not ip_allowed(view.source_ip, policy.allowed_networks):
            return deny(Reason.IP_NOT_ALLOWED)
        if not policy.jwt_enabled:
            return allow(view.jwt_headers, Reason.JWT_DISABLED)
        token, in_query = find_token(view, policy.token_sources)
        if token is None:
            return deny(Reason.MISSING_TOKEN)
        verified = authenticate(
            token, keys, now, settings.leeway_seconds, settings.require_exp, cache
        )
        check_claims(verified, policy.issuer, policy.audiences)
        if verified.issuer is not None or policy.issuers:
            check_issuer(verified, keys, policy.issuers)
        check_required_claims(policy, verified.claims)
    except TokenError as refused:
        if refused.issuer is not None:
            return unknown_kid_of(refused.issuer)
        return deny(refused.reason)
    headers, claims = forwarded(policy, verified.sub, verified.claims)
    return allow(
        view.jwt_headers, Reason.OK, headers, verified.sub, verified.iss, in_query, claims
    )
