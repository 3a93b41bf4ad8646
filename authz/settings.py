"""The settings model: one typed, validated object built from defaults, YAML, AMS properties and env.

Loading and validation are filled in below the model (see `load_settings`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
JSONValue = Any


@dataclass(frozen=True, slots=True)
class ClaimRule:
    """A required claim: `equals` one value, is `one_of` several, or `contains` a word.

    `contains` matches a space-separated string (OAuth `scope`) or an array member.
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


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of SPEC section 2 plus the project's own (cache size, CA bundle, policies)."""

    grpc_address: str = "0.0.0.0:9001"
    http_address: str = "0.0.0.0:9464"
    http_authz_address: str | None = None
    hs256_secret: str | None = None
    hs256_secret_file: str | None = None
    jwks_url: str | None = None
    jwks_refresh_seconds: float = 300.0
    jwks_ca_file: str | None = None
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    leeway_seconds: float = 60.0
    require_exp: bool = False
    allowed_cidrs: tuple[Network, ...] = ()
    jwt_enabled: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    token_cache_size: int = 100_000
    policies: dict[str, Policy] = field(default_factory=dict)

    @property
    def default_policy(self) -> Policy:
        """The policy for routes that name none, built from the flat settings."""
        return Policy(
            name="default",
            jwt_enabled=self.jwt_enabled,
            allowed_networks=self.allowed_cidrs,
            issuer=self.issuer,
            audiences=self.audience,
        )
