"""TEMPORARY stand-in for the `stream-id` branch's `stream_id_of` (replaced at merge)."""

from __future__ import annotations

import re

__all__ = ["stream_id_of"]

_FILE = re.compile(r"^(?P<id>[A-Za-z0-9-]+?)(_[A-Za-z0-9]+)*(\d{4,})?\.(m3u8|ts|mp4|m4s)$")


def stream_id_of(path: str) -> str | None:
    """The stream id in `path` (minimal: `/{app}/streams/{id}...` files only)."""
    parts = path.split("/")
    if len(parts) < 4 or parts[2] not in ("streams", "chunked"):
        return None
    match = _FILE.match(parts[-1])
    return match["id"] if match else None
