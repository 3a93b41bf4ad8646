"""Ant Media stream tokens (SPEC section 9): the play check on stream routes and the
publish/play webhook's question, both against the stream secrets (`StreamKeys`), never
the REST keys.

A stream token is HS256 with `streamId`, `type` (`play`/`publish`) and `exp` (required);
it opens only the stream it names, for its type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from authz.core.authenticate import authenticate
from authz.core.decision import Decision, Reason, allow, deny
from authz.core.extract import AUTHORIZATION_SOURCE, TokenSource, find_token, query_value
from authz.core.headers import JWT_HEADER_PREFIX, SUB_HEADER, legal_header_value
from authz.core.request import RequestView, StreamKind, WebhookAsk
from authz.core.stream import stream_id_of
from authz.core.token_cache import TokenCache
from authz.core.verify import TokenError, VerifiedToken
from authz.keys.snapshot import STREAM_ALGS, KeySnapshot

__all__ = [
    "NO_STREAM_KEYS",
    "PLAY_TOKEN_SOURCES",
    "STREAM_CONTEXT_KEY",
    "STREAM_ID_HEADER",
    "StreamKeys",
    "StreamRules",
    "decide_stream",
    "is_stream_request",
]

# context_extensions key of a stream route (`stream: play`); the HTTP door's x-authz-stream.
STREAM_CONTEXT_KEY = "stream"
STREAM_ID_HEADER = f"{JWT_HEADER_PREFIX}stream-id"
_PLAY_TOKEN_PARAMETER = "token"
# Where a play token may come from: one of the two, never both.
PLAY_TOKEN_SOURCES: tuple[TokenSource, ...] = (
    TokenSource("query", _PLAY_TOKEN_PARAMETER),
    AUTHORIZATION_SOURCE,
)
# Ant Media's TokenFilterManager: GET and HEAD are checked, OPTIONS passes, the rest is 403.
_CHECKED_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """The keys of stream tokens: `play`, the stream secrets (HS256 only); `cluster`, the
    cluster secret for Ant Media's edge-to-origin `ClusterAuthorization` (None: not set,
    so that header is never trusted)."""

    play: KeySnapshot
    cluster: KeySnapshot | None = None


NO_STREAM_KEYS = StreamKeys(KeySnapshot.build(hmac_algs=STREAM_ALGS, purpose="stream"))


class StreamRules(Protocol):
    """What the stream rules read of the settings (the settings model is one)."""

    @property
    def play_jwt_enabled(self) -> bool: ...

    @property
    def publish_jwt_enabled(self) -> bool: ...

    @property
    def leeway_seconds(self) -> float: ...


def is_stream_request(view: RequestView) -> bool:
    """Whether `view` is judged by the stream rules: a webhook question or a stream route."""
    return view.webhook is not None or STREAM_CONTEXT_KEY in view.context


def decide_stream(
    view: RequestView,
    keys: StreamKeys,
    rules: StreamRules,
    now: float,
    cache: TokenCache | None = None,
) -> Decision:
    """Decide a stream request (`is_stream_request`). Never raises for bad input."""
    try:
        if view.webhook is not None:
            return _webhook(view.webhook, keys, rules, now, cache)
        return _play(view, keys, rules, now, cache)
    except TokenError as refused:
        return deny(refused.reason)


def _stream_claims(verified: VerifiedToken, stream_id: str, kind: StreamKind) -> None:
    # A token of the other type, for another stream, or without either claim opens nothing.
    claims = verified.claims
    if claims.get("type") != kind or claims.get("streamId") != stream_id:
        raise TokenError(Reason.STREAM_MISMATCH)
    if not isinstance(claims["type"], str) or not isinstance(claims["streamId"], str):
        raise TokenError(Reason.STREAM_MISMATCH)


def _play(
    view: RequestView, keys: StreamKeys, rules: StreamRules, now: float, cache: TokenCache | None
) -> Decision:
    if view.context[STREAM_CONTEXT_KEY] != "play":
        # Only play is checked at the gateway; a route naming anything else is a config
        # error, refused like a route naming an undefined policy.
        raise TokenError(Reason.UNKNOWN_POLICY)
    # A stream route is read-only whether or not play tokens are enforced (SPEC sections
    # 8 and 9): a write is refused here, never passed as jwt_disabled.
    if view.method not in _CHECKED_METHODS and view.method != "OPTIONS":
        raise TokenError(Reason.METHOD_NOT_ALLOWED)
    if not rules.play_jwt_enabled or view.method == "OPTIONS":
        return allow(view.jwt_headers, Reason.JWT_DISABLED)
    stream_id = stream_id_of(view.path_only)
    if not stream_id:
        raise TokenError(Reason.NO_STREAM_ID)
    if view.cluster_authorization is not None and keys.cluster is not None:
        # An edge node asking its origin: judged by that token instead (Ant Media's
        # TokenFilterManager does the same), never falling back to the viewer's token.
        token: str | None = view.cluster_authorization.strip(" \t")
        snapshot = keys.cluster
        in_query: tuple[str, ...] = (
            (_PLAY_TOKEN_PARAMETER,)
            if view.query and query_value(view.query, _PLAY_TOKEN_PARAMETER) is not None
            else ()
        )
    else:
        token, in_query = find_token(view, PLAY_TOKEN_SOURCES)
        snapshot = keys.play
    if not token:
        raise TokenError(Reason.MISSING_TOKEN)
    verified = authenticate(token, snapshot, now, rules.leeway_seconds, True, cache)
    _stream_claims(verified, stream_id, "play")
    headers: list[tuple[str, str]] = []
    if legal_header_value(stream_id):
        headers.append((STREAM_ID_HEADER, stream_id))
    if verified.sub is not None and legal_header_value(verified.sub):
        headers.append((SUB_HEADER, verified.sub))
    return allow(view.jwt_headers, Reason.OK, tuple(headers), verified.sub, verified.iss, in_query)


def _webhook(
    ask: WebhookAsk, keys: StreamKeys, rules: StreamRules, now: float, cache: TokenCache | None
) -> Decision:
    enabled = rules.publish_jwt_enabled if ask.kind == "publish" else rules.play_jwt_enabled
    if not enabled:
        return allow((), Reason.JWT_DISABLED)
    if not ask.readable:
        raise TokenError(Reason.MALFORMED)
    if not ask.stream_id:
        raise TokenError(Reason.NO_STREAM_ID)
    if not ask.token:
        raise TokenError(Reason.MISSING_TOKEN)
    verified = authenticate(ask.token, keys.play, now, rules.leeway_seconds, True, cache)
    _stream_claims(verified, ask.stream_id, ask.kind)
    return allow((), Reason.OK, (), verified.sub, verified.iss)
