"""End to end with JWKS: the real Envoy in front of `authz serve`, whose key set comes from a
real JWKS server on 127.0.0.1 that the test drives (down at start, rotation, kid flood)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness import echo_upstream, request, run_authz, run_envoy, wait_until
from tests.jwks_server import JWKSServer, free_port, jwk, jwks, rsa_key, sign

pytestmark = pytest.mark.e2e

REST = "/LiveApp/rest/v2/broadcasts/list/0/10"
KEY_A = rsa_key("A")
KEY_B = rsa_key("B")


def claims() -> dict[str, object]:
    return {"sub": "rs-user", "exp": time.time() + 600}


def test_rs256_through_envoy_from_start_to_rotation() -> None:
    port = free_port()
    env = {"AUTHZ_JWKS_URL": f"http://127.0.0.1:{port}/.well-known/jwks.json"}
    token_a = sign("RS256", KEY_A, claims(), "a")
    # gRPC health says NOT_SERVING until the first key set: Envoy's cluster is not healthy.
    with echo_upstream() as upstream, run_authz(env, wait_ready=False) as authz, run_envoy(
        {"authz": authz.grpc_port, "ant_media": upstream}, wait_cluster_healthy=None
    ) as envoy:
        # The JWKS has never been reachable: not ready, and JWKS tokens answer 503.
        wait_until(lambda: request(authz.http_port, "/readyz").status == 503,
                   what="authz answering, not ready")
        answer = request(envoy.port, REST, {"Authorization": f"Bearer {token_a}"})
        assert answer.status == 503

        with JWKSServer(jwks(jwk(KEY_A, "a")), port=port) as server:
            wait_until(lambda: request(authz.http_port, "/readyz").status == 200,
                       what="authz ready after the JWKS came up")
            wait_until(lambda: request(envoy.port, REST, {"Authorization": token_a}).status
                       == 200, what="Envoy passing the RS256 token")
            answer = request(envoy.port, REST, {"Authorization": token_a})
            assert answer.json()["headers"]["x-jwt-sub"] == ["rs-user"]

            # Rotation: the issuer now signs with B; the first B token triggers one refetch
            # inside Envoy's ext_authz timeout and passes.
            fetches = server.requests
            server.body = jwks(jwk(KEY_B, "b"))
            token_b = sign("RS256", KEY_B, claims(), "b")
            answer = request(envoy.port, REST, {"Authorization": f"Bearer {token_b}"})
            assert answer.status == 200, answer.body
            assert server.requests == fetches + 1
            # A is gone from the set: denied, and no further fetch inside the 30 s window.
            answer = request(envoy.port, REST, {"Authorization": token_a})
            assert answer.status == 401
            assert answer.json()["reason"] == "unknown_kid"

            # A flood of random kids through Envoy: no fetch at all inside the window.
            flood = [sign("RS256", KEY_B, claims(), f"random-{i}") for i in range(200)]
            with ThreadPoolExecutor(32) as pool:
                statuses = list(pool.map(
                    lambda t: request(envoy.port, REST, {"Authorization": t}).status, flood))
            assert set(statuses) == {401}
            assert server.requests == fetches + 1

            metrics = authz.metrics()
            # The single AUTHZ_JWKS_URL without AUTHZ_ISSUER: issuer="".
            assert 'authz_jwks_refreshes_total{issuer="",result="success"}' in metrics
            assert 'authz_jwks_consecutive_failures{issuer=""} 0.0' in metrics
            assert 'authz_jwks_keys{issuer=""} 1.0' in metrics
