"""HMAC secrets: the secret file's format (`read_secret_file`), the minimum length, and the
order the secrets take in a key snapshot (`hmac_secrets`: the file's lines, then the plain
secret; the first signs, all verify).

The same rules hold at start (the settings loader) and on every reload (the file watcher).
"""

from __future__ import annotations

from authz.settings.errors import SettingsError, env_name

__all__ = ["MIN_SECRET_BYTES", "hmac_secrets", "read_secret_file"]

MIN_SECRET_BYTES = 32
# A secret file is a few lines; the cap keeps a wrong path (a log, /dev/zero) from eating memory.
_MAX_SECRET_FILE_BYTES = 64 * 1024


def hmac_secrets(file_secrets: tuple[bytes, ...], plain: str | None) -> tuple[bytes, ...]:
    """The HMAC secrets given the secret file's current lines and the plain secret.

    The file comes first because it is the rotated source whose first line signs
    (SPEC section 2); the plain secret keeps verifying. Duplicates are dropped.
    """
    plain_secrets = (plain.encode(),) if plain is not None else ()
    return tuple(dict.fromkeys(file_secrets + plain_secrets))


def read_secret_file(path: str, setting: str = env_name("hs256_secret_file")) -> tuple[bytes, ...]:
    """The HMAC secrets in `path`: one per line, blank lines ignored, each at least 32 bytes.

    Line endings (LF or CRLF) are not part of a secret; nothing else is stripped. Raises
    `SettingsError` (naming `setting`, AUTHZ_HS256_SECRET_FILE unless told) when the file
    cannot be read, is too large, holds no secret or holds a short one.
    """
    try:
        with open(path, "rb") as stream:
            data = stream.read(_MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise SettingsError(setting, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_SECRET_FILE_BYTES:
        raise SettingsError(setting, f"{path} is larger than {_MAX_SECRET_FILE_BYTES} bytes")
    secrets: list[bytes] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        secret = line.removesuffix(b"\r")
        if not secret.strip():
            continue
        if len(secret) < MIN_SECRET_BYTES:
            raise SettingsError(
                setting,
                f"line {number} of {path} is {len(secret)} bytes; "
                f"each secret must be at least {MIN_SECRET_BYTES} bytes",
            )
        secrets.append(secret)
    if not secrets:
        raise SettingsError(setting, f"{path} holds no secret")
    return tuple(dict.fromkeys(secrets))
