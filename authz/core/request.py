"""The transport-neutral view of one request that the decision core reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = ["CLUSTER_AUTHORIZATION_HEADER", "RequestView", "StreamKind", "WebhookAsk"]

# Ant Media's edge-to-origin token header (TokenFilterManager), lowercase as Envoy sends it.
CLUSTER_AUTHORIZATION_HEADER = "clusterauthorization"

_EMPTY: Mapping[str, str] = MappingProxyType({})

StreamKind = Literal["play", "publish"]


@dataclass(frozen=True, slots=True)
class WebhookAsk:
    """What Ant Media's publish/play webhook asks: may `token` open stream `stream_id`?

    `kind` is the webhook's path (`/publish` or `/play`); `stream_id` and `token` are the
    body's `streamId` and `token` (None when absent). `readable` is false when the body was
    not a JSON object as Ant Media sends it (too large, not JSON, a field of the wrong type).
    """

    kind: StreamKind
    stream_id: str | None
    token: str | None
    readable: bool = True


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the fronts extract from Envoy's question, and nothing more.

    `authorization` is the raw `authorization` header value (None when absent);
    `jwt_headers` names the client-sent headers starting with `x-jwt-` (lowercase);
    `source_ip` is the client address as Envoy saw it (None when Envoy gave none);
    `path` is the request target as Envoy sent it, query string included;
    `context` holds the route's `context_extensions`; `cookie` is the `cookie` header
    (repeated ones joined with "; ", RFC 6265 section 5.4); `cluster_authorization` is
    Ant Media's edge-to-origin `ClusterAuthorization` header; `webhook` is set only by the
    webhook door.
    """

    authorization: str | None
    source_ip: str | None
    jwt_headers: tuple[str, ...] = ()
    path: str = ""
    method: str = ""
    # A factory returning the one shared empty mapping: dataclasses refuse a dict default.
    context: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    cookie: str | None = None
    cluster_authorization: str | None = None
    webhook: WebhookAsk | None = None

    @property
    def path_only(self) -> str:
        """The path without its query string."""
        return self.path.partition("?")[0]

    @property
    def query(self) -> str:
        """The raw query string (after the first `?`), empty when there is none."""
        return self.path.partition("?")[2]
