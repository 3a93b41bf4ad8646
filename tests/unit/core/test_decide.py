"""authz/core/decide.py: an allow sets the headers it forwards and strips the client's other
x-jwt-* headers, with or without a token to read."""

from __future__ import annotations

from dataclasses import replace

from authz.core.decision import Reason
from tests.unit.core.helpers import NOW, SETTINGS, run, token


class TestAllow:
    def test_allow_strips_client_jwt_headers_but_not_the_one_it_sets(self) -> None:
        decision = run(token(), jwt_headers=("x-jwt-sub", "x-jwt-role"))
        assert decision.headers_to_set == (("x-jwt-sub", "alice"),)
        assert decision.headers_to_remove == ("x-jwt-role",)
        assert decision.metadata == {"reason": "ok", "sub": "alice"}

    def test_without_sub_the_client_sub_header_is_removed(self) -> None:
        decision = run(token({"exp": NOW + 60}), jwt_headers=("x-jwt-sub",))
        assert decision.allowed
        assert decision.headers_to_set == ()
        assert decision.headers_to_remove == ("x-jwt-sub",)

    def test_jwt_disabled_allows_without_token_and_still_strips(self) -> None:
        decision = run(None, settings=replace(SETTINGS, jwt_enabled=False),
                       jwt_headers=("x-jwt-sub",))
        assert decision.reason is Reason.JWT_DISABLED and decision.allowed
        assert decision.headers_to_remove == ("x-jwt-sub",)
