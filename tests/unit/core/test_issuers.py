"""Identity providers in the core (SPEC section 10): the token's `iss` chooses exactly one
provider, its keys alone verify (a kid of another provider never does), per-issuer
algorithms and audiences, a policy's `issuers` allow-list, the verified-token cache kept
apart per issuer, and the forwarded claims in the dynamic metadata."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from authz.core.decide import decide
from authz.core.decision import Reason, deny
from authz.core.policy import Policy
from authz.core.token_cache import TokenCache
from authz.keys.jwk import parse_jwks
from authz.keys.snapshot import IssuerKeys, KeySnapshot
from tests.credentials import SECRET_BYTES
from tests.jwks_server import jwk, jwks, rsa_key, sign
from tests.unit.core.helpers import NOW, SETTINGS, token, view

A = "https://a.example/"
B = "https://b.example"
KEY_A = rsa_key("issuer-a")
KEY_B = rsa_key("issuer-b")
EC_B = ec.generate_private_key(ec.SECP256R1())
ED_B = ed25519.Ed25519PrivateKey.generate()


def keys(
    a: tuple[dict[str, Any], ...] | None = (jwk(KEY_A, "shared"),),
    b: tuple[dict[str, Any], ...] | None = (jwk(KEY_B, "shared"), jwk(EC_B, "ec")),
    **provider: Any,
) -> KeySnapshot:
    return KeySnapshot.build(
        secrets=(SECRET_BYTES,),
        issuers=(
            IssuerKeys.build(A, public_keys=parse_jwks(jwks(*a)) if a is not None else None,
                             **provider),
            IssuerKeys.build(B, public_keys=parse_jwks(jwks(*b)) if b is not None else None),
        ),
    )


def claims(iss: str | None, **more: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "exp": NOW + 600, **more}
    if iss is not None:
        base["iss"] = iss
    return base


def reason(tok: str, snapshot: KeySnapshot | None = None, policy: Policy | None = None) -> Reason:
    settings = SETTINGS if policy is None else replace(SETTINGS, policies={"p": policy})
    context = {} if policy is None else {"policy": "p"}
    return decide(view(f"Bearer {tok}", context=context), snapshot or keys(), settings,
                  NOW).reason


def test_each_issuers_token_verifies_with_its_own_keys() -> None:
    assert reason(sign("RS256", KEY_A, claims(A), "shared")) is Reason.OK
    assert reason(sign("RS256", KEY_B, claims(B), "shared")) is Reason.OK
    assert reason(sign("ES256", EC_B, claims(B), "ec")) is Reason.OK
    assert reason(sign("ES256", EC_B, claims(B))) is Reason.OK  # no kid: B's keys only


def test_a_kid_shared_by_two_issuers_never_verifies_the_others_token() -> None:
    # B's key signs a token claiming A, with the kid both publish: tried with A's key only.
    assert reason(sign("RS256", KEY_B, claims(A), "shared")) is Reason.BAD_SIGNATURE
    assert reason(sign("RS256", KEY_A, claims(B), "shared")) is Reason.BAD_SIGNATURE
    # A kid only B has is unknown among A's keys.
    assert reason(sign("ES256", EC_B, claims(A), "ec")) is Reason.UNKNOWN_KID
    assert reason(sign("ES256", EC_B, claims(A))) is Reason.ALG_NOT_ALLOWED


def test_no_configured_issuer_is_issuer_mismatch() -> None:
    for iss in (None, "https://a.example", "https://A.example/", "https://c.example/"):
        assert reason(sign("RS256", KEY_A, claims(iss), "shared")) is Reason.ISSUER_MISMATCH


def test_hs256_tokens_still_verify_with_the_secrets() -> None:
    assert reason(token()) is Reason.OK


def test_unknown_kid_names_the_issuer_to_refetch() -> None:
    decision = decide(view(f"Bearer {sign('RS256', KEY_A, claims(A), 'new')}"), keys(),
                      SETTINGS, NOW)
    assert decision.reason is Reason.UNKNOWN_KID and decision.key_source == A
    # The same denial on the wire, and equal to it.
    assert decision == deny(Reason.UNKNOWN_KID)
    assert deny(Reason.UNKNOWN_KID).key_source is None


def test_an_issuer_not_loaded_yet_is_jwks_unavailable_for_its_tokens_only() -> None:
    snapshot = keys(a=None)
    assert not snapshot.issuers_loaded
    assert reason(sign("RS256", KEY_A, claims(A), "shared"), snapshot) is Reason.JWKS_UNAVAILABLE
    assert reason(sign("RS256", KEY_B, claims(B), "shared"), snapshot) is Reason.OK


def test_per_issuer_algorithms() -> None:
    snapshot = keys(algorithms=frozenset({"PS256"}))
    assert reason(sign("RS256", KEY_A, claims(A), "shared"), snapshot) is Reason.ALG_NOT_ALLOWED
    assert reason(sign("PS256", KEY_A, claims(A), "shared"), snapshot) is Reason.OK


def test_per_issuer_audience() -> None:
    snapshot = keys(audiences=("ams-rest",))
    for aud in ("ams-rest", ["other", "ams-rest"]):
        assert reason(sign("RS256", KEY_A, claims(A, aud=aud), "shared"), snapshot) is Reason.OK
    for more in ({"aud": "other"}, {}):
        tok = sign("RS256", KEY_A, claims(A, **more), "shared")
        assert reason(tok, snapshot) is Reason.AUDIENCE_MISMATCH
    # B has no audience of its own.
    assert reason(sign("RS256", KEY_B, claims(B), "shared"), snapshot) is Reason.OK


def test_a_policys_issuers_allow_list() -> None:
    only_a = Policy(name="p", issuers=(A,))
    assert reason(sign("RS256", KEY_A, claims(A), "shared"), policy=only_a) is Reason.OK
    assert reason(sign("RS256", KEY_B, claims(B), "shared"),
                  policy=only_a) is Reason.ISSUER_MISMATCH
    # An HS256 token naming A was not verified by A's keys.
    assert reason(token({"iss": A, "exp": NOW + 60}), policy=only_a) is Reason.ISSUER_MISMATCH


def test_the_cache_keeps_issuers_apart() -> None:
    same = (jwk(KEY_A, "shared"),)
    both = keys(a=same, b=same)
    ids_a = {ident for _, ident in both.issuers[A].candidates[("shared", "RS256")]}
    ids_b = {ident for _, ident in both.issuers[B].candidates[("shared", "RS256")]}
    assert ids_a.isdisjoint(ids_b) and ids_a | ids_b <= both.key_ids
    cache = TokenCache(10)
    tok = sign("RS256", KEY_A, claims(A), "shared")
    assert decide(view(tok), both, SETTINGS, NOW, cache).reason is Reason.OK
    assert len(cache) == 1
    # A withdraws the key, B still holds the same material: the cached entry is not served.
    moved = keys(a=(), b=same)
    assert decide(view(tok), moved, SETTINGS, NOW, cache).reason is Reason.UNKNOWN_KID


def test_refreshing_one_issuer_keeps_the_others_keys() -> None:
    snapshot = keys(a=None)
    loaded = snapshot.with_issuer_keys(A, parse_jwks(jwks(jwk(KEY_A, "shared"))))
    assert loaded.issuers_loaded
    assert loaded.issuers[B] is snapshot.issuers[B]
    assert loaded.with_secrets(()).issuers.keys() == {A, B}


def test_allow_metadata_carries_the_forwarded_claims() -> None:
    policy = Policy(name="p", forward_claims=(("role", "x-jwt-role"), ("level", "x-jwt-level"),
                                               ("reason", "x-jwt-reason")))
    settings = replace(SETTINGS, policies={"p": policy})
    tok = sign("EdDSA", ED_B, claims(B, role="admin", level=3, reason="spoof"))
    snapshot = keys(b=(jwk(ED_B, "ed"),))
    decision = decide(view(tok, context={"policy": "p"}), snapshot, settings, NOW)
    assert decision.allowed
    assert decision.metadata == {
        "role": "admin", "level": "3", "reason": "ok", "sub": "alice", "iss": B,
    }
    assert ("x-jwt-role", "admin") in decision.headers_to_set
