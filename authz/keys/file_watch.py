"""Noticing that mounted files changed: `file_signature` of a path and `FilePoller`, which
calls back whenever the signatures of its paths change.

A signature is `stat` of the path (following symlinks) plus its resolved path, so it sees
an in-place edit, a rename over the file, and the Kubernetes Secret volume update, which
swaps the `..data` symlink to a new timestamped directory (the resolved path changes even
when size and times happen to match). Polling, not inotify: it works the same on every
filesystem a volume can be, and a change is seen within one poll period.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

__all__ = ["FilePoller", "Signature", "file_signature"]

log = logging.getLogger(__name__)

Signature = tuple[str, int, int, int, int, int]


def file_signature(path: str) -> Signature | None:
    """What changes when `path` (or the file it links to) changes; None when it cannot be
    stat'ed."""
    try:
        st = os.stat(path)
        real = os.path.realpath(path)
    except OSError:
        return None
    return (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class FilePoller:
    """Calls `on_change(signatures)` at start and whenever any signature of `paths`
    changes, polling every `poll_seconds` in the running event loop.

    Signatures are taken before `on_change` reads the files: a change landing between the
    two is seen again on the next poll.
    """

    def __init__(
        self,
        paths: tuple[str, ...],
        on_change: Callable[[tuple[Signature | None, ...]], None],
        poll_seconds: float,
    ) -> None:
        self.paths = paths
        self._on_change = on_change
        self._poll_seconds = poll_seconds
        self._seen: tuple[Signature | None, ...] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Check now and keep polling in the running event loop."""
        self.check()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop polling."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # asyncio.wait: a cancellation of the caller itself must still propagate.
            await asyncio.wait([task])

    def check(self) -> None:
        """Call back if a signature changed since the last check."""
        signatures = tuple(file_signature(path) for path in self.paths)
        if signatures == self._seen:
            return
        self._seen = signatures
        self._on_change(signatures)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                self.check()
            except Exception:
                # The poller must outlive any surprise; the last good material stays.
                log.exception("file check failed", extra={"paths": list(self.paths)})
