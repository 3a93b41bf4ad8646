"""`authz check`: one Check sent to a running authz, as Envoy would send it, and its answer.

The request is built with the project's own ext_authz messages and sent over a plain gRPC
channel; the answer is printed as decision, status, reason and headers. The token goes
into the request only: nothing printed ever contains it.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc

from authz._pb.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from authz.errors import AuthzError
from authz.fronts.grpc import CHECK_METHOD_PATH
from authz.settings.addresses import split_host_port

__all__ = [
    "EXIT_ALLOW",
    "EXIT_DENY",
    "EXIT_ERROR",
    "CheckAnswer",
    "CheckFailedError",
    "CheckOptionError",
    "build_request",
    "check_target",
    "format_answer",
    "parse_context",
    "parse_header",
    "send_check",
]

EXIT_ALLOW = 0
EXIT_DENY = 1
EXIT_ERROR = 2


class CheckOptionError(AuthzError, ValueError):
    """An `authz check` option that cannot be used; the text is one line for the user."""


class CheckFailedError(AuthzError, RuntimeError):
    """No answer from the target: unreachable, timed out, or not an ext_authz server."""


@dataclass(frozen=True, slots=True)
class CheckAnswer:
    """What authz answered, in the terms Envoy enforces."""

    allowed: bool
    status: int
    reason: str
    headers_set: tuple[tuple[str, str], ...]
    headers_removed: tuple[str, ...]
    body: str


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value` as (lowercase name, value), as Envoy hands headers to ext_authz."""
    name, sep, value = text.partition(":")
    name = name.strip().lower()
    if not sep or not name or any(c.isspace() for c in name):
        raise CheckOptionError(f"{text!r} is not a header: use 'Name: value'")
    return name, value.strip()


def parse_context(text: str) -> tuple[str, str]:
    """`k=v` as one context_extensions entry (a route's per-route settings in Envoy)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise CheckOptionError(f"{text!r} is not a context entry: use key=value, e.g. policy=admin")
    return key.strip(), value.strip()


def check_target(text: str) -> str:
    """`host:port` (IPv6 as `[::1]:9001`) of the authz gRPC listener."""
    try:
        split_host_port(text)
    except ValueError as exc:
        raise CheckOptionError(f"--target: {exc}") from None
    return text


def build_request(
    headers: Iterable[tuple[str, str]],
    path: str,
    method: str,
    source_ip: str,
    context: Mapping[str, str],
) -> CheckRequest:
    """The CheckRequest Envoy's ext_authz filter would send for this HTTP request."""
    try:
        ipaddress.ip_address(source_ip)
    except ValueError:
        raise CheckOptionError(f"--source-ip: {source_ip!r} is not an IP address") from None
    request = CheckRequest()
    attributes = request.attributes
    attributes.source.address.socket_address.address = source_ip
    http = attributes.request.http
    http.id = str(uuid.uuid4())
    http.method = method.upper()
    http.path = path
    http.host = "localhost"
    http.protocol = "HTTP/1.1"
    # Envoy joins repeated headers with "," into its lowercase-keyed map.
    joined: dict[str, str] = {":method": http.method, ":path": path, ":authority": http.host}
    for name, value in headers:
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    http.headers.update(joined)
    attributes.context_extensions.update(context)
    return request


def send_check(target: str, request: CheckRequest, timeout: float) -> CheckAnswer:
    """Send `request` to the authz at `target`; raises CheckFailedError without an answer."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            CHECK_METHOD_PATH,
            request_serializer=CheckRequest.SerializeToString,
            response_deserializer=CheckResponse.FromString,
        )
        try:
            response: CheckResponse = call(request, timeout=timeout)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            name = code.name if code is not None else "ERROR"
            details = error.details() if isinstance(error, grpc.Call) else ""
            raise CheckFailedError(f"no answer from {target}: {name} {details}".strip()) from None
    return _answer(response)


def _answer(response: CheckResponse) -> CheckAnswer:
    fields = response.dynamic_metadata.fields
    reason = fields["reason"].string_value if "reason" in fields else response.status.message
    if response.status.code == 0:
        ok = response.ok_response
        return CheckAnswer(
            allowed=True,
            status=200,
            reason=reason,
            headers_set=tuple((o.header.key, o.header.value) for o in ok.headers),
            headers_removed=tuple(ok.headers_to_remove),
            body="",
        )
    denied = response.denied_response
    return CheckAnswer(
        allowed=False,
        # Envoy answers 403 when a denial names no status.
        status=int(denied.status.code) or 403,
        reason=reason,
        headers_set=tuple((o.header.key, o.header.value) for o in denied.headers),
        headers_removed=(),
        body=denied.body,
    )


def format_answer(answer: CheckAnswer) -> str:
    """The answer as aligned `field: value` lines for a terminal or a runbook."""
    lines = [
        f"decision: {'allow' if answer.allowed else 'deny'}",
        f"status:   {answer.status}"
        + (" (Envoy passes the request upstream)" if answer.allowed else ""),
        f"reason:   {answer.reason}",
    ]
    where = "upstream" if answer.allowed else "client"
    lines += [f"set:      {name}: {value}  (to the {where})" for name, value in answer.headers_set]
    lines += [f"removed:  {name}" for name in answer.headers_removed]
    if answer.body:
        lines.append(f"body:     {answer.body}")
    return "\n".join(lines)
