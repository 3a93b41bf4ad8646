"""The gRPC front door on a real grpc.aio server (127.0.0.1, free port) called by a real client.

Requests are encoded and responses decoded with envoy-data-plane's upstream classes, so
these calls look to the server exactly like Envoy's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
import pytest
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.service.auth import v3 as auth
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authz.core.decision import Decision, Reason, deny
from authz.core.request import RequestView
from authz.fronts.grpc import add_authorization_service, add_health_service

CHECK = "/envoy.service.auth.v3.Authorization/Check"
SECRET_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.c2VjcmV0"

Checker = Callable[[RequestView], Awaitable[Decision]]


async def _by_token(view: RequestView) -> Decision:
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


async def _raises(view: RequestView) -> Decision:
    raise RuntimeError(f"boom while handling {view.authorization}")


@asynccontextmanager
async def _served(
    check: Checker,
) -> AsyncIterator[tuple[grpc.aio.Channel, health.aio.HealthServicer]]:
    server = grpc.aio.server()
    add_authorization_service(server, check)
    servicer = add_health_service(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel, servicer
    finally:
        await server.stop(None)


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


async def _call(channel: grpc.aio.Channel, payload: bytes) -> auth.CheckResponse:
    raw = await channel.unary_unary(CHECK)(payload, timeout=5)
    return auth.CheckResponse.parse(raw)


def test_allow() -> None:
    async def scenario() -> auth.CheckResponse:
        async with _served(_by_token) as (channel, _):
            headers = {"authorization": "tok", "x-jwt-sub": "spoof", "x-jwt-role": "admin"}
            return await _call(channel, _request(headers))

    response = asyncio.run(scenario())
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
    async def scenario() -> auth.CheckResponse:
        async with _served(_by_token) as (channel, _):
            return await _call(channel, _request(headers, source))

    response = asyncio.run(scenario())
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
    async def scenario() -> auth.CheckResponse:
        async with _served(_raises) as (channel, _):
            return await _call(channel, _request({"authorization": SECRET_TOKEN}))

    with caplog.at_level(logging.ERROR, logger="authz.grpc"):
        response = asyncio.run(scenario())
    _assert_internal_error(response)
    records = [r for r in caplog.records if r.name == "authz.grpc"]
    assert records, "the failure is logged"
    for record in records:
        # The exception's message quotes the token: only its type and place are logged.
        assert SECRET_TOKEN not in str(vars(record))
        assert record.exc_info is None


def test_unparsable_request_answers_internal_error() -> None:
    async def scenario() -> auth.CheckResponse:
        async with _served(_by_token) as (channel, _):
            return await _call(channel, b"\x0a\xff\xff\xff\xff\x0f")

    _assert_internal_error(asyncio.run(scenario()))


def test_health() -> None:
    async def scenario() -> list[int]:
        async with _served(_by_token) as (channel, servicer):
            stub = health_pb2_grpc.HealthStub(channel)
            seen = []
            for state in (
                health_pb2.HealthCheckResponse.SERVING,
                health_pb2.HealthCheckResponse.NOT_SERVING,
            ):
                await servicer.set("", state)
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                seen.append(answer.status)
            return seen

    assert asyncio.run(scenario()) == [
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    ]
