"""authz/core/token_cache.py: the verified-token cache never changes a decision. Over any
sequence of key snapshots (secrets added and removed, JWKS keys re-bound to other kids, algs
narrowed, keys moved, withdrawn, skipped), the decision with a warm cache equals the one
computed afresh; it never serves an expired token, caches no denial and no junk, and stays
within its bound."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from authz.core.decide import decide
from authz.core.decision import Reason
from authz.core.mint import mint_hmac
from authz.core.request import RequestView
from authz.core.token_cache import TokenCache
from authz.keys.jwk import JWKSError, parse_jwks
from authz.keys.snapshot import KeySnapshot
from tests.credentials import AMS_DOCS_TOKEN, OTHER_SECRET
from tests.jwks_server import PrivateKey, jwk, jwks, rsa_key, sign
from tests.unit.core.helpers import KEYS, NOW, RSA_KEY, SETTINGS, token, view

CLAIMS = {"sub": "alice", "exp": NOW + 600}
OTHER_RSA_KEY = rsa_key("core-rsa-other")
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
        for tok in tokens:
            request = RequestView(authorization=tok, source_ip="203.0.113.7")
            fresh = decide(request, keys, SETTINGS, NOW)
            assert decide(request, keys, SETTINGS, NOW, cache) == fresh, (tok, step)
            assert decide(request, keys, SETTINGS, NOW, cache) == fresh, (tok, step)


def test_shared_between_threads_without_a_lock() -> None:
    # Eight threads hit, miss, put and evict on a cache far smaller than their tokens: no
    # exception, the bound holds, and every answer is a hit for the right token or a miss.
    keys = KeySnapshot.build(secrets=(SECRETS["s32"],))
    tokens = [mint_hmac({"sub": f"u{i}", "exp": NOW + 600}, SECRETS["s32"]) for i in range(40)]
    outcomes: list[bool] = []
    cache = TokenCache(8, on_lookup=outcomes.append)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for round_ in range(300):
                tok = tokens[(offset + round_) % len(tokens)]
                request = RequestView(authorization=tok, source_ip=None)
                decision = decide(request, keys, SETTINGS, NOW, cache)
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


class Lookups:
    """A TokenCache's `on_lookup`: counts hits and misses as the service's metric does."""

    def __init__(self) -> None:
        self.counts = {"hit": 0, "miss": 0}

    def __call__(self, hit: bool) -> None:
        self.counts["hit" if hit else "miss"] += 1


class TestCache:
    def test_cache_never_serves_expired(self) -> None:
        cache = TokenCache(10)
        tok = token({"sub": "a", "exp": NOW + 10})
        v = view(tok)
        assert decide(v, KEYS, SETTINGS, NOW, cache).reason is Reason.OK
        assert len(cache) == 1
        assert decide(v, KEYS, SETTINGS, NOW + 71, cache).reason is Reason.EXPIRED

    def test_cache_drops_when_secret_rotates_out(self) -> None:
        cache = TokenCache(10)
        v = view(token())
        assert decide(v, KEYS, SETTINGS, NOW, cache).reason is Reason.OK
        rotated = KEYS.with_secrets((OTHER_SECRET,))
        assert decide(v, rotated, SETTINGS, NOW, cache).reason is Reason.BAD_SIGNATURE

    @staticmethod
    def warm_then_changed(tok: str, before: bytes, after: bytes) -> tuple[Reason, Reason]:
        """Cache `tok` under JWKS `before`; its (fresh, cached) reasons under `after`."""
        cache = TokenCache(10)
        v = view(tok)
        old = KeySnapshot.build(jwks_configured=True, public_keys=parse_jwks(before))
        assert decide(v, old, SETTINGS, NOW, cache).reason is Reason.OK
        new = KeySnapshot.build(jwks_configured=True, public_keys=parse_jwks(after))
        return decide(v, new, SETTINGS, NOW).reason, decide(v, new, SETTINGS, NOW, cache).reason

    def test_cache_follows_a_kid_rebound_to_another_key(self) -> None:
        # The issuer moves kid "a" to a new key and keeps the old key published as "b":
        # a token naming "a" but signed by the old key must stop verifying.
        tok = sign("RS256", RSA_KEY, {"sub": "a", "exp": NOW + 60}, "a")
        assert self.warm_then_changed(
            tok, jwks(jwk(RSA_KEY, "a")), jwks(jwk(OTHER_RSA_KEY, "a"), jwk(RSA_KEY, "b"))
        ) == (Reason.BAD_SIGNATURE, Reason.BAD_SIGNATURE)

    def test_cache_follows_a_narrowed_alg(self) -> None:
        tok = sign("PS256", RSA_KEY, {"sub": "a", "exp": NOW + 60}, "a")
        assert self.warm_then_changed(
            tok, jwks(jwk(RSA_KEY, "a")), jwks(jwk(RSA_KEY, "a", alg="RS256"))
        ) == (Reason.ALG_NOT_ALLOWED, Reason.ALG_NOT_ALLOWED)

    def test_denials_are_not_cached(self) -> None:
        cache = TokenCache(2)
        good = [token({"sub": f"u{i}"}) for i in range(2)]
        for t in good:
            decide(view(t), KEYS, SETTINGS, NOW, cache)
        for i in range(50):
            decide(view(mint_hmac({"sub": f"x{i}"}, OTHER_SECRET)), KEYS, SETTINGS, NOW, cache)
        assert len(cache) == 2
        assert all(cache.get(t, KEYS) is not None for t in good)

    @pytest.mark.parametrize(
        "junk",
        [
            "x" * 9000,
            "e30." + "e30" * 3000 + ".e30",  # well-shaped but over 8 KiB
            "a.b",
            "a.b.c.d",
            "a.b.c.d.e",
            "..",
            ".e30.e30",
            "e30..e30",
            AMS_DOCS_TOKEN + "=",
            AMS_DOCS_TOKEN.replace("J9.", "J9+.", 1),
            AMS_DOCS_TOKEN.replace("J9.", "J9/.", 1),
            AMS_DOCS_TOKEN.replace("J9.", "J9\u00e9.", 1),
            "{\"payload\":\"x\"}",
        ],
    )
    def test_junk_and_oversized_tokens_never_reach_the_cache(self, junk: str) -> None:
        # Size and shape come first: junk costs no hashing and is not counted as a miss,
        # so the hit ratio is about tokens that could have been cached.
        lookups = Lookups()
        cache = TokenCache(10, on_lookup=lookups)
        assert decide(view(junk), KEYS, SETTINGS, NOW, cache).reason is Reason.MALFORMED
        assert lookups.counts == {"hit": 0, "miss": 0}

    def test_well_shaped_tokens_are_counted(self) -> None:
        lookups = Lookups()
        cache = TokenCache(10, on_lookup=lookups)
        forged = mint_hmac({"sub": "alice"}, OTHER_SECRET)
        assert decide(view(forged), KEYS, SETTINGS, NOW, cache).reason is Reason.BAD_SIGNATURE
        good = view(token())
        assert decide(good, KEYS, SETTINGS, NOW, cache).reason is Reason.OK
        assert decide(good, KEYS, SETTINGS, NOW, cache).reason is Reason.OK
        assert lookups.counts == {"hit": 1, "miss": 2}

    def test_bounded(self) -> None:
        cache = TokenCache(3)
        for i in range(10):
            decide(view(token({"sub": f"u{i}"})), KEYS, SETTINGS, NOW, cache)
        assert len(cache) == 3
