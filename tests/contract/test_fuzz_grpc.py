"""Property tests (hypothesis) of the whole gRPC Check handler on real servers built as
authz serves (authz.service.server.grpc_server: grpcio's thread-pool server).

CheckRequests with odd fields (no source, huge header maps, raw header bytes that are
not UTF-8, repeated authorization values, odd context extensions) and byte-level
mutations of encoded requests go over loopback to two real servers running the real
Checker: one with a token cache, one without. For every request:
- the RPC succeeds and the answer is a CheckResponse (no exception escapes the handler:
  a request that does not even parse is answered with the internal_error denial);
- an allow with reason `ok` carries a token that jwcrypto verifies with a configured key;
- the cached server (asked twice) answers exactly as the uncached one;
- no header in the answer contains CR, LF or NUL.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz._pb.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from authz.fronts.grpc import CHECK_METHOD_PATH, add_threaded_authorization_service
from authz.keys.snapshot import KeySnapshot
from authz.service.checker import Checker
from authz.service.server import grpc_server
from tests.unit.core.helpers import NOW
from tests.unit.core.test_fuzz_core import (
    BAD_CHARS,
    KEYS,
    SEED_TOKENS,
    SETTINGS,
    authorization_values,
    contexts,
    signed_by_configured_key,
    source_ips,
)

Call = Callable[[bytes], bytes]


@dataclass(frozen=True)
class _Keys:
    snapshot: KeySnapshot


@contextlib.contextmanager
def check_servers() -> Iterator[tuple[Call, Call]]:
    """Two real Check servers on 127.0.0.1 (token cache on, token cache off) and a
    raw-bytes unary caller for each."""

    def start(cache_size: int) -> tuple[grpc.Server, int]:
        checker = Checker(dataclasses.replace(SETTINGS, token_cache_size=cache_size),
                          _Keys(KEYS), clock=lambda: NOW)
        server = grpc_server()
        add_threaded_authorization_service(server, checker.check_blocking)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        return server, port

    servers = [start(size) for size in (1000, 0)]
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _, port in servers]
    try:
        calls = [channel.unary_unary(CHECK_METHOD_PATH) for channel in channels]
        yield (lambda data: calls[0](data, timeout=10)), (lambda data: calls[1](data, timeout=10))
    finally:
        for channel in channels:
            channel.close()
        for server, _ in servers:
            server.stop(None).wait(10)


# --- requests ---------------------------------------------------------------------------

header_names = st.sampled_from(["x-request-id", "x-jwt-sub", "x-jwt-role", "cookie", "host",
                                "authorization", "Authorization", "x-jwt-"]) \
    | st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=12)


@st.composite
def check_requests(draw: st.DrawFn) -> bytes:
    """An encoded CheckRequest with odd but protobuf-legal fields."""
    request = CheckRequest()
    attributes = request.attributes
    http = attributes.request.http
    authorization = draw(authorization_values)
    if draw(st.booleans()):
        # The `headers` map (Envoy's default encoding).
        if authorization is not None:
            http.headers["authorization"] = authorization
        for name, value in draw(st.dictionaries(header_names, st.text(max_size=20),
                                                max_size=6)).items():
            if name != "authorization" or authorization is None:
                http.headers[name] = value
        for index in range(draw(st.sampled_from([0, 0, 0, 300, 3000]))):
            http.headers[f"x-filler-{index}"] = "v" * (index % 50)
    else:
        # `header_map` (encode_raw_headers): repeated keys, raw bytes that need not be UTF-8.
        values = [authorization] if authorization is not None else []
        values += draw(st.lists(st.sampled_from(SEED_TOKENS), max_size=2))
        for value in values:
            entry = http.header_map.headers.add()
            entry.key = draw(st.sampled_from(["authorization", "Authorization"]))
            entry.raw_value = value.encode("utf-8", "surrogatepass")
        for name, raw in draw(st.lists(st.tuples(header_names, st.binary(max_size=20)),
                                       max_size=6)):
            entry = http.header_map.headers.add()
            entry.key = name
            entry.raw_value = raw
    source = draw(source_ips)
    if source is not None:
        attributes.source.address.socket_address.address = source
        attributes.source.address.socket_address.port_value = draw(st.integers(0, 65535))
    for key, value in draw(contexts).items():
        attributes.context_extensions[key] = value
    http.path = draw(st.sampled_from(["/LiveApp/rest/v2/broadcasts", "", "/?token=abc"]))
    http.method = draw(st.sampled_from(["GET", "POST", "", "BREW"]))
    http.id = draw(st.text(max_size=8))
    encoded: bytes = request.SerializeToString()
    return encoded


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """An encoded CheckRequest with a few byte edits: flips, cuts, inserts, repeats."""
    data = bytearray(draw(check_requests()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "repeat"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            data = data[:pos]
        elif op == "repeat":
            data += data[pos:]
    return bytes(data)


# --- properties -------------------------------------------------------------------------

def _authorization(request: CheckRequest) -> str | None:
    """The authorization value as SPEC section 1 defines it, read independently."""
    http = request.attributes.request.http
    if http.headers:
        return http.headers.get("authorization")
    values = [h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
              for h in http.header_map.headers if h.key.lower() == "authorization"]
    return ",".join(values) if values else None


def _token(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    value = authorization.strip(" \t")
    return value[7:].lstrip(" ") if value[:7].lower() == "bearer " else value


def _headers(response: CheckResponse) -> list[str]:
    out: list[str] = list(response.ok_response.headers_to_remove)
    for option in (*response.ok_response.headers, *response.denied_response.headers):
        out += [option.header.key, option.header.value]
    return out


def check_encoded_request(servers: tuple[Call, Call], data: bytes) -> None:
    """Every property for one encoded request sent to both servers."""
    cached, uncached = servers
    cold = CheckResponse.FromString(uncached(data))
    assert CheckResponse.FromString(cached(data)) == cold
    assert CheckResponse.FromString(cached(data)) == cold  # warm
    allowed = cold.WhichOneof("http_response") == "ok_response"
    assert allowed == (cold.status.code == 0)
    reason = cold.dynamic_metadata.fields["reason"].string_value
    try:
        request: CheckRequest | None = CheckRequest.FromString(data)
    except Exception:  # upb raises DecodeError; anything else would also mean "unparsable"
        request = None
    if request is None:
        assert reason == "internal_error" and cold.denied_response.status.code == 503
    if allowed:
        assert request is not None
        if reason == "ok":
            token = _token(_authorization(request))
            assert token is not None and signed_by_configured_key(token), token
        else:
            assert reason == "jwt_disabled"
            assert request.attributes.context_extensions.get("policy") == "open"
    for text in _headers(cold):
        assert not any(c in text for c in BAD_CHARS), text


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Call, Call]]:
    with check_servers() as pair:
        yield pair


FAST = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


@FAST
@given(check_requests())
def test_odd_check_requests(servers: tuple[Call, Call], data: bytes) -> None:
    check_encoded_request(servers, data)


@FAST
@given(mutated_requests())
def test_mutated_check_requests(servers: tuple[Call, Call], data: bytes) -> None:
    check_encoded_request(servers, data)


def test_a_valid_token_is_allowed_through_the_handler(servers: tuple[Call, Call]) -> None:
    # The properties above hold vacuously if nothing is ever allowed: show that allows happen.
    request = CheckRequest()
    request.attributes.request.http.headers["authorization"] = f"Bearer {SEED_TOKENS[0]}"
    answer = CheckResponse.FromString(servers[0](request.SerializeToString()))
    assert answer.WhichOneof("http_response") == "ok_response"
    assert answer.dynamic_metadata.fields["reason"].string_value == "ok"


def campaign_property(servers: tuple[Call, Call]) -> Callable[[Any], None]:
    """The property for tools/fuzz.py, bound to servers it started."""
    return lambda data: check_encoded_request(servers, data)
