"""`authz token`: the claims of a minted token from its command-line pieces.

Durations read like `90s`, `15m`, `1h`, `7d`, `1h30m` (a bare number is seconds); a
`--claim k=v` value is JSON when it parses as JSON (`n=3`, `admin=true`, `roles=["a","b"]`)
and a string otherwise (`role=admin`); `k='"3"'` forces the string "3".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from authz.core.mint import mint_hmac
from authz.errors import AuthzError
from authz.settings.model import Settings

__all__ = [
    "TokenOptionError",
    "build_claims",
    "mint_token",
    "parse_claim",
    "parse_duration",
    "signing_secret",
]

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(?:\d+[smhdw])+|\d+")
_PART = re.compile(r"(\d+)([smhdw])")

# Claims the dedicated options own: a `--claim` for them would silently fight the option.
_OPTION_FOR_CLAIM = {
    "sub": "--sub",
    "exp": "--ttl",
    "iat": "--ttl",
    "iss": "--iss",
    "aud": "--aud",
}


class TokenOptionError(AuthzError, ValueError):
    """A `authz token` option that cannot be used; the text is one line for the user."""


def parse_duration(text: str) -> int:
    """Seconds in `text` (`90s`, `1h`, `7d`, `1h30m`, `3600`); more than zero."""
    word = text.strip().lower()
    if not _DURATION.fullmatch(word):
        raise TokenOptionError(
            f"{text!r} is not a duration: use a number of seconds or units s/m/h/d/w "
            "such as 90s, 1h, 7d or 1h30m"
        )
    if word.isdigit():
        seconds = int(word)
    else:
        seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(word))
    if seconds <= 0:
        raise TokenOptionError(f"{text!r}: the lifetime must be more than zero")
    return seconds


def parse_claim(text: str) -> tuple[str, Any]:
    """`k=v` as a claim: v as JSON when it parses (number, true/false, null, array,
    object, "quoted string"), else v as a plain string."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise TokenOptionError(f"{text!r} is not a claim: use name=value, e.g. role=publisher")
    if name in _OPTION_FOR_CLAIM:
        raise TokenOptionError(f"set {name!r} with {_OPTION_FOR_CLAIM[name]}, not --claim")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name, value


def build_claims(
    sub: str,
    now: int,
    ttl_seconds: int,
    issuer: str | None,
    audiences: Iterable[str],
    extra: Iterable[tuple[str, Any]],
) -> dict[str, Any]:
    """The payload: sub, iat, exp, iss and aud when given, then the extra claims."""
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl_seconds}
    if issuer:
        claims["iss"] = issuer
    audience = list(dict.fromkeys(audiences))
    if audience:
        claims["aud"] = audience[0] if len(audience) == 1 else audience
    for name, value in extra:
        if name in claims:
            raise TokenOptionError(f"claim {name!r} is given twice")
        claims[name] = value
    return claims


def signing_secret(settings: Settings) -> bytes:
    """The secret that signs: the first of the configured HS256 secrets."""
    secrets = settings.hs256_secrets
    if not secrets:
        raise TokenOptionError(
            "no HS256 secret is configured, so no token can be minted: set AUTHZ_HS256_SECRET "
            "or AUTHZ_HS256_SECRET_FILE, hs256_secret in --config, or settings.jwtSecretKey "
            "in --ams-properties"
        )
    return secrets[0]


def mint_token(settings: Settings, claims: Mapping[str, Any]) -> str:
    """An HS256 token of `claims` signed with the settings' signing secret."""
    return mint_hmac(claims, signing_secret(settings))
