"""The value converters of the flat settings: each takes a YAML value or an environment
string and returns the typed value or raises ValueError (whose text never holds a secret);
`CONVERTERS` says which one reads each flat setting."""

from __future__ import annotations

import ipaddress
import math
import re
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from authz.core.policy import Network
from authz.keys.secrets import MIN_SECRET_BYTES
from authz.settings.addresses import split_host_port
from authz.settings.errors import shown
from authz.settings.model import LogLevel

__all__ = [
    "CONVERTERS",
    "MAX_DRAIN_DELAY_SECONDS",
    "MAX_LEEWAY_SECONDS",
    "Raw",
    "address",
    "boolean",
    "ca_file",
    "cache_size",
    "cidrs",
    "issuer_url",
    "jwks_url",
    "log_level",
    "number",
    "optional_text",
    "secret",
    "string_list",
    "text",
    "within",
]

# Clock skew is seconds, at worst minutes: a leeway beyond this keeps long-expired tokens
# valid (1e15 would accept a token that expired in 1990), so it is refused, not clamped.
MAX_LEEWAY_SECONDS = 300
# A drain longer than this outlasts any sensible terminationGracePeriodSeconds.
MAX_DRAIN_DELAY_SECONDS = 120
_LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_JWKS_WELL_KNOWN = "/.well-known/jwks.json"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")


@dataclass(frozen=True, slots=True)
class Raw:
    """One source's value for a setting and where it came from, for error messages."""

    value: object
    origin: str  # "" for the environment: the setting's own name says it all


def text(value: object) -> str:
    """A string, stripped."""
    if isinstance(value, str):
        return value.strip()
    raise ValueError(f"must be a string, got {shown(value)}")


def optional_text(value: object) -> str | None:
    """A string, stripped; empty is None."""
    return text(value) or None


def boolean(value: object) -> bool:
    """A YAML boolean, or true/false, 1/0, yes/no, on/off in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"must be true/false (also 1/0, yes/no, on/off), got {shown(value)}")


def number(value: object) -> float:
    """A finite number (not a boolean), from YAML or a string."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise ValueError(f"must be a number, got {shown(value)}") from None
    else:
        raise ValueError(f"must be a number, got {shown(value)}")
    if not math.isfinite(result):
        raise ValueError(f"must be a finite number, got {shown(value)}")
    return result


def within(minimum: float, unit: str, maximum: float = math.inf) -> Callable[[object], float]:
    """A converter for a `number` from `minimum` to `maximum` `unit`s."""

    def convert(value: object) -> float:
        amount = number(value)
        if amount < minimum:
            raise ValueError(f"must be at least {minimum:g} {unit}, got {amount:g}")
        if amount > maximum:
            raise ValueError(f"must be at most {maximum:g} {unit}, got {amount:g}")
        return amount

    return convert


def cache_size(value: object) -> int:
    """A whole number, 0 (off) or more."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        size = int(value)
    else:
        raise ValueError(f"must be a whole number, got {shown(value)}")
    if size < 0:
        raise ValueError(f"must be 0 (off) or more, got {size}")
    return size


def string_list(value: object) -> tuple[str, ...]:
    """A YAML list of strings or a comma-separated string; empty items are dropped."""
    if isinstance(value, str):
        items: Iterable[object] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        raise ValueError(f"must be a list or a comma-separated string, got {shown(value)}")
    result: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"items must be strings, got {shown(item)}")
        if item.strip():
            result.append(item.strip())
    return tuple(dict.fromkeys(result))


def cidrs(value: object) -> tuple[Network, ...]:
    """CIDRs, v4 or v6; a bare address means that one host.

    Host bits are accepted and masked off (`10.1.2.3/8` is `10.0.0.0/8`), as Ant Media
    Server itself reads `remoteAllowedCIDR`, so an AMS properties file that works there
    works here; the prefix length, which decides what is allowed, is kept as written.
    An IPv4-mapped IPv6 CIDR (`::ffff:10.0.0.0/104`) is read as its IPv4 form (`10.0.0.0/8`).
    """
    networks: list[Network] = []
    for item in string_list(value):
        try:
            networks.append(_ipv4_form(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{shown(item)} is not a valid CIDR or IP address") from None
    return tuple(dict.fromkeys(networks))


def _ipv4_form(network: Network) -> Network:
    # The IP filter compares an IPv4 client in its IPv4 form, also when Envoy reports it
    # IPv4-mapped (`::ffff:10.1.2.3`), so a mapped network would never match anything.
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def address(value: object) -> str:
    """A listen address `host:port`; IPv6 hosts in brackets (`[::]:9001`), port 1-65535."""
    spelled = text(value)
    try:
        host, port = split_host_port(spelled)
    except ValueError as exc:
        raise ValueError(f"must be host:port, port 1-65535, IPv6 as [::]:port ({exc})") from None
    if port == 0:
        raise ValueError("port must be 1-65535, got 0")
    if spelled.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{shown(host)} is not an IPv6 address") from None
    elif not _HOSTNAME.match(host):
        raise ValueError(f"{shown(host)} is not a host name or IP address")
    return spelled


def secret(value: object) -> str | None:
    """An HMAC secret of at least MIN_SECRET_BYTES (UTF-8); empty is None."""
    # Never echo the value: this converter's messages must stay free of the secret.
    if not isinstance(value, str):
        raise ValueError("must be a string (quote it in YAML)")
    if not value:
        return None
    size = len(value.encode())
    if size < MIN_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes (UTF-8), got {size}")
    return value


def jwks_url(value: object) -> str | None:
    """An http(s) URL; a bare host gets the well-known JWKS path; empty is None."""
    # Not echoed either: a URL may carry credentials in its userinfo or query.
    spelled = text(value)
    if not spelled:
        return None
    if any(c.isspace() or not c.isprintable() for c in spelled):
        # http.client refuses such a URL at every fetch, quoting it.
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(spelled)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        # urllib cannot fetch it (http.client reads "password@host" as the port), and the
        # credential would reach the logs of every failed fetch.
        raise ValueError(
            "must not carry a user name or password (user:password@host); use a URL the "
            "JWKS server accepts without credentials"
        )
    if not parts.hostname:
        raise ValueError("must name a host")
    try:
        parts.port  # noqa: B018 - parsing the port is the validation
    except ValueError:
        raise ValueError("has an invalid port") from None
    if parts.path in ("", "/") and not parts.query:
        parts = parts._replace(path=_JWKS_WELL_KNOWN)
    return urlunsplit(parts._replace(scheme=parts.scheme.lower(), fragment=""))


def issuer_url(value: object) -> str | None:
    """An OpenID Provider's issuer identifier for discovery: an http(s) URL with a host and
    no query or fragment (OpenID Connect Discovery 1.0 section 2), kept exactly as written
    (a trailing slash is part of the identifier: tokens must carry the same); empty is None."""
    spelled = text(value)
    if not spelled:
        return None
    if any(c.isspace() or not c.isprintable() for c in spelled):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(spelled)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"must be an https:// (or http://) URL, got {shown(spelled)}")
    if not parts.hostname or "@" in parts.netloc:
        raise ValueError(f"must name a host (and no user or password), got {shown(spelled)}")
    if parts.query or parts.fragment or spelled.endswith(("?", "#")):
        raise ValueError(f"must have no query or fragment, got {shown(spelled)}")
    try:
        parts.port  # noqa: B018 - parsing the port is the validation
    except ValueError:
        raise ValueError("has an invalid port") from None
    return spelled


def ca_file(value: object) -> str | None:
    """A readable PEM CA bundle's path; empty is None."""
    path = text(value)
    if not path:
        return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:  # before OSError: it is a subclass
        raise ValueError(f"{path} holds no usable PEM certificate") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def log_level(value: object) -> LogLevel:
    """debug, info, warning or error, in any case."""
    level = text(value).lower()
    if level not in _LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}, got {shown(value)}")
    return level


# The flat settings: the Settings field each key fills and how its value is read.
CONVERTERS: dict[str, Callable[[object], object]] = {
    "grpc_address": address,
    "http_address": address,
    "http_authz_address": lambda v: address(v) if text(v) else None,
    "hs256_secret": secret,
    "hs256_secret_file": optional_text,
    "jwks_url": jwks_url,
    "jwks_refresh_seconds": within(1, "second(s)"),
    "jwks_ca_file": ca_file,
    "issuer": optional_text,
    "audience": string_list,
    "leeway_seconds": within(0, "seconds", MAX_LEEWAY_SECONDS),
    "require_exp": boolean,
    "allowed_cidrs": cidrs,
    "jwt_enabled": boolean,
    "log_level": log_level,
    "drain_delay_seconds": within(0, "seconds", MAX_DRAIN_DELAY_SECONDS),
    "token_cache_size": cache_size,
    "stream_secret": secret,
    "stream_secret_file": optional_text,
    "play_jwt_enabled": boolean,
    "publish_jwt_enabled": boolean,
    "ams_webhook_address": lambda v: address(v) if text(v) else None,
    "cluster_secret": secret,
    "tls_cert_file": optional_text,
    "tls_key_file": optional_text,
    "tls_client_ca_file": optional_text,
    "oidc_issuer": issuer_url,
}
