"""Shared parts of the reliability tests (lifecycle, soak, secret hygiene): keys and tokens
a loopback JWKS server publishes, raw Check calls, and process figures from /proc."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc

from authz._pb.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from authz.fronts.grpc import CHECK_METHOD_PATH
from tests.jwks_server import jwk, jwks, rsa_key, sign

REST = "/LiveApp/rest/v2/broadcasts/list/0/10"
KEY_A = rsa_key("reliability-a")
KEY_B = rsa_key("reliability-b")
ROGUE = rsa_key("reliability-rogue")


def jwks_of(*kids: str) -> bytes:
    """A JWKS document publishing the named test keys ("a", "b")."""
    keys = {"a": KEY_A, "b": KEY_B}
    return jwks(*(jwk(keys[kid], kid, alg="RS256", use="sig") for kid in kids))


def rs256(kid: str, ttl: float = 3600, sub: str = "rs-user", **claims: Any) -> str:
    """An RS256 token signed with test key `kid` ("a", "b"; "rogue" signs with an
    unpublished key but names kid "a"; any other kid is signed by the rogue key)."""
    key = {"a": KEY_A, "b": KEY_B}.get(kid, ROGUE)
    named = "a" if kid == "rogue" else kid
    return sign("RS256", key, {"sub": sub, "exp": time.time() + ttl, **claims}, kid=named)


def check_request(
    authorization: str | None,
    source_ip: str = "127.0.0.1",
    context: Mapping[str, str] | None = None,
    path: str = REST,
    method: str = "GET",
) -> bytes:
    """An encoded CheckRequest as Envoy would send it."""
    request = CheckRequest()
    http = request.attributes.request.http
    http.path, http.method = path, method
    if authorization is not None:
        http.headers["authorization"] = authorization
    request.attributes.source.address.socket_address.address = source_ip
    for key, value in (context or {}).items():
        request.attributes.context_extensions[key] = value
    data: bytes = request.SerializeToString()
    return data


def grpc_check(port: int, data: bytes, timeout: float = 5.0) -> CheckResponse:
    """One Check over a fresh channel; raises grpc.RpcError when the call fails."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = channel.unary_unary(CHECK_METHOD_PATH)(data, timeout=timeout)
    return CheckResponse.FromString(answer)


def reason_of(response: CheckResponse) -> str:
    """The `reason` authz put in the dynamic metadata."""
    reason: str = response.dynamic_metadata.fields["reason"].string_value
    return reason


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    """Open file descriptors of `pid` (Linux /proc)."""
    return len(os.listdir(f"/proc/{pid}/fd"))
