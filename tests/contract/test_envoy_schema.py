"""Wire contract: the project's hand-written protos against an independent upstream schema.

CheckRequests are built and encoded with envoy-data-plane's classes (generated from
Envoy's own api/ tree) and decoded by authz; CheckResponses made by authz are decoded
with envoy-data-plane's classes. A wrong field number or type on either side fails here.
"""

from __future__ import annotations

import pytest
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.service.auth import v3 as auth
from envoy_data_plane.envoy.type import v3 as types
from envoy_data_plane.google import protobuf as wkt

from authz._pb.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from authz.core.decision import Decision, Reason, deny, status_of
from authz.core.request import RequestView
from authz.fronts.grpc import check_response, encode_response, request_view

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2ln"
OVERWRITE = core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD


def _upstream_request(
    http: auth.AttributeContextHttpRequest,
    source: str | None = "203.0.113.7",
    context: dict[str, str] | None = None,
) -> bytes:
    peer = None
    if source is not None:
        socket = core.SocketAddress(address=source, port_value=52044)
        peer = auth.AttributeContextPeer(address=core.Address(socket_address=socket))
    request = auth.CheckRequest(
        attributes=auth.AttributeContext(
            source=peer,
            destination=auth.AttributeContextPeer(
                address=core.Address(socket_address=core.SocketAddress(address="10.0.0.5"))
            ),
            request=auth.AttributeContextRequest(http=http),
            context_extensions=context or {},
            # Fields authz's protos leave out must be skipped, not break decoding.
            metadata_context=core.Metadata(filter_metadata={"f": wkt.Struct(fields={})}),
            tls_session=auth.AttributeContextTlsSession(sni="media.example"),
        )
    )
    return bytes(request)


def _view(data: bytes) -> RequestView:
    return request_view(CheckRequest.FromString(data))


def test_request_with_headers_map() -> None:
    http = auth.AttributeContextHttpRequest(
        id="req-1",
        method="POST",
        path="/LiveApp/rest/v2/broadcasts/create?x=1",
        host="media.example",
        scheme="https",
        size=-1,
        protocol="HTTP/1.1",
        body="ignored",
        headers={
            ":method": "POST",
            "authorization": f"Bearer {TOKEN}",
            "x-jwt-sub": "spoofed",
            "x-jwt-roles": "admin",
            "x-jwtnot": "kept",
            "accept": "*/*",
        },
    )
    view = _view(_upstream_request(http, context={"policy": "admins"}))
    assert view.authorization == f"Bearer {TOKEN}"
    assert sorted(view.jwt_headers) == ["x-jwt-roles", "x-jwt-sub"]
    assert view.source_ip == "203.0.113.7"
    assert view.path == "/LiveApp/rest/v2/broadcasts/create?x=1"
    assert view.method == "POST"
    assert dict(view.context) == {"policy": "admins"}


def test_request_with_raw_header_map() -> None:
    raw = [
        core.HeaderValue(key=":path", raw_value=b"/LiveApp/rest/v2/broadcasts/list/0/10"),
        core.HeaderValue(key="authorization", raw_value=TOKEN.encode()),
        core.HeaderValue(key="x-jwt-sub", raw_value=b"spoofed"),
        core.HeaderValue(key="x-jwt-sub", raw_value=b"again"),
        core.HeaderValue(key="X-JWT-Iss", raw_value=b"spoofed"),
    ]
    http = auth.AttributeContextHttpRequest(
        method="GET", path="/LiveApp/rest/v2/broadcasts/list/0/10", header_map=core.HeaderMap(raw)
    )
    view = _view(_upstream_request(http, source="2001:db8::1"))
    assert view.authorization == TOKEN
    assert view.jwt_headers == ("x-jwt-sub", "x-jwt-iss")
    assert view.source_ip == "2001:db8::1"
    assert view.method == "GET"
    assert dict(view.context) == {}


def test_raw_header_map_repeated_authorization_is_merged_like_the_headers_map() -> None:
    raw = [
        core.HeaderValue(key="authorization", raw_value=b"a.b.c"),
        core.HeaderValue(key="authorization", raw_value=b"d.e.f"),
    ]
    http = auth.AttributeContextHttpRequest(header_map=core.HeaderMap(raw))
    assert _view(_upstream_request(http)).authorization == "a.b.c,d.e.f"


def test_headers_map_is_preferred_over_header_map() -> None:
    http = auth.AttributeContextHttpRequest(
        headers={"authorization": "from-map"},
        header_map=core.HeaderMap([core.HeaderValue(key="authorization", raw_value=b"raw")]),
    )
    assert _view(_upstream_request(http)).authorization == "from-map"


def test_missing_parts_read_as_absent() -> None:
    http = auth.AttributeContextHttpRequest(headers={"accept": "*/*"})
    view = _view(_upstream_request(http, source=None))
    assert view.authorization is None
    assert view.source_ip is None
    assert view.jwt_headers == ()
    assert _view(b"") == RequestView(authorization=None, source_ip=None)


def test_pipe_source_has_no_ip() -> None:
    request = auth.CheckRequest(
        attributes=auth.AttributeContext(
            source=auth.AttributeContextPeer(address=core.Address(pipe=core.Pipe(path="/s")))
        )
    )
    assert _view(bytes(request)).source_ip is None


def _decode(decision: Decision) -> auth.CheckResponse:
    return auth.CheckResponse.parse(check_response(decision).SerializeToString())


def _metadata(response: auth.CheckResponse) -> dict[str, str | None]:
    assert response.dynamic_metadata is not None
    return {key: value.string_value for key, value in response.dynamic_metadata.fields.items()}


def test_allow_response() -> None:
    decision = Decision(
        reason=Reason.OK,
        status=200,
        headers_to_set=(("x-jwt-sub", "user-1"),),
        headers_to_remove=("x-jwt-roles", "x-jwt-sub", "X-JWT-SUB"),
        sub="user-1",
        iss="https://issuer.example",
    )
    response = _decode(decision)
    assert response.status is not None
    assert response.status.code == 0
    assert response.denied_response is None
    assert response.error_response is None
    ok = response.ok_response
    assert ok is not None
    assert [(h.header.key, h.header.value) for h in ok.headers if h.header] == [
        ("x-jwt-sub", "user-1")
    ]
    assert [h.append_action for h in ok.headers] == [OVERWRITE]
    # A header both set and removed would be removed by Envoy after being set.
    assert ok.headers_to_remove == ["x-jwt-roles"]
    assert _metadata(response) == {
        "reason": "ok",
        "sub": "user-1",
        "iss": "https://issuer.example",
    }


def test_metadata_that_is_not_unicode_is_mangled_not_fatal() -> None:
    response = _decode(Decision(reason=Reason.OK, status=200, sub="a\udc80b"))
    assert response.ok_response is not None
    assert _metadata(response)["sub"] == "a?b"


def test_allow_without_headers() -> None:
    response = _decode(Decision(reason=Reason.JWT_DISABLED, status=200))
    assert response.status is not None
    assert response.status.code == 0
    assert response.ok_response is not None
    assert response.ok_response.headers == []
    assert response.ok_response.headers_to_remove == []
    assert _metadata(response) == {"reason": "jwt_disabled"}


DENIALS = [reason for reason in Reason if status_of(reason) != 200]
RPC_CODE = {401: 16, 403: 7, 503: 14}


@pytest.mark.parametrize("reason", DENIALS, ids=lambda r: r.value)
def test_deny_response(reason: Reason) -> None:
    decision = deny(reason)
    response = auth.CheckResponse.parse(encode_response(decision))
    assert response.status is not None
    assert response.status.code == RPC_CODE[decision.status]
    assert response.ok_response is None
    denied = response.denied_response
    assert denied is not None
    assert denied.status == types.HttpStatus(code=types.StatusCode(decision.status))
    assert [(h.header.key, h.header.value) for h in denied.headers if h.header] == list(
        decision.headers_to_set
    )
    assert {h.append_action for h in denied.headers} == {OVERWRITE}
    assert denied.body == decision.body
    assert _metadata(response) == {"reason": reason.value}


def test_cached_denial_bytes_equal_a_fresh_encoding() -> None:
    for reason in DENIALS:
        fresh = check_response(deny(reason)).SerializeToString()
        assert encode_response(deny(reason)) == fresh


def test_a_denial_that_is_not_the_shared_object_is_encoded_from_its_own_fields() -> None:
    shared = deny(Reason.EXPIRED)
    own = Decision(
        reason=Reason.EXPIRED,
        status=401,
        headers_to_set=(("www-authenticate", "Bearer"),),
        body="custom",
    )
    response = auth.CheckResponse.parse(encode_response(own))
    assert response.denied_response is not None
    assert response.denied_response.body == "custom"
    assert encode_response(shared) != encode_response(own)
