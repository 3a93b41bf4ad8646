"""How a bad setting is reported: `SettingsError` (one line, never a secret), the name a
flat setting goes by (`env_name`), and the helpers messages share (`shown`, `suggest`)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from authz.errors import AuthzError

__all__ = ["ENV_PREFIX", "SettingsError", "env_name", "shown", "suggest"]

ENV_PREFIX = "AUTHZ_"


class SettingsError(AuthzError, ValueError):
    """An invalid setting. `str()` is one line, `<setting>: <message>`, without secret values."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(setting, message)
        self.setting = setting
        self.message = " ".join(message.split())

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


def env_name(key: str) -> str:
    """The environment variable of flat setting `key`, also how its errors name it."""
    return ENV_PREFIX + key.upper()


def shown(value: object) -> str:
    """A non-secret value for an error message, short and on one line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def suggest(key: object, known: Iterable[str]) -> str:
    """` (did you mean X?)` for the closest of `known`, or nothing."""
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
