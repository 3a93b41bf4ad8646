"""The `policies:` section of the YAML file: each named policy read into a
`authz.core.policy.Policy`, fields left out taking the flat settings' values."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal, cast

from authz.core.extract import DEFAULT_TOKEN_SOURCES, TokenSource, parse_token_source
from authz.core.headers import JWT_HEADER_PREFIX, SUB_HEADER, is_header_name
from authz.core.policy import ClaimRule, JSONValue, Policy
from authz.settings import convert
from authz.settings.checks import NO_KEY, has_key_source
from authz.settings.errors import SettingsError, shown, suggest
from authz.settings.model import Settings

__all__ = ["CLAIM_OPS", "POLICY_KEYS", "read_policies"]

POLICY_KEYS = (
    "jwt_enabled", "allowed_cidrs", "issuer", "audience", "required_claims", "forward_claims",
    "token_sources", "issuers",
)
CLAIM_OPS: tuple[Literal["equals", "one_of", "contains"], ...] = ("equals", "one_of", "contains")
_POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def read_policies(document: object, settings: Settings) -> dict[str, Policy]:
    """The policies of the YAML `policies:` mapping; raises `SettingsError` on the first
    invalid one, naming it `policies.<name>[.<field>]`."""
    if not isinstance(document, dict):
        raise SettingsError("policies", "must be a mapping of policy name to policy")
    policies: dict[str, Policy] = {}
    for name, body in document.items():
        if not isinstance(name, str) or not _POLICY_NAME.match(name):
            raise SettingsError(
                f"policies.{name}",
                "a policy name is letters, digits, '_', '.', '-', starting with a letter or digit",
            )
        policies[name] = _policy(name, body if body is not None else {}, settings)
    return policies


def _policy(name: str, body: object, settings: Settings) -> Policy:
    """One policy: fields left out (or null) take the flat settings' values.

    `issuer: ""`, `audience: []` and `allowed_cidrs: []` explicitly drop that requirement.
    """
    prefix = f"policies.{name}"
    if not isinstance(body, dict):
        raise SettingsError(prefix, "must be a mapping of policy fields")
    for key in body:
        if key not in POLICY_KEYS:
            raise SettingsError(
                f"{prefix}.{key}", f"unknown policy field{suggest(key, POLICY_KEYS)}"
            )
    fields = {key: value for key, value in body.items() if value is not None}

    def read(key: str, converter: Callable[[object], Any], inherited: Any) -> Any:
        if key not in fields:
            return inherited
        try:
            return converter(fields[key])
        except ValueError as exc:
            raise SettingsError(f"{prefix}.{key}", str(exc)) from None

    policy = Policy(
        name=name,
        jwt_enabled=read("jwt_enabled", convert.boolean, settings.jwt_enabled),
        allowed_networks=read("allowed_cidrs", convert.cidrs, settings.allowed_cidrs),
        issuer=read("issuer", convert.optional_text, settings.issuer),
        audiences=read("audience", convert.string_list, settings.audience),
        required_claims=read("required_claims", _claim_rules, ()),
        forward_claims=read("forward_claims", _forward_claims, ()),
        token_sources=read("token_sources", _token_sources, DEFAULT_TOKEN_SOURCES),
        issuers=read("issuers", _issuers, ()),
    )
    if policy.jwt_enabled and not has_key_source(settings):
        raise SettingsError(f"{prefix}.jwt_enabled", NO_KEY)
    if not policy.jwt_enabled:
        for key in ("required_claims", "forward_claims", "token_sources", "issuers"):
            if fields.get(key):
                raise SettingsError(f"{prefix}.{key}", "needs JWT checking on for this policy")
    return policy


def _issuers(value: object) -> tuple[str, ...]:
    """`[https://a.example/, ...]`: the identity providers (exact `iss`) this route takes."""
    issuers = convert.string_list(value)
    if not issuers:
        raise ValueError("must name at least one configured issuer (leave it out for all)")
    return issuers


def _token_sources(value: object) -> tuple[TokenSource, ...]:
    """`[header:authorization, query:token, cookie:jwt]`: where the token comes from."""
    if not isinstance(value, list) or not value:
        raise ValueError(
            "must be a non-empty list of header:authorization, query:NAME or cookie:NAME"
        )
    sources: list[TokenSource] = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"sources must be strings like query:token, got {shown(item)}")
        source = parse_token_source(item.strip())
        if source in sources:
            raise ValueError(f"{shown(str(source))} is listed twice")
        sources.append(source)
    return tuple(sources)


def _claim_value(value: object) -> JSONValue:
    # YAML also yields dates, sets and mappings; a claim is compared with JSON scalars only.
    if isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"a claim value must be a string, number or boolean, got {shown(value)}")


def _claim_rules(value: object) -> tuple[ClaimRule, ...]:
    """`[{claim: role, one_of: [admin, publisher]}, {claim: scope, contains: publish}, ...]`"""
    if not isinstance(value, list):
        raise ValueError("must be a list of rules like {claim: role, equals: admin}")
    rules: list[ClaimRule] = []
    for number, rule in enumerate(value, start=1):
        where = f"rule {number}"
        if not isinstance(rule, dict):
            raise ValueError(f"{where} must be a mapping like {{claim: role, equals: admin}}")
        claim = rule.get("claim")
        if not isinstance(claim, str) or not claim:
            raise ValueError(f"{where} needs `claim:` naming the claim")
        ops = [key for key in rule if key != "claim"]
        unknown = [key for key in ops if key not in CLAIM_OPS]
        if unknown:
            raise ValueError(
                f"{where}: unknown test {shown(unknown[0])}{suggest(unknown[0], CLAIM_OPS)}"
            )
        if len(ops) != 1:
            raise ValueError(f"{where} needs exactly one of equals, one_of, contains")
        op = cast(Literal["equals", "one_of", "contains"], ops[0])
        operand = rule[op]
        if op == "one_of":
            items = operand if isinstance(operand, list) else [operand]
            if not items:
                raise ValueError(f"{where}: one_of needs at least one value")
            values = tuple(_claim_value(item) for item in items)
        elif isinstance(operand, list):
            raise ValueError(f"{where}: {op} takes one value; write one rule per value")
        else:
            values = (_claim_value(operand),)
        rules.append(ClaimRule(claim=claim, op=op, values=values))
    return tuple(rules)


def _forward_claims(value: object) -> tuple[tuple[str, str], ...]:
    """`{claim: header}`; header names are lowercased and must start with `x-jwt-`.

    Only `x-jwt-*` headers are stripped from client requests (SPEC section 5), so a claim
    forwarded under any other name could be forged by a client when the claim is absent.
    That rule also keeps pseudo-headers, `host` and `authorization` out.
    """
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of claim name to header name")
    pairs: list[tuple[str, str]] = []
    used: set[str] = set()
    for claim, header in value.items():
        if not isinstance(claim, str) or not claim:
            raise ValueError(f"claim names must be non-empty strings, got {shown(claim)}")
        if not isinstance(header, str):
            raise ValueError(f"{claim}: header name must be a string, got {shown(header)}")
        name = header.strip().lower()
        if name.startswith(":"):
            raise ValueError(f"{claim}: {shown(header)} is a pseudo-header")
        if not is_header_name(name):
            raise ValueError(f"{claim}: {shown(header)} is not a legal header name")
        if not name.startswith(JWT_HEADER_PREFIX) or name == SUB_HEADER:
            raise ValueError(
                f"{claim}: header {shown(name)} must start with x-jwt- and not be x-jwt-sub "
                "(clients' x-jwt-* headers are stripped, so upstream can trust it)"
            )
        if name in used:
            raise ValueError(f"{claim}: header {shown(name)} is already used by another claim")
        used.add(name)
        pairs.append((claim, name))
    return tuple(pairs)
