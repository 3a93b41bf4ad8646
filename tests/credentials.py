"""The secrets and tokens the tests sign with, each defined once.

SECRET is the HS256 secret of Ant Media's documentation: every authz the tests start, and
the core's unit tests, are configured with it, and AMS_DOCS_TOKEN (the token the same page
shows) is signed with it. OTHER_SECRET and LONG_SECRET are configured only where a test
says so; OTHER_SECRET signs the forgeries that authz must refuse.

Secrets that a test configures authz with (env, YAML, files) are text; those it only
signs with or hands to a KeySnapshot are bytes.
"""

from __future__ import annotations

import time
from typing import Any

from authz.core.mint import mint_hmac

SECRET = "zautXStXM9iW3aD3FuyPH0TdK4GHPmHq"
SECRET_BYTES = SECRET.encode()
AMS_DOCS_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ0b2tlbiIsImlhdCI6MTUxNjIzOTAyMn0"
    ".OESIxgNsnD_JwByKTXcrw9Ov4GaOUZw66QxMfmudhKQ"
)
# Long enough to be a valid secret (32 bytes at least), and not SECRET.
OTHER_SECRET = b"another-secret-of-at-least-32-bytes!!"
# 64 bytes: long enough for HS512 (RFC 7518 3.2: an HMAC key at least as long as the hash).
LONG_SECRET = b"0123456789abcdef" * 4


def hs256(secret: str | bytes, ttl: float = 3600, sub: str = "hs-user", **claims: Any) -> str:
    """An HS256 token signed with `secret`, expiring `ttl` seconds from now (the wall clock)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return mint_hmac({"sub": sub, "exp": time.time() + ttl, **claims}, key)
