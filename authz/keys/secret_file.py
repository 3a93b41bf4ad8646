"""Watching a secret file (AUTHZ_HS256_SECRET_FILE, AUTHZ_STREAM_SECRET_FILE) for rotation.

The format and its validation are `authz.keys.secrets.read_secret_file`'s (the same rules
at start and on every reload); the first secret signs, all verify.

The watcher polls `stat` of the path (following symlinks) plus its resolved path, so
it sees an in-place edit, a rename over the file, and the Kubernetes Secret volume
update, which swaps the `..data` symlink to a new timestamped directory.
"""

from __future__ import annotations

import asyncio
import logging
import os

from authz.keys.secrets import read_secret_file
from authz.keys.store import KeyStore
from authz.observability import SECRET_RELOAD_FAILURE, SECRET_RELOAD_SUCCESS
from authz.settings.errors import SettingsError

__all__ = ["POLL_SECONDS", "SecretFileWatcher"]

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0

_Signature = tuple[str, int, int, int, int, int]


def _signature(path: str) -> _Signature | None:
    try:
        st = os.stat(path)
        real = os.path.realpath(path)
    except OSError:
        return None
    return (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


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
        self._poll_seconds = poll_seconds
        self._seen: _Signature | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Load the file now and keep polling it in the running event loop."""
        self._check()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop polling."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # asyncio.wait: a cancellation of the caller itself must still propagate.
            await asyncio.wait([task])

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                self._check()
            except Exception:
                # The watcher must outlive any surprise; the last good secrets stay.
                log.exception("secret file check failed", extra={"path": self._path})

    def _check(self) -> None:
        # stat before read: a change landing between the two is seen again next poll.
        signature = _signature(self._path)
        if signature == self._seen:
            return
        self._seen = signature
        try:
            if signature is None:
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
