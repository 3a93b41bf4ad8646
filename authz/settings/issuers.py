"""The identity providers (SPEC section 10): the YAML `issuers:` list read into
`IssuerConfig`s, AUTHZ_OIDC_ISSUER as the one-issuer shorthand, and how both combine with
the single-issuer form (AUTHZ_JWKS_URL, AUTHZ_ISSUER): `combine_issuers`.

The three forms, one at a time:
- `AUTHZ_JWKS_URL` (with `AUTHZ_ISSUER` when tokens must carry that `iss`): one key set,
  as before; tokens are not chosen by `iss`.
- `AUTHZ_OIDC_ISSUER`: one identity provider found by discovery, exactly as a one-entry
  `issuers:` list without `jwks_url`.
- `issuers:`: one or more identity providers, each with its own keys.
`AUTHZ_JWKS_URL` (or Ant Media's `settings.jwksURL`) beside either of the last two, or both
of them together, is a conflict: exit 2 naming the setting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from authz.keys.snapshot import HMAC_ALGS, PUBLIC_ALGS
from authz.settings import convert
from authz.settings.errors import SettingsError, shown, suggest
from authz.settings.model import IssuerConfig, Settings

__all__ = ["ISSUER_KEYS", "check_required_issuers", "combine_issuers", "read_issuers"]

ISSUER_KEYS = ("issuer", "jwks_url", "audience", "algorithms")


def read_issuers(document: object) -> tuple[IssuerConfig, ...]:
    """The identity providers of the YAML `issuers:` list; raises `SettingsError` naming
    `issuers[<n>][.<field>]` on the first invalid one."""
    if not isinstance(document, list) or not document:
        raise SettingsError(
            "issuers", "must be a non-empty list of {issuer: ..., jwks_url: ..., ...} entries"
        )
    providers: list[IssuerConfig] = []
    for number, entry in enumerate(document):
        where = f"issuers[{number}]"
        provider = _provider(where, entry)
        if any(p.issuer == provider.issuer for p in providers):
            raise SettingsError(f"{where}.issuer", f"{shown(provider.issuer)} is listed twice")
        providers.append(provider)
    return tuple(providers)


def _provider(where: str, entry: object) -> IssuerConfig:
    if not isinstance(entry, dict):
        raise SettingsError(where, "must be a mapping like {issuer: https://idp.example/}")
    for key in entry:
        if key not in ISSUER_KEYS:
            raise SettingsError(f"{where}.{key}", f"unknown field{suggest(key, ISSUER_KEYS)}")

    def read(key: str, converter: Callable[[object], Any], default: Any) -> Any:
        value = entry.get(key)
        if value is None:
            return default
        try:
            return converter(value)
        except ValueError as exc:
            raise SettingsError(f"{where}.{key}", str(exc)) from None

    jwks_url = read("jwks_url", convert.jwks_url, None)
    # With a jwks_url the issuer is only compared with `iss` (any string, as RFC 7519
    # allows); without one it is the URL discovery starts from.
    issuer = read("issuer", convert.text if jwks_url else convert.issuer_url, None)
    if not issuer:
        raise SettingsError(f"{where}.issuer", "is required: the exact `iss` of its tokens")
    return IssuerConfig(
        issuer=issuer,
        jwks_url=jwks_url,
        audience=read("audience", convert.string_list, ()),
        algorithms=read("algorithms", _algorithms, PUBLIC_ALGS),
    )


def _algorithms(value: object) -> frozenset[str]:
    names = convert.string_list(value)
    if not names:
        raise ValueError("must name at least one algorithm (leave it out for all)")
    for name in names:
        if name in HMAC_ALGS:
            raise ValueError(
                f"{name} verifies with the HS256 secrets, never with an identity provider's keys"
            )
        if name not in PUBLIC_ALGS:
            raise ValueError(
                f"{shown(name)} is not one of {', '.join(sorted(PUBLIC_ALGS))}"
                f"{suggest(name, PUBLIC_ALGS)}"
            )
    return frozenset(names)


def combine_issuers(settings: Settings, listed: tuple[IssuerConfig, ...] | None) -> Settings:
    """`settings` with their identity providers: the YAML list `listed`, or the one
    AUTHZ_OIDC_ISSUER names; `SettingsError` when the forms conflict (module doc)."""
    if listed is not None and settings.oidc_issuer is not None:
        raise SettingsError(
            "AUTHZ_OIDC_ISSUER",
            "conflicts with the issuers: list of the YAML file: name that issuer in the list",
        )
    providers = listed or (
        (IssuerConfig(settings.oidc_issuer),) if settings.oidc_issuer is not None else ()
    )
    if providers and settings.jwks_url is not None:
        form = "issuers:" if listed is not None else "AUTHZ_OIDC_ISSUER"
        raise SettingsError(
            "AUTHZ_JWKS_URL",
            f"conflicts with {form}: the single JWKS URL and identity providers are two "
            "forms of one setting; give the provider a jwks_url in issuers: instead "
            "(Ant Media's settings.jwksURL sets it too)",
        )
    return replace(settings, issuers=providers) if providers else settings


def check_required_issuers(settings: Settings) -> None:
    """With identity providers, every issuer a policy requires (`issuer`, `issuers`) must be
    one of them; `issuer` may also be the `iss` of HS256 tokens when a secret is set."""
    named = {p.issuer for p in settings.issuers}
    policies = {"default": settings.default_policy, **settings.policies}
    for name, policy in policies.items():
        for wanted in policy.issuers:
            if wanted not in named:
                raise SettingsError(
                    f"policies.{name}.issuers",
                    f"{shown(wanted)} is not one of the configured issuers",
                )
        if (
            named
            and policy.issuer is not None
            and policy.issuer not in named
            and not settings.hs256_secrets
            and settings.hs256_secret_file is None
        ):
            setting = "AUTHZ_ISSUER" if name == "default" and policy.issuer == (
                settings.issuer
            ) else f"policies.{name}.issuer"
            raise SettingsError(
                setting,
                f"{shown(policy.issuer)} is not one of the configured issuers, and no HS256 "
                "secret could sign such a token: no token would pass",
            )
