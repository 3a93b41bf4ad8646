"""SPEC section 8 through each shipped Envoy config, in front of a real Tomcat.

Ant Media Server is a set of webapps in Tomcat, which decodes `%XX`, drops `;params`,
resolves dot segments and merges slashes before it maps a servlet. Each shipped config
(`envoy.yaml`, `envoy-http.yaml`, the Kubernetes gateway generated from `envoy.yaml`) runs
in the real Envoy in front of the real Tomcat (tests/tomcat.py: webapps shaped like Ant
Media apps whose servlets answer with what they received) and a running authz. Requests go
byte-exact over a socket. With no token, no spelling of a REST path may reach a REST
servlet; with a valid token that lacks the `admin` role, no spelling of a StrictApp REST
path may reach StrictApp's REST servlet; no client `x-jwt-*` or `x_jwt_*` header reaches
any servlet. Positive controls run in the same Envoys. The stream file routes are checked
as stream routes; this authz runs with the play switch off, so they pass as `jwt_disabled`
(tests/e2e/test_e2e_stream_routes.py runs them with it on).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.core.mint import mint_hmac
from tests.credentials import SECRET
from tests.harness import (
    ENVOY_HTTP_YAML,
    ENVOY_YAML,
    POLICIES_YAML,
    ROOT,
    RawResponse,
    free_port,
    run_authz,
    run_envoy,
    send_raw,
)
from tests.tls import ENVOY_HTTP_TLS_YAML, ENVOY_TLS_YAML
from tests.tomcat import Served, Tomcat, served

pytestmark = pytest.mark.e2e

GATEWAY_YAML = ROOT / "deploy/kubernetes/base/gateway-envoy.yaml"
CONFIGS = {"envoy.yaml": ENVOY_YAML, "envoy-http.yaml": ENVOY_HTTP_YAML, "gateway": GATEWAY_YAML}
REST_SERVLETS = {"rest", "root-rest"}
TAIL = "v2/broadcasts/list/0/10"
# Every request of the corpus carries these; none may reach a servlet.
SPOOFED = (
    b"x-jwt-sub: spoofed\r\n"
    b"X-JWT-Role: admin\r\n"
    b"X-Jwt-Stream-Id: spoofed\r\n"
)


def _upper_first(app: str) -> str:
    return f"%{ord(app[0]):02X}{app[1:]}"


def rest_spellings(app: str) -> list[str]:
    """Request targets that Tomcat (or a lenient reader of paths) could map to `app`'s REST
    servlet: each must be refused, checked, or served by another servlet."""
    a = app
    return [
        f"/{a}/rest/{TAIL}",
        f"/{a}/rest",
        f"/{a}/rest/",
        f"//{a}/rest/{TAIL}",
        f"/{a}//rest/{TAIL}",
        f"/{a}/rest//{TAIL}",
        f"///{a}///rest///{TAIL}",
        f"/./{a}/rest/{TAIL}",
        f"/{a}/./rest/{TAIL}",
        f"/{a}/rest/./{TAIL}",
        f"/{a}/x/../rest/{TAIL}",
        f"/x/../{a}/rest/{TAIL}",
        f"/../{a}/rest/{TAIL}",
        f"/{a}/streams/../rest/{TAIL}",
        f"/{a}/streams/s/../../rest/{TAIL}",
        f"/{a}/streams/s.m3u8/../../rest/{TAIL}",
        f"/{a}/./streams/./../rest/{TAIL}",
        f"/{a}/rest;x=1/{TAIL}",
        f"/{a};x/rest/{TAIL}",
        f"/{a}/rest/v2;a/broadcasts/list/0/10",
        f"/{a}/rest;jsessionid=0123456789ABCDEF/{TAIL}",
        f"/{a}/rest/{TAIL};jsessionid=0123456789ABCDEF",
        f"/{a}/streams/..;/rest/{TAIL}",
        f"/{a}/streams;/../rest/{TAIL}",
        f"/{a}/streams/..;x=1/rest/{TAIL}",
        f"/{a}/%72est/{TAIL}",
        f"/{a}/%72%65%73%74/{TAIL}",
        f"/{a}/re%73t/{TAIL}",
        f"/{_upper_first(a)}/rest/{TAIL}",
        f"/{a}/streams/%2e%2e/rest/{TAIL}",
        f"/{a}/streams/%2E%2E/rest/{TAIL}",
        f"/{a}/streams/.%2e/rest/{TAIL}",
        f"/{a}/streams/%2e./rest/{TAIL}",
        f"/{a}/%2e/rest/{TAIL}",
        f"/{a}/streams/%252e%252e/rest/{TAIL}",
        f"/{a}/streams/%c0%ae%c0%ae/rest/{TAIL}",
        f"/{a}%2Frest/{TAIL}",
        f"/{a}%2frest/{TAIL}",
        f"/{a}/streams%2F..%2Frest/{TAIL}",
        f"/{a}/streams/..%2frest/{TAIL}",
        f"/{a}/streams/%252F..%252Frest/{TAIL}",
        f"/{a}%5Crest/{TAIL}",
        f"/{a}/streams/..%5crest/{TAIL}",
        f"/{a}\\rest/{TAIL}",
        f"/{a}/streams\\..\\rest/{TAIL}",
        f"/{a}/streams/..\\rest/{TAIL}",
        f"/{a}/rest%3B/{TAIL}",
        f"/{a}/rest%00/{TAIL}",
        f"/{a}/REST/{TAIL}",
        f"/{a}/Rest/{TAIL}",
        f"/{a.upper()}/rest/{TAIL}",
        f"/{a.lower()}/rest/{TAIL}",
        f"http://localhost/{a}/rest/{TAIL}",
        f"http://localhost/{a}/streams/../rest/{TAIL}",
        f"http://other.invalid/{a}/rest/{TAIL}",
        f"HTTP://LOCALHOST/{a}/rest/{TAIL}",
        f"/{a}/streams/" + "s/" * 300 + "../" * 301 + f"rest/{TAIL}",
        f"/{a}/" + "/" * 500 + f"rest/{TAIL}",
        f"/{a}/rest/{TAIL}" + "/x/.." * 200,
        f"/{a}/rest/{TAIL}?next=/{a}/streams/s.m3u8",
        f"/{a}/rest/{TAIL}#/{a}/streams/s.m3u8",
        f"/{a}/streams/.../rest/{TAIL}",
        # Tomcat merges slashes before it resolves dot segments, Envoy after: both must
        # still agree because the upstream gets the path Envoy matched.
        f"/{a}/streams//../rest/{TAIL}",
        f"/{a}/streams/s//../../rest/{TAIL}",
        f"/{a}//../rest/{TAIL}",
        f"/{a}/;x/../rest/{TAIL}",
        f"/{a}/.;/rest/{TAIL}",
        f"/{a}/play.html/../rest/{TAIL}",
    ]


def root_rest_spellings() -> list[str]:
    """Ant Media's server-level REST API (root context): never routed."""
    return [
        f"/rest/{TAIL}",
        "/rest",
        f"//rest/{TAIL}",
        f"/./rest/{TAIL}",
        f"/x/../rest/{TAIL}",
        f"/LiveApp/../rest/{TAIL}",
        f"/LiveApp/streams/../../rest/{TAIL}",
        f"/%72est/{TAIL}",
        f"/rest;x=1/{TAIL}",
        f"/rest;jsessionid=0123456789ABCDEF/{TAIL}",
        f"/x/..;/rest/{TAIL}",
        f"/%2e%2e/rest/{TAIL}",
        f"/LiveApp/%2e%2e/rest/{TAIL}",
        f"\\rest/{TAIL}",
        f"/LiveApp\\..\\rest/{TAIL}",
        f"http://localhost/rest/{TAIL}",
        f"http://localhost/LiveApp/../rest/{TAIL}",
        f"/LiveApp//../rest/{TAIL}",
        f"/REST/{TAIL}",
    ]


# (method, target, status) for requests that are not REST paths but must not pass
# unchecked either: writes to stream files are refused by the stream route's check
# (method_not_allowed, 403), writes elsewhere fall to the checked catch-all (401).
UNCHECKED_ELSEWHERE = [
    ("PUT", "/LiveApp/streams/s.m3u8", 403),
    ("POST", "/LiveApp/streams/s0000.ts", 403),
    ("DELETE", "/LiveApp/chunked/s/media_1.m3u8", 403),
    ("PUT", "/LiveApp/chunked/s/chunk.m4s", 403),
    ("POST", "/LiveApp/websocket", 401),
    ("POST", "/LiveApp/play.html", 401),
]


@dataclass(frozen=True)
class Sent:
    config: str
    method: str
    target: str
    token: str
    answer: RawResponse

    def servlet(self) -> Served | None:
        """What the echo servlet saw, or None when no servlet answered (Envoy did, or
        Tomcat itself)."""
        content_type = self.answer.header("content-type") or ""
        if self.answer.status != 200 or not content_type.startswith("application/json"):
            return None
        try:
            return served(self.answer.body)
        except (ValueError, KeyError):
            return None


def _request(method: str, target: str, token: str = "", extra: bytes = b"") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    return (
        f"{method} {target} HTTP/1.1\r\n".encode()
        + b"Host: localhost\r\n"
        + auth
        + extra
        + b"Connection: close\r\n\r\n"
    )


@dataclass(frozen=True)
class Stack:
    ports: dict[str, int]  # config name -> Envoy listener port
    user_token: str
    admin_token: str

    def send(
        self, config: str, target: str, token: str = "", method: str = "GET", extra: bytes = SPOOFED
    ) -> Sent:
        answer = send_raw(self.ports[config], _request(method, target, token, extra))
        return Sent(config, method, target, token, answer)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tomcat: Tomcat) -> Iterator[Stack]:
    """One authz with both doors and one Envoy per shipped config, in front of Tomcat."""
    settings = tmp_path_factory.mktemp("authz") / "authz.yaml"
    settings.write_text(POLICIES_YAML)
    now = time.time()
    user = mint_hmac({"sub": "user", "exp": now + 3600}, SECRET.encode())
    admin = mint_hmac({"sub": "boss", "role": "admin", "exp": now + 3600}, SECRET.encode())
    with contextlib.ExitStack() as stack:
        authz = stack.enter_context(
            run_authz(
                {"AUTHZ_HTTP_AUTHZ_ADDRESS": f"127.0.0.1:{free_port()}"},
                args=("--config", str(settings)),
            )
        )
        grpc_clusters = {"authz": authz.grpc_port, "ant_media": tomcat.port}
        http_clusters = {"authz": authz.http_authz_port, "ant_media": tomcat.port}
        envoys = {
            "envoy.yaml": stack.enter_context(run_envoy(grpc_clusters, source=ENVOY_YAML)),
            "envoy-http.yaml": stack.enter_context(
                run_envoy(
                    http_clusters,
                    source=ENVOY_HTTP_YAML,
                    health_check_ports={"authz": authz.http_port},
                )
            ),
            "gateway": stack.enter_context(run_envoy(grpc_clusters, source=GATEWAY_YAML)),
        }
        yield Stack({name: envoy.port for name, envoy in envoys.items()}, user, admin)


def _client_jwt_headers(answer: Served) -> dict[str, list[str]]:
    """Headers the servlet got that a client may have sent: x-jwt-* not set by authz."""
    return {
        name: values
        for name, values in answer.headers.items()
        if name.replace("_", "-").startswith("x-jwt-")
        and not (name == "x-jwt-sub" and values in (["user"], ["boss"]))
        and not (name == "x-jwt-role" and values == ["admin"])
    }


def _violations(sent: list[Sent], forbidden_servlets: set[str], app: str | None) -> list[str]:
    found = []
    for one in sent:
        answer = one.servlet()
        if answer is None:
            continue
        where = f"{one.config}: {one.method} {one.target!r} -> {answer.servlet} {answer.uri!r}"
        if answer.servlet in forbidden_servlets and (app is None or answer.context == f"/{app}"):
            found.append(f"reached {where}")
        spoofed = _client_jwt_headers(answer)
        if spoofed:
            found.append(f"spoofed headers {spoofed} at {where}")
    return found


@pytest.mark.parametrize("config", CONFIGS)
def test_no_spelling_reaches_a_rest_servlet_without_a_token(stack: Stack, config: str) -> None:
    targets = rest_spellings("LiveApp") + rest_spellings("StrictApp") + root_rest_spellings()
    assert len(set(rest_spellings("LiveApp"))) >= 60
    sent = [stack.send(config, target) for target in targets]
    assert _violations(sent, REST_SERVLETS, None) == []


@pytest.mark.parametrize("config", CONFIGS)
def test_no_spelling_moves_strictapp_rest_to_the_default_policy(
    stack: Stack, config: str
) -> None:
    # A valid token without the admin role passes the default policy, not StrictApp's.
    sent = [stack.send(config, target, stack.user_token) for target in rest_spellings("StrictApp")]
    assert _violations(sent, {"rest"}, "StrictApp") == []


@pytest.mark.parametrize("config", CONFIGS)
def test_writes_and_unknown_methods_on_media_paths_are_checked(stack: Stack, config: str) -> None:
    for method, target, status in UNCHECKED_ELSEWHERE:
        sent = stack.send(config, target, method=method)
        assert sent.answer.status == status, (method, target, sent.answer.status)
        assert sent.servlet() is None


SPOOFED_HEADERS = [
    b"x-jwt-sub: spoofed\r\n",
    b"X-JWT-SUB: spoofed\r\n",
    b"X-Jwt-Role: admin\r\n",
    b"x-jwt-: x\r\n",
    b"x-jwt-stream-id: other\r\n",
    b"x-jwt-sub: a\r\nx-jwt-sub: b\r\n",
]
UNDERSCORED_HEADERS = [
    b"x_jwt_sub: spoofed\r\n",
    b"X_JWT_SUB: spoofed\r\n",
    b"x-jwt_sub: spoofed\r\n",
    b"x_jwt-role: admin\r\n",
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("target", ["/LiveApp/streams/s.m3u8", f"/LiveApp/rest/{TAIL}"])
def test_spoofed_headers_never_reach_a_servlet(stack: Stack, config: str, target: str) -> None:
    for header in SPOOFED_HEADERS:
        sent = stack.send(config, target, stack.user_token, extra=header)
        answer = sent.servlet()
        assert answer is not None, (header, sent.answer.status)
        assert _client_jwt_headers(answer) == {}, header
        expected_sub = ["user"] if answer.servlet == "rest" else None
        assert answer.headers.get("x-jwt-sub") == expected_sub, header
    for header in UNDERSCORED_HEADERS:
        sent = stack.send(config, target, stack.user_token, extra=header)
        assert sent.answer.status == 400, header
        assert sent.servlet() is None


@pytest.mark.parametrize("config", CONFIGS)
def test_positive_controls(stack: Stack, config: str) -> None:
    rest = stack.send(config, f"/LiveApp/rest/{TAIL}", stack.user_token).servlet()
    assert rest is not None
    assert (rest.servlet, rest.context, rest.uri) == ("rest", "/LiveApp", f"/LiveApp/rest/{TAIL}")
    assert rest.headers["x-jwt-sub"] == ["user"]
    strict = stack.send(config, f"/StrictApp/rest/{TAIL}", stack.admin_token).servlet()
    assert strict is not None
    assert (strict.servlet, strict.context) == ("rest", "/StrictApp")
    assert strict.headers["x-jwt-sub"] == ["boss"]
    assert strict.headers["x-jwt-role"] == ["admin"]
    assert stack.send(config, f"/StrictApp/rest/{TAIL}", stack.user_token).answer.status == 403
    # A spelling that means the REST path is the REST path, for a valid token too.
    dotted = stack.send(config, f"/LiveApp/streams/../rest/{TAIL}", stack.user_token).servlet()
    assert dotted is not None
    assert (dotted.servlet, dotted.uri) == ("rest", f"/LiveApp/rest/{TAIL}")
    # Stream routes with the play switch off: read without a token (`jwt_disabled`).
    for target in (
        "/LiveApp/streams/stream1.m3u8",
        "/LiveApp/streams/stream1_240p300kbps0000.ts",
        "/LiveApp/streams/sub/stream1.mp4",
        "/StrictApp/streams/stream1/stream1_0segment00139.m4s",
        "/LiveApp/chunked/stream1/media_1.m3u8",
    ):
        for method in ("GET", "HEAD"):
            sent = stack.send(config, target, method=method)
            assert sent.answer.status == 200, (target, method, sent.answer.status)
        media = stack.send(config, target).servlet()
        assert media is not None
        assert media.servlet in ("streams", "chunked"), target
        assert media.uri == target


Route = tuple[dict[str, object], bool, dict[str, str], str]
# The HTTP door's Envoy-set headers that stand for the gRPC door's context_extensions.
CONTEXT_HEADERS = {"x-authz-policy": "policy", "x-authz-stream": "stream"}


def _context(per_filter: dict[str, Any]) -> dict[str, str]:
    """What the route tells authz: context_extensions (gRPC), or the x-authz-* headers its
    http_service override adds (HTTP), as context_extensions keys."""
    settings = per_filter.get("check_settings", {})
    context = dict(settings.get("context_extensions", {}))
    added = settings.get("http_service", {}).get("authorization_request", {})
    for header in added.get("headers_to_add", []):
        if header["key"] in CONTEXT_HEADERS:
            context[CONTEXT_HEADERS[header["key"]]] = header["value"]
    return context


def _route_table(path: Path) -> list[Route]:
    """(match, checked, context, target) of each route of the config's gateway listener."""
    config = yaml.safe_load(path.read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    table: list[Route] = []
    for route in routes:
        per_filter = route.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz")
        checked = not (per_filter or {}).get("disabled", False)
        target = "direct" if "direct_response" in route else route["route"]["cluster"]
        table.append((route["match"], checked, _context(per_filter or {}), target))
    return table


READ_ONLY = [{"name": ":method", "string_match": {"safe_regex": {"regex": "^(GET|HEAD|OPTIONS)$"}}}]
STREAM_FILES = "^/[A-Za-z0-9_-]+/(streams|chunked)(/[A-Za-z0-9_~-][A-Za-z0-9_.~-]*)+$"


def test_the_configs_share_one_route_table() -> None:
    table = _route_table(ENVOY_YAML)
    assert _route_table(ENVOY_HTTP_YAML) == table
    assert _route_table(GATEWAY_YAML) == table
    # The mTLS variants (deploy/sync.py derives them) route alike, so the corpus run
    # against the plaintext configs holds for them.
    assert _route_table(ENVOY_TLS_YAML) == table
    assert _route_table(ENVOY_HTTP_TLS_YAML) == table
    # Default deny: the last route is a checked catch-all, and every unchecked route that
    # reaches the upstream is an anchored regex with the read-only method matcher.
    assert table[-1] == ({"prefix": "/"}, True, {}, "ant_media")
    unchecked = [match for match, checked, _, target in table if not checked and target != "direct"]
    assert len(unchecked) == 2
    for match in unchecked:
        assert set(match) == {"safe_regex", "headers"}, match
        regex = match["safe_regex"]["regex"]  # type: ignore[index]
        assert regex.startswith("^/") and regex.endswith("$"), regex
        assert match["headers"] == READ_ONLY, match
    # The stream file routes are checked as stream routes (SPEC section 9) for every method:
    # the play check refuses writes itself, switch on or off.
    streams = [(match, checked) for match, checked, context, _ in table if "stream" in context]
    assert streams == [({"safe_regex": {"regex": STREAM_FILES}}, True)]
    assert [context for _, _, context, _ in table if context] == [
        {"stream": "play"},
        {"policy": "admin"},
    ]
