"""End to end: the real Envoy runs the project's configs in front of an echoing upstream.

Every test runs in both ext_authz modes: `grpc` (envoy.yaml, the gRPC Check API) and `http`
(envoy-http.yaml, Envoy's http_service against AUTHZ_HTTP_AUTHZ_ADDRESS). The parity tests
send the same requests through both Envoys, one authz behind them, and compare what the
client and the upstream get.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz.core.base64url import b64url
from authz.core.mint import mint_hmac
from tests.credentials import AMS_DOCS_TOKEN, SECRET
from tests.harness import (
    ENVOY_HTTP_YAML,
    ENVOY_YAML,
    POLICIES_YAML,
    Authz,
    Envoy,
    Response,
    assert_envoy_config_valid,
    echo_upstream,
    free_port,
    request,
    run_authz,
    run_envoy,
    wait_until,
)

pytestmark = pytest.mark.e2e

REST = "/LiveApp/rest/v2/broadcasts/list/0/10"
STRICT = "/StrictApp/rest/v2/broadcasts/list/0/10"
MODES = ("grpc", "http")


@dataclass
class Gateway:
    envoy: Envoy
    authz: Authz
    upstream_port: int
    mode: str

    def get(
        self, path: str = REST, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> Response:
        return request(self.envoy.port, path, headers, method)


def http_door_env() -> dict[str, str]:
    """The environment that opens authz's HTTP ext_authz door on a free port."""
    return {"AUTHZ_HTTP_AUTHZ_ADDRESS": f"127.0.0.1:{free_port()}"}


@contextlib.contextmanager
def envoy_for(
    mode: str, authz: Authz, upstream: int, wait_cluster_healthy: str | None = "authz"
) -> Iterator[Envoy]:
    """The real Envoy in `mode` in front of `authz` (started with http_door_env) and `upstream`."""
    if mode == "grpc":
        with run_envoy(
            {"authz": authz.grpc_port, "ant_media": upstream},
            wait_cluster_healthy=wait_cluster_healthy,
        ) as envoy:
            yield envoy
    else:
        with run_envoy(
            {"authz": authz.http_authz_port, "ant_media": upstream},
            source=ENVOY_HTTP_YAML,
            wait_cluster_healthy=wait_cluster_healthy,
            health_check_ports={"authz": authz.http_port},
        ) as envoy:
            yield envoy


@contextlib.contextmanager
def stack(mode: str, env: Mapping[str, str] | None = None) -> Iterator[Gateway]:
    """Upstream, authz (both doors open) and the Envoy of `mode`, for one test."""
    with (
        echo_upstream() as upstream,
        run_authz({**http_door_env(), **(env or {})}) as authz,
        envoy_for(mode, authz, upstream) as envoy,
    ):
        yield Gateway(envoy, authz, upstream, mode)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Gateway]]:
    """One authz with both doors open, one Envoy per mode in front of it."""
    config = tmp_path_factory.mktemp("authz") / "authz.yaml"
    config.write_text(POLICIES_YAML)
    with (
        echo_upstream() as upstream,
        run_authz(http_door_env(), args=("--config", str(config))) as authz,
        envoy_for("grpc", authz, upstream) as grpc_envoy,
        envoy_for("http", authz, upstream) as http_envoy,
    ):
        yield {
            "grpc": Gateway(grpc_envoy, authz, upstream, "grpc"),
            "http": Gateway(http_envoy, authz, upstream, "http"),
        }


@pytest.fixture(params=MODES)
def gateway(request: pytest.FixtureRequest, shared: dict[str, Gateway]) -> Gateway:
    return shared[request.param]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


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


@pytest.mark.parametrize("config", [ENVOY_YAML, ENVOY_HTTP_YAML], ids=["grpc", "http"])
def test_envoy_yaml_validates(config: Path) -> None:
    assert_envoy_config_valid(config)


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
        (
            AMS_DOCS_TOKEN[:-2] + ("AA" if not AMS_DOCS_TOKEN.endswith("AA") else "BA"),
            "bad_signature",
        ),
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


def test_media_routes_pass_without_a_token(gateway: Gateway) -> None:
    # The player, static and WebSocket routes skip the check; the stream routes are checked
    # as stream routes and pass as jwt_disabled while the play switch is off (this stack).
    for path in ("/LiveApp/streams/stream1.m3u8", "/LiveApp/play.html", "/LiveApp/websocket"):
        seen = upstream_saw(gateway.get(path, headers={"x-jwt-sub": "admin"}))
        assert "x-jwt-sub" not in seen


def test_route_policy_reaches_authz(gateway: Gateway) -> None:
    plain = mint_hmac({"sub": "u", "exp": time.time() + 300}, SECRET.encode())
    assert_denied(gateway.get(STRICT, {"Authorization": plain}), 403, "insufficient_scope")
    # The default route does not apply the admin policy to the same token.
    assert upstream_saw(gateway.get(REST, {"Authorization": plain}))["x-jwt-sub"] == ["u"]
    admin = mint_hmac({"sub": "a", "role": "admin", "exp": time.time() + 300}, SECRET.encode())
    seen = upstream_saw(gateway.get(STRICT, {"Authorization": admin, "x-jwt-role": "root"}))
    assert seen["x-jwt-role"] == ["admin"]
    assert seen["x-jwt-sub"] == ["a"]


def test_client_cannot_pick_the_policy(gateway: Gateway) -> None:
    plain = mint_hmac({"sub": "u", "exp": time.time() + 300}, SECRET.encode())
    # A client-sent x-authz-policy never replaces the route's (HTTP mode's policy header).
    response = gateway.get(REST, {"Authorization": plain, "x-authz-policy": "admin"})
    assert upstream_saw(response)["x-jwt-sub"] == ["u"]
    response = gateway.get(STRICT, {"Authorization": plain, "x-authz-policy": "default"})
    assert_denied(response, 403, "insufficient_scope")


def test_authz_metadata_headers_stay_inside(gateway: Gateway) -> None:
    allowed = gateway.get(headers={"Authorization": AMS_DOCS_TOKEN})
    denied = gateway.get()
    for response in (allowed, denied):
        assert not [name for name in response.headers if name.startswith("x-authz-")]
    assert not [name for name in upstream_saw(allowed) if name.startswith("x-authz-")]


def test_forwarded_for_is_not_trusted_for_the_ip_filter(mode: str) -> None:
    with stack(mode, {"AUTHZ_ALLOWED_CIDRS": "10.0.0.0/8"}) as gateway:
        response = gateway.get(
            REST,
            {
                "Authorization": AMS_DOCS_TOKEN,
                "X-Forwarded-For": "10.1.2.3",
                "X-Real-IP": "10.1.2.3",
            },
        )
        assert_denied(response, 403, "ip_not_allowed")
        assert "www-authenticate" not in response.headers
        # Nor the header Envoy sets for the HTTP door: Envoy's own value replaces it.
        response = gateway.get(
            REST, {"Authorization": AMS_DOCS_TOKEN, "x-authz-client-ip": "10.1.2.3"}
        )
        assert_denied(response, 403, "ip_not_allowed")


def test_source_inside_the_cidr_list_passes(mode: str) -> None:
    with stack(mode, {"AUTHZ_ALLOWED_CIDRS": "192.0.2.0/24, 127.0.0.0/8"}) as gateway:
        response = gateway.get(REST, {"Authorization": AMS_DOCS_TOKEN})
        assert upstream_saw(response)["x-jwt-sub"] == ["token"]
        # A client-sent client address cannot push the request outside either.
        response = gateway.get(
            REST, {"Authorization": AMS_DOCS_TOKEN, "x-authz-client-ip": "203.0.113.9"}
        )
        assert upstream_saw(response)["x-jwt-sub"] == ["token"]


def test_authz_down_fails_closed(mode: str) -> None:
    with stack(mode) as gateway:
        assert gateway.get(REST, {"Authorization": AMS_DOCS_TOKEN}).status == 200
        assert gateway.authz.stop() == 0
        response = gateway.get(REST, {"Authorization": AMS_DOCS_TOKEN})
        assert response.status == 503
        # The unchecked media routes do not depend on authz; the stream routes, checked,
        # fail closed like every checked route.
        assert gateway.get("/LiveApp/play.html").status == 200
        assert gateway.get("/LiveApp/streams/stream1.m3u8").status == 503


def test_jwks_unavailable_is_503(mode: str) -> None:
    # SPEC section 5: the gRPC door's 503 carries the JSON body; Envoy answers any 5xx from
    # an HTTP authorization server with its bare status_on_error 503.
    dead_jwks = f"http://127.0.0.1:{free_port()}/jwks.json"
    token = b64url(b'{"alg":"RS256","kid":"k1"}') + "." + b64url(b'{"sub":"a"}') + ".c2ln"
    with (
        echo_upstream() as upstream,
        run_authz({**http_door_env(), "AUTHZ_JWKS_URL": dead_jwks}, wait_ready=False) as authz,
        envoy_for(mode, authz, upstream, wait_cluster_healthy=None) as envoy,
    ):
        gateway = Gateway(envoy, authz, upstream, mode)
        wait_until(lambda: request(authz.http_port, "/healthz").status == 200, what="authz up")
        # Not ready (no key set), so Envoy's health check fails: with no healthy host
        # Envoy still routes (panic mode) once its connection pool reaches authz.
        unavailable = 'authz_checks_total{decision="deny",reason="jwks_unavailable"} '

        def decided_by_authz() -> bool:
            gateway.get(REST, {"Authorization": token})
            return unavailable + "0.0" not in authz.metrics()

        wait_until(decided_by_authz, what="a Check reaching authz")
        response = gateway.get(REST, {"Authorization": token})
        assert response.status == 503
        if mode == "grpc":
            assert_denied(response, 503, "jwks_unavailable")
        else:
            assert response.body == b""
        assert "www-authenticate" not in response.headers


def test_decisions_are_counted(gateway: Gateway) -> None:
    before = gateway.authz.metrics()
    gateway.get()
    after = gateway.authz.metrics()

    def count(text: str, series: str) -> float:
        for line in text.splitlines():
            if line.startswith(series):
                return float(line.split()[-1])
        return 0.0

    missing = 'authz_checks_total{decision="deny",reason="missing_token"}'
    assert count(after, missing) == count(before, missing) + 1
    door = f'authz_checks_by_transport_total{{transport="{gateway.mode}"}}'
    assert count(after, door) == count(before, door) + 1


# ---- parity: the same requests through both Envoys, one authz behind them ----

_NO_SUB = mint_hmac({"exp": time.time() + 3600}, SECRET.encode())
_ADMIN = mint_hmac({"sub": "a", "role": "admin", "exp": time.time() + 3600}, SECRET.encode())
_PLAIN = mint_hmac({"sub": "u", "exp": time.time() + 3600}, SECRET.encode())

PARITY_CASES: dict[str, tuple[str, str, dict[str, str]]] = {
    "no token": ("GET", REST, {}),
    "raw token": ("GET", REST, {"Authorization": AMS_DOCS_TOKEN}),
    "bearer lowercase": ("GET", REST, {"Authorization": f"bearer {AMS_DOCS_TOKEN}"}),
    "basic scheme": ("GET", REST, {"Authorization": "Basic dXNlcjpwYXNz"}),
    "post": ("POST", REST, {"Authorization": AMS_DOCS_TOKEN}),
    "delete denied": ("DELETE", REST, {}),
    "query string": ("GET", REST + "?token=x&a=%2F", {"Authorization": AMS_DOCS_TOKEN}),
    "spoofed x-jwt-*": (
        "GET",
        REST,
        {"Authorization": AMS_DOCS_TOKEN, "x-jwt-sub": "admin", "X-Jwt-Role": "admin"},
    ),
    "spoofed sub, token without sub": (
        "GET",
        REST,
        {"Authorization": _NO_SUB, "x-jwt-sub": "admin"},
    ),
    "spoofed client address": (
        "GET",
        REST,
        {"Authorization": AMS_DOCS_TOKEN, "x-authz-client-ip": "10.0.0.1", "X-Real-IP": "1.1.1.1"},
    ),
    "expired": (
        "GET",
        REST,
        {"Authorization": mint_hmac({"sub": "a", "exp": time.time() - 3600}, SECRET.encode())},
    ),
    "not yet valid": (
        "GET",
        REST,
        {"Authorization": mint_hmac({"sub": "a", "nbf": time.time() + 3600}, SECRET.encode())},
    ),
    "bad signature": ("GET", REST, {"Authorization": AMS_DOCS_TOKEN[:-4] + "AAAA"}),
    "alg none": (
        "GET",
        REST,
        {"Authorization": b64url(b'{"alg":"none"}') + "." + b64url(b'{"sub":"a"}') + "."},
    ),
    "malformed": ("GET", REST, {"Authorization": "Bearer a.b"}),
    "oversized token": ("GET", REST, {"Authorization": "Bearer " + "a" * 20_000}),
    "strict route, no role": ("GET", STRICT, {"Authorization": _PLAIN}),
    "strict route, admin": ("GET", STRICT, {"Authorization": _ADMIN, "x-jwt-role": "root"}),
    "strict route, no token": ("GET", STRICT, {}),
    "media route": ("GET", "/LiveApp/play.html", {"x-jwt-sub": "admin"}),
    "stream route, play switch off": ("GET", "/LiveApp/streams/s.m3u8", {"x-jwt-sub": "admin"}),
}


def outcome(response: Response) -> dict[str, object]:
    """What parity compares: status, challenge, content type, body, x-jwt-* upstream got."""
    result: dict[str, object] = {
        "status": response.status,
        "www-authenticate": response.headers.get("www-authenticate"),
        "content-type": response.headers.get("content-type"),
    }
    if response.status == 200:
        seen = response.json()
        result["upstream x-jwt-*"] = {
            name: values for name, values in seen["headers"].items() if name.startswith("x-jwt-")
        }
        result["upstream method and path"] = (seen["method"], seen["path"])
    else:
        result["body"] = response.body
    return result


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_both_modes_answer_alike(shared: dict[str, Gateway], case: str) -> None:
    method, path, headers = PARITY_CASES[case]
    grpc = outcome(shared["grpc"].get(path, headers, method))
    http = outcome(shared["http"].get(path, headers, method))
    assert http == grpc
