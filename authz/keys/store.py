"""KeyStore: holds the current KeySnapshot; key sources swap it, Checks read it.

Reading is one attribute load (`store.snapshot`) with no lock: the snapshot is
immutable and rebinding an attribute is atomic, so a Check sees the old key material
or the new, never a mix. Writers serialize on a lock so that a secret reload and a
JWKS refresh landing together cannot drop each other's update.

HMAC secret order (first signs, all verify) is `Settings.secrets_with`'s: the secret
file's lines in file order, then AUTHZ_HS256_SECRET.
"""

from __future__ import annotations

import threading

from authz.keys.snapshot import KeySnapshot, PublicKey
from authz.settings import Settings


class KeyStore:
    """The current KeySnapshot in `snapshot`, plus the swaps the key sources use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self.snapshot = KeySnapshot.build(
            secrets=settings.hs256_secrets, jwks_configured=settings.jwks_url is not None
        )

    def set_file_secrets(self, file_secrets: tuple[bytes, ...]) -> None:
        """Swap in freshly read secret-file lines (the plain secret is kept after them)."""
        secrets = self._settings.secrets_with(file_secrets)
        with self._lock:
            self.snapshot = self.snapshot.with_secrets(secrets)

    def set_public_keys(self, keys: tuple[PublicKey, ...]) -> None:
        """Swap in a freshly fetched JWKS key set (marks the key set as loaded)."""
        with self._lock:
            self.snapshot = self.snapshot.with_public_keys(keys)
