"""authz/core/policy.py: the route's policy (by name, `default` included), the IP filter,
required claims, and the claims forwarded as headers."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_network

import pytest

from authz.core.decision import Reason
from authz.core.policy import ClaimRule, Policy
from tests.unit.core.helpers import SETTINGS, reason, run, token


class TestUpstreamHeaders:
    @pytest.mark.parametrize("sub", ["a\r\nx-evil: 1", "tab\there", "nul\x00", "é", " lead", ""])
    def test_illegal_sub_is_not_forwarded(self, sub: str) -> None:
        decision = run(token({"sub": sub}), jwt_headers=("x-jwt-sub",))
        assert decision.allowed
        assert decision.headers_to_set == ()
        assert decision.headers_to_remove == ("x-jwt-sub",)


class TestIpFilter:
    SETTINGS = replace(
        SETTINGS, allowed_cidrs=(ip_network("10.0.0.0/8"), ip_network("2001:db8::/32"))
    )

    @pytest.mark.parametrize(
        ("ip", "expected"),
        [
            ("10.1.2.3", Reason.OK),
            ("::ffff:10.1.2.3", Reason.OK),
            ("2001:db8::1", Reason.OK),
            ("11.0.0.1", Reason.IP_NOT_ALLOWED),
            ("2001:db9::1", Reason.IP_NOT_ALLOWED),
            (None, Reason.IP_NOT_ALLOWED),
            ("not-an-ip", Reason.IP_NOT_ALLOWED),
            ("", Reason.IP_NOT_ALLOWED),
        ],
    )
    def test_source_ip(self, ip: str | None, expected: Reason) -> None:
        decision = run(token(), settings=self.SETTINGS, source_ip=ip)
        assert decision.reason is expected
        if expected is Reason.IP_NOT_ALLOWED:
            assert decision.status == 403
            assert not any(name == "www-authenticate" for name, _ in decision.headers_to_set)

    def test_ip_filter_and_jwt_both_apply(self) -> None:
        assert reason(None, settings=self.SETTINGS, source_ip="10.0.0.1") is Reason.MISSING_TOKEN
        assert reason(token(), settings=self.SETTINGS, source_ip="1.1.1.1") is Reason.IP_NOT_ALLOWED

    def test_ip_filter_applies_with_jwt_disabled(self) -> None:
        settings = replace(self.SETTINGS, jwt_enabled=False)
        assert reason(None, settings=settings, source_ip="1.1.1.1") is Reason.IP_NOT_ALLOWED
        assert reason(None, settings=settings, source_ip="10.0.0.1") is Reason.JWT_DISABLED


class TestPolicies:
    SETTINGS = replace(
        SETTINGS,
        policies={
            "admin": Policy(
                name="admin",
                required_claims=(
                    ClaimRule("role", "one_of", ("admin", "publisher")),
                    ClaimRule("scope", "contains", ("publish",)),
                ),
                forward_claims=(("role", "x-jwt-role"), ("level", "x-jwt-level")),
            ),
            "open": Policy(name="open", jwt_enabled=False),
        },
    )

    def test_unknown_policy(self) -> None:
        decision = run(token(), settings=self.SETTINGS, context={"policy": "nope"})
        assert decision.reason is Reason.UNKNOWN_POLICY and decision.status == 403

    def test_required_claims(self) -> None:
        ctx = {"policy": "admin"}
        good = {"sub": "a", "role": "admin", "scope": "read publish", "level": 3}
        decision = run(token(good), settings=self.SETTINGS, context=ctx,
                       jwt_headers=("x-jwt-role", "x-jwt-other"))
        assert decision.reason is Reason.OK
        assert decision.headers_to_set == (
            ("x-jwt-sub", "a"), ("x-jwt-role", "admin"), ("x-jwt-level", "3"))
        assert decision.headers_to_remove == ("x-jwt-other",)
        for bad in (
            {"sub": "a", "role": "viewer", "scope": "publish"},
            {"sub": "a", "scope": "publish"},
            {"sub": "a", "role": "admin", "scope": "publisher"},
            {"sub": "a", "role": ["admin"], "scope": "publish"},
        ):
            decision = run(token(bad), settings=self.SETTINGS, context=ctx)
            assert decision.reason is Reason.INSUFFICIENT_SCOPE and decision.status == 403
        assert reason(token({"sub": "a", "role": "admin", "scope": ["publish"]}),
                      settings=self.SETTINGS, context=ctx) is Reason.OK

    def test_policy_without_jwt(self) -> None:
        assert reason(None, settings=self.SETTINGS, context={"policy": "open"}) \
            is Reason.JWT_DISABLED
        assert reason(None, settings=self.SETTINGS) is Reason.MISSING_TOKEN

    @pytest.mark.parametrize(
        ("scope", "expected"),
        [
            ("read admin", Reason.OK),
            ("admin", Reason.OK),
            ("read  admin ", Reason.OK),
            ("read\u00a0admin", Reason.INSUFFICIENT_SCOPE),
            ("read\tadmin", Reason.INSUFFICIENT_SCOPE),
            ("read\nadmin", Reason.INSUFFICIENT_SCOPE),
            ("read\u2003admin", Reason.INSUFFICIENT_SCOPE),
            ("read\u3000admin", Reason.INSUFFICIENT_SCOPE),
            ("\u00a0admin", Reason.INSUFFICIENT_SCOPE),
        ],
    )
    def test_contains_splits_scopes_on_the_space_character_only(
        self, scope: str, expected: Reason
    ) -> None:
        # RFC 6749 section 3.3: scope tokens are separated by U+0020, nothing else.
        settings = replace(SETTINGS, policies={"scoped": Policy(
            name="scoped", required_claims=(ClaimRule("scope", "contains", ("admin",)),),
        )})
        claims = {"sub": "a", "scope": scope}
        assert reason(token(claims), settings=settings, context={"policy": "scoped"}) \
            is expected

    def test_the_name_default_names_the_default_policy(self) -> None:
        settings = replace(self.SETTINGS, allowed_cidrs=(ip_network("203.0.113.0/24"),))
        named = run(token(), settings=settings, context={"policy": "default"})
        unnamed = run(token(), settings=settings)
        assert named == unnamed and named.reason is Reason.OK
        assert reason(token(), settings=settings, context={"policy": "default"},
                      source_ip="198.51.100.1") is Reason.IP_NOT_ALLOWED
        assert reason(None, settings=settings, context={"policy": "default"}) \
            is Reason.MISSING_TOKEN

    def test_a_policy_written_out_as_default_is_the_default_for_both(self) -> None:
        settings = replace(self.SETTINGS, policies={
            **self.SETTINGS.policies,
            "default": Policy(name="default", required_claims=(
                ClaimRule("scope", "contains", ("read",)),
            )),
        })
        reader = token({"sub": "a", "scope": "read"})
        for context in ({}, {"policy": "default"}):
            assert reason(reader, settings=settings, context=context) is Reason.OK
            assert reason(token(), settings=settings, context=context) \
                is Reason.INSUFFICIENT_SCOPE
