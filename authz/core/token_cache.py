"""The verified-token cache: skips repeated signature checks, never the time or key checks."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from authz.core.verify import VerifiedToken
from authz.keys.snapshot import KeySnapshot

__all__ = ["TokenCache"]

_NO_CLAIMS: MappingProxyType[str, Any] = MappingProxyType({})


def _key(token: str) -> bytes:
    # A SHA-256 digest (65 bytes as an object) instead of the token text (~290 bytes for a
    # typical HS256 token, far more for RS256): 100k entries fit the memory budget.
    return hashlib.sha256(token.encode()).digest()


class TokenCache:
    """A bounded LRU map from token to its VerifiedToken, safe to share between threads.

    Only tokens whose signature verified are stored, so forged or junk tokens cannot
    evict good entries. A hit is served only while the current snapshot still holds the
    verifying key choice (`KeySnapshot.key_ids`: the secret, or the JWKS entry with its
    kid, algs and key material, for the token's alg), so a hit always equals a fresh
    decision; time claims are re-checked by the caller on every use. With
    `keep_claims` false (no policy reads claims beyond sub/iss/aud and the times) the
    claims mapping is not kept, which halves an entry.

    Each lookup's outcome goes to `on_lookup` (True: hit), so the caller counts it; the
    cache itself keeps no metrics. No lock: every OrderedDict method used here is one C
    call under the GIL, and a lookup that races another thread's eviction is a miss.
    """

    def __init__(
        self,
        max_entries: int,
        keep_claims: bool = True,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        self._max = max_entries
        self._keep_claims = keep_claims
        self._on_lookup = on_lookup
        self._entries: OrderedDict[bytes, VerifiedToken] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, keys: KeySnapshot) -> VerifiedToken | None:
        """The cached verification of `token`, if its key is still in `keys`."""
        key = _key(token)
        verified = self._entries.get(key)
        if verified is not None:
            if verified.key_id not in keys.key_ids:
                self._entries.pop(key, None)
                verified = None
            else:
                # Hot path: a bare try costs nothing, contextlib.suppress is a call.
                try:  # noqa: SIM105
                    self._entries.move_to_end(key)
                except KeyError:  # evicted by another thread since the get: still valid
                    pass
        if self._on_lookup is not None:
            self._on_lookup(verified is not None)
        return verified

    def put(self, token: str, verified: VerifiedToken) -> None:
        """Remember a verification, evicting the least recently used past the bound."""
        if self._max <= 0:
            return
        if not self._keep_claims:
            verified = replace(verified, claims=_NO_CLAIMS)
        self._entries[_key(token)] = verified
        while len(self._entries) > self._max:
            try:
                self._entries.popitem(last=False)
            except KeyError:  # emptied by other threads meanwhile
                break
