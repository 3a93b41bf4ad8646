"""One token against one key snapshot: shape, the verified-token cache, signature, times
(Envoy's jwt_authn `authenticator`). Shared by the REST, play and webhook rules."""

from __future__ import annotations

from authz.core.token_cache import TokenCache
from authz.core.verify import VerifiedToken, check_shape, check_times, verify_token
from authz.keys.snapshot import KeySnapshot

__all__ = ["authenticate"]


def authenticate(
    token: str,
    keys: KeySnapshot,
    now: float,
    leeway: float,
    require_exp: bool,
    cache: TokenCache | None = None,
) -> VerifiedToken:
    """`token` verified against `keys` and valid at `now`; raises TokenError otherwise."""
    # Size and shape first: junk never costs a cache hash nor counts as a cache miss.
    check_shape(token)
    verified = cache.get(token, keys) if cache is not None else None
    if verified is None:
        verified = verify_token(token, keys)
        if cache is not None:
            cache.put(token, verified)
    check_times(verified, now, leeway, require_exp)
    return verified
