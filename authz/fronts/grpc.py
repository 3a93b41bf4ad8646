"""The gRPC front door: CheckRequest -> RequestView, Decision -> CheckResponse, and the servicers.

A thin adapter over the project's own ext_authz messages (authz/_pb, built from protos/),
for grpcio's thread-pool server (authz/service/server.py says why that flavour). It decides
nothing: `add_threaded_authorization_service` hands each RequestView to the `check`
callable and renders whatever Decision comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

import grpc
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from grpc_health.v1 import health, health_pb2_grpc

from authz._pb.envoy.config.core.v3.base_pb2 import HeaderValueOption
from authz._pb.envoy.service.auth.v3 import external_auth_pb2
from authz._pb.envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from authz._pb.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from authz._pb.envoy.type.v3.http_status_pb2 import StatusCode
from authz.core.decision import Decision, Reason, deny, status_of
from authz.core.headers import JWT_HEADER_PREFIX
from authz.core.request import CLUSTER_AUTHORIZATION_HEADER, RequestView
from authz.observability import count_failed_check

__all__ = [
    "CHECK_METHOD_PATH",
    "BlockingCheck",
    "add_threaded_authorization_service",
    "add_threaded_health_service",
    "check_response",
    "encode_response",
    "request_view",
]

# The second argument: seconds left to the call's deadline (read only when needed).
BlockingCheck = Callable[[RequestView, Callable[[], float | None]], Decision]

_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"]
_METHOD = _SERVICE.methods_by_name["Check"]
# "/envoy.service.auth.v3.Authorization/Check", taken from the proto so the two cannot drift.
CHECK_METHOD_PATH = f"/{_SERVICE.full_name}/{_METHOD.name}"

_OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# The request headers a RequestView carries besides the x-jwt-* names.
_VIEW_HEADERS = frozenset({"authorization", "cookie", CLUSTER_AUTHORIZATION_HEADER})

# google.rpc.Code for each HTTP status a denial carries.
_UNAUTHENTICATED = 16
_PERMISSION_DENIED = 7
_UNAVAILABLE = 14
_RPC_CODE: dict[int, int] = {401: _UNAUTHENTICATED, 403: _PERMISSION_DENIED, 503: _UNAVAILABLE}


class _RawHeaders:
    """The headers a RequestView needs, read from `header_map` (Envoy's raw headers)."""

    __slots__ = ("authorization", "cluster_authorization", "cookie", "jwt_headers")

    def __init__(self, http: AttributeContext.HttpRequest) -> None:
        # encode_raw_headers: repeated keys are not merged, values are bytes. Joining
        # repeats with "," gives the same value the `headers` map would carry, so both
        # modes decide alike; cookies are joined with "; " (RFC 6265 section 5.4).
        found: dict[str, list[str]] = {}
        jwt_headers: list[str] = []
        for header in http.header_map.headers:
            key = header.key.lower()
            if key in _VIEW_HEADERS:
                raw = header.raw_value
                found.setdefault(key, []).append(
                    raw.decode("utf-8", "replace") if raw else header.value
                )
            elif key.startswith(JWT_HEADER_PREFIX) and key not in jwt_headers:
                jwt_headers.append(key)
        self.authorization = _joined(found, "authorization", ",")
        self.cookie = _joined(found, "cookie", "; ")
        self.cluster_authorization = _joined(found, CLUSTER_AUTHORIZATION_HEADER, ",")
        self.jwt_headers = tuple(jwt_headers)


def _joined(found: dict[str, list[str]], key: str, separator: str) -> str | None:
    values = found.get(key)
    return separator.join(values) if values else None


def request_view(request: CheckRequest) -> RequestView:
    """The RequestView of one CheckRequest (no copy of the header map is made).

    Reads `attributes.request.http.headers` (lowercase keys), or `header_map` when Envoy
    sends raw headers instead; `context` is a read-only view backed by the request message.
    """
    attributes = request.attributes
    http = attributes.request.http
    headers = http.headers
    if headers:
        authorization = headers.get("authorization")
        cookie = headers.get("cookie")
        cluster_authorization = headers.get(CLUSTER_AUTHORIZATION_HEADER)
        jwt_headers = tuple(key for key in headers if key.startswith(JWT_HEADER_PREFIX))
    else:
        raw = _RawHeaders(http)
        authorization, cookie = raw.authorization, raw.cookie
        cluster_authorization, jwt_headers = raw.cluster_authorization, raw.jwt_headers
    context: Mapping[str, str] = attributes.context_extensions
    return RequestView(
        authorization=authorization,
        source_ip=attributes.source.address.socket_address.address or None,
        jwt_headers=jwt_headers,
        path=http.path,
        method=http.method,
        context=context,
        cookie=cookie,
        cluster_authorization=cluster_authorization,
    )


def _add_headers(
    options: RepeatedCompositeFieldContainer[HeaderValueOption],
    headers: tuple[tuple[str, str], ...],
) -> None:
    # Filling fields in place is the cheapest way to build messages with upb (measured).
    for key, value in headers:
        option = options.add()
        option.header.key = key
        option.header.value = value
        option.append_action = _OVERWRITE


def check_response(decision: Decision) -> CheckResponse:
    """The CheckResponse Envoy enforces for `decision`.

    Allow: status OK and `ok_response` (headers set with OVERWRITE_IF_EXISTS_OR_ADD, a
    header never both set and removed, query parameters such as a play `token` removed).
    Deny: the matching google.rpc code and `denied_response` with status, headers and body.
    `dynamic_metadata` on both.
    """
    response = CheckResponse()
    fields = response.dynamic_metadata.fields
    for key, value in decision.metadata.items():
        try:
            fields[key].string_value = value
        except UnicodeEncodeError:
            # A claim can decode to a lone surrogate (JSON "\udc80"), which protobuf strings
            # cannot carry: log it mangled rather than fail the Check.
            fields[key].string_value = value.encode("utf-8", "replace").decode()
    if decision.allowed:
        response.status.code = 0
        ok = response.ok_response
        ok.SetInParent()  # present even with nothing to set or remove
        _add_headers(ok.headers, decision.headers_to_set)
        if decision.headers_to_remove:
            set_names = {key.lower() for key, _ in decision.headers_to_set}
            ok.headers_to_remove.extend(
                name for name in decision.headers_to_remove if name.lower() not in set_names
            )
        if decision.query_parameters_to_remove:
            ok.query_parameters_to_remove.extend(decision.query_parameters_to_remove)
    else:
        response.status.code = _RPC_CODE.get(decision.status, _PERMISSION_DENIED)
        response.status.message = decision.reason.value
        denied = response.denied_response
        # StatusCode is an open enum: any HTTP status number is a valid value.
        denied.status.code = cast(StatusCode, decision.status)
        _add_headers(denied.headers, decision.headers_to_set)
        denied.body = decision.body
    return response


# Denials are shared objects (authz.core.decision builds each once): their bytes are built once
# too, keyed by identity. Holding the Decision in the entry keeps its id from being reused.
_DENIAL_BYTES: dict[int, tuple[Decision, bytes]] = {
    id(denial): (denial, check_response(denial).SerializeToString())
    for denial in (deny(reason) for reason in Reason if status_of(reason) != 200)
}
_INTERNAL_ERROR_BYTES = _DENIAL_BYTES[id(deny(Reason.INTERNAL_ERROR))][1]


# Allow responses by value: a repeated token decides an equal Decision every time, and
# hashing it (~0.6 us) is cheaper than building and serializing the message (~2.6 us).
# Bounded by clearing: a flood of distinct tokens costs what no memo would.
_ALLOW_BYTES: dict[Decision, bytes] = {}
_ALLOW_BYTES_MAX = 4096


def encode_response(decision: Decision) -> bytes:
    """The serialized CheckResponse for `decision`, from the caches when seen before."""
    cached = _DENIAL_BYTES.get(id(decision))
    if cached is not None and cached[0] is decision:
        return cached[1]
    encoded = _ALLOW_BYTES.get(decision)
    if encoded is None:
        encoded = check_response(decision).SerializeToString()
        if len(_ALLOW_BYTES) >= _ALLOW_BYTES_MAX:
            _ALLOW_BYTES.clear()
        _ALLOW_BYTES[decision] = encoded
    return encoded


def _internal_error(error: Exception) -> bytes:
    # A request that never reached the Checker (it did not parse) is still a Check
    # answered internal_error, and alerts on that reason must see it.
    count_failed_check("grpc", error)
    return _INTERNAL_ERROR_BYTES


def add_threaded_authorization_service(server: grpc.Server, check: BlockingCheck) -> None:
    """Serve `envoy.service.auth.v3.Authorization/Check` on grpcio's thread-pool `server`,
    deciding with the blocking `check`.

    Fails closed: if decoding the request, `check` or the response raises, the answer is the
    internal_error denial (503), never a gRPC error that Envoy's failure_mode_allow could
    turn into an allow.
    """

    # Decoding happens here rather than in a grpc deserializer, so a request that does not
    # parse is also answered with the internal_error denial.
    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            view = request_view(CheckRequest.FromString(request))
            return encode_response(check(view, context.time_remaining))
        except Exception as error:
            return _internal_error(error)

    handler = grpc.method_handlers_generic_handler(
        _SERVICE.full_name,
        {_METHOD.name: grpc.unary_unary_rpc_method_handler(handle)},
    )
    server.add_generic_rpc_handlers((handler,))


class _CheckOnlyHealth(health.HealthServicer):  # type: ignore[misc]
    # On a thread-pool server each Watch stream would hold a pool thread for as long as
    # the client stays, so a few watchers could starve Checks. Envoy, Kubernetes and
    # grpc-health-probe use Check; Watch answers UNIMPLEMENTED, which the health protocol
    # allows. (HealthServicer marks Watch experimental_non_blocking, so grpcio passes a
    # send_response_callback too.)
    def Watch(
        self, request: object, context: grpc.ServicerContext,
        send_response_callback: object = None,
    ) -> None:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "use Check")


def add_threaded_health_service(server: grpc.Server) -> health.HealthServicer:
    """Serve `grpc.health.v1.Health` Check on a thread-pool server (Watch: UNIMPLEMENTED)."""
    servicer = _CheckOnlyHealth()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer
