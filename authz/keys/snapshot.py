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
    "IssuerKeys",
    "KeySnapshot",
    "PublicKey",
    "issuer_id",
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


Candidates = dict[tuple[str | None, str], tuple[tuple[PublicKey, str], ...]]


def _index(
    keys: tuple[PublicKey, ...], prefix: str = "", algs: frozenset[str] = PUBLIC_ALGS
) -> tuple[dict[str, tuple[PublicKey, ...]], Candidates]:
    """`by_kid` and `candidates` of a key set (see KeySnapshot), only for `algs`, every
    identity starting with `prefix`."""
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
            for alg in sorted(key.algs & algs):
                choice = (key, f"{prefix}{mode}:{alg}:{key.ident}")
                candidates.setdefault((kid, alg), []).append(choice)
    tried = {pair: tuple(group[:MAX_KEY_CANDIDATES]) for pair, group in candidates.items()}
    return {kid: tuple(group) for kid, group in by_kid.items()}, tried


def issuer_id(issuer: str) -> str:
    """The prefix of every key identity of one identity provider: a verification cached
    under one issuer's keys is never served for another's, even for the same key material."""
    return "iss:" + b64url(hashlib.sha256(issuer.encode("utf-8")).digest()[:12]) + ":"


@dataclass(frozen=True, slots=True)
class IssuerKeys:
    """One identity provider's part of a KeySnapshot (SPEC section 10).

    `issuer` is the exact `iss` its tokens carry; `algorithms` the JWS algorithms its keys
    may verify (its allow-list, else every public-key alg); `audiences` the `aud` values of
    which its tokens must carry one (none: no per-issuer check). `loaded`: its key set was
    fetched at least once. `by_kid` and `candidates` as in KeySnapshot, over its keys only,
    every identity prefixed with `issuer_id(issuer)`.
    """

    issuer: str
    algorithms: frozenset[str] = PUBLIC_ALGS
    audiences: tuple[str, ...] = ()
    loaded: bool = False
    public_keys: tuple[PublicKey, ...] = ()
    by_kid: dict[str, tuple[PublicKey, ...]] = field(default_factory=dict)
    candidates: Candidates = field(default_factory=dict)

    @staticmethod
    def build(
        issuer: str,
        algorithms: frozenset[str] = PUBLIC_ALGS,
        audiences: tuple[str, ...] = (),
        public_keys: tuple[PublicKey, ...] | None = None,
    ) -> IssuerKeys:
        """An issuer's keys; `public_keys=None` means none loaded yet."""
        keys = public_keys or ()
        by_kid, candidates = _index(keys, issuer_id(issuer), algorithms)
        return IssuerKeys(
            issuer, algorithms, audiences, public_keys is not None, keys, by_kid, candidates
        )

    def with_public_keys(self, keys: tuple[PublicKey, ...]) -> IssuerKeys:
        """A copy with a freshly loaded key set."""
        return IssuerKeys.build(self.issuer, self.algorithms, self.audiences, keys)


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
    `issuers`: the identity providers (`iss` -> IssuerKeys), each with keys of its own;
    a token of a public-key alg then verifies only with the keys of the one its `iss`
    names (their identities are in `key_ids` too). Empty: the single JWKS above.
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
    issuers: dict[str, IssuerKeys] = field(default_factory=dict)

    @staticmethod
    def build(
        secrets: tuple[bytes, ...] = (),
        jwks_configured: bool = False,
        public_keys: tuple[PublicKey, ...] | None = None,
        hmac_algs: frozenset[str] = HMAC_ALGS,
        purpose: str = "",
        issuers: tuple[IssuerKeys, ...] = (),
    ) -> KeySnapshot:
        """A snapshot; `public_keys=None` means no key set has been loaded yet. `hmac_algs`
        limits what the secrets verify; `purpose` (e.g. `stream`) prefixes their identities.
        `issuers`: the identity providers' keys (SPEC section 10)."""
        keys = public_keys or ()
        by_kid, tried = _index(keys)
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
        provided = [c for provider in issuers for c in provider.candidates.values()]
        choices = (*hmac_keys.values(), *tried.values(), *provided)
        key_ids = frozenset(ident for fitting in choices for _, ident in fitting)
        return KeySnapshot(
            secrets=secrets,
            jwks_configured=jwks_configured,
            jwks_loaded=public_keys is not None,
            public_keys=keys,
            by_kid=by_kid,
            candidates=tried,
            hmac_keys={alg: fitting for alg, fitting in hmac_keys.items() if fitting},
            key_ids=key_ids,
            hmac_algs=hmac_algs,
            purpose=purpose,
            issuers={provider.issuer: provider for provider in issuers},
        )

    def with_secrets(self, secrets: tuple[bytes, ...]) -> KeySnapshot:
        """A copy with the HMAC secrets replaced."""
        return KeySnapshot.build(
            secrets, self.jwks_configured, self._loaded_keys(), self.hmac_algs, self.purpose,
            tuple(self.issuers.values()),
        )

    def with_public_keys(self, keys: tuple[PublicKey, ...]) -> KeySnapshot:
        """A copy with a freshly loaded JWKS key set."""
        return KeySnapshot.build(
            self.secrets, self.jwks_configured, keys, self.hmac_algs, self.purpose,
            tuple(self.issuers.values()),
        )

    def with_issuer_keys(self, issuer: str, keys: tuple[PublicKey, ...]) -> KeySnapshot:
        """A copy with a freshly loaded key set for the identity provider `issuer`."""
        providers = tuple(
            provider.with_public_keys(keys) if name == issuer else provider
            for name, provider in self.issuers.items()
        )
        return KeySnapshot.build(
            self.secrets, self.jwks_configured, self._loaded_keys(), self.hmac_algs,
            self.purpose, providers,
        )

    @property
    def issuers_loaded(self) -> bool:
        """Every identity provider has loaded a key set once (True when there is none)."""
        return all(provider.loaded for provider in self.issuers.values())

    def _loaded_keys(self) -> tuple[PublicKey, ...] | None:
        return self.public_keys if self.jwks_loaded else None


def secret_id(secret: bytes) -> str:
    """A stable, non-reversible identity for an HMAC secret (never logged, never sent)."""
    return "hs:" + hashlib.sha256(b"authz-secret-id:" + secret).hexdigest()
