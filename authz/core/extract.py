"""Where the token comes from: the `authorization` header, raw (Ant Media form) or `Bearer`."""

from __future__ import annotations

from authz.core.decision import Reason
from authz.core.verify import TokenError

__all__ = ["extract_token"]


def extract_token(authorization: str | None) -> str | None:
    """The token in an `authorization` value; None when there is none.

    Accepts `<token>` and `Bearer <token>` (scheme case-insensitive, RFC 6750 2.1);
    any other shape raises TokenError(malformed).
    """
    if authorization is None:
        return None
    value = authorization.strip(" \t")
    if not value:
        return None
    scheme, sep, rest = value.partition(" ")
    if not sep:
        if "\t" in value or scheme.lower() == "bearer":
            raise TokenError(Reason.MALFORMED)
        return value
    token = rest.lstrip(" ")
    if scheme.lower() != "bearer" or not token or " " in token or "\t" in token:
        raise TokenError(Reason.MALFORMED)
    return token
