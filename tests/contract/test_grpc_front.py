"""The gRPC front door on the server authz serves (grpcio's thread-pool server, built by
authz.service.server.grpc_server, on 127.0.0.1 and a free port) called by a real client.

Requests are encoded and responses decoded with envoy-data-plane's upstream classes, so
these calls look to the server exactly like Envoy's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import pytest
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.service.auth import v3 as auth
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authz.core.decision import Decision, Reason, deny
from authz.core.request import RequestView
from authz.fronts.grpc import (
    BlockingCheck,
    add_threaded_authorization_service,
    add_threaded_health_service,
)
from authz.service.checker import CheckThreads
from authz.service.server import grpc_server
from tests.harness import internal_errors

CHECK = "/envoy.service.auth.v3.Authorization/Check"
SECRET_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.c2VjcmV0"


def _by_token(view: RequestView, time_left: Callable[[], float | None]) -> Decision:
    if view.authorization is None:
        return deny(Reason.MISSING_TOKEN)
    if view.source_ip != "198.51.100.4":
        return deny(Reason.IP_NOT_ALLOWED)
    return Decision(
        reason=Reason.OK,
        status=200,
        headers_to_set=(("x-jwt-sub", view.authorization),),
        headers_to_remove=tuple(n for n in view.jwt_headers if n != "x-jwt-sub"),
        sub=view.authorization,
    )


def _raises(view: RequestView, time_left: Callable[[], float | None]) -> Decision:
    raise RuntimeError(f"boom while handling {view.authorization}")


@contextmanager
def _served(check: BlockingCheck) -> Iterator[tuple[grpc.Channel, health.HealthServicer]]:
    server = grpc_server()
    add_threaded_authorization_service(server, check)
    servicer = add_threaded_health_service(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel, servicer
    finally:
        server.stop(None)


def _request(headers: dict[str, str], source: str = "198.51.100.4") -> bytes:
    socket = core.SocketAddress(address=source, port_value=40000)
    return bytes(
        auth.CheckRequest(
            attributes=auth.AttributeContext(
                source=auth.AttributeContextPeer(address=core.Address(socket_address=socket)),
                request=auth.AttributeContextRequest(
                    http=auth.AttributeContextHttpRequest(
                        method="GET", path="/LiveApp/rest/v2/version", headers=headers
                    )
                ),
            )
        )
    )


def _call(channel: grpc.Channel, payload: bytes) -> auth.CheckResponse:
    raw = channel.unary_unary(CHECK)(payload, timeout=5)
    return auth.CheckResponse.parse(raw)


def test_allow() -> None:
    with _served(_by_token) as (channel, _):
        headers = {"authorization": "tok", "x-jwt-sub": "spoof", "x-jwt-role": "admin"}
        response = _call(channel, _request(headers))
    assert response.status is not None
    assert response.status.code == 0
    assert response.ok_response is not None
    assert [(h.header.key, h.header.value) for h in response.ok_response.headers if h.header] == [
        ("x-jwt-sub", "tok")
    ]
    assert response.ok_response.headers_to_remove == ["x-jwt-role"]
    assert response.dynamic_metadata is not None
    assert response.dynamic_metadata.fields["sub"].string_value == "tok"


@pytest.mark.parametrize(
    ("headers", "source", "status", "rpc_code", "reason"),
    [
        ({}, "198.51.100.4", 401, 16, "missing_token"),
        ({"authorization": "tok"}, "192.0.2.1", 403, 7, "ip_not_allowed"),
    ],
)
def test_deny(
    headers: dict[str, str], source: str, status: int, rpc_code: int, reason: str
) -> None:
    with _served(_by_token) as (channel, _):
        response = _call(channel, _request(headers, source))
    assert response.status is not None
    assert response.status.code == rpc_code
    denied = response.denied_response
    assert denied is not None
    assert denied.status is not None
    assert denied.status.code == status
    assert f'"reason":"{reason}"' in denied.body


def _assert_internal_error(response: auth.CheckResponse) -> None:
    assert response.status is not None
    assert response.status.code == 14
    assert response.denied_response is not None
    assert response.denied_response.status is not None
    assert response.denied_response.status.code == 503
    assert response.denied_response.body == deny(Reason.INTERNAL_ERROR).body


def test_check_that_raises_answers_internal_error(caplog: pytest.LogCaptureFixture) -> None:
    before = internal_errors("grpc")
    with caplog.at_level(logging.ERROR, logger="authz.check"), _served(_raises) as (channel, _):
        response = _call(channel, _request({"authorization": SECRET_TOKEN}))
    _assert_internal_error(response)
    assert internal_errors("grpc") == (before[0] + 1, before[1] + 1)
    records = [r for r in caplog.records if r.name == "authz.check"]
    assert records, "the failure is logged"
    for record in records:
        # The exception's message quotes the token: only its type and place are logged.
        assert SECRET_TOKEN not in str(vars(record))
        assert record.exc_info is None
        assert vars(record)["transport"] == "grpc"
        assert vars(record)["error"] == "RuntimeError"


def test_unparsable_request_answers_internal_error() -> None:
    before = internal_errors("grpc")
    with _served(_by_token) as (channel, _):
        _assert_internal_error(_call(channel, b"\x0a\xff\xff\xff\xff\x0f"))
    assert internal_errors("grpc") == (before[0] + 1, before[1] + 1)


def test_health() -> None:
    seen = []
    with _served(_by_token) as (channel, servicer):
        stub = health_pb2_grpc.HealthStub(channel)
        for state in (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        ):
            servicer.set("", state)
            answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            seen.append(answer.status)
    assert seen == [
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    ]


def test_health_watch_is_unimplemented() -> None:
    # Each Watch stream would hold one of the few server threads for as long as it lasts.
    with _served(_by_token) as (channel, servicer):
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=5)
        with pytest.raises(grpc.RpcError) as failed:
            next(stream)
    assert failed.value.code() is grpc.StatusCode.UNIMPLEMENTED


def _alive(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


def test_threads_waiting_lend_their_place_and_the_spares_end_after() -> None:
    # CheckThreads, the server's pool: calls inside lent() (a Check waiting for a JWKS
    # refresh) do not hold the `size` threads other calls run on.
    pool = CheckThreads(2, name="lend-test")
    release = threading.Event()
    entered = threading.Semaphore(0)

    def waits() -> bool:
        with pool.lent():
            entered.release()
            return release.wait(30)

    try:
        waiting = [pool.submit(waits) for _ in range(6)]
        assert all(entered.acquire(timeout=10) for _ in waiting)
        assert [pool.submit(lambda n=n: n * n).result(10) for n in range(8)] == [
            n * n for n in range(8)]
        assert not any(w.done() for w in waiting)
        assert _alive("lend-test") == 8  # 6 waiting, 2 running
        release.set()
        assert all(w.result(10) for w in waiting)
        # As each waiter finished its call, one thread too many ended.
        deadline = time.monotonic() + 10
        while _alive("lend-test") > 2:
            assert time.monotonic() < deadline, _alive("lend-test")
            time.sleep(0.01)
        assert pool.submit(lambda: "still serving").result(10) == "still serving"
    finally:
        release.set()
        pool.shutdown()
    assert _alive("lend-test") == 0
