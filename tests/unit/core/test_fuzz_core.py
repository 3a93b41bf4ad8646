"""Property tests (hypothesis) of the token parser and the decision core against hostile input.

Tokens are random text, structured JWS with odd headers and claims signed by configured
and unconfigured keys, and mutations of valid tokens. Properties, for every input:
- `decide` returns a Decision (no exception escapes);
- an allow with reason `ok` has a signature that jwcrypto, an independent JOSE library,
  verifies with one of the configured keys under the token's own `alg`;
- the decision is the same with no cache, a cold cache and a warm one (also one warmed
  under an older key set);
- no header authz would send (names or values) contains CR, LF or NUL, and no denial
  quotes anything of the request.

`tools/fuzz.py` runs the same properties for minutes instead of seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwcrypto import jwk as jose_jwk
from jwcrypto import jws as jose_jws

from authz.core.base64url import b64url
from authz.core.decide import decide
from authz.core.decision import Decision, Reason, deny
from authz.core.mint import mint_hmac
from authz.core.policy import ClaimRule, Policy
from authz.core.request import RequestView
from authz.core.token_cache import TokenCache
from authz.fronts.grpc import check_response
from authz.keys.jwk import parse_jwks
from authz.keys.snapshot import KeySnapshot
from authz.settings.model import Settings
from tests.jwks_server import PrivateKey, jwk, jwks, rsa_key, sign
from tests.unit.core.helpers import NOW

# 64 bytes: RFC 7518 3.2 wants an HMAC key at least as long as the hash (HS512), and
# jwcrypto, the oracle, enforces that.
SECRET = b"fuzz-secret-0123456789-abcdefghijklmnop-0123456789-abcdefghijklm"
OLD_SECRET = b"fuzz-old-secret-0123456789-abcdefghijkl-0123456789-abcdefghijklm"
ATTACKER_SECRET = b"attacker-secret-0123456789-abcdefghijkl"
RSA_KEY = rsa_key("fuzz-configured")
ATTACKER_RSA = rsa_key("fuzz-attacker")
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
PUBLIC_JWKS = [
    jwk(RSA_KEY, "rsa-1", alg="RS256", use="sig"),
    jwk(EC_KEY, "ec-1"),
    jwk(ED_KEY, None),
]
PUBLIC_KEYS = parse_jwks(jwks(*PUBLIC_JWKS))
KEYS = KeySnapshot.build(secrets=(SECRET, OLD_SECRET), jwks_configured=True,
                         public_keys=PUBLIC_KEYS)
# The same issuer a moment earlier: the old secret only, and the RSA key not yet published.
OLDER_KEYS = KeySnapshot.build(secrets=(OLD_SECRET,), jwks_configured=True,
                               public_keys=PUBLIC_KEYS[1:])
SETTINGS = Settings(
    hs256_secret=SECRET.decode(),
    leeway_seconds=30,
    policies={
        "default": Policy(name="default", forward_claims=(("role", "x-jwt-role"),
                                                          ("name", "x-jwt-name"))),
        "admin": Policy(name="admin", issuer="https://issuer.example", audiences=("api",),
                        required_claims=(ClaimRule("scope", "contains", ("admin",)),)),
        "open": Policy(name="open", jwt_enabled=False,
                       allowed_networks=(ip_network("10.0.0.0/8"), ip_network("::1/128"))),
    },
)

# jwcrypto keys for the oracle: only what authz is configured with.
_ORACLE_KEYS = [
    *(jose_jwk.JWK(kty="oct", k=b64url(s)) for s in KEYS.secrets),
    *(jose_jwk.JWK(**entry) for entry in PUBLIC_JWKS),
]

BAD_CHARS = ("\r", "\n", "\0")
_HMAC_DIGESTS: dict[str, Callable[[], Any]] = {
    "HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def signed_by_configured_key(token: str) -> bool:
    """The oracle: jwcrypto verifies `token` with a configured key under its stated alg.

    jwcrypto's JWS core computes the signing input itself (RFC 7515 5.2, RFC 7797 for
    `b64`), so it shares no code with authz's parser.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        header_text = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)).decode()
        header = json.loads(header_text)
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        signature = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
    except ValueError:
        return False
    alg = header.get("alg") if isinstance(header, dict) else None
    if not isinstance(alg, str) or alg == "none":
        return False
    if header.get("b64", True) is False:
        # Unencoded payload: the signed bytes are the payload part as sent.
        payload = parts[1].encode()
    for key in _ORACLE_KEYS:
        try:
            jose_jws.JWSCore(alg, key, header_text, payload).verify(signature)
        except Exception:  # jwcrypto raises many types; any of them means "not by this key"
            continue
        return True
    return False


def sent_headers(decision: Decision) -> list[str]:
    """Every header name and value the CheckResponse for `decision` carries."""
    response = check_response(decision)
    out: list[str] = list(response.ok_response.headers_to_remove)
    for option in (*response.ok_response.headers, *response.denied_response.headers):
        out += [option.header.key, option.header.value]
    return out


def assert_decision_properties(view: RequestView, token: str | None) -> Decision:
    """Check every property for one request; returns the cold decision."""
    cold = decide(view, KEYS, SETTINGS, NOW)
    assert isinstance(cold, Decision)
    if cold.reason is Reason.OK:
        assert token is not None and signed_by_configured_key(token), token
    if cold.reason is Reason.JWT_DISABLED:
        assert view.context.get("policy") == "open"
    for text in sent_headers(cold):
        assert not any(c in text for c in BAD_CHARS), text
    if not cold.allowed:
        # A denial carries nothing of the request (no token, no claim): it is the one
        # fixed denial of its reason.
        assert cold is deny(cold.reason)

    fresh = TokenCache(64)
    assert decide(view, KEYS, SETTINGS, NOW, fresh) == cold
    assert decide(view, KEYS, SETTINGS, NOW, fresh) == cold  # now warm
    rotated = TokenCache(64)
    decide(view, OLDER_KEYS, SETTINGS, NOW, rotated)
    assert decide(view, KEYS, SETTINGS, NOW, rotated) == cold
    return cold


# --- strategies -------------------------------------------------------------------------

_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ALGS = ["HS256", "HS384", "HS512", "RS256", "RS384", "PS256", "ES256", "ES384", "EdDSA",
        "none", "None", "NONE", "hs256", "", "RSA-OAEP", "A128KW"]
KIDS = [None, "rsa-1", "ec-1", "unknown", "", "../../etc/passwd", 7, ["rsa-1"]]

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    # Lone surrogates: legal JSON escapes, not Unicode text.
    | st.sampled_from(["\ud800", "a\udfffb"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=3),
    max_leaves=8,
)
time_values = st.one_of(
    st.floats(NOW - 10_000, NOW + 10_000), st.integers(0, 2**64), st.just(NOW - 31),
    st.just(NOW - 30), st.just(NOW + 30), st.just(NOW + 31), json_values,
)
claims = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.text(max_size=20) | json_values,
        "iss": st.sampled_from(["https://issuer.example", "evil"]) | json_values,
        "aud": st.sampled_from(["api", ["x", "api"], [], ["api", 3]]) | json_values,
        "exp": time_values, "nbf": time_values, "iat": time_values,
        "scope": st.sampled_from(["admin", "read admin", "read", ["admin"]]),
        "role": json_values, "name": st.text(max_size=30),
    },
).flatmap(lambda base: st.dictionaries(st.text(max_size=8), json_values, max_size=3)
          .map(lambda extra: {**extra, **base}))
headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(ALGS) | json_values},
    optional={
        "kid": st.sampled_from(KIDS),
        "typ": st.sampled_from(["JWT", "at+jwt", "JOSE"]),
        "crit": st.sampled_from([["exp"], [], "b64", ["b64"]]),
        "jku": st.just("https://attacker.example/jwks.json"),
        "jwk": st.just(jwk(ATTACKER_RSA, "rsa-1")),
        "x5u": st.just("https://attacker.example/cert.pem"),
        "b64": st.booleans(),
    },
)
SIGNERS = ["secret", "old-secret", "attacker-secret", "rsa", "attacker-rsa", "ec", "ed",
           "rsa-as-hmac-secret", "garbage", "empty"]


def _segment(obj: Any) -> str:
    return b64url(json.dumps(obj, allow_nan=True).encode())


def _signed(header: dict[str, Any], payload: dict[str, Any], signer: str) -> str:
    """A token for `header`/`payload`, signed per `signer` (whatever `alg` claims)."""
    alg = header.get("alg")
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    secrets = {"secret": SECRET, "old-secret": OLD_SECRET, "attacker-secret": ATTACKER_SECRET,
               # RFC 8725 2.1: the public key's text used as an HMAC secret.
               "rsa-as-hmac-secret": json.dumps(PUBLIC_JWKS[0]).encode()}
    privates: dict[str, tuple[PrivateKey, str]] = {
        "rsa": (RSA_KEY, "RS256"), "attacker-rsa": (ATTACKER_RSA, "RS256"),
        "ec": (EC_KEY, "ES256"), "ed": (ED_KEY, "EdDSA"),
    }
    if signer in secrets:
        digest = _HMAC_DIGESTS.get(alg if isinstance(alg, str) else "", hashlib.sha256)
        mac = hmac.new(secrets[signer], signing_input.encode(), digest).digest()
        return f"{signing_input}.{b64url(mac)}"
    if signer in privates:
        key, default_alg = privates[signer]
        used = alg if isinstance(alg, str) and _fits(key, alg) else default_alg
        signature = _raw_signature(key, used, signing_input.encode())
        return f"{signing_input}.{b64url(signature)}"
    return signing_input + ("." + b64url(b"\x00" * 32) if signer == "garbage" else ".")


def _fits(key: PrivateKey, alg: str) -> bool:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return alg == "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return alg == "ES256"
    return alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


def _raw_signature(key: PrivateKey, alg: str, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    digest = _HASHES[alg[2:]]()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    pad = padding.PKCS1v15() if alg.startswith("RS") else padding.PSS(
        mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    return key.sign(data, pad, digest)


structured_tokens = st.builds(_signed, headers, claims, st.sampled_from(SIGNERS))


@st.composite
def mutated_tokens(draw: st.DrawFn) -> str:
    """A valid token with a few edits: flips, cuts, inserts, swapped or repeated parts."""
    token = draw(st.sampled_from(SEED_TOKENS))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "swap", "dup",
                                   "pad", "case"]))
        pos = draw(st.integers(0, max(len(token) - 1, 0)))
        parts = token.split(".")
        if op == "flip" and token:
            char = draw(st.sampled_from(_B64_ALPHABET + ".=+/ \t\x00\r\n\u00e9"))
            token = token[:pos] + char + token[pos + 1:]
        elif op == "delete":
            token = token[:pos] + token[pos + 1:]
        elif op == "insert":
            token = token[:pos] + draw(st.text(max_size=3)) + token[pos:]
        elif op == "truncate":
            token = token[:pos]
        elif op == "swap" and len(parts) == 3:
            parts[0], parts[1] = parts[1], parts[0]
            token = ".".join(parts)
        elif op == "dup":
            token = ".".join(parts + parts[-1:])
        elif op == "pad" and len(parts) == 3:
            token = ".".join(p + "=" * draw(st.integers(1, 2)) for p in parts)
        elif op == "case":
            token = token.swapcase()
    return token


SEED_TOKENS = [
    mint_hmac({"sub": "alice", "exp": NOW + 600}, SECRET),
    mint_hmac({"sub": "bob", "iat": NOW, "role": "admin"}, OLD_SECRET, alg="HS512"),
    sign("RS256", RSA_KEY, {"sub": "carol", "exp": NOW + 60}, kid="rsa-1"),
    sign("ES256", EC_KEY, {"sub": "dan", "aud": ["api"]}, kid="ec-1"),
    sign("EdDSA", ED_KEY, {"sub": "erin", "scope": "admin", "iss": "https://issuer.example",
                           "aud": "api", "exp": NOW + 60}),
]

tokens = (
    structured_tokens
    | mutated_tokens()
    | st.sampled_from(SEED_TOKENS)
    | st.text(alphabet=_B64_ALPHABET + ".", max_size=200)
    | st.text(max_size=60)
)
authorization_values = st.one_of(
    st.none(),
    tokens.map(lambda t: t),
    tokens.map(lambda t: "Bearer " + t),
    st.tuples(st.sampled_from(["bearer", "BEARER", "Basic", "Bearer\t", "Bearer  ", "Token"]),
              tokens).map(lambda p: f"{p[0]} {p[1]}"),
    st.lists(tokens, min_size=2, max_size=3).map(",".join),
    st.just("x" * 9000),
)
source_ips = st.one_of(
    st.none(), st.sampled_from(["10.1.2.3", "203.0.113.9", "::1", "::ffff:10.0.0.1",
                                "fe80::1%eth0", "10.0.0.1/8", "", "999.1.1.1"]),
    st.ip_addresses().map(str), st.text(max_size=20),
)
contexts: st.SearchStrategy[dict[str, str]] = st.one_of(
    st.just({}),
    st.sampled_from(["admin", "open", "default", "missing", ""]).map(lambda p: {"policy": p}),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
jwt_header_names = st.lists(
    st.sampled_from(["x-jwt-sub", "x-jwt-role", "x-jwt-name", "x-jwt-x"]) | st.text(max_size=10)
    .map(lambda s: "x-jwt-" + s.lower()), max_size=4, unique=True,
).map(tuple)


@dataclass(frozen=True)
class Case:
    view: RequestView
    token: str | None


def _case(authorization: str | None, source_ip: str | None, context: dict[str, str],
          jwt_headers: tuple[str, ...]) -> Case:
    token = None
    if authorization is not None:
        stripped = authorization.strip(" \t")
        token = stripped[7:].lstrip(" ") if stripped[:7].lower() == "bearer " else stripped
    view = RequestView(authorization=authorization, source_ip=source_ip,
                       jwt_headers=jwt_headers, path="/LiveApp/rest/v2/x", method="GET",
                       context=context)
    return Case(view, token)


cases = st.builds(_case, authorization_values, source_ips, contexts, jwt_header_names)

def check_case(case: Case) -> None:
    """Every property for one generated request."""
    assert_decision_properties(case.view, case.token)


def check_structured(token: str) -> None:
    """Every property for a structured token; besides, only `ok` may allow."""
    view = RequestView(authorization=token, source_ip="203.0.113.9")
    decision = assert_decision_properties(view, token)
    assert decision.allowed == (decision.reason is Reason.OK)


def check_mutated(token: str) -> None:
    """Every property for a mutated valid token."""
    assert_decision_properties(RequestView(authorization=token, source_ip="10.0.0.1"), token)


# Name -> (strategy, property): the campaign in tools/fuzz.py runs the same pairs longer.
CAMPAIGN: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], None]]] = {
    "core.requests": (cases, check_case),
    "core.structured_tokens": (structured_tokens, check_structured),
    "core.mutated_tokens": (mutated_tokens(), check_mutated),
}

# The default run's budget: a few seconds for this module.
FAST = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(cases)
def test_decide_properties(case: Case) -> None:
    check_case(case)


@FAST
@given(structured_tokens)
def test_never_allow_without_a_configured_signature(token: str) -> None:
    check_structured(token)


@FAST
@given(mutated_tokens())
def test_mutated_tokens(token: str) -> None:
    check_mutated(token)


def test_oracle_accepts_the_seeds_and_refuses_forgeries() -> None:
    # The oracle itself must be able to tell a good token from a bad one.
    assert all(signed_by_configured_key(t) for t in SEED_TOKENS)
    assert not signed_by_configured_key(mint_hmac({"sub": "x"}, ATTACKER_SECRET))
    assert not signed_by_configured_key(sign("RS256", ATTACKER_RSA, {"sub": "x"}, kid="rsa-1"))
