"""Minting: what `authz token` signs verifies under the core's own rules."""

from __future__ import annotations

import pytest

from authz.core.mint import mint_hmac
from authz.core.verify import verify_token
from authz.keys.snapshot import KeySnapshot
from tests.credentials import LONG_SECRET


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_a_minted_token_verifies_with_its_secret(alg: str) -> None:
    token = mint_hmac({"sub": "alice", "exp": 2_000_000_000}, LONG_SECRET, alg, {"kid": "k"})
    verified = verify_token(token, KeySnapshot.build(secrets=(LONG_SECRET,)))
    assert verified.sub == "alice" and verified.exp == 2_000_000_000
