"""The outcome of a Check: the SPEC's reason table and the Decision value the fronts render."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from enum import StrEnum

from authz.core.headers import is_header_name

__all__ = ["Decision", "Reason", "allow", "deny", "status_of", "unknown_kid_of"]


class Reason(StrEnum):
    """The `reason` label of every decision (SPEC section 5)."""

    OK = "ok"
    JWT_DISABLED = "jwt_disabled"
    MISSING_TOKEN = "missing_token"
    MALFORMED = "malformed"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KID = "unknown_kid"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    ISSUER_MISMATCH = "issuer_mismatch"
    AUDIENCE_MISMATCH = "audience_mismatch"
    MISSING_EXP = "missing_exp"
    JWKS_UNAVAILABLE = "jwks_unavailable"
    IP_NOT_ALLOWED = "ip_not_allowed"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    UNKNOWN_POLICY = "unknown_policy"
    INTERNAL_ERROR = "internal_error"
    STREAM_MISMATCH = "stream_mismatch"
    NO_STREAM_ID = "no_stream_id"
    METHOD_NOT_ALLOWED = "method_not_allowed"


_STATUS: dict[Reason, int] = {
    Reason.OK: 200,
    Reason.JWT_DISABLED: 200,
    Reason.JWKS_UNAVAILABLE: 503,
    Reason.INTERNAL_ERROR: 503,
    Reason.IP_NOT_ALLOWED: 403,
    Reason.INSUFFICIENT_SCOPE: 403,
    Reason.UNKNOWN_POLICY: 403,
    Reason.STREAM_MISMATCH: 403,
    Reason.NO_STREAM_ID: 403,
    Reason.METHOD_NOT_ALLOWED: 403,
}

# RFC 6750 section 3: error_description is human-readable and carries no token material.
_DESCRIPTION: dict[Reason, str] = {
    Reason.MALFORMED: "the token is not a well-formed JWS",
    Reason.ALG_NOT_ALLOWED: "the token's algorithm is not accepted",
    Reason.BAD_SIGNATURE: "the token's signature does not verify",
    Reason.UNKNOWN_KID: "the token's key id is not known",
    Reason.EXPIRED: "the token has expired",
    Reason.NOT_YET_VALID: "the token is not yet valid",
    Reason.ISSUER_MISMATCH: "the token's issuer is not accepted",
    Reason.AUDIENCE_MISMATCH: "the token's audience is not accepted",
    Reason.MISSING_EXP: "the token has no expiry",
}

_ERROR: dict[int, str] = {401: "unauthorized", 403: "forbidden", 503: "unavailable"}


def status_of(reason: Reason) -> int:
    """The HTTP status Envoy returns for `reason` (200 means: pass to the upstream)."""
    return _STATUS.get(reason, 401)


@dataclass(frozen=True, slots=True)
class Decision:
    """What a Check decided, independent of the transport that asked.

    On allow, `headers_to_set` go to the upstream (overwriting), `headers_to_remove`
    are stripped from the request and `query_parameters_to_remove` from its URL (the gRPC
    door only: Envoy's HTTP mode cannot). On deny, `headers_to_set` go to the client with
    `body`. `claims`: (claim name, value) of every claim the policy forwards, for Envoy's
    dynamic metadata. `key_source`: on an unknown_kid denial among an identity provider's
    keys, that provider (the one to refetch); never sent, and not part of equality.
    """

    reason: Reason
    status: int
    headers_to_set: tuple[tuple[str, str], ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    body: str = ""
    sub: str | None = None
    iss: str | None = None
    query_parameters_to_remove: tuple[str, ...] = ()
    claims: tuple[tuple[str, str], ...] = ()
    key_source: str | None = field(default=None, compare=False)

    @property
    def allowed(self) -> bool:
        return self.status == 200

    @property
    def metadata(self) -> dict[str, str]:
        """Dynamic metadata for Envoy's access log, RBAC and rate limits: the forwarded
        claims, the reason, and sub/iss when known (these three win over a claim of the
        same name)."""
        meta = dict(self.claims)
        meta["reason"] = self.reason.value
        if self.sub is not None:
            meta["sub"] = self.sub
        if self.iss is not None:
            meta["iss"] = self.iss
        return meta


def allow(
    jwt_headers: tuple[str, ...],
    reason: Reason,
    headers: tuple[tuple[str, str], ...] = (),
    sub: str | None = None,
    iss: str | None = None,
    query_parameters_to_remove: tuple[str, ...] = (),
    claims: tuple[tuple[str, str], ...] = (),
) -> Decision:
    """An allow with `headers` set upstream and the forwarded `claims` as metadata; the
    client-sent `jwt_headers` (x-jwt-*) are removed unless authz sets them itself."""
    # Envoy removes after it sets, so a name must never be in both lists. A name that is
    # not a legal field name (CR, LF, NUL, ...) cannot be a header Envoy forwards: never
    # echoed.
    set_names = {name for name, _ in headers}
    remove = tuple(
        name for name in jwt_headers if name not in set_names and is_header_name(name)
    )
    return Decision(
        reason, 200, headers, remove, "", sub, iss, query_parameters_to_remove, claims
    )


def _www_authenticate(reason: Reason, token_present: bool) -> str | None:
    if reason is Reason.INSUFFICIENT_SCOPE:
        return 'Bearer error="insufficient_scope"'
    if status_of(reason) != 401:
        return None
    if not token_present:
        return "Bearer"
    description = _DESCRIPTION.get(reason, "the token is not valid")
    return f'Bearer error="invalid_token", error_description="{description}"'


def _build_deny(reason: Reason) -> Decision:
    status = status_of(reason)
    headers: list[tuple[str, str]] = [("content-type", "application/json")]
    challenge = _www_authenticate(reason, token_present=reason is not Reason.MISSING_TOKEN)
    if challenge is not None:
        headers.append(("www-authenticate", challenge))
    body = json.dumps({"error": _ERROR[status], "reason": reason.value}, separators=(",", ":"))
    return Decision(reason=reason, status=status, headers_to_set=tuple(headers), body=body)


# Denials carry no per-request data, so each is built once.
_DENIALS: dict[Reason, Decision] = {r: _build_deny(r) for r in Reason if status_of(r) != 200}


def deny(reason: Reason) -> Decision:
    """The denial for `reason`: SPEC status, WWW-Authenticate (RFC 6750) and JSON body."""
    return _DENIALS[reason]


# Per identity provider: configured issuers only (the core selects one before it can answer
# unknown_kid), so this stays as small as the settings.
_UNKNOWN_KID_OF: dict[str, Decision] = {}


def unknown_kid_of(issuer: str) -> Decision:
    """The unknown_kid denial naming `issuer` as the key source to refetch: on the wire the
    same as `deny(Reason.UNKNOWN_KID)`, and equal to it."""
    denial = _UNKNOWN_KID_OF.get(issuer)
    if denial is None:
        denial = _UNKNOWN_KID_OF[issuer] = replace(_DENIALS[Reason.UNKNOWN_KID], key_source=issuer)
    return denial
