"""The transport-neutral view of one request that the decision core reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["RequestView"]

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the fronts extract from Envoy's question, and nothing more.

    `authorization` is the raw `authorization` header value (None when absent);
    `jwt_headers` names the client-sent headers starting with `x-jwt-` (lowercase);
    `source_ip` is the client address as Envoy saw it (None when Envoy gave none);
    `context` holds the route's `context_extensions`.
    """

    authorization: str | None
    source_ip: str | None
    jwt_headers: tuple[str, ...] = ()
    path: str = ""
    method: str = ""
    # A factory returning the one shared empty mapping: dataclasses refuse a dict default.
    context: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
