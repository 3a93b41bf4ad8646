"""KeySnapshot: the immutable set of keys one Check verifies against."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from authz.core.base64url import b64url

__all__ = [
    "EC_ALGS",
    "HMAC_ALGS",
    "HMAC_MIN_SECRET_BYTES",
    "MAX_KEY_CANDIDATES",
    "OKP_ALGS",
    "PUBLIC_ALGS",
    "RSA_ALGS",
    "STREAM_ALGS",
    "KeySnapshot",
    "PublicKey",
    "secret_id",
]

# JWS algorithms by family (RFC 7518 section 3.1, RFC 8037).
HMAC_ALGS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGS = frozenset({"ES256", "ES384", "ES512"})
OKP_ALGS = frozenset({"EdDSA"})
PUBLIC_ALGS = RSA_ALGS | EC_ALGS | OKP_ALGS
# Ant Media signs stream tokens with HS256 only (SPEC section 9): the stream secrets verify
# nothing else.
STREAM_ALGS = frozenset({"HS256"})
# RFC 7518 3.2: an HMAC key must be at least as long as the hash output, so a secret
# verifies only the HS algorithms its length allows.
HMAC_MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
# The most keys one token is tried against: the first keys fitting its alg (of its kid,
# or of the whole set without kid). A forged kid-less token then costs at most this many
# signature checks, however large the set (docs/security.md 3.10).
MAX_KEY_CANDIDATES = 5


@dataclass(frozen=True, slots=True)
class PublicKey:
    """One usable JWKS signing key.

    `algs` are the JWS algorithms it may verify (bound by its kty, crv and stated alg);
    `key` is the `cryptography` public key object; `thumbprint` identifies its key
    material (RFC 7638). `ident` identifies the whole entry as a decision reads it: kid,
    algs and key material (`use`/`key_ops` decide only whether an entry is here at all,
    kty/crv/alg are folded into `algs`), so a cached verification follows any change.
    """

    kid: str | None
    algs: frozenset[str]
    key: Any
    thumbprint: str
    ident: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Once per key at parse time, never per Check.
        entry = json.dumps([self.kid, sorted(self.algs), self.thumbprint], separators=(",", ":"))
        digest = hashlib.sha256(entry.encode("ascii")).digest()
        object.__setattr__(self, "ident", b64url(digest))


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """Everything the core may verify with at one instant. Never mutated: sources swap it.

    `secrets`: HMAC secrets, the first one signs, all verify (each only the HS algorithms
    its length allows); `hmac_keys` lists, per HS alg, the secrets that may verify it.
    `jwks_configured`: a JWKS URL is set; `jwks_loaded`: a key set was fetched at least once.
    `public_keys`: the usable JWKS keys; `by_kid` indexes them (every key of a kid, in
    document order: RFC 7517 4.5 lets keys of different types share one).
    `candidates`: (kid or None, alg) -> the keys a token with that kid (or none) and alg
    is tried against, in order and at most MAX_KEY_CANDIDATES of them, each with the
    identity of that choice; precomputed so a Check never scans the key set.
    `key_ids`: the identity of every choice above (`hmac_keys` and `candidates`). A token
    verified under one is cached with it and served from the cache only while the
    current snapshot still holds it: exactly while a fresh check would try the same
    entry (same secret, or same kid, algs and key material) for the same alg, and so
    decide the same.
    """

    secrets: tuple[bytes, ...] = ()
    jwks_configured: bool = False
    jwks_loaded: bool = False
    public_keys: tuple[PublicKey, ...] = ()
    by_kid: dict[str, tuple[PublicKey, ...]] = field(default_factory=dict)
    candidates: dict[tuple[str | None, str], tuple[tuple[PublicKey, str], ...]] = field(
        default_factory=dict
    )
    # alg -> (secret, identity) per secret long enough for alg; the identity names the
    # secret and the alg, so a cached verification follows both.
    hmac_keys: dict[str, tuple[tuple[bytes, str], ...]] = field(default_factory=dict)
    key_ids: frozenset[str] = frozenset()
    # The HS algorithms the secrets may verify, and the purpose every identity is prefixed
    # with: the stream secrets verify HS256 only, and a verification cached for one purpose
    # is never served for another, even when both hold the same secret.
    hmac_algs: frozenset[str] = HMAC_ALGS
    purpose: str = ""

    @staticmethod
    def build(
        secrets: tuple[bytes, ...] = (),
        jwks_configured: bool = False,
        public_keys: tuple[PublicKey, ...] | None = None,
        hmac_algs: frozenset[str] = HMAC_ALGS,
        purpose: str = "",
    ) -> KeySnapshot:
        """A snapshot; `public_keys=None` means no key set has been loaded yet. `hmac_algs`
        limits what the secrets verify; `purpose` (e.g. `stream`) prefixes their identities."""
        keys = public_keys or ()
        by_kid: dict[str, list[PublicKey]] = {}
        for key in keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        # A token with a kid is tried against that kid's keys fitting its alg; one
        # without, against every key fitting its alg. The identity of a choice says which
        # of the two lists it is in, for which alg, and the entry.
        candidates: dict[tuple[str | None, str], list[tuple[PublicKey, str]]] = {}
        for kid, group in ((None, keys), *by_kid.items()):
            mode = "any" if kid is None else "kid"
            for key in group:
                for alg in sorted(key.algs):
                    choice = (key, f"{mode}:{alg}:{key.ident}")
                    candidates.setdefault((kid, alg), []).append(choice)
        identities = [secret_id(s) for s in secrets]
        prefix = f"{purpose}:" if purpose else ""
        hmac_keys = {
            alg: tuple(
                (s, f"{prefix}{alg}:{ident}")
                for s, ident in zip(secrets, identities, strict=True)
                if len(s) >= size
            )
            for alg, size in HMAC_MIN_SECRET_BYTES.items()
            if alg in hmac_algs
        }
        tried = {pair: tuple(group[:MAX_KEY_CANDIDATES]) for pair, group in candidates.items()}
        choices = (*hmac_keys.values(), *tried.values())
        key_ids = frozenset(ident for fitting in choices for _, ident in fitting)
        return KeySnapshot(
            secrets=secrets,
            jwks_configured=jwks_configured,
            jwks_loaded=public_keys is not None,
            public_keys=keys,
            by_kid={kid: tuple(group) for kid, group in by_kid.items()},
            candidates=tried,
            hmac_keys={alg: fitting for alg, fitting in hmac_keys.items() if fitting},
            key_ids=key_ids,
            hmac_algs=hmac_algs,
            purpose=purpose,
        )

    def with_secrets(self, secrets: tuple[bytes, ...]) -> KeySnapshot:
        """A copy with the HMAC secrets replaced."""
        return KeySnapshot.build(
            secrets, self.jwks_configured, self._loaded_keys(), self.hmac_algs, self.purpose
        )

    def with_public_keys(self, keys: tuple[PublicKey, ...]) -> KeySnapshot:
        """A copy with a freshly loaded JWKS key set."""
        return KeySnapshot.build(
            self.secrets, self.jwks_configured, keys, self.hmac_algs, self.purpose
        )

    def _loaded_keys(self) -> tuple[PublicKey, ...] | None:
        return self.public_keys if self.jwks_loaded else None


def secret_id(secret: bytes) -> str:
    """A stable, non-reversible identity for an HMAC secret (never logged, never sent)."""
    return "hs:" + hashlib.sha256(b"authz-secret-id:" + secret).hexdigest()
