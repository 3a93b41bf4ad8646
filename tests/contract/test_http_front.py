"""The HTTP front door on a real embedded granian server (127.0.0.1, free port), no Envoy.

The requests are the ones Envoy's http_service sends: the original method and path, the
allowed headers, and the x-authz-* headers Envoy itself sets. The real Checker decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import socket
import threading
import time
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import pytest
import yaml

from authz.core.decision import Decision, Reason, deny
from authz.core.mint import mint_hmac
from authz.core.request import RequestView
from authz.fronts.http import (
    HEADER_READ_TIMEOUT_MS,
    REMOVE_HEADER,
    Check,
    HttpFront,
    request_view,
    wanted_header,
)
from authz.fronts.http1 import Http1Door
from authz.keys.store import KeyStore
from authz.service.checker import Checker
from authz.service.listeners import leave_ports
from authz.settings.load import load_settings
from tests.credentials import SECRET
from tests.harness import (
    ENVOY_HTTP_YAML,
    POLICIES_YAML,
    Response,
    free_port,
    internal_errors,
    request,
)


def _token(**claims: object) -> str:
    return mint_hmac({"exp": time.time() + 300, **claims}, SECRET.encode())


@contextlib.contextmanager
def serving_front(front_check: Check) -> Iterator[HttpFront]:
    """An HttpFront deciding with `front_check`, in an event loop on its own thread."""
    port = free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    front = HttpFront(f"127.0.0.1:{port}", front_check)
    asyncio.run_coroutine_threadsafe(front.start(), loop).result(10)
    try:
        yield front
    finally:
        asyncio.run_coroutine_threadsafe(front.stop(5.0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def serving(front_check: Check) -> Iterator[int]:
    """The port of an HttpFront deciding with `front_check` (serving_front)."""
    with serving_front(front_check) as front:
        yield front.port


@pytest.fixture(scope="module")
def checker(tmp_path_factory: pytest.TempPathFactory) -> Checker:
    config = tmp_path_factory.mktemp("authz") / "authz.yaml"
    config.write_text(POLICIES_YAML)
    settings = load_settings(
        str(config),
        None,
        {"AUTHZ_HS256_SECRET": SECRET, "AUTHZ_ALLOWED_CIDRS": "198.51.100.0/24"},
    )
    return Checker(settings, KeyStore(settings))


@pytest.fixture(scope="module")
def port(checker: Checker) -> Iterator[int]:
    with serving(checker.check) as port:
        yield port


def _ask(port: int, headers: dict[str, str], path: str = "/LiveApp/rest/v2/x") -> Response:
    return request(port, path, {"x-authz-client-ip": "198.51.100.7", **headers})


def test_allow_sets_sub_and_names_spoofed_headers_for_removal(port: int) -> None:
    response = _ask(
        port,
        {"authorization": _token(sub="alice"), "x-jwt-sub": "mallory", "x-jwt-role": "root"},
    )
    assert response.status == 200
    assert response.body == b""
    assert response.headers["x-jwt-sub"] == "alice"
    # x-jwt-sub is set, so it is never also removed (Envoy removes after setting).
    assert response.headers[REMOVE_HEADER] == "x-jwt-role"
    assert response.headers["x-authz-reason"] == "ok"
    assert response.headers["x-authz-sub"] == "alice"


def test_allow_without_spoofing_removes_nothing(port: int) -> None:
    response = _ask(port, {"authorization": f"Bearer {_token(sub='alice')}"})
    assert response.status == 200
    assert REMOVE_HEADER not in response.headers


def test_token_without_sub_removes_the_spoofed_sub(port: int) -> None:
    response = _ask(port, {"authorization": _token(), "x-jwt-sub": "mallory"})
    assert response.status == 200
    assert "x-jwt-sub" not in response.headers
    assert response.headers[REMOVE_HEADER] == "x-jwt-sub"


def test_deny_is_the_spec_status_challenge_and_json(port: int) -> None:
    response = _ask(port, {})
    assert response.status == 401
    assert response.json() == {"error": "unauthorized", "reason": "missing_token"}
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/json"
    expired = _ask(port, {"authorization": mint_hmac({"exp": 1}, SECRET.encode())})
    assert expired.status == 401
    assert expired.json()["reason"] == "expired"
    assert expired.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/readyz", "/metrics", "/LiveApp/rest/v2/x?token=t"])
def test_every_method_and_path_is_a_check(port: int, method: str, path: str) -> None:
    response = request(port, path, {"x-authz-client-ip": "198.51.100.7"}, method)
    assert response.status == 401
    assert response.json()["reason"] == "missing_token"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-authz-client-ip": "not-an-address"},
        {"x-authz-client-ip": "203.0.113.1"},
        {"x-forwarded-for": "198.51.100.7", "x-real-ip": "198.51.100.7"},
    ],
    ids=["missing", "unparsable", "outside", "other headers"],
)
def test_client_address_only_from_x_authz_client_ip(port: int, headers: dict[str, str]) -> None:
    response = request(port, "/LiveApp/rest/v2/x", {"authorization": _token(sub="a"), **headers})
    assert response.status == 403
    assert response.json() == {"error": "forbidden", "reason": "ip_not_allowed"}
    assert "www-authenticate" not in response.headers


def test_repeated_client_address_is_refused(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", "/LiveApp/rest/v2/x")
        conn.putheader("authorization", _token(sub="a"))
        conn.putheader("x-authz-client-ip", "198.51.100.7")
        conn.putheader("x-authz-client-ip", "198.51.100.8")
        conn.endheaders()
        assert conn.getresponse().status == 403
    finally:
        conn.close()


def test_policy_header_selects_the_route_policy(port: int) -> None:
    plain = _token(sub="a")
    denied = _ask(port, {"authorization": plain, "x-authz-policy": "admin"})
    assert denied.status == 403
    assert denied.json()["reason"] == "insufficient_scope"
    assert denied.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
    admin = _ask(port, {"authorization": _token(sub="a", role="admin"), "x-authz-policy": "admin"})
    assert admin.status == 200
    assert admin.headers["x-jwt-role"] == "admin"
    unknown = _ask(port, {"authorization": plain, "x-authz-policy": "nope"})
    assert unknown.status == 403
    assert unknown.json()["reason"] == "unknown_policy"


def test_policy_header_default_names_the_default_policy(port: int) -> None:
    plain = _token(sub="a")
    allowed = _ask(port, {"authorization": plain, "x-authz-policy": "default"})
    assert allowed.status == 200
    assert allowed.headers["x-jwt-sub"] == "a"
    outside = _ask(port, {"authorization": plain, "x-authz-policy": "default",
                          "x-authz-client-ip": "192.0.2.1"})
    assert outside.status == 403
    assert outside.json()["reason"] == "ip_not_allowed"


def test_repeated_policy_is_refused(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", "/LiveApp/rest/v2/x")
        conn.putheader("authorization", _token(sub="a", role="admin"))
        conn.putheader("x-authz-client-ip", "198.51.100.7")
        conn.putheader("x-authz-policy", "admin")
        conn.putheader("x-authz-policy", "admin")
        conn.endheaders()
        answer = conn.getresponse()
        assert answer.status == 403
        assert b"unknown_policy" in answer.read()
    finally:
        conn.close()


def test_header_limit_admits_what_envoy_forwards(port: int) -> None:
    # Envoy admits 60 KiB of request headers by default: a token that size is authz's
    # `malformed` 401, not the server's 431.
    response = _ask(port, {"authorization": "Bearer " + "a" * 60_000})
    assert response.status == 401
    assert response.json()["reason"] == "malformed"


def test_keep_alive_serves_many_checks_on_one_connection(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.connect()
        assert conn.sock is not None
        local = conn.sock.getsockname()
        for _ in range(20):
            conn.request("GET", "/x", headers={"x-authz-client-ip": "198.51.100.7"})
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 401
            assert conn.sock is not None and conn.sock.getsockname() == local
    finally:
        conn.close()


def test_close_connections_ends_each_keep_alive_connection_after_its_answer(
    checker: Checker,
) -> None:
    with serving_front(checker.check) as front:
        conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
        with contextlib.closing(conn):
            conn.request("GET", "/x", headers={"x-authz-client-ip": "198.51.100.7"})
            answer = conn.getresponse()
            answer.read()
            assert answer.getheader("connection") is None and not answer.will_close
            front.close_connections()  # a handover begins
            conn.request("GET", "/x", headers={"x-authz-client-ip": "198.51.100.7"})
            answer = conn.getresponse()
            answer.read()
            # Still a decision, now with the connection's end announced and done.
            assert answer.status == 401
            assert answer.getheader("connection") == "close" and answer.will_close
            assert conn.sock is None  # http.client closed its side on "close"
        # A new connection is answered, then the server closes it (reading to EOF ends).
        with socket.create_connection(("127.0.0.1", front.port), timeout=10) as raw:
            raw.sendall(b"GET /x HTTP/1.1\r\nHost: authz\r\n"
                        b"x-authz-client-ip: 198.51.100.7\r\n\r\n")
            received = b""
            while chunk := raw.recv(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 401") and b"connection: close" in received.lower()


def _read_to_eof(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: nope\r\n\r\n", b"400"),
        (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", b"400"),  # not ASCII
        (b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
         b"400"),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nx-big: " + b"a" * 100_000 + b"\r\n\r\n", b"431"),
    ],
    ids=["garbage", "bad-length", "non-ascii-target", "upgrade", "headers-too-large"],
)
def test_a_malformed_request_is_refused_and_its_connection_closed(
    port: int, request_bytes: bytes, status: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_bytes)
        received = _read_to_eof(sock)  # the server closes: the read ends
    assert received.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"x-authz-reason" not in received  # no decision was made


def test_pipelined_requests_are_answered_in_order() -> None:
    answered: list[str] = []

    async def slow_first(view: RequestView) -> Decision:
        if view.path == "/first":
            await asyncio.sleep(0.2)  # the first decision waits (as on a JWKS refetch)
        answered.append(view.path)
        return deny_of(view)

    with serving(slow_first) as port, socket.create_connection(
        ("127.0.0.1", port), timeout=10
    ) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
                     b"GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        received = _read_to_eof(sock)
    assert answered == ["/first", "/second"]
    assert received.count(b"HTTP/1.1 401 ") == 2
    first, second = received.split(b"HTTP/1.1 401 ")[1:]
    assert b"connection: close" not in first and b"connection: close" in second


def test_h2c_prior_knowledge_is_served(port: int) -> None:
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    connection.send_headers(1, [(":method", "GET"), (":path", "/LiveApp/rest/v2/x"),
                                (":scheme", "http"), (":authority", "authz"),
                                ("x-authz-client-ip", "198.51.100.7")], end_stream=True)
    headers: dict[str, str] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(connection.data_to_send())
        while not headers:
            data = sock.recv(65536)
            assert data, "the server closed before answering"
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    headers = {k.decode(): v.decode() for k, v in event.headers}
            sock.sendall(connection.data_to_send())
    assert headers[":status"] == "401"
    assert headers["x-authz-reason"] == "missing_token"


def test_a_connection_idle_too_long_is_closed() -> None:
    async def scenario() -> bytes:
        door = Http1Door("127.0.0.1", free_port(), request_view, lambda view, close: b"",
                         wanted=wanted_header, backlog=16, max_header_bytes=1024,
                         idle_seconds=0.3)
        await door.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
            # Headers begun, never finished (a slow client): closed like an idle one.
            writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n")
            received = await asyncio.wait_for(reader.read(), timeout=30)
            writer.close()
            return received
        finally:
            await door.stop(1)

    assert asyncio.run(scenario()) == b""


def deny_of(view: RequestView) -> Decision:
    return deny(Reason.MISSING_TOKEN)


def test_a_queued_connection_survives_the_listener_swap() -> None:
    """A handover accepts what waits in the listen queue, then swaps the listener out: the
    connection the kernel had completed is served, not reset."""

    async def scenario() -> bytes:
        answer = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n"
        door = Http1Door("127.0.0.1", free_port(), request_view, lambda view, close: answer,
                         wanted=wanted_header, backlog=16, max_header_bytes=1024,
                         idle_seconds=30)
        await door.start()
        try:
            # Connected by the kernel (loopback completes the handshake at once) while the
            # loop has not yet run its accept: the connection waits in the queue.
            client = socket.create_connection(("127.0.0.1", door.port), timeout=30)
            assert door.accept_queued() == 1
            assert leave_ports({door.port}) == 1
            loop = asyncio.get_running_loop()
            with client:
                await loop.run_in_executor(None, client.sendall,
                                           b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
                return await loop.run_in_executor(None, client.recv, 4096)
        finally:
            await door.stop(1)

    assert asyncio.run(scenario()).startswith(b"HTTP/1.1 401 ")


async def _raises(view: RequestView) -> Decision:
    raise RuntimeError(f"boom while handling {view.authorization}")


def test_a_check_that_raises_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    before = internal_errors("http")
    with caplog.at_level(logging.ERROR, logger="authz.check"), serving(_raises) as port:
        response = request(port, "/x", {"authorization": "secret-token"})
    assert response.status == 503
    assert response.json() == {"error": "unavailable", "reason": "internal_error"}
    # Counted and logged as the gRPC door counts and logs the same failure.
    assert internal_errors("http") == (before[0] + 1, before[1] + 1)
    (record,) = [r for r in caplog.records if r.name == "authz.check"]
    assert vars(record)["transport"] == "http" and vars(record)["error"] == "RuntimeError"
    assert "secret-token" not in caplog.text


def test_stop_answers_in_flight_checks_and_closes_idle_connections() -> None:
    started = threading.Event()

    async def slow(view: RequestView) -> Decision:
        started.set()
        await asyncio.sleep(0.3)
        return await _raises(view)

    results: list[int] = []
    with serving(slow) as port:
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        worker = threading.Thread(target=lambda: results.append(request(port, "/x").status))
        worker.start()
        assert started.wait(5)
        began = time.monotonic()
    # Leaving `serving` stopped the front: the in-flight Check was answered first.
    worker.join(5)
    assert results == [503]
    assert time.monotonic() - began < 5
    with idle:
        assert idle.recv(1) == b""  # the idle keep-alive connection was closed


def test_request_view_matches_the_grpc_door() -> None:
    view = request_view(
        "POST",
        "/LiveApp/rest/v2/x",
        "a=1",
        [
            ("host", "authz"),
            ("authorization", "one"),
            ("Authorization", "two"),
            ("x-jwt-sub", "s"),
            ("X-JWT-Role", "r"),
            ("x-jwt-sub", "again"),
            ("x-authz-client-ip", "2001:db8::1"),
            ("x-forwarded-for", "10.0.0.1"),
        ],
    )
    assert view == RequestView(
        authorization="one,two",
        source_ip="2001:db8::1",
        jwt_headers=("x-jwt-sub", "x-jwt-role"),
        path="/LiveApp/rest/v2/x?a=1",
        method="POST",
    )
    assert dict(view.context) == {}
    assert dict(request_view("GET", "/", "", [("x-authz-policy", "admin")]).context) == {
        "policy": "admin"
    }


def test_unbindable_address_raises_at_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"

        async def start() -> None:
            front = HttpFront(address, _raises)
            await front.start()
            await front.stop(5.0)

        with pytest.raises(OSError):
            asyncio.run(start())


def test_envoy_closes_idle_connections_before_authz_does() -> None:
    # granian's header read timeout also ends idle keep-alive connections; Envoy must drop
    # them first or a Check can land on a connection authz is closing.
    config = yaml.safe_load(ENVOY_HTTP_YAML.read_text())
    (authz,) = (c for c in config["static_resources"]["clusters"] if c["name"] == "authz")
    options = authz["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    idle_seconds = float(options["common_http_protocol_options"]["idle_timeout"].rstrip("s"))
    assert idle_seconds * 1000 + 10_000 <= HEADER_READ_TIMEOUT_MS


def test_stop_gives_up_on_a_check_that_never_answers() -> None:
    started = threading.Event()

    async def hangs(view: RequestView) -> Decision:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    port = free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        front = HttpFront(f"127.0.0.1:{port}", hangs)
        asyncio.run_coroutine_threadsafe(front.start(), loop).result(10)

        def ask() -> None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                request(port, "/x", timeout=10)

        client = threading.Thread(target=ask, daemon=True)
        client.start()
        assert started.wait(5)
        began = time.monotonic()
        asyncio.run_coroutine_threadsafe(front.stop(grace=0.5), loop).result(10)
        assert time.monotonic() - began < 3
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
