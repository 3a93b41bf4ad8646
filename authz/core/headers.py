"""HTTP header facts the decision and both doors share: the `x-jwt-` namespace authz owns,
the field-name grammar (RFC 9110 section 5.1) and what a value authz sets may hold."""

from __future__ import annotations

import re

__all__ = ["JWT_HEADER_PREFIX", "SUB_HEADER", "is_header_name", "legal_header_value"]

# Headers authz vouches for upstream. Envoy strips every client header with this prefix
# (the gateway's header_mutation filter) and authz names the ones a client sent anyway.
JWT_HEADER_PREFIX = "x-jwt-"
SUB_HEADER = f"{JWT_HEADER_PREFIX}sub"

# RFC 9110 field-name: one or more tchar.
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def is_header_name(name: str) -> bool:
    """Whether `name` is a legal HTTP field name (no CR, LF, NUL, space, colon, ...)."""
    return _FIELD_NAME.fullmatch(name) is not None


def legal_header_value(value: str) -> bool:
    """Visible ASCII and inner spaces only: nothing Envoy or an upstream could mis-split."""
    return (
        0 < len(value) <= 4096
        and value.isascii()
        and value.isprintable()
        and value[0] != " "
        and value[-1] != " "
    )
