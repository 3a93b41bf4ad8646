"""JWKS documents (RFC 7517) to usable signing keys: pure parsing, no I/O.

Every key is bound to the JWS algorithms its type and curve allow, narrowed by its
stated `alg`. A key that cannot be used safely is skipped and logged, never guessed at;
only a document that is not a JWKS at all is an error. Member names are unique in every
object of the document (RFC 7517 4 and 5 let a parser reject repeats): a key naming a
member twice is skipped, a repeat anywhere else refuses the document.

jwcrypto imports each key that passes the project's rules: `jwcrypto.jwk.JWK` turns its
public members into the `cryptography` public key that verify.py uses
(`get_op_key("verify")`) and computes its RFC 7638 thumbprint. That happens here, once
per key and refresh (about 0.15 ms more per key than building the key directly, in the
fetch thread); a Check only ever sees the `cryptography` key.

The rules stay hand-written and run first, because jwcrypto (as of 1.6.1) is looser in
each of them:
- JSON: this module parses the document (unique names, above); jwcrypto's `from_json`
  keeps the last of a repeated name.
- kty/crv: only RSA, EC on P-256/P-384/P-521 and OKP Ed25519. jwcrypto also imports
  `oct` (its "verify" key is the secret itself), AKP, secp256k1, Brainpool, Ed448, and
  X25519/X448, which it hands out for "verify" too.
- `alg` is bound to kty/crv here; jwcrypto never compares `alg` with the key.
- `use`/`key_ops` are decided here and not passed on: jwcrypto takes `key_ops:
  "verify"` (a string, not an array) as allowing verify, and its use/key_ops
  consistency check (RFC 7517 4.3) would newly drop keys that are usable today.
- Member values are decoded here: jwcrypto's base64url decoder drops characters
  outside the alphabet (`"n": "!!notb64!!"` imports). Sizes are checked here: RSA
  moduli of 2048 to 16384 bits (jwcrypto imports any size), EC coordinates of their
  curve's full length (RFC 7518 6.2.1.2; jwcrypto reads them as integers and imports a
  P-521 `x` without its leading zero byte), Ed25519 keys of 32 bytes.
- Private members (`d`, `p`, ..., `oth`) are never passed on, so only the public half
  is used, as before; jwcrypto would refuse `oth` or a malformed `d`.
- jwcrypto is given each member in canonical form (minimal integers, full-length
  coordinates, unpadded, canonical last character): its thumbprint hashes the values as
  given, and equal keys must hash equally however a document spells them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto.common import JWException
from jwcrypto.jwk import JWK

from authz.core.base64url import b64url, b64url_decode
from authz.errors import AuthzError
from authz.keys.snapshot import OKP_ALGS, RSA_ALGS, PublicKey

__all__ = [
    "MAX_JWKS_KEYS",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "SKIP_REASONS",
    "JWKSError",
    "JWKSTooManyKeys",
    "JWKSet",
    "SkippedKey",
    "parse_jwks",
    "read_jwks",
]

log = logging.getLogger(__name__)

MIN_RSA_BITS = 2048
# The most usable keys a set may hold; a larger one is refused whole (docs/security.md
# 3.10). Issuers publish a handful (the current key, the next, one or two retiring).
MAX_JWKS_KEYS = 100
# OpenSSL refuses RSA public operations above 16384 bits; such a key could never verify.
MAX_RSA_BITS = 16384

# crv -> (coordinate length in bytes, the one JWS alg bound to it); RFC 7518 3.4, 6.2.1.2.
_EC_CURVES: dict[str, tuple[int, str]] = {
    "P-256": (32, "ES256"),
    "P-384": (48, "ES384"),
    "P-521": (66, "ES512"),
}
_ED25519_KEY_BYTES = 32
# kty -> the `cryptography` type jwcrypto must hand back for it, and why a key whose
# members are well formed can still fail to import.
_IMPORTED: dict[str, tuple[type, str]] = {
    "RSA": (rsa.RSAPublicKey, "invalid RSA public numbers"),
    "EC": (ec.EllipticCurvePublicKey, "EC point not on the curve"),
    "OKP": (ed25519.Ed25519PublicKey, "invalid Ed25519 key"),
}


class JWKSError(AuthzError, ValueError):
    """The document is not a usable JWKS at all (as opposed to one bad key in it)."""


class JWKSTooManyKeys(JWKSError):
    """The document holds more than MAX_JWKS_KEYS usable keys."""


# Why a key is skipped, as the `reason` label of authz_jwks_keys_skipped: a short fixed set.
SKIP_REASONS = ("not_for_signatures", "unsupported", "alg_mismatch", "rsa_size", "malformed")
# Longest kid/kty text a log line repeats from the document.
_SHOWN_CHARS = 100


@dataclass(frozen=True, slots=True)
class SkippedKey:
    """One entry of the document that is not used: its position, kid and kty as the
    document states them (None when not a string), the SKIP_REASONS code and a sentence.
    Never any key material."""

    index: int
    kid: str | None
    kty: str | None
    reason: str
    why: str


@dataclass(frozen=True, slots=True)
class JWKSet:
    """What a JWKS document yields: the usable keys and the entries skipped."""

    keys: tuple[PublicKey, ...]
    skipped: tuple[SkippedKey, ...]


class _SkipKey(Exception):
    """This one key is unusable; it is reported and the rest of the set is kept."""

    def __init__(self, why: str, reason: str = "malformed") -> None:
        super().__init__(why)
        self.reason = reason


def parse_jwks(body: bytes) -> tuple[PublicKey, ...]:
    """The usable signing keys of a JWKS document, in document order (see `read_jwks`)."""
    return read_jwks(body).keys


def read_jwks(body: bytes) -> JWKSet:
    """The usable signing keys of a JWKS document, in document order, and the skipped ones.

    Raises JWKSError when `body` is not UTF-8 JSON, not an object, has no `keys`
    array, or has keys of which none is usable (a set we cannot use at all is more
    likely misread than meant; an explicitly empty `keys` array is taken as meant);
    JWKSTooManyKeys when more than MAX_JWKS_KEYS keys are usable.
    Individual unusable keys are skipped and reported in `skipped` (the source logs them
    when the set changes). Keys sharing a `kid` are all kept (RFC 7517 4.5 allows it,
    e.g. an RSA and an EC key): the token's `alg` chooses.
    """
    try:
        doc = json.loads(body.decode("utf-8"), object_pairs_hook=_json_object)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise JWKSError(f"not UTF-8 JSON: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise JWKSError("not a JSON object")
    # A repeat inside a key skips that key (_parse_jwk); anywhere else it is the document's.
    if type(doc) is _Repeated or _has_repeats([v for k, v in doc.items() if k != "keys"]):
        raise JWKSError("a member name appears twice in one object")
    entries = doc.get("keys")
    if not isinstance(entries, list):
        raise JWKSError("no 'keys' array")

    keys: list[PublicKey] = []
    skipped: list[SkippedKey] = []
    for index, entry in enumerate(entries):
        try:
            key = _parse_jwk(entry)
        except _SkipKey as skip:
            fields = entry if isinstance(entry, dict) else {}
            skipped.append(SkippedKey(index, _shown(fields.get("kid")), _shown(fields.get("kty")),
                                      skip.reason, str(skip)))
            continue
        keys.append(key)
        if len(keys) > MAX_JWKS_KEYS:
            # Stop at once: building the rest of a huge set would cost for nothing.
            raise JWKSTooManyKeys(
                f"more than {MAX_JWKS_KEYS} usable keys (of {len(entries)} entries)"
            )
    if entries and not keys:
        whys = "; ".join(f"{s.kid!r} ({s.kty}): {s.why}" for s in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        raise JWKSError(f"none of its {len(entries)} keys is usable: {whys}{more}")
    return JWKSet(tuple(keys), tuple(skipped))


def _shown(value: object) -> str | None:
    # kid/kty as a log line may repeat them: text only, and not too much of it.
    return value[:_SHOWN_CHARS] if isinstance(value, str) else None


class _Repeated(dict[str, Any]):
    """A JSON object that names a member more than once (holding the last value of each)."""


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Marks rather than raises, so that read_jwks can tell one bad key from a bad document.
    obj = dict(pairs)
    return obj if len(obj) == len(pairs) else _Repeated(obj)


def _has_repeats(value: object) -> bool:
    # Iterative: a document may nest as deep as the JSON decoder allows.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if type(item) is _Repeated:
                return True
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _parse_jwk(entry: object) -> PublicKey:
    if not isinstance(entry, dict):
        raise _SkipKey("not a JSON object")
    if _has_repeats(entry):
        raise _SkipKey("a member name appears twice (RFC 7517 4)")
    kid = entry.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _SkipKey("kid is not a string")
    use = entry.get("use")
    if use is not None and use != "sig":
        raise _SkipKey("use is not 'sig'", "not_for_signatures")
    ops = entry.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise _SkipKey("key_ops does not allow 'verify'", "not_for_signatures")

    kty = entry.get("kty")
    if kty == "RSA":
        family, members = _rsa(entry)
    elif kty == "EC":
        family, members = _ec(entry)
    elif kty == "OKP":
        family, members = _okp(entry)
    elif kty == "oct":
        # A symmetric key in a public document is a leaked secret: never trust it.
        raise _SkipKey("oct keys are never used from a JWKS", "unsupported")
    else:
        raise _SkipKey("unsupported kty", "unsupported")
    # Imported before `alg` is judged, so a key bad in both ways keeps its reason.
    key, thumbprint = _imported(members)

    stated = entry.get("alg")
    if stated is None:
        algs = family
    elif isinstance(stated, str) and stated in family:
        algs = frozenset({stated})
    else:
        raise _SkipKey("stated alg does not fit kty/crv", "alg_mismatch")

    if "d" in entry:
        # Only the public half is used, but the issuer is publishing private keys.
        log.warning("JWKS key carries private parameters; only its public half is used",
                    extra={"kid": kid})
    return PublicKey(kid=kid, algs=algs, key=key, thumbprint=thumbprint)


def _imported(members: dict[str, str]) -> tuple[Any, str]:
    # `members` are the canonical public members alone (the RFC 7638 required set): no
    # use/key_ops/alg for jwcrypto to judge, no private member to load.
    expected, invalid = _IMPORTED[members["kty"]]
    try:
        imported = JWK(**members)
        # The public key (cryptography checks RSA numbers, the EC point on its curve).
        key = imported.get_op_key("verify")
        thumbprint = imported.thumbprint()
    except (JWException, ValueError, TypeError):
        raise _SkipKey(invalid) from None
    if not isinstance(key, expected) or not isinstance(thumbprint, str):
        raise _SkipKey(invalid)
    return key, thumbprint


def _rsa(entry: Mapping[str, Any]) -> tuple[frozenset[str], dict[str, str]]:
    n = int.from_bytes(_b64u_member(entry, "n"), "big")
    e = int.from_bytes(_b64u_member(entry, "e"), "big")
    if n.bit_length() < MIN_RSA_BITS:
        raise _SkipKey(f"RSA modulus under {MIN_RSA_BITS} bits", "rsa_size")
    if n.bit_length() > MAX_RSA_BITS:
        raise _SkipKey(f"RSA modulus over {MAX_RSA_BITS} bits", "rsa_size")
    return RSA_ALGS, {"kty": "RSA", "n": _b64u_int(n), "e": _b64u_int(e)}


def _ec(entry: Mapping[str, Any]) -> tuple[frozenset[str], dict[str, str]]:
    crv = entry.get("crv")
    if not isinstance(crv, str) or crv not in _EC_CURVES:
        raise _SkipKey("unsupported EC curve", "unsupported")
    size, alg = _EC_CURVES[crv]
    x = _b64u_member(entry, "x")
    y = _b64u_member(entry, "y")
    if len(x) != size or len(y) != size:
        # jwcrypto reads coordinates as integers and would take a short one.
        raise _SkipKey(
            f"EC coordinate of the wrong length: {crv} wants {size} bytes each, leading "
            "zero bytes kept (RFC 7518 6.2.1.2)"
        )
    return frozenset({alg}), {"kty": "EC", "crv": crv, "x": b64url(x), "y": b64url(y)}


def _okp(entry: Mapping[str, Any]) -> tuple[frozenset[str], dict[str, str]]:
    if entry.get("crv") != "Ed25519":
        raise _SkipKey("unsupported OKP curve", "unsupported")
    x = _b64u_member(entry, "x")
    if len(x) != _ED25519_KEY_BYTES:
        raise _SkipKey("Ed25519 key of the wrong length")
    return OKP_ALGS, {"kty": "OKP", "crv": "Ed25519", "x": b64url(x)}


def _b64u_member(entry: Mapping[str, Any], name: str) -> bytes:
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise _SkipKey(f"'{name}' missing or not a string")
    # Unpadded base64url per RFC 7515 2; trailing padding and non-zero unused bits are
    # tolerated (the thumbprint is of the re-encoded members), other bytes are not.
    try:
        return b64url_decode(value.rstrip("="), canonical=False)
    except ValueError:
        raise _SkipKey(f"'{name}' is not base64url") from None


def _b64u_int(value: int) -> str:
    return b64url(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))
