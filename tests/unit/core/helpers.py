"""What the core's unit tests share: the settings and keys they decide with, a fixed clock,
and builders for request views, tokens and decisions."""

from __future__ import annotations

from typing import Any

from authz.core.decide import decide
from authz.core.decision import Decision, Reason
from authz.core.mint import mint_hmac
from authz.core.request import RequestView
from authz.keys.snapshot import KeySnapshot
from authz.settings.model import Settings
from tests.credentials import SECRET, SECRET_BYTES
from tests.jwks_server import rsa_key

NOW = 1_800_000_000.0
SETTINGS = Settings(hs256_secret=SECRET)
KEYS = KeySnapshot.build(secrets=(SECRET_BYTES,))
RSA_KEY = rsa_key("core-rsa")


def view(authorization: str | None, **kw: Any) -> RequestView:
    base: dict[str, Any] = {"authorization": authorization, "source_ip": "203.0.113.7"}
    base.update(kw)
    return RequestView(**base)


def run(
    authorization: str | None,
    settings: Settings = SETTINGS,
    keys: KeySnapshot = KEYS,
    now: float = NOW,
    **kw: Any,
) -> Decision:
    return decide(view(authorization, **kw), keys, settings, now)


def token(claims: dict[str, Any] | None = None, **kw: Any) -> str:
    return mint_hmac({"sub": "alice", "exp": NOW + 600} if claims is None else claims,
                     SECRET_BYTES, **kw)


def reason(authorization: str | None, **kw: Any) -> Reason:
    return run(authorization, **kw).reason


def assert_malformed(decision: Decision) -> None:
    """A 401 for a malformed token, with RFC 6750's invalid_token challenge."""
    assert decision.reason is Reason.MALFORMED and decision.status == 401
    challenge = dict(decision.headers_to_set)["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
