"""JWKS parsing: which keys are usable, for which algorithms, and what makes a document bad."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk as jose_jwk

from authz.keys.jwk import JWKSError, parse_jwks, read_jwks
from authz.keys.snapshot import RSA_ALGS, PublicKey
from tests.jwks_server import b64u, jwk, jwks, rsa_key

EC_KEYS = {
    "P-256": ec.generate_private_key(ec.SECP256R1()),
    "P-384": ec.generate_private_key(ec.SECP384R1()),
    "P-521": ec.generate_private_key(ec.SECP521R1()),
}
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def one(entry: dict[str, Any]) -> PublicKey:
    keys = parse_jwks(jwks(entry, jwk(ED_KEY, "filler")))
    assert keys[-1].kid == "filler"
    assert len(keys) == 2, "the key under test was skipped"
    return keys[0]


def skipped(entry: dict[str, Any]) -> bool:
    keys = parse_jwks(jwks(entry, jwk(ED_KEY, "filler")))
    return [k.kid for k in keys] == ["filler"]


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"\xff\xfe", b"[]", b'"keys"', b"{}", b'{"keys": {}}',
     b'{"keys": null}', b"[" * 100_000],
)
def test_a_document_that_is_not_a_jwks_is_an_error(body: bytes) -> None:
    with pytest.raises(JWKSError):
        parse_jwks(body)


def test_empty_keys_array_is_a_valid_empty_set() -> None:
    assert parse_jwks(b'{"keys": []}') == ()


def test_keys_present_but_none_usable_is_an_error() -> None:
    with pytest.raises(JWKSError, match="none of its 2 keys"):
        parse_jwks(jwks({"kty": "oct", "k": "c2VjcmV0"}, jwk(ED_KEY, "e", use="enc")))


def test_rsa_key_verifies_rs_and_ps_algorithms() -> None:
    key = one(jwk(rsa_key("a"), "rsa"))
    assert key.kid == "rsa"
    assert key.algs == RSA_ALGS
    assert isinstance(key.key, rsa.RSAPublicKey)
    assert key.key.public_numbers() == rsa_key("a").public_key().public_numbers()


def test_rsa_modulus_over_16384_bits_is_skipped() -> None:
    huge = (1 << 16384) + 1
    entry = {"kty": "RSA", "kid": "huge", "e": "AQAB",
             "n": b64u(huge.to_bytes((huge.bit_length() + 7) // 8, "big"))}
    assert skipped(entry)


def test_rsa_key_under_2048_bits_is_ignored() -> None:
    assert skipped(jwk(rsa_key("small", 1024), "small"))
    assert skipped(jwk(rsa_key("small2047", 2047), "odd-size"))


@pytest.mark.parametrize(("crv", "alg"), [("P-256", "ES256"), ("P-384", "ES384"),
                                          ("P-521", "ES512")])
def test_ec_key_is_bound_to_the_alg_of_its_curve(crv: str, alg: str) -> None:
    key = one(jwk(EC_KEYS[crv], crv))
    assert key.algs == {alg}
    assert isinstance(key.key, ec.EllipticCurvePublicKey)


@pytest.mark.parametrize(("crv", "alg"), [("P-256", "ES384"), ("P-384", "ES256"),
                                          ("P-521", "ES256"), ("P-256", "RS256")])
def test_ec_key_stating_another_curves_alg_is_skipped(crv: str, alg: str) -> None:
    assert skipped(jwk(EC_KEYS[crv], "x", alg=alg))


def test_ec_point_not_on_the_curve_is_skipped() -> None:
    entry = jwk(EC_KEYS["P-256"], "bad")
    y = bytearray(base64.urlsafe_b64decode(entry["y"] + "=="))
    y[-1] ^= 1
    entry["y"] = b64u(bytes(y))
    assert skipped(entry)


def test_ec_coordinates_must_be_full_length() -> None:
    entry = jwk(EC_KEYS["P-256"], "short")
    entry["x"] = b64u(base64.urlsafe_b64decode(entry["x"] + "==")[1:])
    assert skipped(entry)


def test_ec_unknown_curve_is_skipped() -> None:
    entry = jwk(EC_KEYS["P-256"], "k")
    entry["crv"] = "secp256k1"
    assert skipped(entry)


def test_ed25519_key_verifies_eddsa_only() -> None:
    key = one(jwk(ED_KEY, "ed"))
    assert key.algs == {"EdDSA"}
    assert isinstance(key.key, ed25519.Ed25519PublicKey)


def test_okp_other_curve_is_skipped() -> None:
    assert skipped({"kty": "OKP", "crv": "X25519", "x": b64u(b"\x09" * 32), "kid": "x"})
    assert skipped({"kty": "OKP", "crv": "Ed25519", "x": b64u(b"\x09" * 31), "kid": "x"})


def test_stated_alg_narrows_the_key() -> None:
    assert one(jwk(rsa_key("a"), "ps", alg="PS384")).algs == {"PS384"}


@pytest.mark.parametrize("alg", ["HS256", "ES256", "EdDSA", "none", "RSA-OAEP", 7])
def test_stated_alg_that_does_not_fit_rsa_skips_the_key(alg: object) -> None:
    assert skipped(jwk(rsa_key("a"), "x", alg=alg))


def test_use_other_than_sig_is_skipped_and_sig_is_kept() -> None:
    assert skipped(jwk(rsa_key("a"), "enc", use="enc"))
    assert one(jwk(rsa_key("a"), "sig", use="sig")).kid == "sig"


def test_key_ops_without_verify_is_skipped() -> None:
    assert skipped(jwk(rsa_key("a"), "x", key_ops=["encrypt"]))
    assert skipped(jwk(rsa_key("a"), "x", key_ops="verify"))
    assert one(jwk(rsa_key("a"), "ok", key_ops=["sign", "verify"])).kid == "ok"


def test_oct_and_unknown_kty_are_never_used() -> None:
    assert skipped({"kty": "oct", "k": b64u(b"s" * 32), "kid": "hmac", "alg": "HS256"})
    assert skipped({"kty": "PQC", "kid": "future"})
    assert skipped({"kid": "no-kty"})


def test_private_parameters_are_ignored_and_only_the_public_half_is_used() -> None:
    private = rsa_key("a")
    nums = private.private_numbers()
    entry = jwk(private, "priv", d=b64u(nums.d.to_bytes(256, "big")))
    key = one(entry)
    assert isinstance(key.key, rsa.RSAPublicKey)


@pytest.mark.parametrize(
    "damage",
    [{"n": "!!notb64!!"}, {"n": 12345}, {"n": ""}, {"e": None}, {"n": "A"},
     {"e": "AAAA"}, {"kid": 7}],
)
def test_one_bad_key_skips_that_key_not_the_set(damage: dict[str, Any]) -> None:
    entry = jwk(rsa_key("a"), "bad")
    entry.update({k: v for k, v in damage.items() if v is not None})
    for k, v in damage.items():
        if v is None:
            del entry[k]
    assert skipped(entry)


def test_non_object_entries_are_skipped() -> None:
    keys = parse_jwks(json.dumps({"keys": [1, "x", None, jwk(ED_KEY, "ok")]}).encode())
    assert [k.kid for k in keys] == ["ok"]


def test_padded_base64url_is_tolerated() -> None:
    entry = jwk(ED_KEY, "padded")
    entry["x"] += "="
    assert one(entry).kid == "padded"


def test_every_usable_key_of_a_kid_is_kept() -> None:
    # RFC 7517 4.5: keys may share a kid (e.g. of different kty); the token's alg chooses.
    keys = parse_jwks(jwks(jwk(rsa_key("a"), "dup"), jwk(EC_KEYS["P-521"], "dup"),
                           jwk(rsa_key("small", 1024), "dup2"), jwk(rsa_key("b"), "dup2")))
    assert [k.kid for k in keys] == ["dup", "dup", "dup2"]
    assert keys[0].key.public_numbers() == rsa_key("a").public_key().public_numbers()
    assert keys[1].algs == {"ES512"}
    assert keys[2].key.public_numbers() == rsa_key("b").public_key().public_numbers()


def test_a_set_of_100_usable_keys_is_taken_and_unusable_ones_do_not_count() -> None:
    entries = [*(jwk(ED_KEY, f"k{i}") for i in range(100)),
               *(jwk(ED_KEY, f"enc{i}", use="enc") for i in range(20))]
    assert len(parse_jwks(jwks(*entries))) == 100


def test_a_set_of_more_than_100_usable_keys_is_refused() -> None:
    # docs/security.md 3.10: a larger set is refused whole (the source keeps the last good
    # one), rather than cut to an arbitrary part of what the issuer meant.
    with pytest.raises(JWKSError, match="more than 100 usable keys"):
        parse_jwks(jwks(*(jwk(ED_KEY, f"k{i}") for i in range(101))))


def test_skipped_keys_are_reported_with_kid_kty_and_reason() -> None:
    key_set = read_jwks(jwks(
        jwk(ED_KEY, "ok"), jwk(rsa_key("small", 1024), "small"), jwk(ED_KEY, "enc", use="enc"),
        jwk(ED_KEY, "wrap", key_ops=["wrapKey"]), {"kty": "oct", "k": b64u(b"s" * 32), "kid": "hs"},
        jwk(EC_KEYS["P-256"], "as-rsa", alg="RS256"), {"kty": "EC", "crv": "P-256", "kid": "no-x"},
        {"kty": ["RSA"], "kid": 7},
    ))
    assert [k.kid for k in key_set.keys] == ["ok"]
    assert [(s.index, s.kid, s.kty, s.reason) for s in key_set.skipped] == [
        (1, "small", "RSA", "rsa_size"), (2, "enc", "OKP", "not_for_signatures"),
        (3, "wrap", "OKP", "not_for_signatures"), (4, "hs", "oct", "unsupported"),
        (5, "as-rsa", "EC", "alg_mismatch"), (6, "no-x", "EC", "malformed"),
        (7, None, None, "malformed"),
    ]
    assert all(s.why for s in key_set.skipped)


def test_a_set_with_no_usable_key_says_why_in_its_error() -> None:
    with pytest.raises(JWKSError, match=r"'weak' \(RSA\): RSA modulus under 2048 bits"):
        parse_jwks(jwks(jwk(rsa_key("weak", 1024), "weak")))


def test_keys_without_kid_are_kept() -> None:
    keys = parse_jwks(jwks(jwk(ED_KEY, None), jwk(rsa_key("a"), None)))
    assert [k.kid for k in keys] == [None, None]


def test_thumbprint_matches_rfc7638_example() -> None:
    # RFC 7638 section 3.1: this key's thumbprint is NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs.
    n = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
         "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGj"
         "QR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-"
         "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKg"
         "w")
    key = one({"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"})
    assert key.thumbprint == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_ignores_kid_and_optional_members() -> None:
    a = one(jwk(EC_KEYS["P-384"], "one"))
    b = one(jwk(EC_KEYS["P-384"], "two", use="sig", alg="ES384"))
    c = one(jwk(EC_KEYS["P-256"], "three"))
    assert a.thumbprint == b.thumbprint != c.thumbprint
    members = {"crv": "Ed25519", "kty": "OKP", "x": jwk(ED_KEY, None)["x"]}
    expected = b64u(hashlib.sha256(
        json.dumps(members, sort_keys=True, separators=(",", ":")).encode()).digest())
    assert one(jwk(ED_KEY, "ed")).thumbprint == expected


def appended(entry: dict[str, Any], name: str, value: str) -> str:
    """The JSON text of `entry` with one more member (the JSON text `value`), which may
    repeat a name: a dict cannot."""
    return f"{json.dumps(entry)[:-1]}, {json.dumps(name)}: {value}}}"


def test_a_member_name_repeated_in_a_key_skips_that_key() -> None:
    # RFC 7517 4: a parser may reject repeated names; keeping the last (as json.loads and
    # jwcrypto's from_json do) would let two readers of one document see two keys.
    entries = [
        appended(jwk(ED_KEY, "x-twice"), "x", json.dumps(jwk(ED_KEY, None)["x"])),
        appended(jwk(ED_KEY, "kid-twice"), "kid", '"other"'),
        appended(jwk(ED_KEY, "nested"), "ext", '[{"a": 1, "a": 2}]'),
        json.dumps(jwk(ED_KEY, "kept")),
    ]
    key_set = read_jwks(f'{{"keys": [{", ".join(entries)}]}}'.encode())
    assert [k.kid for k in key_set.keys] == ["kept"]
    assert [(s.index, s.reason) for s in key_set.skipped] == [
        (0, "malformed"), (1, "malformed"), (2, "malformed")]
    assert all("twice" in s.why for s in key_set.skipped)


@pytest.mark.parametrize("body", [
    '{"keys": [], "keys": [KEY]}',
    '{"keys": [KEY], "keys": [KEY]}',
    '{"keys": [KEY], "meta": {"a": 1, "a": 2}}',
])
def test_a_member_name_repeated_outside_the_keys_refuses_the_document(body: str) -> None:
    with pytest.raises(JWKSError, match="twice"):
        parse_jwks(body.replace("KEY", json.dumps(jwk(ED_KEY, "k"))).encode())


# jwcrypto imports the keys; these pin where the project's rules stay stricter than it,
# and where its behaviour could differ from the hand-written code it replaced. The
# `jose_jwk` lines show the difference (if jwcrypto grows stricter one fails: then the
# module docstring of authz/keys/jwk.py wants updating too).

def skip_reasons(*entries: dict[str, Any]) -> list[str]:
    key_set = read_jwks(jwks(*entries, jwk(ED_KEY, "filler")))
    assert [k.kid for k in key_set.keys] == ["filler"]
    return [s.reason for s in key_set.skipped]


def test_key_types_and_curves_jwcrypto_knows_are_still_unsupported() -> None:
    assert skip_reasons(
        {"kty": "AKP", "alg": "ML-DSA-44", "pub": b64u(b"\x01" * 1312), "kid": "pq"},
        {"kty": "OKP", "crv": "Ed448", "x": b64u(b"\x01" * 57), "kid": "ed448"},
        {"kty": "OKP", "crv": "X25519", "x": b64u(b"\x09" * 32), "kid": "x25519"},
        {**jwk(EC_KEYS["P-256"], "bp"), "crv": "BP-256"},
        {"kty": "oct", "k": b64u(b"s" * 32), "kid": "hs", "use": "sig"},
        {"kty": "rsa", "n": "AQAB", "e": "AQAB", "kid": "lower"},
    ) == ["unsupported"] * 6


def test_p521_coordinate_without_its_leading_zero_byte_is_refused() -> None:
    # RFC 7518 6.2.1.2: full-length coordinates. A P-521 x is under 2**520 half the time,
    # and jwcrypto, reading coordinates as integers, would import it short.
    private = EC_KEYS["P-521"]
    while private.public_key().public_numbers().x >> 520:
        private = ec.generate_private_key(ec.SECP521R1())
    entry = jwk(private, "short")
    x = base64.urlsafe_b64decode(entry["x"] + "==")
    assert len(x) == 66 and x[0] == 0
    entry["x"] = b64u(x[1:])
    assert jose_jwk.JWK(**entry).get_op_key("verify") is not None
    assert skip_reasons(entry) == ["malformed"]
    assert one(jwk(private, "full")).algs == {"ES512"}


def test_base64url_stays_strict_where_jwcrypto_skips_stray_characters() -> None:
    entry = jwk(rsa_key("a"), "stray")
    entry["n"] = entry["n"][:100] + "!!!!" + entry["n"][100:]
    assert jose_jwk.JWK(**entry).get_op_key("verify") is not None
    assert skip_reasons(entry, {**jwk(ED_KEY, "space"), "x": " " + jwk(ED_KEY, None)["x"]}) == [
        "malformed", "malformed"]


def test_use_and_key_ops_are_judged_by_the_project_not_jwcrypto() -> None:
    # jwcrypto takes `key_ops: "verify"` (a string) and refuses `use` and `key_ops` that
    # disagree; the project's rule (use is sig, key_ops an array holding verify) decides.
    assert jose_jwk.JWK(**jwk(ED_KEY, "s", key_ops="verify")).get_op_key("verify") is not None
    assert skip_reasons(jwk(ED_KEY, "s", key_ops="verify")) == ["not_for_signatures"]
    assert one(jwk(ED_KEY, "both", use="sig", key_ops=["verify", "encrypt"])).kid == "both"
    assert one(jwk(ED_KEY, "twice", key_ops=["verify", "verify"])).kid == "twice"


def test_private_members_jwcrypto_would_refuse_leave_the_public_half_usable() -> None:
    private = rsa_key("a")
    entry = jwk(private, "priv", d="!!", oth=[{"r": "AQAB", "d": "AQAB", "t": "AQAB"}])
    key = one(entry)
    assert isinstance(key.key, rsa.RSAPublicKey)
    assert key.thumbprint == one(jwk(private, "pub")).thumbprint


def test_thumbprint_is_that_of_the_canonical_members_however_they_are_spelled() -> None:
    # jwcrypto hashes members as given; it is given their canonical form (minimal integers
    # as RFC 7518 2 Base64urlUInt wants, unpadded, canonical final character), so a key's
    # identity does not follow its spelling.
    rsa_entry = jwk(rsa_key("a"), "rsa")
    spelled = {**rsa_entry, "n": b64u(b"\x00" + base64.urlsafe_b64decode(rsa_entry["n"] + "=="))}
    assert spelled["n"] != rsa_entry["n"]
    assert one(spelled).thumbprint == one(rsa_entry).thumbprint
    ed_entry = jwk(ED_KEY, "ed")
    # 32 bytes in 43 characters: the final one carries 2 unused bits, zero when canonical.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    loose = alphabet[alphabet.index(ed_entry["x"][-1]) | 1]
    assert base64.urlsafe_b64decode(ed_entry["x"][:-1] + loose + "=") == base64.urlsafe_b64decode(
        ed_entry["x"] + "=")
    for x in (ed_entry["x"] + "=", ed_entry["x"][:-1] + loose):
        assert one({**ed_entry, "x": x}).thumbprint == one(ed_entry).thumbprint

