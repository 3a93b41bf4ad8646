"""KeyStore: holds the current KeySnapshot; key sources swap it, Checks read it.

Reading is one attribute load (`store.snapshot`) with no lock: the snapshot is
immutable and rebinding an attribute is atomic, so a Check sees the old key material
or the new, never a mix. Writers serialize on a lock so that a secret reload and a
JWKS refresh landing together cannot drop each other's update.

HMAC secret order (first signs, all verify) is `authz.keys.secrets.hmac_secrets`': the
secret file's lines in file order, then AUTHZ_HS256_SECRET.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

from authz.keys.secrets import hmac_secrets
from authz.keys.snapshot import STREAM_ALGS, IssuerKeys, KeySnapshot, PublicKey

__all__ = ["IssuerSettings", "KeySettings", "KeyStore", "StreamKeySettings"]


class IssuerSettings(Protocol):
    """One identity provider as the settings name it (`authz.settings.model.IssuerConfig`)."""

    @property
    def issuer(self) -> str: ...

    @property
    def jwks_url(self) -> str | None: ...

    @property
    def audience(self) -> tuple[str, ...]: ...

    @property
    def algorithms(self) -> frozenset[str]: ...


class KeySettings(Protocol):
    """The key settings a KeyStore starts from (`authz.settings.model.Settings` is one)."""

    @property
    def hs256_secret(self) -> str | None: ...

    @property
    def hs256_file_secrets(self) -> tuple[bytes, ...]: ...

    @property
    def jwks_url(self) -> str | None: ...

    @property
    def issuers(self) -> Sequence[IssuerSettings]: ...


class StreamKeySettings(Protocol):
    """The stream-secret settings (`authz.settings.model.Settings` is one)."""

    @property
    def stream_secret(self) -> str | None: ...

    @property
    def stream_file_secrets(self) -> tuple[bytes, ...]: ...


class KeyStore:
    """The current KeySnapshot in `snapshot`, plus the swaps the key sources use."""

    def __init__(self, settings: KeySettings) -> None:
        self._plain_secret = settings.hs256_secret
        self._lock = threading.Lock()
        self.snapshot = KeySnapshot.build(
            secrets=hmac_secrets(settings.hs256_file_secrets, self._plain_secret),
            jwks_configured=settings.jwks_url is not None,
            issuers=tuple(
                IssuerKeys.build(p.issuer, p.algorithms, p.audience) for p in settings.issuers
            ),
        )

    @classmethod
    def of_stream_secrets(cls, settings: StreamKeySettings) -> KeyStore:
        """The store of the stream secrets (AUTHZ_STREAM_SECRET, AUTHZ_STREAM_SECRET_FILE):
        HS256 only, identities apart from the REST secrets'; the same watcher reloads it."""
        store = cls.__new__(cls)
        store._plain_secret = settings.stream_secret
        store._lock = threading.Lock()
        store.snapshot = KeySnapshot.build(
            secrets=hmac_secrets(settings.stream_file_secrets, settings.stream_secret),
            hmac_algs=STREAM_ALGS,
            purpose="stream",
        )
        return store

    def set_file_secrets(self, file_secrets: tuple[bytes, ...]) -> None:
        """Swap in freshly read secret-file lines (the plain secret is kept after them)."""
        secrets = hmac_secrets(file_secrets, self._plain_secret)
        with self._lock:
            self.snapshot = self.snapshot.with_secrets(secrets)

    def set_public_keys(self, keys: tuple[PublicKey, ...]) -> None:
        """Swap in a freshly fetched JWKS key set (marks the key set as loaded)."""
        with self._lock:
            self.snapshot = self.snapshot.with_public_keys(keys)

    def set_issuer_keys(self, issuer: str, keys: tuple[PublicKey, ...]) -> None:
        """Swap in a freshly fetched key set of the identity provider `issuer`."""
        with self._lock:
            self.snapshot = self.snapshot.with_issuer_keys(issuer, keys)
