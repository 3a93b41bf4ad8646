"""The checks across settings once they are read: a key source when JWT checking is on,
no two listeners on one port (`SettingsError` at start), and `start_warnings` for valid
settings that weaken the check."""

from __future__ import annotations

from authz.core.policy import DEFAULT_POLICY
from authz.settings.addresses import split_host_port
from authz.settings.errors import SettingsError, env_name
from authz.settings.model import Settings

__all__ = [
    "NO_KEY",
    "check_addresses",
    "check_key_source",
    "check_stream_secret",
    "check_tls_files",
    "has_key_source",
    "start_warnings",
]

NO_KEY = (
    "JWT checking is on but no key is configured: set AUTHZ_HS256_SECRET, "
    "AUTHZ_HS256_SECRET_FILE, AUTHZ_JWKS_URL, AUTHZ_OIDC_ISSUER or issuers:, or turn JWT "
    "checking off"
)
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


def has_key_source(settings: Settings) -> bool:
    """True when an HMAC secret, a JWKS URL or an identity provider is configured."""
    return bool(settings.hs256_secrets) or settings.jwks_url is not None or bool(settings.issuers)


def check_key_source(settings: Settings) -> None:
    """Raise `SettingsError` when JWT checking is on without a key source."""
    if settings.jwt_enabled and not has_key_source(settings):
        raise SettingsError("AUTHZ_JWT_ENABLED", NO_KEY)


def check_stream_secret(settings: Settings) -> None:
    """Raise `SettingsError` when a stream token switch is on without a stream secret."""
    if settings.stream_secrets:
        return
    for key in ("play_jwt_enabled", "publish_jwt_enabled"):
        if getattr(settings, key):
            raise SettingsError(
                env_name(key),
                "stream tokens are checked but no stream secret is configured: set "
                "AUTHZ_STREAM_SECRET or AUTHZ_STREAM_SECRET_FILE "
                "(Ant Media: settings.jwtStreamSecretKey)",
            )


def check_tls_files(settings: Settings) -> None:
    """Raise `SettingsError` when the TLS settings are only half given: a certificate
    without its key or the other way round, or a client CA without a server certificate."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is not None and key is None:
        raise SettingsError("AUTHZ_TLS_KEY_FILE", "AUTHZ_TLS_CERT_FILE is set: set its key too")
    if key is not None and cert is None:
        raise SettingsError("AUTHZ_TLS_CERT_FILE", "AUTHZ_TLS_KEY_FILE is set: set its "
                            "certificate too")
    if settings.tls_client_ca_file is not None and cert is None:
        raise SettingsError(
            "AUTHZ_TLS_CLIENT_CA_FILE",
            "client certificates are checked only over TLS: set AUTHZ_TLS_CERT_FILE and "
            "AUTHZ_TLS_KEY_FILE too",
        )


def check_addresses(settings: Settings) -> None:
    """Raise `SettingsError` when two listen addresses share a port on one host."""
    # Two listeners on one port would fail at bind time with a less helpful message.
    seen: list[tuple[str, str, int]] = []
    for key in ("grpc_address", "http_address", "http_authz_address", "ams_webhook_address"):
        address: str | None = getattr(settings, key)
        if address is None:
            continue
        host, port = split_host_port(address)
        for other_key, other_host, other_port in seen:
            if port == other_port and (
                host == other_host or {host, other_host} & _WILDCARD_HOSTS
            ):
                raise SettingsError(
                    env_name(key), f"{address} clashes with {env_name(other_key)}"
                )
        seen.append((key, host, port))


def start_warnings(settings: Settings) -> tuple[str, ...]:
    """Valid settings that weaken the check: one line each, `<setting>: <why>`, to log at start.

    Never quotes a secret or the JWKS URL (it may carry credentials).
    """
    warnings: list[str] = []
    if not settings.jwt_enabled:
        warnings.append(
            "AUTHZ_JWT_ENABLED: the JWT check is off: requests pass without a token (reason "
            "jwt_disabled) on every route whose policy does not turn it on"
        )
    if settings.jwks_url is not None:
        # RFC 8725 3.8, 3.9, 3.12: an issuer's keys also sign ID tokens and tokens for its
        # other services; without `iss` or `aud` checked, all of them pass here.
        policies = {DEFAULT_POLICY: settings.default_policy, **settings.policies}
        unchecked = [
            name for name, policy in policies.items()
            if policy.jwt_enabled and policy.issuer is None and not policy.audiences
        ]
        if unchecked:
            warnings.append(
                "AUTHZ_JWKS_URL: any token its keys sign is accepted, also one the issuer made "
                "for another service, without an issuer or audience check "
                f"(policies: {', '.join(unchecked)}): set AUTHZ_ISSUER or AUTHZ_AUDIENCE, or "
                "the policy's issuer or audience (RFC 8725 sections 3.8, 3.9, 3.12)"
            )
    if set(settings.stream_secrets) & set(settings.hs256_secrets):
        warnings.append(
            "AUTHZ_STREAM_SECRET: a stream secret is also a REST (HS256) secret: a stream "
            "token then verifies on REST routes too; give Ant Media's jwtStreamSecretKey and "
            "jwtSecretKey different values"
        )
    if settings.ams_webhook_address is not None and not (
        settings.play_jwt_enabled or settings.publish_jwt_enabled
    ):
        warnings.append(
            "AUTHZ_AMS_WEBHOOK_ADDRESS: both AUTHZ_PLAY_JWT_ENABLED and "
            "AUTHZ_PUBLISH_JWT_ENABLED are off: the webhook allows every stream (jwt_disabled)"
        )
    return tuple(warnings)
