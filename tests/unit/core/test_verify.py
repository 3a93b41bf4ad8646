"""authz/core/verify.py: the strict JWS parser, the algorithms and keys a token may verify
with, the caps on key tries, and the time, issuer and audience checks."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from authz.core.base64url import b64url
from authz.core.decide import decide
from authz.core.decision import Reason
from authz.core.mint import mint_hmac
from authz.core.token_cache import TokenCache
from authz.keys.jwk import parse_jwks
from authz.keys.snapshot import KeySnapshot, PublicKey
from tests.credentials import AMS_DOCS_TOKEN, LONG_SECRET, OTHER_SECRET, SECRET_BYTES
from tests.jwks_server import jwk, jwks, sign
from tests.unit.core.helpers import (
    NOW,
    RSA_KEY,
    SETTINGS,
    assert_malformed,
    reason,
    run,
    token,
    view,
)

EC521_KEY = ec.generate_private_key(ec.SECP521R1())


def raw_token(header: str | bytes, payload: str | bytes, secret: bytes = SECRET_BYTES) -> str:
    """A token from literal JSON text, signed correctly, for parser edge cases."""
    import hashlib
    import hmac

    h = b64url(header.encode() if isinstance(header, str) else header)
    p = b64url(payload.encode() if isinstance(payload, str) else payload)
    sig = hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64url(sig)}"


class TestMalformed:
    @pytest.mark.parametrize(
        "header",
        [
            "a.b",
            "a.b.c.d",
            "a.b.c.d.e",  # JWE compact
            AMS_DOCS_TOKEN + "=",
            AMS_DOCS_TOKEN.replace("eyJh", "eyJh=", 1),
            AMS_DOCS_TOKEN.replace("J9.", "J9+.", 1),
            "x" * 9000,
            "..",
            "{\"payload\":\"x\"}",  # JSON serialization
        ],
    )
    def test_malformed_shapes(self, header: str) -> None:
        assert_malformed(run(header))

    def test_oversize_token_rejected_before_crypto(self) -> None:
        big = token({"sub": "a", "pad": "x" * 8200})
        assert reason(big) is Reason.MALFORMED
        assert reason(token({"sub": "a", "pad": "x" * 5000})) is Reason.OK

    @pytest.mark.parametrize(
        ("header", "payload"),
        [
            ('{"alg":"HS256"}', "[1,2]"),
            ('["HS256"]', '{"sub":"a"}'),
            ('{"alg":"HS256"}', "not json"),
            ('{"alg":"HS256","alg":"HS256"}', '{"sub":"a"}'),
            ('{"alg":"HS256"}', '{"sub":"a","sub":"b"}'),
            ('{"alg":"HS256"}', '{"x":{"y":1,"y":2}}'),
            ('{"alg":"HS256"}', '{"exp":NaN}'),
            ('{"alg":"HS256"}', '{"exp":Infinity}'),
            ('{"alg":"HS256"}', '{"exp":"1800000600"}'),
            ('{"alg":"HS256"}', '{"exp":true}'),
            ('{"alg":"HS256"}', '{"exp":null}'),
            ('{"alg":"HS256"}', '{"exp":1e400}'),
            ('{"alg":"HS256"}', '{"nbf":' + "9" * 400 + "}"),
            ('{"alg":"HS256"}', '{"iat":[1]}'),
            ('{"alg":"HS256"}', '{"sub":5}'),
            ('{"alg":"HS256"}', '{"aud":[1]}'),
            ('{"alg":256}', '{"sub":"a"}'),
            ('{"alg":"HS256","kid":7}', '{"sub":"a"}'),
            ('{"alg":"HS256","crit":["exp"],"exp":1}', '{"sub":"a"}'),
            ('{"alg":"HS256","crit":[]}', '{"sub":"a"}'),
            ('{"alg":"HS256"}', "[" * 5000 + "]" * 5000),
        ],
    )
    def test_bad_json_and_claims(self, header: str, payload: str) -> None:
        assert reason(raw_token(header, payload)) is Reason.MALFORMED

    def test_invalid_utf8(self) -> None:
        assert reason(raw_token(b'{"alg":"HS256"}', b'{"sub":"\xff"}')) is Reason.MALFORMED

    def test_non_canonical_base64(self) -> None:
        good = token()
        head, payload, sig = good.split(".")
        # Flip an unused trailing bit of the signature's last character.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        bad_last = alphabet[alphabet.index(sig[-1]) ^ 1]
        assert base64.urlsafe_b64decode(sig[:-1] + bad_last + "=") == base64.urlsafe_b64decode(
            sig + "="
        )
        assert reason(f"{head}.{payload}.{sig[:-1]}{bad_last}") is Reason.MALFORMED

    def test_lone_surrogate_escape_is_malformed(self) -> None:
        assert reason(raw_token('{"alg":"HS256"}', '{"sub":"\\udc80"}')) is Reason.MALFORMED
        assert reason(raw_token('{"alg":"HS256"}', '{"sub":"\\u00e9t\\u00e9"}')) is Reason.OK


class TestAlgorithmsAndSignatures:
    @pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
    def test_alg_none_in_any_case(self, alg: str) -> None:
        head = b64url(json.dumps({"alg": alg}).encode())
        body = b64url(b'{"sub":"admin"}')
        assert reason(f"{head}.{body}.") is Reason.ALG_NOT_ALLOWED
        assert reason(f"{head}.{body}.{b64url(b'sig')}") is Reason.ALG_NOT_ALLOWED

    @pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
    def test_every_hmac_alg(self, alg: str) -> None:
        keys = KeySnapshot.build(secrets=(LONG_SECRET,))
        tok = mint_hmac({"sub": "alice"}, LONG_SECRET, alg=alg)
        assert reason(tok, keys=keys) is Reason.OK

    def test_any_configured_secret_verifies(self) -> None:
        keys = KeySnapshot.build(secrets=(OTHER_SECRET, SECRET_BYTES))
        assert reason(token(), keys=keys) is Reason.OK

    @pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA", "PS512", "HS1", "hs256", ""])
    def test_alg_without_a_key(self, alg: str) -> None:
        assert reason(raw_token(json.dumps({"alg": alg}), '{"sub":"a"}')) is Reason.ALG_NOT_ALLOWED

    def test_hmac_alg_with_no_secret_configured(self) -> None:
        keys = KeySnapshot.build(jwks_configured=True, public_keys=())
        assert reason(token(), keys=keys) is Reason.ALG_NOT_ALLOWED

    def test_wrong_secret(self) -> None:
        forged = mint_hmac({"sub": "alice"}, OTHER_SECRET)
        assert reason(forged) is Reason.BAD_SIGNATURE

    def test_tampered_payload_and_header(self) -> None:
        head, payload, sig = token().split(".")
        evil = b64url(json.dumps({"sub": "admin", "exp": NOW + 600}).encode())
        assert reason(f"{head}.{evil}.{sig}") is Reason.BAD_SIGNATURE
        evil_head = b64url(b'{"alg":"HS256","typ":"JWT","kid":"x"}')
        assert reason(f"{evil_head}.{payload}.{sig}") is Reason.BAD_SIGNATURE
        assert reason(f"{head}.{payload}.") is Reason.BAD_SIGNATURE
        assert reason(f"{head}.{payload}.{sig[:-4]}") is Reason.BAD_SIGNATURE

    def test_alg_swapped_to_stronger_hmac(self) -> None:
        keys = KeySnapshot.build(secrets=(LONG_SECRET,))
        _, payload, sig = mint_hmac({"sub": "alice"}, LONG_SECRET).split(".")
        head384 = b64url(b'{"alg":"HS384","typ":"JWT"}')
        assert reason(f"{head384}.{payload}.{sig}", keys=keys) is Reason.BAD_SIGNATURE

    @pytest.mark.parametrize(
        ("size", "allowed"),
        [(32, {"HS256"}), (47, {"HS256"}), (48, {"HS256", "HS384"}), (63, {"HS256", "HS384"}),
         (64, {"HS256", "HS384", "HS512"})],
    )
    def test_a_secret_verifies_only_the_hmac_algs_its_length_allows(
        self, size: int, allowed: set[str]
    ) -> None:
        # RFC 7518 3.2: the key must be at least as long as the hash output.
        secret = LONG_SECRET[:size]
        keys = KeySnapshot.build(secrets=(secret,))
        for alg in ("HS256", "HS384", "HS512"):
            tok = mint_hmac({"sub": "alice"}, secret, alg=alg)
            expected = Reason.OK if alg in allowed else Reason.ALG_NOT_ALLOWED
            assert reason(tok, keys=keys) is expected, alg

    def test_a_short_secret_does_not_verify_hs512_beside_a_long_one(self) -> None:
        keys = KeySnapshot.build(secrets=(SECRET_BYTES, LONG_SECRET))
        assert reason(mint_hmac({"sub": "a"}, LONG_SECRET, alg="HS512"), keys=keys) is Reason.OK
        # HS512 is allowed for the long secret only, and that one did not sign it.
        assert reason(mint_hmac({"sub": "a"}, SECRET_BYTES, alg="HS512"), keys=keys) \
            is Reason.BAD_SIGNATURE
        assert reason(mint_hmac({"sub": "a"}, SECRET_BYTES), keys=keys) is Reason.OK

    def test_public_key_never_used_as_hmac_secret(self) -> None:
        # RFC 8725 2.1 key confusion, on a snapshot that has both kinds of key: HS secrets
        # (so HS tokens are verified at all) and JWKS keys.
        public = RSA_KEY.public_key()
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        pem = public.public_bytes(serialization.Encoding.PEM, spki)
        der = public.public_bytes(serialization.Encoding.DER, spki)
        jwk_text = json.dumps(jwk(RSA_KEY, "k1")).encode()
        keys = KeySnapshot.build(
            secrets=(SECRET_BYTES, LONG_SECRET), jwks_configured=True,
            public_keys=parse_jwks(jwks(jwk(RSA_KEY, "k1"), jwk(EC521_KEY, "k2"))),
        )
        claims = {"sub": "admin", "exp": NOW + 60}
        legit = [mint_hmac(claims, SECRET_BYTES), mint_hmac(claims, LONG_SECRET, alg="HS512"),
                 sign("RS256", RSA_KEY, claims, "k1"), sign("RS256", RSA_KEY, claims),
                 sign("ES512", EC521_KEY, claims, "k2")]
        forged: list[str] = []
        for text in (pem, der, jwk_text):
            for alg in ("HS256", "HS384", "HS512"):
                forged += [mint_hmac(claims, text, alg=alg),
                           mint_hmac(claims, text, alg=alg, header={"kid": "k1"})]
        # The other way round: an RS256 (or ES512) header over an HMAC made with a secret.
        for alg, kid in (("RS256", "k1"), ("RS256", None), ("ES512", "k2"), ("PS256", None)):
            header = {"alg": alg, **({"kid": kid} if kid else {})}
            for secret in (SECRET_BYTES, LONG_SECRET):
                forged.append(mint_hmac(claims, secret, header=header))
        cache = TokenCache(64)
        for tok in legit:
            assert decide(view(tok), keys, SETTINGS, NOW, cache).reason is Reason.OK
        for tok in forged:
            assert reason(tok, keys=keys) is Reason.BAD_SIGNATURE, tok
            assert decide(view(tok), keys, SETTINGS, NOW, cache).reason is Reason.BAD_SIGNATURE

    @pytest.mark.parametrize("rsa_first", [True, False])
    @pytest.mark.parametrize("with_kid", [True, False])
    def test_keys_of_two_types_under_one_kid(self, rsa_first: bool, with_kid: bool) -> None:
        # RFC 7517 4.5 lets keys of different kty share a kid; the JOSE cookbook (RFC 7520)
        # lists an RSA and a P-521 key under one. The token's alg chooses among them.
        kid = "bilbo.baggins@hobbiton.example"
        entries = [jwk(RSA_KEY, kid), jwk(EC521_KEY, kid)]
        if not rsa_first:
            entries.reverse()
        keys = KeySnapshot.build(jwks_configured=True, public_keys=parse_jwks(jwks(*entries)))
        token_kid = kid if with_kid else None
        claims = {"sub": "bilbo", "exp": NOW + 60}
        assert reason(sign("ES512", EC521_KEY, claims, token_kid), keys=keys) is Reason.OK
        assert reason(sign("RS256", RSA_KEY, claims, token_kid), keys=keys) is Reason.OK
        assert reason(sign("PS384", RSA_KEY, claims, token_kid), keys=keys) is Reason.OK
        other = ec.generate_private_key(ec.SECP521R1())
        assert reason(sign("ES512", other, claims, token_kid), keys=keys) is Reason.BAD_SIGNATURE
        es256 = sign("ES256", ec.generate_private_key(ec.SECP256R1()), claims, token_kid)
        assert reason(es256, keys=keys) is Reason.ALG_NOT_ALLOWED

    def test_jwks_not_loaded_is_unavailable(self) -> None:
        keys = KeySnapshot.build(secrets=(SECRET_BYTES,), jwks_configured=True)
        rs = raw_token('{"alg":"RS256","kid":"k"}', '{"sub":"a"}')
        decision = run(rs, keys=keys)
        assert decision.reason is Reason.JWKS_UNAVAILABLE and decision.status == 503
        assert not any(name == "www-authenticate" for name, _ in decision.headers_to_set)
        # HMAC tokens still verify with the secret meanwhile.
        assert reason(token(), keys=keys) is Reason.OK

    def test_unknown_kid(self) -> None:
        keys = KeySnapshot.build(jwks_configured=True, public_keys=())
        rs = raw_token('{"alg":"RS256","kid":"nope"}', '{"sub":"a"}')
        assert reason(rs, keys=keys) is Reason.UNKNOWN_KID

    def test_jku_x5u_jwk_headers_are_not_followed(self) -> None:
        header = {"jku": "http://127.0.0.1:1/keys", "x5u": "http://127.0.0.1:1/c",
                  "jwk": {"kty": "oct", "k": b64url(OTHER_SECRET)}}
        forged = mint_hmac({"sub": "admin"}, OTHER_SECRET, header=header)
        assert reason(forged) is Reason.BAD_SIGNATURE
        assert reason(token(header=header)) is Reason.OK


class _CountingKey:
    """An Ed25519 public key that counts the signature checks made with it."""

    calls = 0

    def __init__(self, key: ed25519.Ed25519PublicKey) -> None:
        self._key = key

    def verify(self, signature: bytes, data: bytes) -> None:
        _CountingKey.calls += 1
        self._key.verify(signature, data)


class TestKeyCaps:
    """A token tries at most 5 keys fitting its alg (docs/security.md, 3.10)."""

    ED_KEYS = tuple(ed25519.Ed25519PrivateKey.generate() for _ in range(6))
    CLAIMS: ClassVar[dict[str, Any]] = {"sub": "a", "exp": NOW + 60}

    @pytest.mark.parametrize("kid", [None, "shared"])
    def test_only_the_first_5_keys_fitting_the_alg_are_tried(self, kid: str | None) -> None:
        listed = [jwk(ec.generate_private_key(ec.SECP256R1()), kid),
                  *(jwk(k, kid) for k in self.ED_KEYS)]
        keys = KeySnapshot.build(jwks_configured=True, public_keys=parse_jwks(jwks(*listed)))
        for index, key in enumerate(self.ED_KEYS):
            expected = Reason.OK if index < 5 else Reason.BAD_SIGNATURE
            assert reason(sign("EdDSA", key, self.CLAIMS, kid), keys=keys) is expected, index

    def test_a_kid_less_forgery_costs_5_signature_checks_not_one_per_key(self) -> None:
        public = self.ED_KEYS[0].public_key()
        listed = tuple(
            PublicKey(kid=f"k{i}", algs=frozenset({"EdDSA"}), key=_CountingKey(public),
                      thumbprint=f"t{i}")
            for i in range(100)
        )
        keys = KeySnapshot.build(jwks_configured=True, public_keys=listed)
        forged = sign("EdDSA", self.ED_KEYS[1], self.CLAIMS)
        _CountingKey.calls = 0
        assert reason(forged, keys=keys) is Reason.BAD_SIGNATURE
        assert _CountingKey.calls == 5
        # A kid still selects any key of the set, beyond the first five.
        _CountingKey.calls = 0
        good = sign("EdDSA", self.ED_KEYS[0], self.CLAIMS, "k77")
        assert reason(good, keys=keys) is Reason.OK
        assert _CountingKey.calls == 1


class TestTimes:
    @pytest.mark.parametrize(
        ("claims", "expected"),
        [
            ({"exp": NOW - 61}, Reason.EXPIRED),
            ({"exp": NOW - 60}, Reason.EXPIRED),
            ({"exp": NOW - 59}, Reason.OK),
            ({"nbf": NOW + 61}, Reason.NOT_YET_VALID),
            ({"nbf": NOW + 60}, Reason.OK),
            ({"iat": NOW + 61}, Reason.NOT_YET_VALID),
            ({"iat": NOW + 60}, Reason.OK),
            ({"exp": 1e300}, Reason.OK),
        ],
    )
    def test_leeway_edges(self, claims: dict[str, Any], expected: Reason) -> None:
        assert reason(token(claims)) is expected

    def test_require_exp(self) -> None:
        strict = replace(SETTINGS, require_exp=True)
        assert reason(token({"sub": "a"}), settings=strict) is Reason.MISSING_EXP
        assert reason(token({"sub": "a", "exp": NOW + 5}), settings=strict) is Reason.OK

    def test_zero_leeway(self) -> None:
        strict = replace(SETTINGS, leeway_seconds=0)
        assert reason(token({"exp": NOW}), settings=strict) is Reason.EXPIRED
        assert reason(token({"exp": NOW + 1}), settings=strict) is Reason.OK


class TestIssuerAudience:
    def test_issuer(self) -> None:
        settings = replace(SETTINGS, issuer="https://issuer.example")
        assert reason(token({"iss": "https://issuer.example"}), settings=settings) is Reason.OK
        assert reason(token({"iss": "https://evil"}), settings=settings) is Reason.ISSUER_MISMATCH
        assert reason(token({"sub": "a"}), settings=settings) is Reason.ISSUER_MISMATCH

    @pytest.mark.parametrize(
        ("aud", "expected"),
        [
            ("media", Reason.OK),
            (["x", "admin"], Reason.OK),
            (["x", "y"], Reason.AUDIENCE_MISMATCH),
            ("mediaX", Reason.AUDIENCE_MISMATCH),
            ([], Reason.AUDIENCE_MISMATCH),
            (None, Reason.AUDIENCE_MISMATCH),
        ],
    )
    def test_audience(self, aud: Any, expected: Reason) -> None:
        settings = replace(SETTINGS, audience=("media", "admin"))
        claims = {"sub": "a"} if aud is None else {"sub": "a", "aud": aud}
        assert reason(token(claims), settings=settings) is expected
