"""KeyStore: holds the current KeySnapshot; key sources swap it, Checks read it.

Reading is one attribute load (`store.snapshot`) with no lock: the snapshot is
immutable and rebinding an attribute is atomic, so a Check sees the old key material
or the new, never a mix. Writers serialize on a lock so that a secret reload and a
JWKS refresh landing together cannot drop each other's update.

HMAC secret order (the first one signs, all verify): the lines of
AUTHZ_HS256_SECRET_FILE in file order, then AUTHZ_HS256_SECRET if it is not already
among them. The file is the rotated source, so its first line is the current signing
secret; a static env secret stays valid for verification beside it.
"""

from __future__ import annotations

import threading

from authz.keys.secret_file import read_secret_file
from authz.keys.snapshot import KeySnapshot, PublicKey
from authz.settings import Settings


class KeyStore:
    """The current KeySnapshot in `snapshot`, plus the swaps the key sources use."""

    def __init__(self, env_secret: bytes | None, file_secrets: tuple[bytes, ...],
                 jwks_configured: bool) -> None:
        self._env_secret = env_secret
        self._lock = threading.Lock()
        self.snapshot = KeySnapshot.build(
            secrets=self._combine(file_secrets), jwks_configured=jwks_configured
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyStore:
        """A store with the secrets of `settings` (the file read now) and no JWKS keys yet.

        Raises SecretFileError when the secret file is unreadable, empty or invalid.
        """
        env = settings.hs256_secret.encode("utf-8") if settings.hs256_secret else None
        file_secrets = (
            read_secret_file(settings.hs256_secret_file) if settings.hs256_secret_file else ()
        )
        return cls(env, file_secrets, jwks_configured=settings.jwks_url is not None)

    def set_file_secrets(self, file_secrets: tuple[bytes, ...]) -> None:
        """Swap in freshly read secret-file lines (the env secret is kept after them)."""
        secrets = self._combine(file_secrets)
        with self._lock:
            self.snapshot = self.snapshot.with_secrets(secrets)

    def set_public_keys(self, keys: tuple[PublicKey, ...]) -> None:
        """Swap in a freshly fetched JWKS key set (marks the key set as loaded)."""
        with self._lock:
            self.snapshot = self.snapshot.with_public_keys(keys)

    def _combine(self, file_secrets: tuple[bytes, ...]) -> tuple[bytes, ...]:
        if self._env_secret is None or self._env_secret in file_secrets:
            return file_secrets
        return (*file_secrets, self._env_secret)
