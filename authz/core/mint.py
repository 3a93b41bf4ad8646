"""Minting HMAC-signed JWTs: the `authz token` command and local demos."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(obj: Mapping[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def mint_hmac(
    claims: Mapping[str, Any],
    secret: bytes,
    alg: str = "HS256",
    header: Mapping[str, Any] | None = None,
) -> str:
    """A compact JWS of `claims` signed with `secret`; `header` adds or overrides members."""
    head = {"alg": alg, "typ": "JWT", **(header or {})}
    signing_input = f"{_segment(head)}.{_segment(claims)}"
    mac = hmac.new(secret, signing_input.encode("ascii"), _DIGESTS[alg]).digest()
    return f"{signing_input}.{b64url(mac)}"
