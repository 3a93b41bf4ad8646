"""Where the token comes from (SPEC section 9): a policy's ordered `token_sources`, each the
`authorization` header (raw, the Ant Media form, or `Bearer`), a query parameter or a cookie.

A token found in two of the listed sources is ambiguous (malformed); a source repeated in
the request (`?token=a&token=b`, two `token` cookies) is malformed too.

A query parameter that holds a token has one spelling: its name exactly as configured.
Envoy removes a token parameter before the upstream (`query_parameters_to_remove`) by its
name as spelled in the URL, undecoded: asked to remove `token`, it leaves `%74oken=...` in
place (observed with Envoy 1.40 in front of Tomcat, tests/e2e/test_e2e_stream_routes.py),
and Tomcat, like any form decoder, reads that as `token`. So a parameter whose name is
percent-encoded and decodes to the name of a query source is refused (malformed), never
read: the token authz accepts is always one Envoy removes. A name is limited to characters
no URL producer percent-encodes (`parse_token_source`), so no client is refused for this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from authz.core.decision import Reason
from authz.core.request import RequestView
from authz.core.verify import TokenError

__all__ = [
    "AUTHORIZATION_SOURCE",
    "DEFAULT_TOKEN_SOURCES",
    "SourceKind",
    "TokenSource",
    "cookie_value",
    "extract_token",
    "find_token",
    "form_decode",
    "parse_token_source",
    "query_value",
]

SourceKind = Literal["header", "query", "cookie"]

# RFC 6265 section 4.1.1: a cookie-name is an RFC 9110 token.
_COOKIE_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# A query parameter name in `query:NAME`: the characters that RFC 3986 leaves unreserved and
# the WHATWG form serializer (URLSearchParams) never percent-encodes, so the name has one
# spelling in every URL a client makes (module docstring).
_QUERY_NAME = re.compile(r"[A-Za-z0-9._-]+")
_HEX = frozenset(b"0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class TokenSource:
    """One place a token may come from: `kind:name`, e.g. `query:token`."""

    kind: SourceKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


AUTHORIZATION_SOURCE = TokenSource("header", "authorization")
DEFAULT_TOKEN_SOURCES: tuple[TokenSource, ...] = (AUTHORIZATION_SOURCE,)


def parse_token_source(text: str) -> TokenSource:
    """`header:authorization`, `query:NAME` or `cookie:NAME`; ValueError otherwise."""
    kind, sep, name = text.partition(":")
    if not sep or not name:
        raise ValueError(f"{text!r} is not header:authorization, query:NAME or cookie:NAME")
    if kind == "header":
        if name.lower() != "authorization":
            raise ValueError(f"{text!r}: the only header source is header:authorization")
        return AUTHORIZATION_SOURCE
    if kind == "query":
        if _QUERY_NAME.fullmatch(name) is None:
            raise ValueError(f"{text!r}: a query parameter name is letters, digits, ., _ and -")
        return TokenSource("query", name)
    if kind == "cookie":
        if _COOKIE_NAME.fullmatch(name) is None:
            raise ValueError(f"{text!r}: a cookie name is an RFC 6265 token")
        return TokenSource("cookie", name)
    raise ValueError(f"{text!r}: the kind is header, query or cookie")


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


def form_decode(text: str) -> str:
    """One name or value of an application/x-www-form-urlencoded string (WHATWG URL
    section 5.1): `+` is a space, `%XX` a byte, decoded once; bytes not UTF-8 become U+FFFD."""
    if "+" in text:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    data = text.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == 0x25 and i + 2 < len(data) and data[i + 1] in _HEX and data[i + 2] in _HEX:
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(byte)
            i += 1
    return out.decode("utf-8", "replace")


def query_value(query: str, name: str) -> str | None:
    """The value (form-decoded) of parameter `name` in `query`, None when absent.

    `name` matches only as spelled (module docstring): a parameter given twice, or one whose
    percent-encoded name decodes to `name` (`%74oken` for `token`), raises
    TokenError(malformed).
    """
    found: str | None = None
    for pair in query.split("&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        if raw_name != name:
            if "%" in raw_name and form_decode(raw_name) == name:
                raise TokenError(Reason.MALFORMED)
            continue
        if found is not None:
            raise TokenError(Reason.MALFORMED)
        found = form_decode(raw_value)
    return found


def cookie_value(cookie: str | None, name: str) -> str | None:
    """The value of cookie `name` in a `cookie` header (RFC 6265 section 5.4: pairs split on
    `;`, optional whitespace, a value optionally in double quotes), None when absent; a
    name given twice raises TokenError(malformed)."""
    if cookie is None:
        return None
    found: str | None = None
    for pair in cookie.split(";"):
        raw_name, sep, value = pair.partition("=")
        if not sep or raw_name.strip(" \t") != name:
            continue
        if found is not None:
            raise TokenError(Reason.MALFORMED)
        value = value.strip(" \t")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        found = value
    return found


def _read(view: RequestView, source: TokenSource) -> str | None:
    if source.kind == "header":
        return extract_token(view.authorization)
    if source.kind == "query":
        return query_value(view.query, source.name) if view.query else None
    return cookie_value(view.cookie, source.name)


def find_token(
    view: RequestView, sources: tuple[TokenSource, ...]
) -> tuple[str | None, tuple[str, ...]]:
    """The token from `sources` (None when none holds one) and the names of the query
    sources present in the request (the parameters Envoy should drop before the upstream).

    A token in two sources, a repeated parameter or cookie, and a malformed
    `authorization` header raise TokenError(malformed). An empty value is no token.
    """
    if sources is DEFAULT_TOKEN_SOURCES:  # the hot path: one header, no query parsing
        return extract_token(view.authorization), ()
    token: str | None = None
    in_query: list[str] = []
    for source in sources:
        value = _read(view, source)
        if value is None:
            continue
        if source.kind == "query":
            in_query.append(source.name)
        if not value:
            continue
        if token is not None:
            raise TokenError(Reason.MALFORMED)
        token = value
    return token, tuple(in_query)
