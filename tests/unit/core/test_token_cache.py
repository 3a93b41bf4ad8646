"""The verified-token cache never changes a decision: over any sequence of key snapshots
(secrets added and removed, JWKS keys re-bound to other kids, algs narrowed, keys moved,
withdrawn, skipped), the decision with a warm cache equals the one computed afresh."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from authz.core.decide import decide
from authz.core.mint import mint_hmac
from authz.core.request import RequestView
from authz.core.token_cache import TokenCache
from authz.keys.jwk import JWKSError, parse_jwks
from authz.keys.snapshot import KeySnapshot
from authz.settings.model import Settings
from tests.jwks_server import PrivateKey, jwk, jwks, rsa_key, sign

NOW = 1_800_000_000.0
CLAIMS = {"sub": "alice", "exp": NOW + 600}
# One secret per HMAC length class (RFC 7518 3.2): HS256 only, up to HS384, all three.
SECRETS = {
    "s32": b"cache-secret-32-0123456789abcdef",
    "s48": b"cache-secret-48-0123456789abcdef0123456789abcdef",
    "s64": b"cache-secret-64-0123456789abcdef0123456789abcdef0123456789abcdef",
}
PRIVATE: dict[str, PrivateKey] = {
    "rsa-a": rsa_key("cache-a"),
    "rsa-b": rsa_key("cache-b"),
    "ec-a": ec.generate_private_key(ec.SECP256R1()),
    "ec-b": ec.generate_private_key(ec.SECP256R1()),
    "ed": ed25519.Ed25519PrivateKey.generate(),
}
# The algs each key signs with, and the `alg` its JWK may state (None: none stated).
SIGNING_ALGS = {"rsa": ("RS256", "PS256"), "ec": ("ES256",), "ed": ("EdDSA",)}
STATED_ALGS = {"rsa": (None, "RS256", "PS256"), "ec": (None, "ES256"), "ed": (None, "EdDSA")}
KIDS = ("a", "b", None)
SETTINGS = Settings(hs256_secret=SECRETS["s32"].decode())


def _family(name: str) -> str:
    return name.split("-")[0]


TOKENS = [
    *(sign(alg, key, CLAIMS, kid)
      for name, key in PRIVATE.items() for alg in SIGNING_ALGS[_family(name)] for kid in KIDS),
    *(mint_hmac(CLAIMS, secret, alg=alg)
      for secret in SECRETS.values() for alg in ("HS256", "HS384", "HS512")),
]


@dataclass(frozen=True)
class Entry:
    """One JWKS entry: which key, under which kid, with which stated alg and use."""

    key: str
    kid: str | None = None
    alg: str | None = None
    use: str | None = None

    def jwk(self) -> dict[str, Any]:
        extra = {name: value for name, value in (("alg", self.alg), ("use", self.use))
                 if value is not None}
        return jwk(PRIVATE[self.key], self.kid, **extra)


# One step of a history: the secrets by name, and the JWKS entries (None: a JWKS is
# configured but no set is loaded yet). Plain values, so a failing example reads well.
Step = tuple[tuple[str, ...], tuple[Entry, ...] | None]


def snapshot(step: Step) -> KeySnapshot:
    secrets, listed = step
    chosen = tuple(SECRETS[name] for name in secrets)
    if listed is None:
        return KeySnapshot.build(secrets=chosen, jwks_configured=True)
    try:
        keys = parse_jwks(jwks(*(entry.jwk() for entry in listed)))
    except JWKSError:
        keys = ()  # every entry skipped: taken as an empty set here
    return KeySnapshot.build(secrets=chosen, jwks_configured=True, public_keys=keys)


secret_sets = st.lists(st.sampled_from(sorted(SECRETS)), unique=True, max_size=3).map(tuple)
uses = st.sampled_from([None, None, "sig", "enc"])
entries = st.sampled_from(sorted(PRIVATE)).flatmap(
    lambda name: st.builds(Entry, st.just(name), st.sampled_from(KIDS),
                           st.sampled_from(STATED_ALGS[_family(name)]), uses)
)


@st.composite
def histories(draw: st.DrawFn) -> list[Step]:
    """The key snapshots an issuer and a secret file go through: each one an edit of the
    last (a kid re-bound, an alg narrowed or widened, a key added, withdrawn, moved or
    marked for another use, the secrets rotated, the set not loaded yet)."""
    secrets = draw(secret_sets)
    listed: list[Entry] | None = draw(st.none() | st.lists(entries, max_size=6))
    history: list[Step] = [(secrets, None if listed is None else tuple(listed))]
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["kid", "alg", "use", "add", "remove", "move", "secrets",
                                     "load"]))
        if edit == "secrets":
            secrets = draw(secret_sets)
        elif edit == "load" or listed is None:
            listed = draw(st.lists(entries, max_size=6))
        elif edit == "add" or not listed:
            listed = [*listed, draw(entries)]
            listed.insert(draw(st.integers(0, len(listed) - 1)), listed.pop())
        else:
            i = draw(st.integers(0, len(listed) - 1))
            entry = listed[i]
            if edit == "kid":
                listed[i] = replace(entry, kid=draw(st.sampled_from(KIDS)))
            elif edit == "alg":
                stated = STATED_ALGS[_family(entry.key)]
                listed[i] = replace(entry, alg=draw(st.sampled_from(stated)))
            elif edit == "use":
                listed[i] = replace(entry, use=draw(uses))
            elif edit == "remove":
                del listed[i]
            else:
                listed.insert(draw(st.integers(0, len(listed) - 1)), listed.pop(i))
        history.append((secrets, None if listed is None else tuple(listed)))
    return history


# The two the security review found: a kid re-bound to another key while the old key
# stays published under another kid, and a key's alg narrowed.
REBOUND: list[Step] = [((), (Entry("rsa-a", "a"),)),
                       ((), (Entry("rsa-b", "a"), Entry("rsa-a", "b")))]
NARROWED: list[Step] = [((), (Entry("rsa-a", "a"),)),
                        ((), (Entry("rsa-a", "a", alg="RS256"),))]
FAST = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=4, unique=True), histories())
@example([sign("RS256", PRIVATE["rsa-a"], CLAIMS, "a")], REBOUND)
@example([sign("PS256", PRIVATE["rsa-a"], CLAIMS, "a"), sign("PS256", PRIVATE["rsa-a"], CLAIMS)],
         NARROWED)
def test_cached_decision_equals_the_fresh_one(tokens: list[str], history: list[Step]) -> None:
    cache = TokenCache(64)
    for step in history:
        keys = snapshot(step)
        for token in tokens:
            view = RequestView(authorization=token, source_ip="203.0.113.7")
            fresh = decide(view, keys, SETTINGS, NOW)
            assert decide(view, keys, SETTINGS, NOW, cache) == fresh, (token, step)
            assert decide(view, keys, SETTINGS, NOW, cache) == fresh, (token, step)


def test_shared_between_threads_without_a_lock() -> None:
    # Eight threads hit, miss, put and evict on a cache far smaller than their tokens: no
    # exception, the bound holds, and every answer is a hit for the right token or a miss.
    keys = KeySnapshot.build(secrets=(SECRETS["s32"],))
    tokens = [mint_hmac({"sub": f"u{i}", "exp": NOW + 600}, SECRETS["s32"]) for i in range(40)]
    outcomes: list[bool] = []
    cache = TokenCache(8, on_lookup=outcomes.append)
    errors: list[BaseException] = []
    rules = Settings(hs256_secret="x" * 32)

    def work(offset: int) -> None:
        try:
            for round_ in range(300):
                token = tokens[(offset + round_) % len(tokens)]
                view = RequestView(authorization=token, source_ip=None)
                decision = decide(view, keys, rules, NOW, cache)
                assert decision.sub == f"u{(offset + round_) % len(tokens)}"
        except BaseException as error:  # reported below, with the thread's failure
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i * 5,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 8
    assert len(outcomes) == 8 * 300
