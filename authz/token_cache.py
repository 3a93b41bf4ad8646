"""The verified-token cache: skips repeated signature checks, never the time or key checks."""

from __future__ import annotations

from collections import OrderedDict

from authz.keys.snapshot import KeySnapshot
from authz.observability import TOKEN_CACHE_HIT, TOKEN_CACHE_MISS
from authz.verify import VerifiedToken


class TokenCache:
    """A bounded LRU map from token text to its VerifiedToken.

    Only tokens whose signature verified are stored, so forged or junk tokens cannot
    evict good entries. A hit is served only while the verifying key is still in the
    current snapshot; time claims are re-checked by the caller on every use.
    """

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[str, VerifiedToken] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, keys: KeySnapshot) -> VerifiedToken | None:
        """The cached verification of `token`, if its key is still in `keys`."""
        verified = self._entries.get(token)
        if verified is None:
            TOKEN_CACHE_MISS.inc()
            return None
        if verified.key_id not in keys.key_ids:
            del self._entries[token]
            TOKEN_CACHE_MISS.inc()
            return None
        self._entries.move_to_end(token)
        TOKEN_CACHE_HIT.inc()
        return verified

    def put(self, token: str, verified: VerifiedToken) -> None:
        """Remember a verification, evicting the least recently used past the bound."""
        if self._max <= 0:
            return
        self._entries[token] = verified
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
