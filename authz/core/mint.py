"""Minting HMAC-signed JWTs: the `authz token` command and local demos."""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any

from authz.core.base64url import b64url
from authz.core.verify import HMAC_DIGESTS

__all__ = ["mint_hmac"]


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
    mac = hmac.new(secret, signing_input.encode("ascii"), HMAC_DIGESTS[alg]).digest()
    return f"{signing_input}.{b64url(mac)}"
