"""The typed settings model: `Settings`, one frozen object built once at start (see
`authz.settings.load`) and passed down; nothing reads the environment on its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from authz.core.policy import DEFAULT_POLICY, Network, Policy
from authz.keys.secrets import hmac_secrets
from authz.keys.snapshot import PUBLIC_ALGS
from authz.keys.tls_files import TlsFiles, TlsMaterial

__all__ = ["IssuerConfig", "LogLevel", "Settings"]

LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """One identity provider (SPEC section 10): the exact `iss` of its tokens, its JWKS URL
    (None: OpenID Connect discovery), the audiences of which its tokens must carry one
    (none: no per-issuer check) and the algorithms its keys may verify."""

    issuer: str
    jwks_url: str | None = None
    audience: tuple[str, ...] = ()
    algorithms: frozenset[str] = PUBLIC_ALGS


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of SPEC section 2 plus the project's own (cache size, CA bundle, policies).

    `hs256_file_secrets` holds the lines of `hs256_secret_file` as read at start;
    `hs256_secrets` is what the key snapshot starts with; `stream_file_secrets` and
    `stream_secrets` are the same for the stream secrets (SPEC section 9); `tls_material`
    is what the TLS files (SPEC section 11) held at start. `issuers` holds the identity
    providers: the YAML `issuers:` list, or the one AUTHZ_OIDC_ISSUER names.
    """

    grpc_address: str = "0.0.0.0:9001"
    http_address: str = "0.0.0.0:9464"
    http_authz_address: str | None = None
    hs256_secret: str | None = field(default=None, repr=False)
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
    log_level: LogLevel = "info"
    drain_delay_seconds: float = 5.0
    token_cache_size: int = 100_000
    stream_secret: str | None = field(default=None, repr=False)
    stream_secret_file: str | None = None
    play_jwt_enabled: bool = False
    publish_jwt_enabled: bool = False
    ams_webhook_address: str | None = None
    cluster_secret: str | None = field(default=None, repr=False)
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    oidc_issuer: str | None = None
    issuers: tuple[IssuerConfig, ...] = ()
    policies: dict[str, Policy] = field(default_factory=dict)
    hs256_file_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    stream_file_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    tls_material: TlsMaterial | None = field(default=None, repr=False)
    # Built once in __post_init__: every Check without a route policy reads it, and
    # building a Policy per Check cost about 0.7 us of a 3.4 us decision.
    default_policy: Policy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The policy for routes that name none: `policies.default`, else the flat settings.
        configured = self.policies.get(DEFAULT_POLICY)
        if configured is None:
            configured = Policy(
                name=DEFAULT_POLICY,
                jwt_enabled=self.jwt_enabled,
                allowed_networks=self.allowed_cidrs,
                issuer=self.issuer,
                audiences=self.audience,
            )
        object.__setattr__(self, "default_policy", configured)

    @property
    def tls_files(self) -> TlsFiles | None:
        """The TLS files of the Check doors, or None for plaintext."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return TlsFiles(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    @property
    def hs256_secrets(self) -> tuple[bytes, ...]:
        """The HMAC secrets at start: the secret file's lines, then the plain secret."""
        return self.secrets_with(self.hs256_file_secrets)

    @property
    def stream_secrets(self) -> tuple[bytes, ...]:
        """The stream secrets at start: the stream secret file's lines, then the plain one."""
        return hmac_secrets(self.stream_file_secrets, self.stream_secret)

    def secrets_with(self, file_secrets: tuple[bytes, ...]) -> tuple[bytes, ...]:
        """The HMAC secrets given the secret file's current lines, in
        `authz.keys.secrets.hmac_secrets`' order."""
        return hmac_secrets(file_secrets, self.hs256_secret)
