"""Settings: source precedence, AMS properties, validation messages, secret files, policies."""

from __future__ import annotations

import datetime
import ipaddress
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from authz.core.policy import ClaimRule, Policy, ip_allowed
from authz.keys.secrets import read_secret_file
from authz.settings.ams import parse_properties
from authz.settings.checks import start_warnings
from authz.settings.errors import SettingsError
from authz.settings.load import load_settings
from authz.settings.model import Settings
from tests.harness import ROOT

EXAMPLES = ROOT / "examples"
SECRET = "yaml-secret-that-must-never-leak-0123456789"
ENV_SECRET = "env-secret-that-must-never-leak-0123456789"
AMS_SECRET = "ams-secret-that-must-never-leak-0123456789"
SHORT = "short-leaky-secret"
KEYED = {"AUTHZ_HS256_SECRET": ENV_SECRET}


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(
    config: str | None = None, ams: str | None = None, env: dict[str, str] | None = None
) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        load_settings(config, ams, env or {})
    return caught.value


def assert_clean(error: SettingsError, setting: str, *secrets: str) -> str:
    """The error names `setting` first, is one line and quotes none of `secrets`."""
    text = str(error)
    assert error.setting == setting
    assert text.startswith(f"{setting}: ")
    assert "\n" not in text and "\r" not in text
    for secret in (SECRET, ENV_SECRET, AMS_SECRET, SHORT, *secrets):
        assert secret not in text
        assert secret not in repr(error.args)
    return text


# ---- defaults and precedence ----


def test_defaults_match_the_spec() -> None:
    settings = load_settings(None, None, {"AUTHZ_JWT_ENABLED": "false"})
    assert settings == Settings(jwt_enabled=False)
    assert settings.grpc_address == "0.0.0.0:9001"
    assert settings.http_address == "0.0.0.0:9464"
    assert settings.http_authz_address is None
    assert settings.jwks_refresh_seconds == 300
    assert settings.leeway_seconds == 60
    assert settings.require_exp is False
    assert settings.allowed_cidrs == ()
    assert settings.log_level == "info"
    assert settings.hs256_secrets == ()


def test_later_sources_win(tmp_path: Path) -> None:
    config = write(tmp_path, "authz.yaml", f"""
hs256_secret: {SECRET}
jwks_url: https://yaml.example.com/keys
allowed_cidrs: [10.0.0.0/8]
jwt_enabled: false
issuer: yaml-issuer
leeway_seconds: 5
log_level: debug
grpc_address: 127.0.0.1:7001
""")
    yaml_only = load_settings(config, None, {})
    assert yaml_only.hs256_secret == SECRET
    assert yaml_only.jwks_url == "https://yaml.example.com/keys"
    assert yaml_only.jwt_enabled is False
    assert yaml_only.leeway_seconds == 5
    assert yaml_only.grpc_address == "127.0.0.1:7001"

    ams = write(tmp_path, "red5-web.properties", f"""
settings.jwtControlEnabled=true
settings.jwtSecretKey={AMS_SECRET}
settings.jwksURL=https://ams.example.com/keys
settings.remoteAllowedCIDR=192.168.0.0/16
""")
    with_ams = load_settings(config, ams, {})
    assert with_ams.hs256_secret == AMS_SECRET
    assert with_ams.jwks_url == "https://ams.example.com/keys"
    assert with_ams.allowed_cidrs == (ipaddress.ip_network("192.168.0.0/16"),)
    assert with_ams.jwt_enabled is True
    assert with_ams.issuer == "yaml-issuer"  # AMS has no issuer: the YAML value stays

    env = {
        "AUTHZ_HS256_SECRET": ENV_SECRET,
        "AUTHZ_JWKS_URL": "https://env.example.com/keys",
        "AUTHZ_ALLOWED_CIDRS": "172.16.0.0/12, 2001:db8::/32",
        "AUTHZ_JWT_ENABLED": "no",
        "AUTHZ_ISSUER": "env-issuer",
        "AUTHZ_LOG_LEVEL": "WARNING",
        "PATH": "/usr/bin",
    }
    everything = load_settings(config, ams, env)
    assert everything.hs256_secret == ENV_SECRET
    assert everything.jwks_url == "https://env.example.com/keys"
    assert everything.allowed_cidrs == (
        ipaddress.ip_network("172.16.0.0/12"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert everything.jwt_enabled is False
    assert everything.issuer == "env-issuer"
    assert everything.log_level == "warning"
    assert everything.leeway_seconds == 5  # set only in YAML


def test_every_env_var_is_read(tmp_path: Path) -> None:
    secret_file = write(tmp_path, "secret", "f" * 40 + "\n")
    env = {
        "AUTHZ_GRPC_ADDRESS": "[::]:7001",
        "AUTHZ_HTTP_ADDRESS": "127.0.0.1:7002",
        "AUTHZ_HTTP_AUTHZ_ADDRESS": "localhost:7003",
        "AUTHZ_HS256_SECRET": ENV_SECRET,
        "AUTHZ_HS256_SECRET_FILE": secret_file,
        "AUTHZ_JWKS_URL": "http://127.0.0.1:8080/jwks",
        "AUTHZ_JWKS_REFRESH_SECONDS": "1.5",
        "AUTHZ_ISSUER": "iss",
        "AUTHZ_AUDIENCE": "a, b,,a",
        "AUTHZ_LEEWAY_SECONDS": "0",
        "AUTHZ_REQUIRE_EXP": "On",
        "AUTHZ_ALLOWED_CIDRS": "10.0.0.1",
        "AUTHZ_JWT_ENABLED": "1",
        "AUTHZ_LOG_LEVEL": "error",
        "AUTHZ_TOKEN_CACHE_SIZE": "0",
    }
    settings = load_settings(None, None, env)
    assert settings.grpc_address == "[::]:7001"
    assert settings.http_address == "127.0.0.1:7002"
    assert settings.http_authz_address == "localhost:7003"
    assert settings.hs256_secret_file == secret_file
    assert settings.jwks_url == "http://127.0.0.1:8080/jwks"
    assert settings.jwks_refresh_seconds == 1.5
    assert settings.issuer == "iss"
    assert settings.audience == ("a", "b")
    assert settings.leeway_seconds == 0
    assert settings.require_exp is True
    assert settings.allowed_cidrs == (ipaddress.ip_network("10.0.0.1/32"),)
    assert settings.log_level == "error"
    assert settings.token_cache_size == 0
    # The file's secrets sign first; the plain secret keeps verifying.
    assert settings.hs256_secrets == (b"f" * 40, ENV_SECRET.encode())


def test_empty_env_var_resets_to_default(tmp_path: Path) -> None:
    config = write(tmp_path, "authz.yaml", f"""
hs256_secret: {SECRET}
allowed_cidrs: 10.0.0.0/8
issuer: yaml-issuer
leeway_seconds: 5
""")
    settings = load_settings(
        config, None,
        {"AUTHZ_ALLOWED_CIDRS": "", "AUTHZ_ISSUER": "", "AUTHZ_LEEWAY_SECONDS": ""},
    )
    assert settings.allowed_cidrs == ()
    assert settings.issuer is None
    assert settings.leeway_seconds == 60
    assert settings.hs256_secret == SECRET


def test_yaml_lists_and_comma_strings_are_equivalent(tmp_path: Path) -> None:
    as_list = write(tmp_path, "a.yaml", "jwt_enabled: false\naudience: [x, y]\n"
                    "allowed_cidrs: [10.0.0.0/8, '::1']\n")
    as_text = write(tmp_path, "b.yaml", "jwt_enabled: false\naudience: x,y\n"
                    "allowed_cidrs: 10.0.0.0/8, ::1\n")
    assert load_settings(as_list, None, {}) == load_settings(as_text, None, {})


def test_empty_yaml_file_is_all_defaults(tmp_path: Path) -> None:
    config = write(tmp_path, "authz.yaml", "# nothing set\n")
    assert load_settings(config, None, KEYED) == load_settings(None, None, KEYED)


def test_settings_repr_hides_secrets(tmp_path: Path) -> None:
    secret_file = write(tmp_path, "secret", SECRET + "\n")
    settings = load_settings(
        None, None, {"AUTHZ_HS256_SECRET": ENV_SECRET, "AUTHZ_HS256_SECRET_FILE": secret_file}
    )
    assert ENV_SECRET not in repr(settings)
    assert SECRET not in repr(settings)


# ---- AMS red5-web.properties ----


def test_properties_syntax() -> None:
    text = (
        "# a comment\n"
        "   ! another comment\n"
        "\n"
        "a=1\n"
        "b : 2\n"
        "c 3\n"
        "d=first \\\n"
        "    second \\\n"
        "\tthird\n"
        "e=\\# not a comment\n"
        "f\\=g\\:h=value\\twith\\ttabs\n"
        "uni=caf\\u00e9\n"
        "ends=backslash\\\\\n"
        "next=line\n"
        "dup=old\n"
        "dup=new\n"
        "empty=\n"
        "cont=\\\n"
        "# part of cont, not a comment\n"
    )
    assert parse_properties(text) == {
        "a": "1",
        "b": "2",
        "c": "3",
        "d": "first second third",
        "e": "# not a comment",
        "f=g:h": "value\twith\ttabs",
        "uni": "café",
        "ends": "backslash\\",
        "next": "line",
        "dup": "new",
        "empty": "",
        "cont": "# part of cont, not a comment",
    }


def _escape(text: str) -> str:
    # Every space escaped: a continuation line's leading whitespace is not part of the value.
    out = []
    for char in text:
        if char in "\\=:#! ":
            out.append("\\" + char)
        elif char in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[char])
        elif not char.isprintable() or char.isspace():
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


@hypothesis_settings(deadline=None)  # a busy machine makes timings vary
@given(st.dictionaries(st.text(min_size=1, alphabet=st.characters(max_codepoint=0xFFFF,
                                                                   exclude_categories=["Cs"])),
                       st.text(alphabet=st.characters(max_codepoint=0xFFFF,
                                                      exclude_categories=["Cs"]))))
def test_properties_round_trip(entries: dict[str, str]) -> None:
    # Whatever Java's Properties.store would write, split over continuation lines, reads back.
    lines = []
    for key, value in entries.items():
        escaped = _escape(value)
        half = len(escaped) // 2
        while half and escaped[half - 1] == "\\":  # never split inside an escape
            half -= 1
        lines.append(f"{_escape(key)} = {escaped[:half]}\\\n    {escaped[half:]}")
    assert parse_properties("\n".join(lines)) == entries


def test_ams_keys_map_to_settings(tmp_path: Path) -> None:
    ams = write(tmp_path, "red5-web.properties", f"""
# AMS application settings
settings.jwtControlEnabled = true
settings.jwtSecretKey: {AMS_SECRET}
settings.jwksURL=https://tenant.auth0.com
settings.remoteAllowedCIDR=127.0.0.1,\\
    10.0.0.0/8
settings.ipFilterEnabled=true
settings.jwtStreamSecretKey=ignored-because-it-is-another-feature
settings.unrelated=whatever
""")
    settings = load_settings(None, ams, {})
    assert settings.jwt_enabled is True
    assert settings.hs256_secret == AMS_SECRET
    assert settings.jwks_url == "https://tenant.auth0.com/.well-known/jwks.json"
    assert settings.allowed_cidrs == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )


@pytest.mark.parametrize("flag", ["false", "FALSE", "no", "0"])
def test_ams_ip_filter_disabled_ignores_cidrs(tmp_path: Path, flag: str) -> None:
    config = write(tmp_path, "authz.yaml", "allowed_cidrs: 10.0.0.0/8\n")
    ams = write(tmp_path, "red5-web.properties",
                f"settings.remoteAllowedCIDR=127.0.0.1\nsettings.ipFilterEnabled={flag}\n")
    # The AMS CIDRs are not applied; what was configured before stays.
    settings = load_settings(config, ams, KEYED)
    assert settings.allowed_cidrs == (ipaddress.ip_network("10.0.0.0/8"),)


def test_ams_empty_values_are_unset(tmp_path: Path) -> None:
    config = write(tmp_path, "authz.yaml", f"hs256_secret: {SECRET}\njwt_enabled: true\n")
    ams = write(tmp_path, "red5-web.properties",
                "settings.jwtSecretKey=\nsettings.jwksURL=\nsettings.jwtControlEnabled=\n"
                "settings.remoteAllowedCIDR=\n")
    settings = load_settings(config, ams, {})
    assert settings.hs256_secret == SECRET
    assert settings.jwks_url is None
    assert settings.allowed_cidrs == ()


def test_ams_latin1_file(tmp_path: Path) -> None:
    secret = "geheimnis-mit-umlaut-ä-0123456789abcdef"
    path = tmp_path / "red5-web.properties"
    path.write_bytes(f"settings.jwtSecretKey={secret}\n".encode("latin-1"))
    assert load_settings(None, str(path), {}).hs256_secret == secret


def test_ams_errors_name_the_setting_and_the_file(tmp_path: Path) -> None:
    ams = write(tmp_path, "red5-web.properties", f"settings.jwtSecretKey={SHORT}\n")
    text = assert_clean(error_of(ams=ams), "AUTHZ_HS256_SECRET")
    assert "settings.jwtSecretKey" in text and ams in text

    ams = write(tmp_path, "bad.properties", "settings.ipFilterEnabled=maybe\n")
    assert_clean(error_of(ams=ams, env=KEYED), "settings.ipFilterEnabled")

    missing = str(tmp_path / "missing.properties")
    assert missing in assert_clean(error_of(ams=missing, env=KEYED), "--ams-properties")


# ---- validation ----


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("AUTHZ_GRPC_ADDRESS", "9001", "host:port"),
        ("AUTHZ_GRPC_ADDRESS", ":9001", "host:port"),
        ("AUTHZ_GRPC_ADDRESS", "0.0.0.0:0", "1-65535"),
        ("AUTHZ_GRPC_ADDRESS", "0.0.0.0:65536", "1-65535"),
        ("AUTHZ_GRPC_ADDRESS", "0.0.0.0:http", "1-65535"),
        ("AUTHZ_GRPC_ADDRESS", ":::9001", "brackets"),
        ("AUTHZ_GRPC_ADDRESS", "[nothost]:9001", "IPv6"),
        ("AUTHZ_HTTP_ADDRESS", "bad host:9464", "host name"),
        ("AUTHZ_HTTP_AUTHZ_ADDRESS", "0.0.0.0:", "1-65535"),
        ("AUTHZ_JWKS_REFRESH_SECONDS", "0.5", "at least 1"),
        ("AUTHZ_JWKS_REFRESH_SECONDS", "five", "number"),
        ("AUTHZ_JWKS_REFRESH_SECONDS", "nan", "finite"),
        ("AUTHZ_LEEWAY_SECONDS", "-1", "at least 0"),
        ("AUTHZ_LEEWAY_SECONDS", "inf", "finite"),
        ("AUTHZ_LEEWAY_SECONDS", "nan", "finite"),
        ("AUTHZ_LEEWAY_SECONDS", "-inf", "finite"),
        ("AUTHZ_LEEWAY_SECONDS", "1e15", "at most 300 seconds"),
        ("AUTHZ_LEEWAY_SECONDS", "300.5", "at most 300 seconds"),
        ("AUTHZ_REQUIRE_EXP", "maybe", "true/false"),
        ("AUTHZ_JWT_ENABLED", "enabled", "true/false"),
        ("AUTHZ_ALLOWED_CIDRS", "10.0.0.0/8,10.0.0.0/33", "10.0.0.0/33"),
        ("AUTHZ_ALLOWED_CIDRS", "example.com", "CIDR"),
        ("AUTHZ_LOG_LEVEL", "verbose", "debug, info, warning, error"),
        ("AUTHZ_JWKS_URL", "ftp://example.com/jwks", "http"),
        ("AUTHZ_JWKS_URL", "example.com", "http"),
        ("AUTHZ_JWKS_URL", "https:///jwks.json", "host"),
        ("AUTHZ_JWKS_URL", "https://example.com:99999/", "port"),
        ("AUTHZ_JWKS_URL", "https://example.com/je ks", "spaces or control"),
        ("AUTHZ_JWKS_URL", "https://example.com/jwks\x01", "spaces or control"),
        ("AUTHZ_JWKS_URL", "https://example.com/jwks?a=\u2028b", "spaces or control"),
        ("AUTHZ_TOKEN_CACHE_SIZE", "-1", "0"),
        ("AUTHZ_TOKEN_CACHE_SIZE", "1.5", "whole number"),
    ],
)
def test_invalid_env_values(variable: str, value: str, fragment: str) -> None:
    text = assert_clean(error_of(env={**KEYED, variable: value}), variable)
    assert fragment in text


def test_jwks_url_is_not_echoed() -> None:
    text = str(error_of(env={"AUTHZ_JWKS_URL": "ftp://user:hunter2hunter2@example.com/"}))
    assert "hunter2" not in text


@pytest.mark.parametrize(
    "url",
    [
        "https://jwks-user:hunter2hunter2@idp.example.com/keys",
        "https://jwks-user@idp.example.com/keys",
        "https://:hunter2hunter2@idp.example.com/keys",
        "https://@idp.example.com/keys",
        "http://jwks-user:hunter2hunter2@127.0.0.1:8080",
        "HTTPS://jwks-user:hunter2hunter2@[::1]:8443/keys?realm=a",
    ],
)
def test_jwks_url_with_userinfo_is_refused_without_echoing_it(
    tmp_path: Path, url: str
) -> None:
    # urllib cannot fetch such a URL, and the credential would reach every failure log:
    # refused at start, from every source, naming the variable and quoting neither part.
    config = write(tmp_path, "authz.yaml", f"jwks_url: '{url}'\n")
    ams = write(tmp_path, "red5-web.properties", f"settings.jwksURL={url}\n")
    for error in (error_of(env={"AUTHZ_JWKS_URL": url}), error_of(config=config),
                  error_of(ams=ams)):
        text = assert_clean(error, "AUTHZ_JWKS_URL", "hunter2", "jwks-user")
        assert "user name or password" in text


@pytest.mark.parametrize(
    ("given", "loaded"),
    [
        ("https://tenant.auth0.com", "https://tenant.auth0.com/.well-known/jwks.json"),
        ("https://tenant.auth0.com/", "https://tenant.auth0.com/.well-known/jwks.json"),
        ("HTTP://127.0.0.1:8080", "http://127.0.0.1:8080/.well-known/jwks.json"),
        ("https://idp.example.com/oauth/jwks", "https://idp.example.com/oauth/jwks"),
        ("https://idp.example.com/?realm=a", "https://idp.example.com/?realm=a"),
        ("http://[::1]:8080/keys", "http://[::1]:8080/keys"),
    ],
)
def test_jwks_url_bare_origin(given: str, loaded: str) -> None:
    assert load_settings(None, None, {"AUTHZ_JWKS_URL": given}).jwks_url == loaded


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("Yes", True), ("on", True),
     ("false", False), ("False", False), ("0", False), ("NO", False), ("off", False)],
)
def test_booleans(text: str, expected: bool) -> None:
    settings = load_settings(None, None, {**KEYED, "AUTHZ_REQUIRE_EXP": text})
    assert settings.require_exp is expected


@pytest.mark.parametrize(
    "address", ["0.0.0.0:9001", "[::]:1", "[::1]:65535", "localhost:8080", "authz.svc.:80"]
)
def test_valid_addresses(address: str) -> None:
    assert load_settings(None, None, {**KEYED, "AUTHZ_GRPC_ADDRESS": address}).grpc_address == (
        address
    )


def test_listeners_must_not_share_a_port() -> None:
    text = assert_clean(
        error_of(env={**KEYED, "AUTHZ_HTTP_AUTHZ_ADDRESS": "127.0.0.1:9001"}),
        "AUTHZ_HTTP_AUTHZ_ADDRESS",
    )
    assert "AUTHZ_GRPC_ADDRESS" in text
    # Different hosts on one port are fine when neither is a wildcard.
    settings = load_settings(None, None, {
        **KEYED, "AUTHZ_GRPC_ADDRESS": "127.0.0.1:9001", "AUTHZ_HTTP_ADDRESS": "127.0.0.2:9001",
    })
    assert settings.http_address == "127.0.0.2:9001"


def test_host_bits_are_masked() -> None:
    settings = load_settings(None, None, {**KEYED, "AUTHZ_ALLOWED_CIDRS": "10.1.2.3/8,fd00::1/8"})
    assert settings.allowed_cidrs == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )


def test_leeway_up_to_the_cap(tmp_path: Path) -> None:
    assert load_settings(None, None, {**KEYED, "AUTHZ_LEEWAY_SECONDS": "300"}).leeway_seconds == 300
    assert load_settings(None, None, {**KEYED, "AUTHZ_LEEWAY_SECONDS": "0"}).leeway_seconds == 0
    config = write(tmp_path, "authz.yaml", f"hs256_secret: {SECRET}\nleeway_seconds: 1.0e+15\n")
    text = assert_clean(error_of(config=config), "AUTHZ_LEEWAY_SECONDS")
    assert "at most 300 seconds" in text and "authz.yaml" in text


def test_ipv4_mapped_cidrs_are_read_as_ipv4(tmp_path: Path) -> None:
    settings = load_settings(None, None, {
        **KEYED, "AUTHZ_ALLOWED_CIDRS": "::ffff:10.0.0.0/104,::ffff:192.0.2.1,10.0.0.0/8,fd00::/8",
    })
    assert settings.allowed_cidrs == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
        ipaddress.ip_network("fd00::/8"),
    )
    # Clients match the same way whether Envoy reports them as IPv4 or IPv4-mapped IPv6.
    for client, allowed in [
        ("10.1.2.3", True), ("::ffff:10.1.2.3", True), ("192.0.2.1", True),
        ("::ffff:192.0.2.1", True), ("11.0.0.1", False), ("::ffff:11.0.0.1", False),
        ("fd00::1", True), ("fe80::1", False),
    ]:
        assert ip_allowed(client, settings.allowed_cidrs) is allowed, client
    policy = policies_of(tmp_path, "  office: {allowed_cidrs: ['::ffff:10.0.0.0/104']}\n")
    assert policy.policies["office"].allowed_networks == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize("source", ["env", "yaml"])
def test_short_secret(tmp_path: Path, source: str) -> None:
    if source == "env":
        error = error_of(env={"AUTHZ_HS256_SECRET": SHORT})
    else:
        error = error_of(config=write(tmp_path, "authz.yaml", f"hs256_secret: '{SHORT}'\n"))
    text = assert_clean(error, "AUTHZ_HS256_SECRET")
    assert "at least 32 bytes (UTF-8)" in text


def test_secret_length_counts_utf8_bytes() -> None:
    # 11 characters of 3 bytes each: 33 bytes, 11 characters.
    assert load_settings(None, None, {"AUTHZ_HS256_SECRET": "€" * 11}).hs256_secret == "€" * 11
    assert_clean(error_of(env={"AUTHZ_HS256_SECRET": "a" * 31}), "AUTHZ_HS256_SECRET")


def test_secret_must_be_a_yaml_string(tmp_path: Path) -> None:
    config = write(tmp_path, "authz.yaml", "hs256_secret: 123456789012345678901234567890123\n")
    text = assert_clean(error_of(config=config), "AUTHZ_HS256_SECRET", "123456789012345678901")
    assert "quote" in text


def test_jwt_on_needs_a_key_source() -> None:
    text = assert_clean(error_of(env={}), "AUTHZ_JWT_ENABLED")
    assert "AUTHZ_JWKS_URL" in text
    assert load_settings(None, None, {"AUTHZ_JWKS_URL": "https://a.example"}).jwt_enabled


def test_unknown_yaml_key(tmp_path: Path) -> None:
    config = write(tmp_path, "authz.yaml", f"hs256_secret: {SECRET}\nhs256_secert: x\n")
    text = assert_clean(error_of(config=config), "hs256_secert")
    assert "did you mean hs256_secret" in text


@pytest.mark.parametrize("document", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_must_be_a_mapping(tmp_path: Path, document: str) -> None:
    text = assert_clean(error_of(config=write(tmp_path, "authz.yaml", document)), "--config")
    assert "mapping" in text


def test_invalid_yaml_does_not_quote_the_line(tmp_path: Path) -> None:
    config = write(tmp_path, "authz.yaml", f'hs256_secret: "{SECRET}\nissuer: x\n')
    text = assert_clean(error_of(config=config), "--config")
    assert "invalid YAML" in text and "line" in text


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    config = write(tmp_path, "authz.yaml", f"hs256_secret: {SECRET}\nhs256_secret: {SECRET}\n")
    text = assert_clean(error_of(config=config), "--config")
    assert "'hs256_secret' appears twice" in text


def test_missing_config_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    assert path in assert_clean(error_of(config=path), "--config")


def test_yaml_errors_say_where_the_value_came_from(tmp_path: Path) -> None:
    config = write(tmp_path, "authz.yaml", "jwt_enabled: false\nleeway_seconds: -3\n")
    text = assert_clean(error_of(config=config), "AUTHZ_LEEWAY_SECONDS")
    assert f"leeway_seconds in {config}" in text


def test_ca_file(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "ca.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert load_settings(None, None, {**KEYED, "AUTHZ_JWKS_CA_FILE": str(pem)}).jwks_ca_file == (
        str(pem)
    )
    not_pem = write(tmp_path, "not.pem", "hello\n")
    assert "PEM" in assert_clean(
        error_of(env={**KEYED, "AUTHZ_JWKS_CA_FILE": not_pem}), "AUTHZ_JWKS_CA_FILE"
    )
    missing = str(tmp_path / "missing.pem")
    assert "cannot read" in assert_clean(
        error_of(env={**KEYED, "AUTHZ_JWKS_CA_FILE": missing}), "AUTHZ_JWKS_CA_FILE"
    )


# ---- secret file ----


def test_secret_file_lines(tmp_path: Path) -> None:
    first, second = "n" * 32, "o" * 40
    path = tmp_path / "secret"
    path.write_bytes(f"\n{first}\r\n   \n{second}\n{first}\n".encode())
    assert read_secret_file(str(path)) == (first.encode(), second.encode())
    settings = load_settings(None, None, {"AUTHZ_HS256_SECRET_FILE": str(path)})
    assert settings.hs256_file_secrets == (first.encode(), second.encode())
    assert settings.hs256_secrets == (first.encode(), second.encode())


def test_secrets_with_dedupes_and_puts_the_file_first() -> None:
    settings = Settings(hs256_secret=ENV_SECRET)
    assert settings.secrets_with((b"x" * 32, ENV_SECRET.encode())) == (
        b"x" * 32, ENV_SECRET.encode()
    )
    assert settings.secrets_with(()) == (ENV_SECRET.encode(),)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "holds no secret"),
        (b"\n  \n\r\n", "holds no secret"),
        (b"x" * 40 + b"\n" + SHORT.encode() + b"\n", "line 2"),
        (b"x" * (64 * 1024 + 1), "larger than"),
    ],
)
def test_bad_secret_file(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    text = assert_clean(error_of(env={"AUTHZ_HS256_SECRET_FILE": str(path)}),
                        "AUTHZ_HS256_SECRET_FILE")
    assert fragment in text
    with pytest.raises(SettingsError):
        read_secret_file(str(path))


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_secret_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "secret"
    if kind == "directory":
        path.mkdir()
    text = assert_clean(error_of(env={"AUTHZ_HS256_SECRET_FILE": str(path)}),
                        "AUTHZ_HS256_SECRET_FILE")
    assert f"cannot read {path}" in text


# ---- policies ----


def policies_of(tmp_path: Path, body: str, flat: str = "") -> Settings:
    text = f"hs256_secret: {SECRET}\n{flat}policies:\n{body}"
    return load_settings(write(tmp_path, "authz.yaml", text), None, {})


def policy_error(tmp_path: Path, body: str, flat: str = "") -> SettingsError:
    text = f"hs256_secret: {SECRET}\n{flat}policies:\n{body}"
    return error_of(config=write(tmp_path, "authz.yaml", text))


def test_policies_parse_and_inherit(tmp_path: Path) -> None:
    settings = policies_of(tmp_path, """
  admin:
    allowed_cidrs: [192.168.1.0/24]
    audience: admin-api
    required_claims:
      - {claim: role, one_of: [admin, publisher]}
      - {claim: scope, contains: publish}
      - {claim: tenant, equals: acme}
      - {claim: level, one_of: 3}
    forward_claims:
      tenant: X-JWT-Tenant
  open:
    issuer: ""
    allowed_cidrs: []
  inherit:
""", flat="issuer: flat-iss\naudience: [a]\nallowed_cidrs: 10.0.0.0/8\n")
    assert settings.policies["admin"] == Policy(
        name="admin",
        jwt_enabled=True,
        allowed_networks=(ipaddress.ip_network("192.168.1.0/24"),),
        issuer="flat-iss",
        audiences=("admin-api",),
        required_claims=(
            ClaimRule("role", "one_of", ("admin", "publisher")),
            ClaimRule("scope", "contains", ("publish",)),
            ClaimRule("tenant", "equals", ("acme",)),
            ClaimRule("level", "one_of", (3,)),
        ),
        forward_claims=(("tenant", "x-jwt-tenant"),),
    )
    assert settings.policies["open"].issuer is None
    assert settings.policies["open"].allowed_networks == ()
    assert settings.policies["open"].audiences == ("a",)
    assert settings.policies["inherit"] == Policy(
        name="inherit", issuer="flat-iss", audiences=("a",),
        allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),),
    )
    assert settings.default_policy == Policy(
        name="default", issuer="flat-iss", audiences=("a",),
        allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),),
    )


def test_policies_inherit_from_later_sources(tmp_path: Path) -> None:
    config = write(tmp_path, "authz.yaml", f"hs256_secret: {SECRET}\npolicies:\n  p: {{}}\n")
    settings = load_settings(config, None, {"AUTHZ_ISSUER": "env-iss"})
    assert settings.policies["p"].issuer == "env-iss"


def test_default_policy_overrides_the_flat_settings(tmp_path: Path) -> None:
    settings = policies_of(tmp_path, """
  default:
    required_claims: [{claim: scope, contains: read}]
""", flat="issuer: flat-iss\n")
    assert settings.default_policy == Policy(
        name="default", issuer="flat-iss",
        required_claims=(ClaimRule("scope", "contains", ("read",)),),
    )


def test_policy_turns_jwt_off(tmp_path: Path) -> None:
    settings = policies_of(tmp_path, "  public: {jwt_enabled: off}\n")
    assert settings.policies["public"].jwt_enabled is False


def test_policy_turning_jwt_on_needs_a_key(tmp_path: Path) -> None:
    config = write(tmp_path, "authz.yaml",
                   "jwt_enabled: false\npolicies:\n  admin: {jwt_enabled: true}\n")
    assert_clean(error_of(config=config), "policies.admin.jwt_enabled")


@pytest.mark.parametrize(
    ("body", "setting", "fragment"),
    [
        ("  admin: {allowed_cidrs: [300.0.0.0/8]}\n", "policies.admin.allowed_cidrs", "300"),
        ("  admin: {jwt_enabled: sometimes}\n", "policies.admin.jwt_enabled", "true/false"),
        ("  admin: {audiences: [x]}\n", "policies.admin.audiences", "did you mean audience"),
        ("  admin: [x]\n", "policies.admin", "mapping"),
        ("  bad name: {}\n", "policies.bad name", "policy name"),
        ("  admin: {required_claims: {claim: role}}\n", "policies.admin.required_claims",
         "list"),
        ("  admin: {required_claims: [role]}\n", "policies.admin.required_claims", "rule 1"),
        ("  admin: {required_claims: [{equals: x}]}\n", "policies.admin.required_claims",
         "claim:"),
        ("  admin: {required_claims: [{claim: r}]}\n", "policies.admin.required_claims",
         "exactly one"),
        ("  admin: {required_claims: [{claim: r, equals: a, one_of: [b]}]}\n",
         "policies.admin.required_claims", "exactly one"),
        ("  admin: {required_claims: [{claim: r, equal: a}]}\n",
         "policies.admin.required_claims", "did you mean equals"),
        ("  admin: {required_claims: [{claim: r, one_of: []}]}\n",
         "policies.admin.required_claims", "at least one"),
        ("  admin: {required_claims: [{claim: r, contains: [a, b]}]}\n",
         "policies.admin.required_claims", "one rule per value"),
        ("  admin: {required_claims: [{claim: r, equals: 2024-01-01}]}\n",
         "policies.admin.required_claims", "string, number or boolean"),
        ("  admin: {forward_claims: [role]}\n", "policies.admin.forward_claims", "mapping"),
        ("  admin: {forward_claims: {role: ':path'}}\n", "policies.admin.forward_claims",
         "pseudo-header"),
        ("  admin: {forward_claims: {role: host}}\n", "policies.admin.forward_claims",
         "x-jwt-"),
        ("  admin: {forward_claims: {role: Authorization}}\n",
         "policies.admin.forward_claims", "x-jwt-"),
        ("  admin: {forward_claims: {role: 'x-jwt-bad header'}}\n",
         "policies.admin.forward_claims", "legal header name"),
        ("  admin: {forward_claims: {id: x-jwt-sub}}\n", "policies.admin.forward_claims",
         "x-jwt-sub"),
        ("  admin: {forward_claims: {a: x-jwt-a, b: X-JWT-A}}\n",
         "policies.admin.forward_claims", "already used"),
        ("  admin: {jwt_enabled: false, required_claims: [{claim: r, equals: a}]}\n",
         "policies.admin.required_claims", "JWT checking on"),
        ("  admin: {jwt_enabled: false, forward_claims: {r: x-jwt-r}}\n",
         "policies.admin.forward_claims", "JWT checking on"),
    ],
)
def test_policy_errors(tmp_path: Path, body: str, setting: str, fragment: str) -> None:
    assert fragment in assert_clean(policy_error(tmp_path, body), setting)


def test_policies_must_be_a_mapping(tmp_path: Path) -> None:
    assert_clean(policy_error(tmp_path, "  - admin\n"), "policies")


# ---- warnings at start ----

JWKS = {"AUTHZ_JWKS_URL": "https://idp.example"}


@pytest.mark.parametrize(
    ("env", "warned"),
    [
        (KEYED, []),
        ({**KEYED, "AUTHZ_JWT_ENABLED": "false"}, ["AUTHZ_JWT_ENABLED"]),
        ({"AUTHZ_JWT_ENABLED": "false"}, ["AUTHZ_JWT_ENABLED"]),
        (JWKS, ["AUTHZ_JWKS_URL"]),
        ({**JWKS, **KEYED}, ["AUTHZ_JWKS_URL"]),
        ({**JWKS, "AUTHZ_ISSUER": "https://idp.example/"}, []),
        ({**JWKS, "AUTHZ_AUDIENCE": "media-api"}, []),
        ({**JWKS, "AUTHZ_JWT_ENABLED": "false"}, ["AUTHZ_JWT_ENABLED"]),
    ],
)
def test_start_warnings(env: dict[str, str], warned: list[str]) -> None:
    warnings = start_warnings(load_settings(None, None, env))
    assert [text.split(":", 1)[0] for text in warnings] == warned
    assert all("\n" not in text for text in warnings)
    if "AUTHZ_JWKS_URL" in warned:
        text = next(t for t in warnings if t.startswith("AUTHZ_JWKS_URL"))
        assert "AUTHZ_ISSUER" in text and "AUTHZ_AUDIENCE" in text and "RFC 8725" in text
        assert "idp.example" not in text  # the URL may carry credentials: never shown


def test_jwks_warning_names_the_policies_without_issuer_or_audience(tmp_path: Path) -> None:
    config = write(tmp_path, "authz.yaml", """
jwks_url: https://idp.example
issuer: https://idp.example/
policies:
  strict: {}
  loose: {issuer: "", audience: []}
  public: {jwt_enabled: false, issuer: ""}
""")
    warnings = start_warnings(load_settings(config, None, {}))
    assert len(warnings) == 1
    assert warnings[0].startswith("AUTHZ_JWKS_URL: ") and "policies: loose" in warnings[0]


# ---- examples ----


def test_example_config_loads() -> None:
    settings = load_settings(str(EXAMPLES / "authz.yaml"), None, {})
    assert settings.jwt_enabled is True
    assert settings.hs256_secrets
    assert settings.http_authz_address == "0.0.0.0:9002"
    assert set(settings.policies) == {"publish", "admin", "stats"}
    assert settings.policies["admin"].required_claims[0] == ClaimRule(
        "role", "one_of", ("admin", "owner")
    )
    assert settings.policies["stats"].jwt_enabled is False


def test_example_config_documents_every_key() -> None:
    text = (EXAMPLES / "authz.yaml").read_text()
    documented = set(re.findall(r"^#? ?([a-z0-9_]+):", text, re.MULTILINE))
    flat = {name.lower() for name in Settings.__dataclass_fields__}
    # Derived values, not keys: the secret files' lines, the TLS files' content, the default
    # policy built once.
    flat -= {"hs256_file_secrets", "stream_file_secrets", "tls_material", "default_policy"}
    assert flat <= documented
    for key in ("jwt_enabled", "allowed_cidrs", "issuer", "audience",
                "required_claims", "forward_claims", "token_sources"):
        assert re.search(rf"^\s+{key}:", text, re.MULTILINE), key
    for op in ("equals", "one_of", "contains"):
        assert f"{op}:" in text


def test_example_properties_load() -> None:
    settings = load_settings(None, str(EXAMPLES / "red5-web.properties"), {})
    assert settings.jwt_enabled is True
    assert settings.jwks_url is None
    assert settings.allowed_cidrs == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )
    assert settings.hs256_secret is not None and len(settings.hs256_secret.encode()) >= 32
