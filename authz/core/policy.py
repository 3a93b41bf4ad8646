"""Policy: what a route requires (`Policy`, `ClaimRule`) and how a request is held to it:
which policy applies, the IP filter, required claims and forwarded claims."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from authz.core.decision import Reason
from authz.core.extract import DEFAULT_TOKEN_SOURCES, TokenSource
from authz.core.headers import SUB_HEADER, legal_header_value
from authz.core.verify import TokenError

__all__ = [
    "DEFAULT_POLICY",
    "POLICY_CONTEXT_KEY",
    "ClaimRule",
    "JSONValue",
    "Network",
    "Policy",
    "PolicyTable",
    "check_required_claims",
    "forwarded",
    "ip_allowed",
    "select_policy",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The default policy's name: routes naming it, or none, get `PolicyTable.default_policy`.
DEFAULT_POLICY = "default"
JSONValue = Any
POLICY_CONTEXT_KEY = "policy"


@dataclass(frozen=True, slots=True)
class ClaimRule:
    """A required claim: `equals` one value, is `one_of` several, or `contains` a word.

    `contains` matches a word of a string split on U+0020 only (an OAuth `scope`, RFC 6749
    section 3.3) or an array member.
    """

    claim: str
    op: Literal["equals", "one_of", "contains"]
    values: tuple[JSONValue, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    """What one route requires. The default policy comes from the flat settings."""

    name: str
    jwt_enabled: bool = True
    allowed_networks: tuple[Network, ...] = ()
    issuer: str | None = None
    audiences: tuple[str, ...] = ()
    required_claims: tuple[ClaimRule, ...] = ()
    # (claim name, header name) pairs forwarded upstream on allow, besides x-jwt-sub.
    forward_claims: tuple[tuple[str, str], ...] = ()
    # Where the token comes from, in order (SPEC section 9); the default is the one
    # `authorization` header.
    token_sources: tuple[TokenSource, ...] = DEFAULT_TOKEN_SOURCES
    # The identity providers (their exact `iss`) whose tokens this route takes; empty: any
    # configured one (SPEC section 10).
    issuers: tuple[str, ...] = ()


class PolicyTable(Protocol):
    """The policies a route can name (the settings are one): the core needs no loader."""

    @property
    def default_policy(self) -> Policy: ...

    @property
    def policies(self) -> Mapping[str, Policy]: ...


def select_policy(context: Mapping[str, str], settings: PolicyTable) -> Policy:
    """The policy the route names in `context_extensions[policy]`, else the default.

    `default` names the default policy whether or not the settings write it out.
    """
    name = context.get(POLICY_CONTEXT_KEY)
    if name is None or name == DEFAULT_POLICY:
        return settings.default_policy
    policy = settings.policies.get(name)
    if policy is None:
        raise TokenError(Reason.UNKNOWN_POLICY)
    return policy


def ip_allowed(source_ip: str | None, networks: tuple[Network, ...]) -> bool:
    """True when the filter is off, or the address (v4, v6, v4-mapped v6) is in a network.

    An IPv4-mapped address is compared in its IPv4 form, so it matches the IPv4 networks
    exactly as the plain IPv4 address would (the settings read mapped networks as IPv4).
    """
    if not networks:
        return True
    if source_ip is None:
        return False
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    # JSON types must agree: `true` is not `1` and `"1"` is not `1`; 2 and 2.0 are equal.
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def _rule_holds(rule: ClaimRule, claims: Mapping[str, Any]) -> bool:
    if rule.claim not in claims:
        return False
    value = claims[rule.claim]
    if rule.op == "contains":
        # RFC 6749 section 3.3: scope tokens are separated by the space character only;
        # str.split() would also split on tabs, newlines and NO-BREAK SPACE.
        words = [w for w in value.split(" ") if w] if isinstance(value, str) else value
        return isinstance(words, list) and any(
            _same(word, wanted) for word in words for wanted in rule.values
        )
    return any(_same(value, wanted) for wanted in rule.values)


def check_required_claims(policy: Policy, claims: Mapping[str, Any]) -> None:
    """Raise TokenError(insufficient_scope) unless every required claim holds."""
    for rule in policy.required_claims:
        if not _rule_holds(rule, claims):
            raise TokenError(Reason.INSUFFICIENT_SCOPE)


def _header_value(value: Any) -> str | None:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool | int | float):
        text = json.dumps(value)
    else:
        return None
    return text if legal_header_value(text) else None


def forwarded(
    policy: Policy, sub: str | None, claims: Mapping[str, Any]
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """What an allow forwards: the upstream headers (x-jwt-sub and the policy's forwarded
    claims) and, for Envoy's dynamic metadata, each forwarded claim by its own name with
    the value its header carries."""
    headers: list[tuple[str, str]] = []
    if sub is not None and legal_header_value(sub):
        headers.append((SUB_HEADER, sub))
    if not policy.forward_claims:
        return tuple(headers), ()
    metadata: list[tuple[str, str]] = []
    for claim, header in policy.forward_claims:
        value = _header_value(claims.get(claim))
        if value is not None:
            headers.append((header, value))
            metadata.append((claim, value))
    return tuple(headers), tuple(metadata)
