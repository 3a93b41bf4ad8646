"""Decisions: the SPEC section 5 status of every reason, deny bodies and headers, allows."""

from __future__ import annotations

import json

import pytest

from authz.core.decision import Reason, allow, deny, status_of

# SPEC section 5, the whole table.
SPEC_STATUS = {
    "ok": 200, "jwt_disabled": 200, "missing_token": 401, "malformed": 401,
    "alg_not_allowed": 401, "bad_signature": 401, "unknown_kid": 401, "expired": 401,
    "not_yet_valid": 401, "issuer_mismatch": 401, "audience_mismatch": 401,
    "missing_exp": 401, "jwks_unavailable": 503, "ip_not_allowed": 403,
    "insufficient_scope": 403, "unknown_policy": 403, "internal_error": 503,
    "stream_mismatch": 403, "no_stream_id": 403, "method_not_allowed": 403,
}


def test_every_reason_is_in_the_spec_with_its_status() -> None:
    assert {r.value: status_of(r) for r in Reason} == SPEC_STATUS


@pytest.mark.parametrize("reason", [r for r in Reason if status_of(r) != 200])
def test_a_denial_carries_its_status_and_a_json_body_naming_its_reason(reason: Reason) -> None:
    denied = deny(reason)
    assert not denied.allowed and denied.status == status_of(reason)
    body = json.loads(denied.body)
    assert body["reason"] == reason.value and isinstance(body["error"], str)
    headers = dict(denied.headers_to_set)
    assert headers["content-type"] == "application/json"
    if denied.status == 401:
        assert headers["www-authenticate"].startswith("Bearer")
    assert deny(reason) is denied  # built once


def test_an_allow_never_removes_a_header_it_sets_nor_an_illegal_name() -> None:
    decision = allow(("x-jwt-sub", "x-jwt-role", "x-jwt-a\r\nb"), Reason.OK,
                     (("x-jwt-sub", "alice"),), "alice")
    assert decision.allowed
    assert decision.headers_to_remove == ("x-jwt-role",)
    assert decision.metadata == {"reason": "ok", "sub": "alice"}
