"""Settings of the identity providers (SPEC section 10): the YAML `issuers:` list,
AUTHZ_OIDC_ISSUER, how they combine with AUTHZ_JWKS_URL / AUTHZ_ISSUER (conflicts exit 2),
and a policy's `issuers:` allow-list."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.keys.issuers import key_sources
from authz.keys.jwks_source import discovery_url
from authz.keys.snapshot import PUBLIC_ALGS
from authz.keys.store import KeyStore
from authz.settings.errors import SettingsError
from authz.settings.load import load_settings
from authz.settings.model import IssuerConfig, Settings

AUTH0 = "https://tenant.eu.auth0.com/"
HYDRA = "https://hydra.internal:4444/"
LISTED = f"""
issuers:
  - issuer: {AUTH0}
    audience: [ams-rest]
    algorithms: [RS256]
  - issuer: {HYDRA}
    jwks_url: https://hydra.internal:4444/.well-known/jwks.json
"""


def settings(tmp_path: Path, text: str | None = None, **env: str) -> Settings:
    config = None
    if text is not None:
        config = tmp_path / "authz.yaml"
        config.write_text(text)
    return load_settings(str(config) if config else None, None, env)


def error(tmp_path: Path, text: str | None = None, **env: str) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        settings(tmp_path, text, **env)
    assert "\n" not in str(caught.value)
    return caught.value


def test_the_issuers_list(tmp_path: Path) -> None:
    loaded = settings(tmp_path, LISTED)
    assert loaded.issuers == (
        IssuerConfig(AUTH0, None, ("ams-rest",), frozenset({"RS256"})),
        IssuerConfig(HYDRA, "https://hydra.internal:4444/.well-known/jwks.json", (), PUBLIC_ALGS),
    )
    snapshot = KeyStore(loaded).snapshot
    assert set(snapshot.issuers) == {AUTH0, HYDRA} and not snapshot.issuers_loaded
    assert snapshot.issuers[AUTH0].audiences == ("ams-rest",)
    sources = key_sources(loaded, KeyStore(loaded))
    assert sources is not None and set(sources.sources) == {AUTH0, HYDRA}


def test_oidc_issuer_is_a_one_entry_list_with_discovery(tmp_path: Path) -> None:
    loaded = settings(tmp_path, AUTHZ_OIDC_ISSUER=AUTH0)
    assert loaded.issuers == (IssuerConfig(AUTH0),)
    # The trailing slash is part of the issuer; discovery appends to it without doubling.
    assert discovery_url(AUTH0) == "https://tenant.eu.auth0.com/.well-known/openid-configuration"
    assert discovery_url("https://kc.example/realms/ams") == (
        "https://kc.example/realms/ams/.well-known/openid-configuration"
    )
    assert settings(tmp_path, AUTHZ_OIDC_ISSUER=AUTH0, AUTHZ_ISSUER=AUTH0).issuer == AUTH0


def test_the_single_issuer_form_is_unchanged(tmp_path: Path) -> None:
    loaded = settings(tmp_path, AUTHZ_JWKS_URL="https://idp.example", AUTHZ_ISSUER=AUTH0)
    assert loaded.issuers == () and loaded.jwks_url == "https://idp.example/.well-known/jwks.json"
    sources = key_sources(loaded, KeyStore(loaded))
    assert sources is not None and list(sources.sources) == [None]


@pytest.mark.parametrize(
    ("text", "env", "setting", "words"),
    [
        (LISTED, {"AUTHZ_OIDC_ISSUER": AUTH0}, "AUTHZ_OIDC_ISSUER", "issuers:"),
        (LISTED, {"AUTHZ_JWKS_URL": "https://x.example"}, "AUTHZ_JWKS_URL", "issuers:"),
        (None, {"AUTHZ_OIDC_ISSUER": AUTH0, "AUTHZ_JWKS_URL": "https://x.example"},
         "AUTHZ_JWKS_URL", "AUTHZ_OIDC_ISSUER"),
        (None, {"AUTHZ_OIDC_ISSUER": AUTH0, "AUTHZ_ISSUER": "https://other.example/"},
         "AUTHZ_ISSUER", "not one of the configured issuers"),
        (None, {"AUTHZ_OIDC_ISSUER": "tenant.auth0.com"}, "AUTHZ_OIDC_ISSUER", "URL"),
        (None, {"AUTHZ_OIDC_ISSUER": "https://a.example/?x=1"}, "AUTHZ_OIDC_ISSUER", "query"),
        ("issuers: []", {}, "issuers", "non-empty"),
        ("issuers: {issuer: x}", {}, "issuers", "list"),
        ("issuers: [{jwks_url: 'https://a.example'}]", {}, "issuers[0].issuer", "required"),
        ("issuers: [{issuer: 'not-a-url'}]", {}, "issuers[0].issuer", "URL"),
        ("issuers: [{issuer: 'https://a.example/', audiences: [x]}]", {}, "issuers[0].audiences",
         "did you mean audience"),
        ("issuers: [{issuer: 'https://a.example/', algorithms: [HS256]}]", {},
         "issuers[0].algorithms", "secrets"),
        ("issuers: [{issuer: 'https://a.example/', algorithms: [none]}]", {},
         "issuers[0].algorithms", "not one of"),
        ("issuers: [{issuer: 'https://a.example/', algorithms: []}]", {},
         "issuers[0].algorithms", "at least one"),
        ("issuers: [{issuer: 'https://a.example/'}, {issuer: 'https://a.example/'}]", {},
         "issuers[1].issuer", "twice"),
        (LISTED + "policies:\n  p: {issuers: ['https://tenant.eu.auth0.com']}\n", {},
         "policies.p.issuers", "not one of the configured issuers"),
        ("policies:\n  p: {issuers: ['https://a.example/']}\n", {"AUTHZ_HS256_SECRET": "s" * 32},
         "policies.p.issuers", "not one of the configured issuers"),
    ],
)
def test_refused(tmp_path: Path, text: str | None, env: dict[str, str], setting: str,
                 words: str) -> None:
    refused = error(tmp_path, text, **env)
    assert refused.setting == setting, str(refused)
    assert words in refused.message


def test_an_issuer_with_a_jwks_url_may_be_any_string(tmp_path: Path) -> None:
    loaded = settings(tmp_path, "issuers: [{issuer: my-service, jwks_url: 'http://127.0.0.1:1'}]")
    assert loaded.issuers[0].issuer == "my-service"
    assert loaded.issuers[0].jwks_url == "http://127.0.0.1:1/.well-known/jwks.json"


def test_a_policy_restricted_to_one_issuer(tmp_path: Path) -> None:
    loaded = settings(tmp_path, LISTED + f"policies:\n  p: {{issuers: ['{HYDRA}']}}\n")
    assert loaded.policies["p"].issuers == (HYDRA,)
    assert loaded.default_policy.issuers == ()


def test_required_issuer_outside_the_providers_passes_with_a_secret(tmp_path: Path) -> None:
    # The HS256 tokens may carry it (`authz token --iss`).
    loaded = settings(tmp_path, LISTED, AUTHZ_ISSUER="https://hs.example/",
                      AUTHZ_HS256_SECRET="s" * 32)
    assert loaded.issuer == "https://hs.example/"
