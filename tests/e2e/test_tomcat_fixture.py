"""What a real Tomcat 10.1 (tests/tomcat.py, default path handling) serves for odd spellings
of a path, sent byte for byte straight to it, no Envoy in between.

These pin why the gateway needs its settings (SPEC section 8): every spelling below that
reaches a REST servlet must be either refused by Envoy or routed by Envoy to the same checked
route, and Tomcat itself resolves dot segments, merges slashes (before resolving dots), drops
path parameters from every segment and decodes percent-encoding before it maps a request.
"""

from __future__ import annotations

import pytest

from tests.harness import raw_request, send_raw
from tests.tomcat import PLAYER_PAGE, WEBAPPS, Served, Tomcat, probe_path, served, tomcat_server

pytestmark = pytest.mark.e2e


def reached(tomcat: Tomcat, target: str, headers: tuple[tuple[str, str], ...] = ()) -> Served:
    """What the echo servlet saw for `target`; fails unless one answered."""
    answer = tomcat.get(target, headers)
    assert answer.status == 200, (target, answer.status, answer.body[:300])
    assert (answer.header("content-type") or "").startswith("application/json"), target
    return served(answer.body)


# target as sent -> (servlet, its webapp's context path, the decoded path within the webapp)
REACHES = {
    "/LiveApp/rest/v2/broadcasts/list": ("rest", "/LiveApp", "/rest/v2/broadcasts/list"),
    "/LiveApp/rest": ("rest", "/LiveApp", "/rest"),
    # Duplicate slashes merged, anywhere.
    "//LiveApp/rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp//rest/x": ("rest", "/LiveApp", "/rest/x"),
    # Dot segments resolved, encoded or not, in any case.
    "/LiveApp/./rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/%2e/rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/foo/../rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/streams/../rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/streams/a.m3u8/../../rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/streams/%2e%2e/rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/streams/%2E%2E/rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/streams/.%2e/rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/play.html/../rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/rest/x/..": ("rest", "/LiveApp", "/rest"),
    # Slashes are merged before dots are resolved: ".." after "//" eats a real segment, where
    # RFC 3986 (Envoy's normalize_path) would eat only the empty one.
    "/LiveApp/streams//../rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp//../rest/v2/x": ("root-rest", "", "/rest/v2/x"),
    # Path parameters dropped from every segment, the context's included, before dots.
    "/LiveApp/rest;x=1/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/rest;/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp;x=1/rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/rest;jsessionid=ABC/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/rest;a%2Fb/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/;/rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/streams/..;/rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/streams/..;x=1/rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/streams;/../rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/streams/a.m3u8;/../../rest/x": ("rest", "/LiveApp", "/rest/x"),
    "/LiveApp/;x/../rest/x": ("root-rest", "", "/rest/x"),
    # Percent-encoded letters decoded, in the context path too.
    "/LiveApp/%72est/x": ("rest", "/LiveApp", "/rest/x"),
    "/%4CiveApp/rest/x": ("rest", "/LiveApp", "/rest/x"),
    # An encoded ";" is data, not a path parameter; "%25" decodes once.
    "/LiveApp/streams/..%3B/rest/x": ("streams", "/LiveApp", "/streams/..;/rest/x"),
    "/LiveApp/streams/%252e%252e/rest/x": ("streams", "/LiveApp", "/streams/%2e%2e/rest/x"),
    # Across webapps.
    "/LiveApp/../StrictApp/rest/x": ("rest", "/StrictApp", "/rest/x"),
    "/LiveApp/../rest/v2/x": ("root-rest", "", "/rest/v2/x"),
    "/LiveApp/%2e%2e/rest/v2/x": ("root-rest", "", "/rest/v2/x"),
    # Context paths are case-sensitive: another case is the ROOT webapp's.
    "/LIVEAPP/rest/x": ("root-panel", "", "/LIVEAPP/rest/x"),
    "/strictapp/rest/x": ("root-panel", "", "/strictapp/rest/x"),
    "/REST/v2/x": ("root-panel", "", "/REST/v2/x"),
    # Absolute-form whose authority matches Host.
    "http://127.0.0.1/LiveApp/rest/x": ("rest", "/LiveApp", "/rest/x"),
    # The other servlets.
    "/rest/v2/version": ("root-rest", "", "/rest/v2/version"),
    "//rest/v2/x": ("root-rest", "", "/rest/v2/x"),
    "/": ("root-panel", "", "/"),
    "/LiveApp/streams/a.m3u8": ("streams", "/LiveApp", "/streams/a.m3u8"),
    "/LiveApp/chunked/a.m4s": ("chunked", "/LiveApp", "/chunked/a.m4s"),
    "/LiveApp/websocket": ("websocket", "/LiveApp", "/websocket"),
    "/LiveApp/websocket;x": ("websocket", "/LiveApp", "/websocket"),
    "/StrictApp/streams/../rest/x": ("rest", "/StrictApp", "/rest/x"),
}


@pytest.mark.parametrize("target", sorted(REACHES))
def test_spelling_reaches_servlet(tomcat: Tomcat, target: str) -> None:
    seen = reached(tomcat, target)
    assert (seen.servlet, seen.context, seen.path) == REACHES[target]
    # getRequestURI() is the path as sent (path parameters and encoding kept).
    assert seen.uri == target.removeprefix("http://127.0.0.1")


# target as sent -> Tomcat's status (no servlet answers)
REFUSED = {
    # Encoded slashes and backslashes (encodedSolidusHandling="reject", allowBackslash=false)
    # and a raw backslash.
    "/LiveApp/rest%2Fx": 400,
    "/LiveApp%2Frest/x": 400,
    "/LiveApp/streams/..%2Frest/x": 400,
    "/LiveApp/streams/a%2fb": 400,
    "/LiveApp/rest%5Cx": 400,
    "/LiveApp/streams/..%5Crest/x": 400,
    "/LiveApp\\rest\\x": 400,
    # Above the root.
    "/..": 400,
    "/../rest/x": 400,
    "/LiveApp/../../rest/x": 400,
    # NUL, overlong UTF-8, %u, malformed escapes.
    "/LiveApp/rest%00/x": 400,
    "/LiveApp/streams/%c0%ae%c0%ae/rest/x": 400,
    "/LiveApp/streams/%u002e%u002e/rest/x": 400,
    "/LiveApp/rest/%ZZ": 400,
    # Characters not allowed in a request target (relaxedPathChars unset), raw non-ASCII,
    # a fragment.
    "/LiveApp/rest/x|y": 400,
    "/LiveApp/rest/x{y}": 400,
    "/LiveApp/rest/x[y]": 400,
    "/LiveApp/rest/\xe9": 400,
    "/LiveApp/streams/a.m3u8#/../../rest/x": 400,
    # Not origin-form, or an authority other than Host.
    "*": 400,
    "LiveApp/rest/x": 400,
    "http://other/LiveApp/rest/x": 400,
    # Servlet mappings are case-sensitive and exact: the DefaultServlet 404s these.
    "/LiveApp/REST/x": 404,
    "/LiveApp/restx": 404,
    "/LiveApp/websocket/": 404,
    "/LiveApp/WEB-INF/web.xml": 404,
    "/LiveApp/%57EB-INF/web.xml": 404,
    # The context root redirects to itself with a slash.
    "/LiveApp": 302,
    "/LiveApp/streams/..": 302,
    "/LiveApp/rest/%2e%2e": 302,
}


@pytest.mark.parametrize("target", sorted(REFUSED))
def test_spelling_no_servlet_answers(tomcat: Tomcat, target: str) -> None:
    answer = tomcat.get(target)
    assert answer.status == REFUSED[target], answer.body[:300]
    assert not (answer.header("content-type") or "").startswith("application/json")
    if answer.status == 302:
        assert answer.header("location") == "/LiveApp/"


def test_each_servlet_answers_its_pattern(tomcat: Tomcat) -> None:
    for app, servlets in WEBAPPS.items():
        for servlet, pattern in servlets.items():
            seen = reached(tomcat, probe_path(app, pattern))
            assert (seen.servlet, seen.pattern) == (servlet, pattern)


def test_player_page_is_a_static_file(tomcat: Tomcat) -> None:
    answer = tomcat.get("/LiveApp/play.html")
    assert (answer.status, answer.body) == (200, PLAYER_PAGE)
    assert answer.header("content-type") == "text/html"


def test_query_string_stays_raw_and_does_not_move_the_path(tomcat: Tomcat) -> None:
    seen = reached(tomcat, "/LiveApp/streams/a.m3u8?token=t%2F1&x=/../../rest/x")
    assert (seen.servlet, seen.path) == ("streams", "/streams/a.m3u8")
    assert seen.query == "token=t%2F1&x=/../../rest/x"
    assert seen.uri == "/LiveApp/streams/a.m3u8"


def test_headers_arrive_as_sent_with_names_lowercased(tomcat: Tomcat) -> None:
    seen = reached(
        tomcat,
        "/LiveApp/rest/x",
        (("x_jwt_sub", "bob"), ("X-JWT-Sub", "eve"), ("x-jwt-sub", "b, c"), ("X.Jwt.Role", "a")),
    )
    # Tomcat keeps underscores and dots, lowercases every name as it parses, and keeps every
    # value: nothing merges x_jwt_sub into x-jwt-sub, which is the upstream's business.
    assert seen.header_lines == [
        ("host", "127.0.0.1"),
        ("x_jwt_sub", "bob"),
        ("x-jwt-sub", "eve"),
        ("x-jwt-sub", "b, c"),
        ("x.jwt.role", "a"),
    ]
    assert seen.headers["x-jwt-sub"] == ["eve", "b, c"]
    assert seen.headers["x_jwt_sub"] == ["bob"]


@pytest.mark.parametrize(
    "data, status",
    [
        # An obs-folded line is joined to the header before it.
        (b"GET /LiveApp/rest/x HTTP/1.1\r\nHost: a\r\nx-jwt-sub: bob\r\n e\r\n\r\n", 200),
        # Space before the colon, or a line starting with whitespace after the request line.
        (b"GET /LiveApp/rest/x HTTP/1.1\r\nHost: a\r\nx-jwt-sub : bob\r\n\r\n", 400),
        (b"GET /LiveApp/rest/x HTTP/1.1\r\nHost: a\r\n x-jwt-sub: bob\r\n\r\n", 400),
        # HTTP/1.1 needs exactly one Host; HTTP/1.0 none.
        (b"GET /LiveApp/rest/x HTTP/1.1\r\n\r\n", 400),
        (b"GET /LiveApp/rest/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /LiveApp/rest/x HTTP/1.0\r\n\r\n", 200),
        # Bare LF line ends and a tab between request-line parts are accepted.
        (b"GET /LiveApp/rest/x HTTP/1.1\nHost: a\n\n", 200),
        (b"GET\t/LiveApp/rest/x HTTP/1.1\r\nHost: a\r\n\r\n", 200),
    ],
)
def test_request_framing(tomcat: Tomcat, data: bytes, status: int) -> None:
    answer = tomcat.send_raw(data)
    assert answer.status == status, answer.body[:300]
    if status == 200:
        assert served(answer.body).servlet == "rest"
        if b"x-jwt-sub" in data:
            assert served(answer.body).headers["x-jwt-sub"] == ["bob e"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "get"])
def test_every_method_reaches_the_rest_servlet(tomcat: Tomcat, method: str) -> None:
    # Methods are case-sensitive tokens: "get" is not GET, and still reaches the servlet.
    data = raw_request("/LiveApp/rest/v2/broadcasts/s1", method, (("Content-Length", "0"),))
    answer = send_raw(tomcat.port, data)
    assert answer.status == 200
    assert (served(answer.body).servlet, served(answer.body).method) == ("rest", method)


def test_trace_is_refused_by_the_connector(tomcat: Tomcat) -> None:
    assert tomcat.get("/LiveApp/rest/x", method="TRACE").status == 405


def test_a_second_tomcat_runs_alongside_and_stops(tomcat: Tomcat) -> None:
    with tomcat_server() as other:
        assert other.port != tomcat.port
        assert reached(other, "/rest/v2/x").servlet == "root-rest"
        base = other.base
    assert other.process.returncode is not None
    assert not base.exists()
    with pytest.raises(OSError):
        other.get("/rest/v2/x")
    assert reached(tomcat, "/rest/v2/x").servlet == "root-rest"
