"""AuthzError, the base of every error authz raises on purpose.

`except AuthzError` catches what authz itself refuses, and nothing it did not expect (those
fail closed as the internal_error denial). Each error keeps the built-in base a caller
would reach for (ValueError for a bad value, RuntimeError for a failed action) beside it.

    AuthzError
    ├── TokenError          core.verify       a token refused; carries its Reason
    ├── SettingsError       settings.errors   a setting refused at start (exit 2)  ValueError
    ├── JWKSError           keys.jwk          a JWKS document refused              ValueError
    │   └── JWKSTooManyKeys keys.jwk          more usable keys than MAX_JWKS_KEYS
    ├── JWKSFetchError      keys.jwks_source  one fetch gave no usable key set
    ├── CheckOptionError    cli.check         an `authz check` option refused      ValueError
    ├── CheckFailedError    cli.check         no ext_authz answer from the target  RuntimeError
    ├── TokenOptionError    cli.token         an `authz token` option refused      ValueError
    └── EnvoyNotFoundError  _support          no Envoy binary or config to run     RuntimeError

Every message is safe to log and to show: none quotes a token or a secret.
"""

from __future__ import annotations

__all__ = ["AuthzError"]


class AuthzError(Exception):
    """An error authz raises on purpose; the tree of its subclasses is in the module doc."""
