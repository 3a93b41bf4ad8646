"""JWS/JWT verification (RFC 7515, 7519, 8725) against an immutable KeySnapshot.

Pure: no I/O and no clock. `verify_token` checks structure and signature and returns the
parsed claims; `check_times` and `check_claims` apply the time and iss/aud rules, so a
cached verification can be re-checked against a later clock without new crypto.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from authz.core.base64url import b64url_decode
from authz.core.decision import Reason
from authz.errors import AuthzError
from authz.keys.snapshot import HMAC_ALGS, PUBLIC_ALGS, IssuerKeys, KeySnapshot, PublicKey

__all__ = [
    "HMAC_DIGESTS",
    "MAX_TOKEN_BYTES",
    "TokenError",
    "VerifiedToken",
    "check_claims",
    "check_issuer",
    "check_shape",
    "check_times",
    "json_object",
    "verify_token",
]

MAX_TOKEN_BYTES = 8 * 1024

# Three base64url parts, no padding; header and payload non-empty (neither can be empty
# JSON). One fullmatch: ~1 us for a typical token, cheaper than the cache's hash.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class TokenError(AuthzError):
    """The token is refused; `reason` is the SPEC's reason label. `issuer`: for an
    unknown kid among an identity provider's keys, that provider (whose keys to refetch)."""

    def __init__(self, reason: Reason, issuer: str | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.issuer = issuer


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature verified with the key choice named by `key_id` (one of
    its snapshot's `key_ids`: the secret or JWKS entry, the alg, and how it was chosen).

    Time claims are validated numbers (or None); `sub`/`iss` are strings (or None);
    `aud` is a tuple of strings (empty when absent). `issuer`: the identity provider whose
    keys verified it (equal to `iss`), None for a secret or the single JWKS.
    """

    claims: Mapping[str, Any]
    key_id: str
    exp: float | None
    nbf: float | None
    iat: float | None
    sub: str | None
    iss: str | None
    aud: tuple[str, ...]
    issuer: str | None = None


# The hash of each HMAC alg (RFC 7518 section 3.2).
HMAC_DIGESTS: dict[str, Callable[[], Any]] = {
    "HS256": hashlib.sha256,
    "HS384": hashlib.sha384,
    "HS512": hashlib.sha512,
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
# Raw r||s signature length per ES alg (RFC 7518 section 3.4).
_EC_SIG_BYTES = {"ES256": 64, "ES384": 96, "ES512": 132}


def _malformed() -> TokenError:
    return TokenError(Reason.MALFORMED)


def _b64decode(part: str) -> bytes:
    try:
        return b64url_decode(part)
    except ValueError:
        raise _malformed() from None


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member name")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_object(data: bytes) -> dict[str, Any]:
    """A UTF-8 JSON object with unique member names, no NaN/Infinity and no lone
    surrogate escapes; TokenError(malformed) otherwise."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_reject_constant)
        if "\\u" in text:
            # A `\uXXXX` escape can encode a lone surrogate, which is not Unicode text and
            # could not travel on in a header or log: re-encoding proves there is none.
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        raise _malformed() from None
    if not isinstance(value, dict):
        raise _malformed()
    return value


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        if name in claims:
            raise _malformed()
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed()
    try:
        number = float(value)
    except OverflowError:
        raise _malformed() from None
    if not math.isfinite(number):
        raise _malformed()
    return number


def _optional_string(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if not isinstance(value, str):
        raise _malformed()
    return value


def _audiences(claims: dict[str, Any]) -> tuple[str, ...]:
    if "aud" not in claims:
        return ()
    aud = claims["aud"]
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return tuple(aud)
    raise _malformed()


def _verify_hmac(alg: str, signing_input: bytes, signature: bytes, keys: KeySnapshot) -> str:
    fitting = keys.hmac_keys.get(alg)
    if not fitting:
        # No secret at all, or none long enough for this alg (RFC 7518 3.2).
        raise TokenError(Reason.ALG_NOT_ALLOWED)
    digest = HMAC_DIGESTS[alg]
    for secret, ident in fitting:
        if hmac.compare_digest(hmac.new(secret, signing_input, digest).digest(), signature):
            return ident
    raise TokenError(Reason.BAD_SIGNATURE)


def _signature_ok(key: PublicKey, alg: str, signing_input: bytes, signature: bytes) -> bool:
    try:
        if alg == "EdDSA":
            key.key.verify(signature, signing_input)
            return True
        hash_alg = _HASHES[alg[2:]]()
        if alg.startswith("RS"):
            key.key.verify(signature, signing_input, padding.PKCS1v15(), hash_alg)
        elif alg.startswith("PS"):
            pss = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
            key.key.verify(signature, signing_input, pss, hash_alg)
        else:
            size = _EC_SIG_BYTES[alg]
            if len(signature) != size:
                return False
            half = size // 2
            der = encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            key.key.verify(der, signing_input, ec.ECDSA(hash_alg))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _verify_public(
    alg: str, kid: str | None, signing_input: bytes, signature: bytes, keys: KeySnapshot
) -> str:
    if not keys.jwks_configured:
        raise TokenError(Reason.ALG_NOT_ALLOWED)
    if not keys.jwks_loaded:
        raise TokenError(Reason.JWKS_UNAVAILABLE)
    if kid is not None and kid not in keys.by_kid:
        raise TokenError(Reason.UNKNOWN_KID)
    fitting = keys.candidates.get((kid, alg))
    if not fitting:
        # A kid none of whose keys fits alg is bad_signature while some other key of the
        # set fits alg, alg_not_allowed when none does (as for a token without kid).
        some_key_fits = kid is not None and (None, alg) in keys.candidates
        raise TokenError(Reason.BAD_SIGNATURE if some_key_fits else Reason.ALG_NOT_ALLOWED)
    for key, ident in fitting:
        if _signature_ok(key, alg, signing_input, signature):
            return ident
    raise TokenError(Reason.BAD_SIGNATURE)


def _verify_provider(
    alg: str, kid: str | None, iss: str | None, signing_input: bytes, signature: bytes,
    keys: KeySnapshot,
) -> str:
    # SPEC section 10: the unverified `iss` only chooses the provider; its keys alone may
    # verify, so a kid of another provider is unknown here.
    provider = keys.issuers.get(iss) if iss is not None else None
    if provider is None:
        raise TokenError(Reason.ISSUER_MISMATCH)
    if alg not in provider.algorithms:
        raise TokenError(Reason.ALG_NOT_ALLOWED)
    if not provider.loaded:
        raise TokenError(Reason.JWKS_UNAVAILABLE)
    if kid is not None and kid not in provider.by_kid:
        raise TokenError(Reason.UNKNOWN_KID, provider.issuer)
    fitting = provider.candidates.get((kid, alg))
    if not fitting:
        some_key_fits = kid is not None and (None, alg) in provider.candidates
        raise TokenError(Reason.BAD_SIGNATURE if some_key_fits else Reason.ALG_NOT_ALLOWED)
    for key, ident in fitting:
        if _signature_ok(key, alg, signing_input, signature):
            return ident
    raise TokenError(Reason.BAD_SIGNATURE)


def check_shape(token: str) -> None:
    """Refuse (malformed) a token over 8 KiB or not three unpadded base64url parts.

    Cheap and first, before any hashing, caching or crypto. `verify_token` applies the
    finer base64url rules (canonical encoding) on top.
    """
    if len(token) > MAX_TOKEN_BYTES or _COMPACT_JWS.fullmatch(token) is None:
        raise _malformed()


def verify_token(token: str, keys: KeySnapshot) -> VerifiedToken:
    """Parse a compact JWS strictly and verify its signature against `keys`.

    Raises TokenError with the SPEC reason. Does not look at the clock.
    """
    check_shape(token)
    header_part, payload_part, signature_part = token.split(".")
    header = json_object(_b64decode(header_part))
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise _malformed()
    # RFC 7515 4.1.11: authz implements no JWS extension, so any `crit` is not understood.
    if "crit" in header:
        raise _malformed()
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _malformed()
    claims = json_object(_b64decode(payload_part))
    signature = _b64decode(signature_part)
    exp = _numeric_date(claims, "exp")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    sub = _optional_string(claims, "sub")
    iss = _optional_string(claims, "iss")
    aud = _audiences(claims)

    signing_input = f"{header_part}.{payload_part}".encode("ascii")
    if alg in HMAC_ALGS:
        key_id = _verify_hmac(alg, signing_input, signature, keys)
    elif alg in PUBLIC_ALGS:
        if keys.issuers:
            key_id = _verify_provider(alg, kid, iss, signing_input, signature, keys)
            return VerifiedToken(claims, key_id, exp, nbf, iat, sub, iss, aud, iss)
        key_id = _verify_public(alg, kid, signing_input, signature, keys)
    else:
        # `none` in any spelling, and every algorithm authz does not implement.
        raise TokenError(Reason.ALG_NOT_ALLOWED)
    return VerifiedToken(claims, key_id, exp, nbf, iat, sub, iss, aud)


def check_times(token: VerifiedToken, now: float, leeway: float, require_exp: bool) -> None:
    """Apply exp/nbf/iat with `leeway` seconds of clock skew; raise TokenError if refused."""
    if token.exp is not None:
        if token.exp <= now - leeway:
            raise TokenError(Reason.EXPIRED)
    elif require_exp:
        raise TokenError(Reason.MISSING_EXP)
    if token.nbf is not None and token.nbf > now + leeway:
        raise TokenError(Reason.NOT_YET_VALID)
    if token.iat is not None and token.iat > now + leeway:
        raise TokenError(Reason.NOT_YET_VALID)


def check_claims(token: VerifiedToken, issuer: str | None, audiences: tuple[str, ...]) -> None:
    """Require `iss` == issuer and one of `audiences` in `aud`, where configured."""
    if issuer is not None and token.iss != issuer:
        raise TokenError(Reason.ISSUER_MISMATCH)
    if audiences and not any(a in audiences for a in token.aud):
        raise TokenError(Reason.AUDIENCE_MISMATCH)


def check_issuer(token: VerifiedToken, keys: KeySnapshot, allowed: tuple[str, ...]) -> None:
    """The identity-provider rules (SPEC section 10): the issuer whose keys verified the
    token must be one of `allowed` (a policy's `issuers`, when it names any: a token
    verified by a secret has none), and the token carry one of that issuer's audiences."""
    if allowed and token.issuer not in allowed:
        raise TokenError(Reason.ISSUER_MISMATCH)
    provider: IssuerKeys | None = (
        keys.issuers.get(token.issuer) if token.issuer is not None else None
    )
    if provider is not None and provider.audiences and not any(
        a in provider.audiences for a in token.aud
    ):
        raise TokenError(Reason.AUDIENCE_MISMATCH)
