"""Watching a secret file (AUTHZ_HS256_SECRET_FILE, AUTHZ_STREAM_SECRET_FILE) for rotation.

The format and its validation are `authz.keys.secrets.read_secret_file`'s (the same rules
at start and on every reload); the first secret signs, all verify. How a change is noticed
(Kubernetes symlink swaps included) is `authz.keys.file_watch`'s.
"""

from __future__ import annotations

import logging

from authz.keys.file_watch import FilePoller, Signature
from authz.keys.secrets import read_secret_file
from authz.keys.store import KeyStore
from authz.observability import SECRET_RELOAD_FAILURE, SECRET_RELOAD_SUCCESS
from authz.settings.errors import SettingsError

__all__ = ["POLL_SECONDS", "SecretFileWatcher"]

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


class SecretFileWatcher:
    """Reloads the secret file into a KeyStore whenever it changes; keeps the last good
    secrets when it becomes missing, unreadable, empty or invalid (logged and counted)."""

    def __init__(
        self,
        path: str,
        store: KeyStore,
        poll_seconds: float = POLL_SECONDS,
        setting: str = "AUTHZ_HS256_SECRET_FILE",
    ) -> None:
        self._path = path
        self._setting = setting
        self._store = store
        self._poller = FilePoller((path,), self._load, poll_seconds)

    def start(self) -> None:
        """Load the file now and keep polling it in the running event loop."""
        self._poller.start()

    async def stop(self) -> None:
        """Stop polling."""
        await self._poller.stop()

    def _load(self, signatures: tuple[Signature | None, ...]) -> None:
        try:
            if signatures[0] is None:
                raise SettingsError(self._setting, f"cannot stat {self._path}")
            secrets = read_secret_file(self._path, self._setting)
        except SettingsError as exc:
            SECRET_RELOAD_FAILURE.inc()
            log.warning("secret file unusable; keeping the last good secrets",
                        extra={"path": self._path, "setting": self._setting, "error": str(exc)})
            return
        self._store.set_file_secrets(secrets)
        SECRET_RELOAD_SUCCESS.inc()
        log.info("secret file loaded",
                 extra={"path": self._path, "setting": self._setting, "secrets": len(secrets)})
