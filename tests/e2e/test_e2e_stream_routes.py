"""Stream routes through each shipped Envoy config, in front of a real Tomcat (SPEC sections
5, 8 item 4, 9): the play check at the gateway.

authz runs with `AUTHZ_PLAY_JWT_ENABLED=true` and a stream secret behind `envoy.yaml` (gRPC
door), the Kubernetes gateway generated from it, and `envoy-http.yaml` (HTTP door); Tomcat's
echo servlets (tests/tomcat.py) report the query string and headers they were handed. A
valid play token reaches the servlet with `x-jwt-stream-id`; through the gRPC door the
`token` parameter is gone from the query the servlet got, in every spelling authz accepts
(the HTTP door cannot remove it: it reaches the servlet). Then the denials, OPTIONS, writes,
spoofed headers and the switch turned off. Stream names are the simple ones every stream-id
derivation knows (`stream1.m3u8`, `stream1_240p300kbps000000012.ts`, LL-HLS
`chunked/stream1/media_1.m3u8`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from authz.core.mint import mint_hmac
from tests.harness import (
    ENVOY_HTTP_YAML,
    ENVOY_YAML,
    ROOT,
    RawResponse,
    free_port,
    raw_request,
    run_authz,
    run_envoy,
    send_raw,
)
from tests.tomcat import Served, Tomcat, served

pytestmark = pytest.mark.e2e

STREAM_SECRET = "stream-secret-for-the-stream-route-tests!"
GATEWAY_YAML = ROOT / "deploy/kubernetes/base/gateway-envoy.yaml"
# Config name -> whether its door removes the query token (gRPC: query_parameters_to_remove).
CONFIGS = {"envoy.yaml": True, "gateway": True, "envoy-http.yaml": False}
PLAYLIST = "/LiveApp/streams/stream1.m3u8"
SEGMENT = "/LiveApp/streams/stream1_240p300kbps000000012.ts"
LL_HLS = "/LiveApp/chunked/stream1/media_1.m3u8"
MEDIA = [PLAYLIST, SEGMENT, LL_HLS]


def stream_token(stream_id: str = "stream1", kind: str = "play", ttl: float = 3600) -> str:
    claims: dict[str, Any] = {"streamId": stream_id, "type": kind, "exp": time.time() + ttl}
    return mint_hmac(claims, STREAM_SECRET.encode())


@dataclass(frozen=True)
class Sent:
    answer: RawResponse

    @property
    def status(self) -> int:
        return self.answer.status

    def reason(self) -> str | None:
        """authz's deny reason (the JSON body both doors pass through), None otherwise."""
        try:
            body = self.answer.json()
        except ValueError:
            return None
        return body.get("reason") if isinstance(body, dict) and "servlet" not in body else None

    def servlet(self) -> Served | None:
        """What the echo servlet was handed; None when Envoy or authz answered."""
        content_type = self.answer.header("content-type") or ""
        if self.status != 200 or not content_type.startswith("application/json"):
            return None
        try:
            return served(self.answer.body)
        except (ValueError, KeyError):
            return None


@dataclass(frozen=True)
class Gateways:
    ports: dict[str, int]  # config name -> Envoy listener port
    metrics: Any  # () -> authz's /metrics text

    def send(
        self,
        config: str,
        target: str,
        method: str = "GET",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Sent:
        data = raw_request(target, method, (*headers, ("Connection", "close")), host="localhost")
        return Sent(send_raw(self.ports[config], data))


@contextlib.contextmanager
def _gateways(tomcat: Tomcat, env: dict[str, str], configs: tuple[str, ...]) -> Iterator[Gateways]:
    with contextlib.ExitStack() as stack:
        authz = stack.enter_context(
            run_authz({"AUTHZ_HTTP_AUTHZ_ADDRESS": f"127.0.0.1:{free_port()}", **env})
        )
        grpc_clusters = {"authz": authz.grpc_port, "ant_media": tomcat.port}
        http_clusters = {"authz": authz.http_authz_port, "ant_media": tomcat.port}
        sources = {"envoy.yaml": ENVOY_YAML, "gateway": GATEWAY_YAML}
        ports = {}
        for config in configs:
            if config == "envoy-http.yaml":
                envoy = run_envoy(
                    http_clusters,
                    source=ENVOY_HTTP_YAML,
                    health_check_ports={"authz": authz.http_port},
                )
            else:
                envoy = run_envoy(grpc_clusters, source=sources[config])
            ports[config] = stack.enter_context(envoy).port
        yield Gateways(ports, authz.metrics)


@pytest.fixture(scope="module")
def play_on(tomcat: Tomcat) -> Iterator[Gateways]:
    env = {"AUTHZ_PLAY_JWT_ENABLED": "true", "AUTHZ_STREAM_SECRET": STREAM_SECRET}
    with _gateways(tomcat, env, tuple(CONFIGS)) as gateways:
        yield gateways


@pytest.fixture(scope="module")
def play_off(tomcat: Tomcat) -> Iterator[Gateways]:
    with _gateways(tomcat, {}, ("envoy.yaml", "envoy-http.yaml")) as gateways:
        yield gateways


def _reached(sent: Sent, target: str) -> Served:
    answer = sent.servlet()
    assert answer is not None, (target, sent.status, sent.answer.body[:200])
    assert answer.servlet in ("streams", "chunked"), (target, answer.servlet)
    assert answer.uri == target.partition("?")[0]
    return answer


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("path", MEDIA)
def test_a_valid_play_token_reaches_the_servlet(play_on: Gateways, config: str, path: str) -> None:
    token = stream_token()
    for method in ("GET", "HEAD"):
        sent = play_on.send(config, f"{path}?token={token}", method)
        assert sent.status == 200, (method, sent.status, sent.reason())
    answer = _reached(play_on.send(config, f"{path}?token={token}"), path)
    assert answer.headers["x-jwt-stream-id"] == ["stream1"]
    assert "x-jwt-sub" not in answer.headers  # a play token without `sub`
    if CONFIGS[config]:
        assert answer.query is None  # the only parameter was the token: removed
    else:
        assert answer.query == f"token={token}"  # the HTTP door cannot remove it
    # From the Authorization header (Ant Media's players can send either).
    for header in (token, f"Bearer {token}"):
        by_header = _reached(play_on.send(config, path, headers=(("Authorization", header),)), path)
        assert by_header.headers["x-jwt-stream-id"] == ["stream1"]
        assert by_header.query is None


@pytest.mark.parametrize("config", CONFIGS)
def test_play_denials(play_on: Gateways, config: str) -> None:
    cases = [
        (PLAYLIST, 401, "missing_token"),
        (f"{PLAYLIST}?token=", 401, "missing_token"),
        (f"{SEGMENT}?token={stream_token('stream2')}", 403, "stream_mismatch"),
        (f"{LL_HLS}?token={stream_token('stream2')}", 403, "stream_mismatch"),
        (f"{PLAYLIST}?token={stream_token(kind='publish')}", 403, "stream_mismatch"),
        (f"{PLAYLIST}?token={stream_token(ttl=-3600)}", 401, "expired"),
        (f"{PLAYLIST}?token=not.a.jwt", 401, "malformed"),
        # A path on the stream route that names no stream.
        (f"/LiveApp/streams/notes.txt?token={stream_token()}", 403, "no_stream_id"),
        (f"/LiveApp/streams/sub?token={stream_token()}", 403, "no_stream_id"),
    ]
    for target, status, reason in cases:
        for method in ("GET", "HEAD"):
            sent = play_on.send(config, target, method)
            assert sent.status == status, (target, method, sent.status)
            assert sent.servlet() is None
            if method == "GET":
                assert sent.reason() == reason, target
        if status == 401:
            assert (sent.answer.header("www-authenticate") or "").startswith("Bearer")
    # A REST token is not a play token: the stream secret alone verifies these.
    rest = mint_hmac({"sub": "user", "exp": time.time() + 60}, b"x" * 32)
    assert play_on.send(config, f"{PLAYLIST}?token={rest}").reason() == "bad_signature"


@pytest.mark.parametrize("config", CONFIGS)
def test_options_passes_and_writes_are_refused(play_on: Gateways, config: str) -> None:
    options = play_on.send(config, PLAYLIST, "OPTIONS", (("X-JWT-Stream-Id", "spoofed"),))
    answer = _reached(options, PLAYLIST)
    assert answer.method == "OPTIONS"
    assert "x-jwt-stream-id" not in answer.headers
    # Writes never reach a stream servlet, with a play token in either place: the stream
    # route's check refuses every method but GET, HEAD and OPTIONS.
    token = stream_token()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for target, headers in (
            (f"{SEGMENT}?token={token}", ()),
            (SEGMENT, (("Authorization", f"Bearer {token}"),)),
            (LL_HLS, ()),
        ):
            sent = play_on.send(config, target, method, headers)
            assert sent.status == 403, (method, target, sent.status)
            assert sent.reason() == "method_not_allowed"
            assert sent.servlet() is None


@pytest.mark.parametrize("config", CONFIGS)
def test_client_stream_id_headers_are_stripped(play_on: Gateways, config: str) -> None:
    target = f"{SEGMENT}?token={stream_token()}"
    for spoofed in (
        (("x-jwt-stream-id", "other"),),
        (("X-JWT-Stream-Id", "other"), ("x-jwt-stream-id", "more")),
        (("x-jwt-sub", "admin"), ("x-jwt-role", "admin")),
    ):
        answer = _reached(play_on.send(config, target, headers=spoofed), SEGMENT)
        assert answer.headers["x-jwt-stream-id"] == ["stream1"], spoofed
        assert [name for name in answer.headers if name.startswith("x-jwt-")] == [
            "x-jwt-stream-id"
        ]
    assert play_on.send(config, target, headers=(("x_jwt_stream_id", "o"),)).status == 400


# What each spelling of the token parameter must come to (SPEC section 8 item 4). Observed
# with Envoy 1.40: `query_parameters_to_remove: [token]` removes only parameters spelled
# `token`; `%74oken` stays in the URL and Tomcat reads it as `token`. So authz reads only the
# spelling Envoy removes and refuses an encoded one (core/extract.py). Removing a parameter
# makes Envoy rebuild the query: the other parameters stay, sorted by name.
#   (query, status, reason, query the servlet gets via gRPC)
SPELLINGS = [
    ("token={T}", 200, None, None),
    ("%74oken={T}", 401, "malformed", None),
    ("%74%6Fken={T}", 401, "malformed", None),
    ("%74%6fken={T}", 401, "malformed", None),
    ("tok%65n={T}", 401, "malformed", None),
    ("a=1&%74oken={T}&b=2", 401, "malformed", None),
    ("token={T}&%74oken={T}", 401, "malformed", None),
    ("TOKEN={T}", 401, "missing_token", None),  # another parameter: not the token
    ("Token={T}", 401, "missing_token", None),
    ("token={T}&token=y", 401, "malformed", None),
    ("token={T}&token={T}", 401, "malformed", None),
    ("a=1&token={T}&b=2", 200, None, "a=1&b=2"),
    ("b=2&token={T}&a=%41+b", 200, None, "a=%41+b&b=2"),
    ("TOKEN=x&token={T}", 200, None, "TOKEN=x"),
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize(("query", "status", "reason", "upstream_query"), SPELLINGS)
def test_every_spelling_of_the_token_parameter(
    play_on: Gateways,
    config: str,
    query: str,
    status: int,
    reason: str | None,
    upstream_query: str | None,
) -> None:
    token = stream_token()
    sent_query = query.replace("{T}", token)
    sent = play_on.send(config, f"{SEGMENT}?{sent_query}")
    assert sent.status == status, (sent.status, sent.reason())
    if status != 200:
        assert sent.reason() == reason
        assert sent.servlet() is None
        return
    answer = _reached(sent, SEGMENT)
    assert answer.headers["x-jwt-stream-id"] == ["stream1"]
    if CONFIGS[config]:
        assert answer.query == upstream_query
        assert token not in answer.uri
    else:
        assert answer.query == sent_query  # nothing removed by the HTTP door


@pytest.mark.parametrize("config", CONFIGS)
def test_a_fragment_is_refused_by_envoy(play_on: Gateways, config: str) -> None:
    sent = play_on.send(config, f"{SEGMENT}?token={stream_token()}#frag")
    assert sent.status == 400
    assert sent.servlet() is None


@pytest.mark.parametrize("config", ["envoy.yaml", "envoy-http.yaml"])
def test_switch_off_stream_routes_pass_as_jwt_disabled(play_off: Gateways, config: str) -> None:
    def jwt_disabled() -> float:
        for line in play_off.metrics().splitlines():
            if line.startswith('authz_checks_total{decision="allow",reason="jwt_disabled"}'):
                return float(line.rpartition(" ")[2])
        return 0.0

    before = jwt_disabled()
    for path in MEDIA:
        answer = _reached(play_off.send(config, path, headers=(("x-jwt-stream-id", "s"),)), path)
        assert not [name for name in answer.headers if name.startswith("x-jwt-")]
        # The token is not read, so not removed: Ant Media's own check may still want it.
        kept = _reached(play_off.send(config, f"{path}?token=anything"), path)
        assert kept.query == "token=anything"
    assert jwt_disabled() - before == 2 * len(MEDIA)
    # Writes stay refused with the switch off too.
    write = play_off.send(config, SEGMENT, "POST")
    assert write.status == 403 and write.reason() == "method_not_allowed"
