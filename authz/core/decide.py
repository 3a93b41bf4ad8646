"""The decision core: one request view, a key snapshot and a clock value in, a Decision out.

No I/O: the fronts build the RequestView, the key sources provide the snapshot, the
caller reads the clock. Every SPEC rule is reachable from `decide` in a unit test.
"""

from __future__ import annotations

from typing import Protocol

from authz.core.decision import Decision, Reason, deny
from authz.core.extract import extract_token
from authz.core.headers import is_header_name
from authz.core.policy import (
    PolicyTable,
    check_required_claims,
    ip_allowed,
    select_policy,
    upstream_headers,
)
from authz.core.request import RequestView
from authz.core.token_cache import TokenCache
from authz.core.verify import TokenError, check_claims, check_shape, check_times, verify_token
from authz.keys.snapshot import KeySnapshot

__all__ = ["DecisionRules", "decide"]


class DecisionRules(PolicyTable, Protocol):
    """What `decide` reads of the settings (the settings model is one): the policies and
    the time rules, nothing else."""

    @property
    def leeway_seconds(self) -> float: ...

    @property
    def require_exp(self) -> bool: ...


def _allow(
    view: RequestView,
    reason: Reason,
    headers: tuple[tuple[str, str], ...] = (),
    sub: str | None = None,
    iss: str | None = None,
) -> Decision:
    # Client-sent x-jwt-* headers are stripped unless authz sets them itself: Envoy
    # removes after it sets, so a name must never be in both lists. A name that is not a
    # legal field name (CR, LF, NUL, ...) cannot be a header Envoy forwards: never echoed.
    set_names = {name for name, _ in headers}
    remove = tuple(
        name
        for name in view.jwt_headers
        if name not in set_names and is_header_name(name)
    )
    return Decision(reason, 200, headers, remove, "", sub, iss)


def decide(
    view: RequestView,
    keys: KeySnapshot,
    settings: DecisionRules,
    now: float,
    cache: TokenCache | None = None,
) -> Decision:
    """Decide one request. Never raises for bad input: every refusal is a Decision."""
    try:
        policy = select_policy(view.context, settings)
        if not ip_allowed(view.source_ip, policy.allowed_networks):
            return deny(Reason.IP_NOT_ALLOWED)
        if not policy.jwt_enabled:
            return _allow(view, Reason.JWT_DISABLED)
        token = extract_token(view.authorization)
        if token is None:
            return deny(Reason.MISSING_TOKEN)
        # Size and shape first: junk never costs a cache hash nor counts as a cache miss.
        check_shape(token)
        verified = cache.get(token, keys) if cache is not None else None
        if verified is None:
            verified = verify_token(token, keys)
            if cache is not None:
                cache.put(token, verified)
        check_times(verified, now, settings.leeway_seconds, settings.require_exp)
        check_claims(verified, policy.issuer, policy.audiences)
        check_required_claims(policy, verified.claims)
    except TokenError as refused:
        return deny(refused.reason)
    headers = upstream_headers(policy, verified.sub, verified.claims)
    return _allow(view, Reason.OK, headers, verified.sub, verified.iss)
