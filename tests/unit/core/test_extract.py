"""authz/core/extract.py: where the token comes from, the `authorization` header raw (Ant
Media's form) or as `Bearer`, and what makes the header itself malformed."""

from __future__ import annotations

import json

import pytest

from authz.core.decision import Reason
from tests.credentials import AMS_DOCS_TOKEN
from tests.unit.core.helpers import assert_malformed, run


class TestAuthorizationHeader:
    def test_ams_docs_token_raw_and_bearer(self) -> None:
        for header in (AMS_DOCS_TOKEN, f"Bearer {AMS_DOCS_TOKEN}", f"bEaReR  {AMS_DOCS_TOKEN}"):
            decision = run(header)
            assert decision.allowed and decision.reason is Reason.OK
            assert decision.headers_to_set == (("x-jwt-sub", "token"),)

    @pytest.mark.parametrize("header", [None, "", "   "])
    def test_missing(self, header: str | None) -> None:
        decision = run(header)
        assert decision.reason is Reason.MISSING_TOKEN and decision.status == 401
        assert ("www-authenticate", "Bearer") in decision.headers_to_set
        assert json.loads(decision.body) == {"error": "unauthorized", "reason": "missing_token"}

    @pytest.mark.parametrize(
        "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "Token " + AMS_DOCS_TOKEN]
    )
    def test_malformed_authorization(self, header: str) -> None:
        assert_malformed(run(header))
