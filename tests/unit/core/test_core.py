"""Unit tests of the decision core: every SPEC section 5 row reachable without servers."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from ipaddress import ip_network
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from authz.core.base64url import b64url
from authz.core.decide import decide
from authz.core.decision import Decision, Reason
from authz.core.mint import mint_hmac
from authz.core.policy import ClaimRule, Policy
from authz.core.request import RequestView
from authz.core.token_cache import TokenCache
from authz.keys.jwk import parse_jwks
from authz.keys.snapshot import KeySnapshot, PublicKey
from authz.settings.model import Settings
from tests.credentials import AMS_DOCS_TOKEN, LONG_SECRET, OTHER_SECRET, SECRET, SECRET_BYTES
from tests.jwks_server import jwk, jwks, rsa_key, sign

NOW = 1_800_000_000.0
SETTINGS = Settings(hs256_secret=SECRET)
KEYS = KeySnapshot.build(secrets=(SECRET_BYTES,))
RSA_KEY = rsa_key("core-rsa")
OTHER_RSA_KEY = rsa_key("core-rsa-other")
EC521_KEY = ec.generate_private_key(ec.SECP521R1())


def view(authorization: str | None, **kw: Any) -> RequestView:
    base: dict[str, Any] = {"authorization": authorization, "source_ip": "203.0.113.7"}
    base.update(kw)
    return RequestView(**base)


def run(
    authorization: str | None,
    settings: Settings = SETTINGS,
    keys: KeySnapshot = KEYS,
    now: float = NOW,
    **kw: Any,
) -> Decision:
    return decide(view(authorization, **kw), keys, settings, now)


def token(claims: dict[str, Any] | None = None, **kw: Any) -> str:
    return mint_hmac({"sub": "alice", "exp": NOW + 600} if claims is None else claims,
                     SECRET_BYTES, **kw)


def raw_token(header: str | bytes, payload: str | bytes, secret: bytes = SECRET_BYTES) -> str:
    """A token from literal JSON text, signed correctly, for parser edge cases."""
    import hashlib
    import hmac

    h = b64url(header.encode() if isinstance(header, str) else header)
    p = b64url(payload.encode() if isinstance(payload, str) else payload)
    sig = hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64url(sig)}"


def reason(authorization: str | None, **kw: Any) -> Reason:
    return run(authorization, **kw).reason


class Lookups:
    """A TokenCache's `on_lookup`: counts hits and misses as the service's metric does."""

    def __init__(self) -> None:
        self.counts = {"hit": 0, "miss": 0}

    def __call__(self, hit: bool) -> None:
        self.counts["hit" if hit else "miss"] += 1


class TestAllow:
    def test_ams_docs_token_raw_and_bearer(self) -> None:
        for header in (AMS_DOCS_TOKEN, f"Bearer {AMS_DOCS_TOKEN}", f"bEaReR  {AMS_DOCS_TOKEN}"):
            decision = run(header)
            assert decision.allowed and decision.reason is Reason.OK
            assert decision.headers_to_set == (("x-jwt-sub", "token"),)

    def test_allow_strips_client_jwt_headers_but_not_the_one_it_sets(self) -> None:
        decision = run(token(), jwt_headers=("x-jwt-sub", "x-jwt-role"))
        assert decision.headers_to_set == (("x-jwt-sub", "alice"),)
        assert decision.headers_to_remove == ("x-jwt-role",)
        assert decision.metadata == {"reason": "ok", "sub": "alice"}

    def test_without_sub_the_client_sub_header_is_removed(self) -> None:
        decision = run(token({"exp": NOW + 60}), jwt_headers=("x-jwt-sub",))
        assert decision.allowed
        assert decision.headers_to_set == ()
        assert decision.headers_to_remove == ("x-jwt-sub",)

    @pytest.mark.parametrize("sub", ["a\r\nx-evil: 1", "tab\there", "nul\x00", "é", " lead", ""])
    def test_illegal_sub_is_not_forwarded(self, sub: str) -> None:
        decision = run(token({"sub": sub}), jwt_headers=("x-jwt-sub",))
        assert decision.allowed
        assert decision.headers_to_set == ()
        assert decision.headers_to_remove == ("x-jwt-sub",)

    @pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
    def test_every_hmac_alg(self, alg: str) -> None:
        keys = KeySnapshot.build(secrets=(LONG_SECRET,))
        tok = mint_hmac({"sub": "alice"}, LONG_SECRET, alg=alg)
        assert reason(tok, keys=keys) is Reason.OK

    def test_any_configured_secret_verifies(self) -> None:
        keys = KeySnapshot.build(secrets=(OTHER_SECRET, SECRET_BYTES))
        assert reason(token(), keys=keys) is Reason.OK

    def test_jwt_disabled_allows_without_token_and_still_strips(self) -> None:
        decision = run(None, settings=replace(SETTINGS, jwt_enabled=False),
                       jwt_headers=("x-jwt-sub",))
        assert decision.reason is Reason.JWT_DISABLED and decision.allowed
        assert decision.headers_to_remove == ("x-jwt-sub",)


class TestMissingAndMalformed:
    @pytest.mark.parametrize("header", [None, "", "   "])
    def test_missing(self, header: str | None) -> None:
        decision = run(header)
        assert decision.reason is Reason.MISSING_TOKEN and decision.status == 401
        assert ("www-authenticate", "Bearer") in decision.headers_to_set
        assert json.loads(decision.body) == {"error": "unauthorized", "reason": "missing_token"}

    @pytest.mark.parametrize(
        "header",
        [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer a b",
            "Token " + AMS_DOCS_TOKEN,
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
        decision = run(header)
        assert decision.reason is Reason.MALFORMED and decision.status == 401
        challenge = dict(decision.headers_to_set)["www-authenticate"]
        assert challenge.startswith('Bearer error="invalid_token", error_description="')

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


class TestAlgorithmsAndSignatures:
    @pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
    def test_alg_none_in_any_case(self, alg: str) -> None:
        head = b64url(json.dumps({"alg": alg}).encode())
        body = b64url(b'{"sub":"admin"}')
        assert reason(f"{head}.{body}.") is Reason.ALG_NOT_ALLOWED
        assert reason(f"{head}.{body}.{b64url(b'sig')}") is Reason.ALG_NOT_ALLOWED

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


class TestIpFilter:
    SETTINGS = replace(
        SETTINGS, allowed_cidrs=(ip_network("10.0.0.0/8"), ip_network("2001:db8::/32"))
    )

    @pytest.mark.parametrize(
        ("ip", "expected"),
        [
            ("10.1.2.3", Reason.OK),
            ("::ffff:10.1.2.3", Reason.OK),
            ("2001:db8::1", Reason.OK),
            ("11.0.0.1", Reason.IP_NOT_ALLOWED),
            ("2001:db9::1", Reason.IP_NOT_ALLOWED),
            (None, Reason.IP_NOT_ALLOWED),
            ("not-an-ip", Reason.IP_NOT_ALLOWED),
            ("", Reason.IP_NOT_ALLOWED),
        ],
    )
    def test_source_ip(self, ip: str | None, expected: Reason) -> None:
        decision = run(token(), settings=self.SETTINGS, source_ip=ip)
        assert decision.reason is expected
        if expected is Reason.IP_NOT_ALLOWED:
            assert decision.status == 403
            assert not any(name == "www-authenticate" for name, _ in decision.headers_to_set)

    def test_ip_filter_and_jwt_both_apply(self) -> None:
        assert reason(None, settings=self.SETTINGS, source_ip="10.0.0.1") is Reason.MISSING_TOKEN
        assert reason(token(), settings=self.SETTINGS, source_ip="1.1.1.1") is Reason.IP_NOT_ALLOWED

    def test_ip_filter_applies_with_jwt_disabled(self) -> None:
        settings = replace(self.SETTINGS, jwt_enabled=False)
        assert reason(None, settings=settings, source_ip="1.1.1.1") is Reason.IP_NOT_ALLOWED
        assert reason(None, settings=settings, source_ip="10.0.0.1") is Reason.JWT_DISABLED


class TestPolicies:
    SETTINGS = replace(
        SETTINGS,
        policies={
            "admin": Policy(
                name="admin",
                required_claims=(
                    ClaimRule("role", "one_of", ("admin", "publisher")),
                    ClaimRule("scope", "contains", ("publish",)),
                ),
                forward_claims=(("role", "x-jwt-role"), ("level", "x-jwt-level")),
            ),
            "open": Policy(name="open", jwt_enabled=False),
        },
    )

    def test_unknown_policy(self) -> None:
        decision = run(token(), settings=self.SETTINGS, context={"policy": "nope"})
        assert decision.reason is Reason.UNKNOWN_POLICY and decision.status == 403

    def test_required_claims(self) -> None:
        ctx = {"policy": "admin"}
        good = {"sub": "a", "role": "admin", "scope": "read publish", "level": 3}
        decision = run(token(good), settings=self.SETTINGS, context=ctx,
                       jwt_headers=("x-jwt-role", "x-jwt-other"))
        assert decision.reason is Reason.OK
        assert decision.headers_to_set == (
            ("x-jwt-sub", "a"), ("x-jwt-role", "admin"), ("x-jwt-level", "3"))
        assert decision.headers_to_remove == ("x-jwt-other",)
        for bad in (
            {"sub": "a", "role": "viewer", "scope": "publish"},
            {"sub": "a", "scope": "publish"},
            {"sub": "a", "role": "admin", "scope": "publisher"},
            {"sub": "a", "role": ["admin"], "scope": "publish"},
        ):
            decision = run(token(bad), settings=self.SETTINGS, context=ctx)
            assert decision.reason is Reason.INSUFFICIENT_SCOPE and decision.status == 403
        assert reason(token({"sub": "a", "role": "admin", "scope": ["publish"]}),
                      settings=self.SETTINGS, context=ctx) is Reason.OK

    def test_policy_without_jwt(self) -> None:
        assert reason(None, settings=self.SETTINGS, context={"policy": "open"}) \
            is Reason.JWT_DISABLED
        assert reason(None, settings=self.SETTINGS) is Reason.MISSING_TOKEN

    @pytest.mark.parametrize(
        ("scope", "expected"),
        [
            ("read admin", Reason.OK),
            ("admin", Reason.OK),
            ("read  admin ", Reason.OK),
            ("read\u00a0admin", Reason.INSUFFICIENT_SCOPE),
            ("read\tadmin", Reason.INSUFFICIENT_SCOPE),
            ("read\nadmin", Reason.INSUFFICIENT_SCOPE),
            ("read\u2003admin", Reason.INSUFFICIENT_SCOPE),
            ("read\u3000admin", Reason.INSUFFICIENT_SCOPE),
            ("\u00a0admin", Reason.INSUFFICIENT_SCOPE),
        ],
    )
    def test_contains_splits_scopes_on_the_space_character_only(
        self, scope: str, expected: Reason
    ) -> None:
        # RFC 6749 section 3.3: scope tokens are separated by U+0020, nothing else.
        settings = replace(SETTINGS, policies={"scoped": Policy(
            name="scoped", required_claims=(ClaimRule("scope", "contains", ("admin",)),),
        )})
        claims = {"sub": "a", "scope": scope}
        assert reason(token(claims), settings=settings, context={"policy": "scoped"}) \
            is expected

    def test_the_name_default_names_the_default_policy(self) -> None:
        settings = replace(self.SETTINGS, allowed_cidrs=(ip_network("203.0.113.0/24"),))
        named = run(token(), settings=settings, context={"policy": "default"})
        unnamed = run(token(), settings=settings)
        assert named == unnamed and named.reason is Reason.OK
        assert reason(token(), settings=settings, context={"policy": "default"},
                      source_ip="198.51.100.1") is Reason.IP_NOT_ALLOWED
        assert reason(None, settings=settings, context={"policy": "default"}) \
            is Reason.MISSING_TOKEN

    def test_a_policy_written_out_as_default_is_the_default_for_both(self) -> None:
        settings = replace(self.SETTINGS, policies={
            **self.SETTINGS.policies,
            "default": Policy(name="default", required_claims=(
                ClaimRule("scope", "contains", ("read",)),
            )),
        })
        reader = token({"sub": "a", "scope": "read"})
        for context in ({}, {"policy": "default"}):
            assert reason(reader, settings=settings, context=context) is Reason.OK
            assert reason(token(), settings=settings, context=context) \
                is Reason.INSUFFICIENT_SCOPE


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


def test_lone_surrogate_escape_is_malformed() -> None:
    assert reason(raw_token('{"alg":"HS256"}', '{"sub":"\\udc80"}')) is Reason.MALFORMED
    assert reason(raw_token('{"alg":"HS256"}', '{"sub":"\\u00e9t\\u00e9"}')) is Reason.OK
