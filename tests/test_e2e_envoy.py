"""End to end: the real Envoy runs the project's envoy.yaml in front of an echoing upstream."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from authz.mint import b64url, mint_hmac
from tests.harness import (
    AMS_DOCS_TOKEN,
    ENVOY_YAML,
    SECRET,
    Authz,
    Envoy,
    Response,
    echo_upstream,
    envoy_binary,
    request,
    run_authz,
    run_envoy,
)

pytestmark = pytest.mark.e2e

REST = "/LiveApp/rest/v2/broadcasts/list/0/10"


@dataclass
class Gateway:
    envoy: Envoy
    authz: Authz
    upstream_port: int

    def get(self, path: str = REST, headers: dict[str, str] | None = None) -> Response:
        return request(self.envoy.port, path, headers)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with echo_upstream() as upstream, run_authz() as authz, run_envoy(
        {"authz": authz.grpc_port, "ant_media": upstream}
    ) as envoy:
        yield Gateway(envoy, authz, upstream)


def upstream_saw(response: Response) -> dict[str, list[str]]:
    assert response.status == 200, response.body
    seen: dict[str, list[str]] = response.json()["headers"]
    return seen


def assert_denied(response: Response, status: int, reason: str) -> None:
    assert response.status == status, response.body
    assert response.json() == {
        "error": {401: "unauthorized", 403: "forbidden", 503: "unavailable"}[status],
        "reason": reason,
    }
    assert response.headers["content-type"] == "application/json"


def test_envoy_yaml_validates() -> None:
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(ENVOY_YAML)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("header", [AMS_DOCS_TOKEN, f"Bearer {AMS_DOCS_TOKEN}"])
def test_ams_docs_token_passes(gateway: Gateway, header: str) -> None:
    seen = upstream_saw(gateway.get(headers={"Authorization": header}))
    assert seen["x-jwt-sub"] == ["token"]


def test_spoofed_jwt_headers_never_reach_upstream(gateway: Gateway) -> None:
    seen = upstream_saw(
        gateway.get(
            headers={
                "Authorization": AMS_DOCS_TOKEN,
                "x-jwt-sub": "admin",
                "X-JWT-Role": "admin",
            }
        )
    )
    assert seen["x-jwt-sub"] == ["token"]
    assert "x-jwt-role" not in seen


def test_spoofed_sub_with_a_token_without_sub(gateway: Gateway) -> None:
    token = mint_hmac({"exp": time.time() + 300}, SECRET.encode())
    seen = upstream_saw(gateway.get(headers={"Authorization": token, "x-jwt-sub": "admin"}))
    assert "x-jwt-sub" not in seen


def test_missing_token(gateway: Gateway) -> None:
    response = gateway.get()
    assert_denied(response, 401, "missing_token")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (mint_hmac({"sub": "a", "exp": time.time() - 3600}, SECRET.encode()), "expired"),
        (AMS_DOCS_TOKEN[:-2] + ("AA" if not AMS_DOCS_TOKEN.endswith("AA") else "BA"),
         "bad_signature"),
        (
            b64url(b'{"alg":"none","typ":"JWT"}') + "." + b64url(b'{"sub":"admin"}') + ".",
            "alg_not_allowed",
        ),
        ("not-a-jwt", "malformed"),
    ],
)
def test_bad_tokens_are_401_with_challenge(gateway: Gateway, token: str, reason: str) -> None:
    response = gateway.get(headers={"Authorization": f"Bearer {token}"})
    assert_denied(response, 401, reason)
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    assert token not in response.body.decode()
    assert token not in json.dumps(response.headers)


def test_media_routes_bypass_the_check(gateway: Gateway) -> None:
    for path in ("/LiveApp/streams/stream1.m3u8", "/LiveApp/play.html", "/LiveApp/websocket"):
        seen = upstream_saw(gateway.get(path, headers={"x-jwt-sub": "admin"}))
        assert "x-jwt-sub" not in seen


def test_forwarded_for_is_not_trusted_for_the_ip_filter() -> None:
    with echo_upstream() as upstream, run_authz(
        {"AUTHZ_ALLOWED_CIDRS": "10.0.0.0/8"}
    ) as authz, run_envoy({"authz": authz.grpc_port, "ant_media": upstream}) as envoy:
        response = request(
            envoy.port,
            REST,
            {
                "Authorization": AMS_DOCS_TOKEN,
                "X-Forwarded-For": "10.1.2.3",
                "X-Real-IP": "10.1.2.3",
            },
        )
        assert_denied(response, 403, "ip_not_allowed")
        assert "www-authenticate" not in response.headers


def test_source_inside_the_cidr_list_passes() -> None:
    with echo_upstream() as upstream, run_authz(
        {"AUTHZ_ALLOWED_CIDRS": "192.0.2.0/24, 127.0.0.0/8"}
    ) as authz, run_envoy({"authz": authz.grpc_port, "ant_media": upstream}) as envoy:
        response = request(envoy.port, REST, {"Authorization": AMS_DOCS_TOKEN})
        assert upstream_saw(response)["x-jwt-sub"] == ["token"]


def test_authz_down_fails_closed() -> None:
    with echo_upstream() as upstream, run_authz() as authz, run_envoy(
        {"authz": authz.grpc_port, "ant_media": upstream}
    ) as envoy:
        assert request(envoy.port, REST, {"Authorization": AMS_DOCS_TOKEN}).status == 200
        assert authz.stop() == 0
        response = request(envoy.port, REST, {"Authorization": AMS_DOCS_TOKEN})
        assert response.status == 503
        # The media routes do not depend on authz.
        assert request(envoy.port, "/LiveApp/streams/s.m3u8").status == 200


def test_decisions_are_counted(gateway: Gateway) -> None:
    before = gateway.authz.metrics()
    gateway.get()
    after = gateway.authz.metrics()

    def count(text: str) -> float:
        for line in text.splitlines():
            if line.startswith('authz_checks_total{decision="deny",reason="missing_token"}'):
                return float(line.split()[-1])
        return 0.0

    assert count(after) == count(before) + 1
