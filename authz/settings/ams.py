"""Ant Media Server's `red5-web.properties`: the Java properties parser (`parse_properties`)
and which properties fill which setting (`AMS_KEYS`, `read_ams`)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from authz.settings import convert
from authz.settings.convert import Raw
from authz.settings.errors import SettingsError

__all__ = ["AMS_KEYS", "parse_properties", "read_ams"]

# red5-web.properties keys and the setting each fills.
AMS_KEYS = {
    "settings.jwtControlEnabled": "jwt_enabled",
    "settings.jwtSecretKey": "hs256_secret",
    "settings.jwksURL": "jwks_url",
    "settings.remoteAllowedCIDR": "allowed_cidrs",
    "settings.jwtStreamSecretKey": "stream_secret",
    "settings.playJwtControlEnabled": "play_jwt_enabled",
    "settings.publishJwtControlEnabled": "publish_jwt_enabled",
    "settings.clusterCommunicationKey": "cluster_secret",
}


def _unescape_properties(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", text[i + 2 : i + 6]):
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
            continue
        out.append({"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(nxt, nxt))
        i += 2
    return "".join(out)


def _logical_lines(text: str) -> Iterable[str]:
    """Java properties lines: comments dropped, backslash continuations joined."""
    pending: str | None = None
    for line in text.splitlines():
        if pending is None:
            line = line.lstrip(" \t\f")
            if not line or line[0] in "#!":
                continue
        else:
            line = pending + line.lstrip(" \t\f")
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            pending = line[:-1]
            continue
        pending = None
        yield line
    if pending is not None:
        yield pending


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java `.properties` text: `key=value`, `key: value` or `key value`, with
    `#`/`!` comments, backslash continuation and escapes (`\\t`, `\\uXXXX`, ...). Last wins."""
    result: dict[str, str] = {}
    for line in _logical_lines(text):
        # The key ends at the first unescaped '=', ':' or whitespace.
        match = re.match(r"((?:\\.|[^\\=:\s])*)\s*[=:]?\s*(.*)", line, re.DOTALL)
        assert match is not None  # the pattern matches every string
        result[_unescape_properties(match[1])] = _unescape_properties(match[2])
    return result


def read_ams(path: str) -> dict[str, Raw]:
    """The settings an AMS `red5-web.properties` file gives (`--ams-properties`): non-empty
    `AMS_KEYS` properties, and no IP filter when `settings.ipFilterEnabled` is false.

    Raises `SettingsError` when the file cannot be read or `ipFilterEnabled` is no boolean.
    """
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as exc:
        raise SettingsError(
            "--ams-properties", f"cannot read {path}: {exc.strerror or exc}"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # java.util.Properties.load(InputStream) reads ISO-8859-1.
        text = data.decode("latin-1")
    properties = parse_properties(text)
    found: dict[str, Raw] = {}
    for ams_key, key in AMS_KEYS.items():
        value = properties.get(ams_key, "").strip()
        if value:
            found[key] = Raw(value, f"from {ams_key} in {path}")
    ip_filter = properties.get("settings.ipFilterEnabled", "").strip()
    if ip_filter:
        try:
            if not convert.boolean(ip_filter):
                found.pop("allowed_cidrs", None)
        except ValueError as exc:
            raise SettingsError("settings.ipFilterEnabled", f"{exc} (in {path})") from None
    return found
