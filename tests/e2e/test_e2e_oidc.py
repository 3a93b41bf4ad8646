"""End to end with identity providers (SPEC section 10): two real OpenID Providers (panva's
oidc-provider, tests/oidc_provider.py) on loopback, found by discovery, issuing real JWT
access tokens (client_credentials with a resource indicator) signed with RS256, PS256,
ES256 and EdDSA; authz behind the real Envoy (envoy.yaml).

Both providers publish a key under the same kid: a token verifies only with its own
issuer's key. A provider restarted with rotated keys is picked up by the unknown-kid
refetch. A provider down at start keeps /readyz at 503 while the other's tokens pass. A
discovery document that lies about its issuer (a trailing slash more or less) is not used.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.harness import Envoy, echo_upstream, request, run_authz, run_envoy, wait_until
from tests.jwks_server import JWKSServer, PrivateKey, free_port, jwk, jwks, rsa_key, sign
from tests.oidc_provider import AUDIENCE, CLIENT_ID, run_provider

pytestmark = pytest.mark.e2e

REST = "/LiveApp/rest/v2/broadcasts/list/0/10"
# Provider one: issuer with a trailing slash (auth0-style); two: without (Keycloak-style).
ONE_RSA = rsa_key("oidc-one-rs256")
ONE_PSS = rsa_key("oidc-one-ps256")
TWO_RSA = rsa_key("oidc-two-rs256")
TWO_EC = ec.generate_private_key(ec.SECP256R1())
TWO_ED = ed25519.Ed25519PrivateKey.generate()
ROTATED = rsa_key("oidc-one-rotated")
SHARED = "shared-kid"
ONE_KEYS: list[tuple[PrivateKey, str, str]] = [
    (ONE_RSA, SHARED, "RS256"), (ONE_PSS, "one-ps", "PS256"),
]
TWO_KEYS: list[tuple[PrivateKey, str, str]] = [
    (TWO_RSA, SHARED, "RS256"), (TWO_EC, "two-ec", "ES256"), (TWO_ED, "two-ed", "EdDSA"),
]
POLICY = "policies:\n  default:\n    forward_claims: {client_id: x-jwt-client-id}\n"


def config(tmp_path: Path, *issuers: str, extra: str = "") -> str:
    path = tmp_path / "authz.yaml"
    entries = "".join(f"  - issuer: '{issuer}'\n    audience: [{AUDIENCE}]\n"
                      for issuer in issuers)
    path.write_text(f"issuers:\n{entries}{extra}{POLICY}")
    return str(path)


def through(envoy: Envoy, token: str) -> Any:
    return request(envoy.port, REST, {"Authorization": f"Bearer {token}"})


def forged(key: PrivateKey, iss: str, kid: str) -> str:
    return sign("RS256", key, {"sub": CLIENT_ID, "iss": iss, "aud": AUDIENCE,
                               "exp": time.time() + 600}, kid)


def access_log(envoy: Envoy) -> Iterator[dict[str, Any]]:
    for line in envoy.logs().splitlines():
        if line.startswith("{"):
            yield json.loads(line)


def test_two_providers_their_algorithms_kid_collisions_and_rotation(tmp_path: Path) -> None:
    one_port, two_port = free_port(), free_port()
    one, two = f"http://127.0.0.1:{one_port}/", f"http://127.0.0.1:{two_port}"
    with run_provider(one_port, one, ONE_KEYS) as provider_one, run_provider(
        two_port, two, TWO_KEYS
    ) as provider_two, echo_upstream() as upstream, run_authz(
        {"AUTHZ_HS256_SECRET": None}, args=("--config", config(tmp_path, one, two))  # type: ignore[dict-item]
    ) as authz, run_envoy({"authz": authz.grpc_port, "ant_media": upstream}) as envoy:
        # Each provider's real access tokens, every algorithm, pass.
        for provider, alg in ((provider_one, "RS256"), (provider_one, "PS256"),
                              (provider_two, "RS256"), (provider_two, "ES256"),
                              (provider_two, "EdDSA")):
            answer = through(envoy, provider.access_token(alg))
            assert answer.status == 200, (provider.issuer, alg, answer.body)
            assert answer.json()["headers"]["x-jwt-sub"] == [CLIENT_ID]
            assert answer.json()["headers"]["x-jwt-client-id"] == [CLIENT_ID]

        # The kid both publish: signed with one provider's key, claiming the other.
        for key, iss in ((ONE_RSA, two), (TWO_RSA, one)):
            answer = through(envoy, forged(key, iss, SHARED))
            assert answer.status == 401 and answer.json()["reason"] == "bad_signature"
        # And with its own issuer's key it verifies (the forging is not the fault).
        assert through(envoy, forged(ONE_RSA, one, SHARED)).status == 200
        # The other spelling of an issuer (trailing slash) is no issuer.
        answer = through(envoy, forged(ONE_RSA, one.rstrip("/"), SHARED))
        assert answer.status == 401 and answer.json()["reason"] == "issuer_mismatch"

        # The access log carries sub, iss, the reason and the forwarded claim.
        wait_until(lambda: any(e.get("authz_iss") == two for e in access_log(envoy)),
                   what="access log lines")
        allowed = next(e for e in access_log(envoy) if e.get("authz_iss") == two)
        assert allowed["authz_sub"] == CLIENT_ID and allowed["authz_reason"] == "ok"

        # Provider one restarts with rotated keys: its new tokens pass at the first try
        # (unknown kid: one refetch of provider one's keys, inside Envoy's timeout).
        provider_one.process.terminate()
        provider_one.process.wait(30)
        old_one = forged(ONE_RSA, one, SHARED)
        with run_provider(one_port, one, [(ROTATED, "rotated", "RS256")]) as restarted:
            answer = through(envoy, restarted.access_token("RS256"))
            assert answer.status == 200, answer.body
            # The retired key is gone from provider one only.
            answer = through(envoy, old_one)
            assert answer.status == 401 and answer.json()["reason"] == "unknown_kid"
            assert through(envoy, provider_two.access_token("RS256")).status == 200

        metrics = authz.metrics()
        for issuer in (one, two):
            assert f'authz_jwks_keys{{issuer="{issuer}"}}' in metrics
        assert f'authz_jwks_keys{{issuer="{one}"}} 1.0' in metrics
        assert f'authz_jwks_keys{{issuer="{two}"}} 3.0' in metrics


def test_a_provider_down_at_start_keeps_readyz_503_until_it_is_up(tmp_path: Path) -> None:
    one_port, two_port = free_port(), free_port()
    one, two = f"http://127.0.0.1:{one_port}/", f"http://127.0.0.1:{two_port}"
    env = {"AUTHZ_HS256_SECRET": None, "AUTHZ_JWKS_REFRESH_SECONDS": "2"}
    with run_provider(one_port, one, ONE_KEYS) as provider_one, echo_upstream() as upstream, \
            run_authz(env, args=("--config", config(tmp_path, one, two)),  # type: ignore[arg-type]
                      wait_ready=False) as authz, run_envoy(
                {"authz": authz.grpc_port, "ant_media": upstream}, wait_cluster_healthy=None
            ) as envoy:
        wait_until(lambda: "JWKS key set loaded" in authz.logs(), timeout=60,
                   what="provider one's keys loaded")
        assert request(authz.http_port, "/readyz").status == 503
        # The dead provider holds up nothing of the live one's (Envoy sends Checks to an
        # authz whose health says not serving: its only host, panic routing).
        token = provider_one.access_token("PS256")
        wait_until(lambda: through(envoy, token).status == 200, timeout=30,
                   what="provider one's token passing while two is down")
        assert request(authz.http_port, "/readyz").status == 503
        with run_provider(two_port, two, TWO_KEYS) as provider_two:
            wait_until(lambda: request(authz.http_port, "/readyz").status == 200, timeout=60,
                       what="ready once provider two is up")
            wait_until(lambda: through(envoy, provider_two.access_token("EdDSA")).status == 200,
                       timeout=30, what="provider two's token passing")


@pytest.mark.parametrize("lie", ["drops the trailing slash", "adds a trailing slash"])
def test_a_discovery_document_lying_about_its_issuer_is_not_used(
    tmp_path: Path, lie: str
) -> None:
    with JWKSServer(jwks(jwk(ONE_RSA, SHARED))) as liar:
        if lie == "drops the trailing slash":
            issuer, claimed = liar.origin + "/", liar.origin
        else:
            issuer, claimed = liar.origin, liar.origin + "/"
        liar.discovery(issuer, claimed=claimed)
        env = {"AUTHZ_HS256_SECRET": None, "AUTHZ_JWKS_REFRESH_SECONDS": "1"}
        with echo_upstream() as upstream, run_authz(
            env, args=("--config", config(tmp_path, issuer)), wait_ready=False  # type: ignore[arg-type]
        ) as authz, run_envoy({"authz": authz.grpc_port, "ant_media": upstream},
                              wait_cluster_healthy=None) as envoy:
            wait_until(lambda: authz.logs().count("names another issuer") >= 2, timeout=60,
                       what="discovery refused twice")
            assert request(authz.http_port, "/readyz").status == 503
            answer = through(envoy, forged(ONE_RSA, issuer, SHARED))
            assert answer.status == 503
            assert set(liar.paths) == {"/.well-known/openid-configuration"}
