"""The settings model: one typed, validated object from defaults, YAML, AMS properties and env.

`load_settings` layers the sources (later wins): built-in defaults, the YAML file (`--config`),
Ant Media Server's `red5-web.properties` (`--ams-properties`), then `AUTHZ_*` environment
variables. Every problem raises `SettingsError`, whose text is one line naming the setting and
never containing a secret.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast
from urllib.parse import urlsplit, urlunsplit

import yaml

from authz.settings.addresses import split_host_port

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The default policy's name: routes naming it, or none, get `Settings.default_policy`.
DEFAULT_POLICY = "default"
JSONValue = Any
LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class ClaimRule:
    """A required claim: `equals` one value, is `one_of` several, or `contains` a word.

    `contains` matches a word of a string split on U+0020 only (an OAuth `scope`, RFC 6749
    section 3.3) or an array member.
    """

    claim: str
    op: Literal["equals", "one_of", "contains"]
    values: tuple[JSONValue, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    """What one route requires. The default policy comes from the flat settings."""

    name: str
    jwt_enabled: bool = True
    allowed_networks: tuple[Network, ...] = ()
    issuer: str | None = None
    audiences: tuple[str, ...] = ()
    required_claims: tuple[ClaimRule, ...] = ()
    # (claim name, header name) pairs forwarded upstream on allow, besides x-jwt-sub.
    forward_claims: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of SPEC section 2 plus the project's own (cache size, CA bundle, policies).

    `hs256_file_secrets` holds the lines of `hs256_secret_file` as read at start;
    `hs256_secrets` is what the key snapshot starts with.
    """

    grpc_address: str = "0.0.0.0:9001"
    http_address: str = "0.0.0.0:9464"
    http_authz_address: str | None = None
    hs256_secret: str | None = field(default=None, repr=False)
    hs256_secret_file: str | None = None
    jwks_url: str | None = None
    jwks_refresh_seconds: float = 300.0
    jwks_ca_file: str | None = None
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    leeway_seconds: float = 60.0
    require_exp: bool = False
    allowed_cidrs: tuple[Network, ...] = ()
    jwt_enabled: bool = True
    log_level: LogLevel = "info"
    token_cache_size: int = 100_000
    policies: dict[str, Policy] = field(default_factory=dict)
    hs256_file_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    # Built once in __post_init__: every Check without a route policy reads it, and
    # building a Policy per Check cost about 0.7 us of a 3.4 us decision.
    default_policy: Policy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The policy for routes that name none: `policies.default`, else the flat settings.
        configured = self.policies.get(DEFAULT_POLICY)
        if configured is None:
            configured = Policy(
                name=DEFAULT_POLICY,
                jwt_enabled=self.jwt_enabled,
                allowed_networks=self.allowed_cidrs,
                issuer=self.issuer,
                audiences=self.audience,
            )
        object.__setattr__(self, "default_policy", configured)

    @property
    def hs256_secrets(self) -> tuple[bytes, ...]:
        """The HMAC secrets at start: the secret file's lines, then the plain secret."""
        return self.secrets_with(self.hs256_file_secrets)

    def secrets_with(self, file_secrets: tuple[bytes, ...]) -> tuple[bytes, ...]:
        """The HMAC secrets given the secret file's current lines (for the file watcher).

        The file comes first because it is the rotated source whose first line signs
        (SPEC section 2); the plain secret keeps verifying. Duplicates are dropped.
        """
        plain = (self.hs256_secret.encode(),) if self.hs256_secret is not None else ()
        return tuple(dict.fromkeys(file_secrets + plain))


class SettingsError(ValueError):
    """An invalid setting. `str()` is one line, `<setting>: <message>`, without secret values."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(setting, message)
        self.setting = setting
        self.message = " ".join(message.split())

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


MIN_SECRET_BYTES = 32
# Clock skew is seconds, at worst minutes: a leeway beyond this keeps long-expired tokens
# valid (1e15 would accept a token that expired in 1990), so it is refused, not clamped.
MAX_LEEWAY_SECONDS = 300
# A secret file is a few lines; the cap keeps a wrong path (a log, /dev/zero) from eating memory.
_MAX_SECRET_FILE_BYTES = 64 * 1024
_LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_JWKS_WELL_KNOWN = "/.well-known/jwks.json"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+$")  # RFC 9110 tchar, lowercase
_POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_PREFIX = "AUTHZ_"


def _env_name(key: str) -> str:
    return _ENV_PREFIX + key.upper()


def _shown(value: object) -> str:
    """A non-secret value for an error message, short and on one line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---- value converters: each takes a YAML value or a string and raises ValueError ----


def _text(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    raise ValueError(f"must be a string, got {_shown(value)}")


def _optional_text(value: object) -> str | None:
    return _text(value) or None


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"must be true/false (also 1/0, yes/no, on/off), got {_shown(value)}")


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"must be a number, got {_shown(value)}") from None
    else:
        raise ValueError(f"must be a number, got {_shown(value)}")
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {_shown(value)}")
    return number


def _within(
    minimum: float, unit: str, maximum: float = math.inf
) -> Callable[[object], float]:
    def convert(value: object) -> float:
        number = _number(value)
        if number < minimum:
            raise ValueError(f"must be at least {minimum:g} {unit}, got {number:g}")
        if number > maximum:
            raise ValueError(f"must be at most {maximum:g} {unit}, got {number:g}")
        return number

    return convert


def _cache_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        size = int(value)
    else:
        raise ValueError(f"must be a whole number, got {_shown(value)}")
    if size < 0:
        raise ValueError(f"must be 0 (off) or more, got {size}")
    return size


def _string_list(value: object) -> tuple[str, ...]:
    """A YAML list of strings or a comma-separated string; empty items are dropped."""
    if isinstance(value, str):
        items: Iterable[object] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        raise ValueError(f"must be a list or a comma-separated string, got {_shown(value)}")
    result: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"items must be strings, got {_shown(item)}")
        if item.strip():
            result.append(item.strip())
    return tuple(dict.fromkeys(result))


def _cidrs(value: object) -> tuple[Network, ...]:
    """CIDRs, v4 or v6; a bare address means that one host.

    Host bits are accepted and masked off (`10.1.2.3/8` is `10.0.0.0/8`), as Ant Media
    Server itself reads `remoteAllowedCIDR`, so an AMS properties file that works there
    works here; the prefix length, which decides what is allowed, is kept as written.
    An IPv4-mapped IPv6 CIDR (`::ffff:10.0.0.0/104`) is read as its IPv4 form (`10.0.0.0/8`).
    """
    networks: list[Network] = []
    for item in _string_list(value):
        try:
            networks.append(_ipv4_form(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{_shown(item)} is not a valid CIDR or IP address") from None
    return tuple(dict.fromkeys(networks))


def _ipv4_form(network: Network) -> Network:
    # The IP filter compares an IPv4 client in its IPv4 form, also when Envoy reports it
    # IPv4-mapped (`::ffff:10.1.2.3`), so a mapped network would never match anything.
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _address(value: object) -> str:
    """A listen address `host:port`; IPv6 hosts in brackets (`[::]:9001`), port 1-65535."""
    text = _text(value)
    try:
        host, port = split_host_port(text)
    except ValueError as exc:
        raise ValueError(f"must be host:port, port 1-65535, IPv6 as [::]:port ({exc})") from None
    if port == 0:
        raise ValueError("port must be 1-65535, got 0")
    if text.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{_shown(host)} is not an IPv6 address") from None
    elif not _HOSTNAME.match(host):
        raise ValueError(f"{_shown(host)} is not a host name or IP address")
    return text


def _secret(value: object) -> str | None:
    # Never echo the value: this converter's messages must stay free of the secret.
    if not isinstance(value, str):
        raise ValueError("must be a string (quote it in YAML)")
    if not value:
        return None
    size = len(value.encode())
    if size < MIN_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes (UTF-8), got {size}")
    return value


def _jwks_url(value: object) -> str | None:
    # Not echoed either: a URL may carry credentials in its userinfo or query.
    text = _text(value)
    if not text:
        return None
    if any(c.isspace() or not c.isprintable() for c in text):
        # http.client refuses such a URL at every fetch, quoting it.
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(text)
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


def _ca_file(value: object) -> str | None:
    path = _text(value)
    if not path:
        return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:  # before OSError: it is a subclass
        raise ValueError(f"{path} holds no usable PEM certificate") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def _log_level(value: object) -> LogLevel:
    level = _text(value).lower()
    if level not in _LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}, got {_shown(value)}")
    return level


# The flat settings: the Settings field each key fills and how its value is read.
_CONVERTERS: dict[str, Callable[[object], object]] = {
    "grpc_address": _address,
    "http_address": _address,
    "http_authz_address": lambda v: _address(v) if _text(v) else None,
    "hs256_secret": _secret,
    "hs256_secret_file": _optional_text,
    "jwks_url": _jwks_url,
    "jwks_refresh_seconds": _within(1, "second(s)"),
    "jwks_ca_file": _ca_file,
    "issuer": _optional_text,
    "audience": _string_list,
    "leeway_seconds": _within(0, "seconds", MAX_LEEWAY_SECONDS),
    "require_exp": _boolean,
    "allowed_cidrs": _cidrs,
    "jwt_enabled": _boolean,
    "log_level": _log_level,
    "token_cache_size": _cache_size,
}
_YAML_KEYS = (*_CONVERTERS, "policies")


@dataclass(frozen=True, slots=True)
class _Raw:
    """One source's value for a setting and where it came from, for error messages."""

    value: object
    origin: str  # "" for the environment: the setting's own name says it all


# ---- sources ----


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping instead of keeping the last."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, str) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as stream:
            document = yaml.load(stream, Loader=_UniqueKeyLoader)
    except OSError as exc:
        raise SettingsError("--config", f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SettingsError("--config", f"{path} is not UTF-8 text") from None
    except yaml.MarkedYAMLError as exc:
        # Only problem and position: the default text quotes the line, which may hold a secret.
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SettingsError("--config", f"{path}: invalid YAML: {exc.problem}{where}") from None
    except yaml.YAMLError:
        raise SettingsError("--config", f"{path}: invalid YAML") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise SettingsError(
            "--config", f"{path}: the top level must be a mapping of settings, "
            f"got a {type(document).__name__}"
        )
    for key in document:
        if key not in _YAML_KEYS:
            raise SettingsError(str(key), f"unknown setting in {path}{_suggest(key, _YAML_KEYS)}")
    return document


def _suggest(key: object, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


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


# red5-web.properties keys and the setting each fills.
_AMS_KEYS = {
    "settings.jwtControlEnabled": "jwt_enabled",
    "settings.jwtSecretKey": "hs256_secret",
    "settings.jwksURL": "jwks_url",
    "settings.remoteAllowedCIDR": "allowed_cidrs",
}


def _read_ams(path: str) -> dict[str, _Raw]:
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
    found: dict[str, _Raw] = {}
    for ams_key, key in _AMS_KEYS.items():
        value = properties.get(ams_key, "").strip()
        if value:
            found[key] = _Raw(value, f"from {ams_key} in {path}")
    ip_filter = properties.get("settings.ipFilterEnabled", "").strip()
    if ip_filter:
        try:
            if not _boolean(ip_filter):
                found.pop("allowed_cidrs", None)
        except ValueError as exc:
            raise SettingsError("settings.ipFilterEnabled", f"{exc} (in {path})") from None
    return found


# ---- loading ----


def load_settings(
    config_file: str | None, ams_properties_file: str | None, environ: Mapping[str, str]
) -> Settings:
    """Build and validate the settings from the sources, later wins: built-in defaults,
    the YAML file, the AMS `red5-web.properties` file, then `AUTHZ_*` variables of `environ`.

    An environment variable set to the empty string resets its setting to the built-in
    default (so `AUTHZ_ALLOWED_CIDRS=` turns a configured IP filter off); an empty AMS
    property is ignored. Raises `SettingsError` on the first invalid setting, and when the
    secret file is missing, unreadable or empty.
    """
    raw: dict[str, _Raw] = {}
    policies_yaml: object = None
    if config_file is not None:
        document = _read_yaml(config_file)
        policies_yaml = document.pop("policies", None)
        raw.update(
            (key, _Raw(value, f"from {key} in {config_file}"))
            for key, value in document.items()
            if value is not None
        )
    if ams_properties_file is not None:
        raw.update(_read_ams(ams_properties_file))
    for key in _CONVERTERS:
        value = environ.get(_env_name(key))
        if value == "":
            raw.pop(key, None)
        elif value is not None:
            raw[key] = _Raw(value, "")

    values: dict[str, Any] = {}
    for key, item in raw.items():
        try:
            values[key] = _CONVERTERS[key](item.value)
        except ValueError as exc:
            where = f" ({item.origin})" if item.origin else ""
            raise SettingsError(_env_name(key), f"{exc}{where}") from None
    settings = Settings(**values)
    if settings.hs256_secret_file is not None:
        file_secrets = read_secret_file(settings.hs256_secret_file)
        settings = replace(settings, hs256_file_secrets=file_secrets)
    _check_key_source(settings)
    _check_addresses(settings)
    if policies_yaml is not None:
        settings = replace(settings, policies=_policies(policies_yaml, settings))
    return settings


_NO_KEY = (
    "JWT checking is on but no key is configured: set AUTHZ_HS256_SECRET, "
    "AUTHZ_HS256_SECRET_FILE or AUTHZ_JWKS_URL, or turn JWT checking off"
)


def _has_key_source(settings: Settings) -> bool:
    return bool(settings.hs256_secrets) or settings.jwks_url is not None


def _check_key_source(settings: Settings) -> None:
    if settings.jwt_enabled and not _has_key_source(settings):
        raise SettingsError("AUTHZ_JWT_ENABLED", _NO_KEY)


def start_warnings(settings: Settings) -> tuple[str, ...]:
    """Valid settings that weaken the check: one line each, `<setting>: <why>`, to log at start.

    Never quotes a secret or the JWKS URL (it may carry credentials).
    """
    warnings: list[str] = []
    if not settings.jwt_enabled:
        warnings.append(
            "AUTHZ_JWT_ENABLED: the JWT check is off: requests pass without a token (reason "
            "jwt_disabled) on every route whose policy does not turn it on"
        )
    if settings.jwks_url is not None:
        # RFC 8725 3.8, 3.9, 3.12: an issuer's keys also sign ID tokens and tokens for its
        # other services; without `iss` or `aud` checked, all of them pass here.
        policies = {DEFAULT_POLICY: settings.default_policy, **settings.policies}
        unchecked = [
            name for name, policy in policies.items()
            if policy.jwt_enabled and policy.issuer is None and not policy.audiences
        ]
        if unchecked:
            warnings.append(
                "AUTHZ_JWKS_URL: any token its keys sign is accepted, also one the issuer made "
                "for another service, without an issuer or audience check "
                f"(policies: {', '.join(unchecked)}): set AUTHZ_ISSUER or AUTHZ_AUDIENCE, or "
                "the policy's issuer or audience (RFC 8725 sections 3.8, 3.9, 3.12)"
            )
    return tuple(warnings)


_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


def _check_addresses(settings: Settings) -> None:
    # Two listeners on one port would fail at bind time with a less helpful message.
    seen: list[tuple[str, str, int]] = []
    for key in ("grpc_address", "http_address", "http_authz_address"):
        address: str | None = getattr(settings, key)
        if address is None:
            continue
        host, port = split_host_port(address)
        for other_key, other_host, other_port in seen:
            if port == other_port and (
                host == other_host or {host, other_host} & _WILDCARD_HOSTS
            ):
                raise SettingsError(
                    _env_name(key), f"{address} clashes with {_env_name(other_key)}"
                )
        seen.append((key, host, port))


def read_secret_file(path: str) -> tuple[bytes, ...]:
    """The HMAC secrets in `path`: one per line, blank lines ignored, each at least 32 bytes.

    Line endings (LF or CRLF) are not part of a secret; nothing else is stripped. Raises
    `SettingsError` (naming AUTHZ_HS256_SECRET_FILE) when the file cannot be read, is too
    large, holds no secret or holds a short one.
    """
    setting = _env_name("hs256_secret_file")
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


# ---- per-route policies ----

_POLICY_KEYS = (
    "jwt_enabled", "allowed_cidrs", "issuer", "audience", "required_claims", "forward_claims",
)
_CLAIM_OPS: tuple[Literal["equals", "one_of", "contains"], ...] = ("equals", "one_of", "contains")
_RESERVED_HEADERS = frozenset({"x-jwt-sub"})


def _policies(document: object, settings: Settings) -> dict[str, Policy]:
    if not isinstance(document, dict):
        raise SettingsError("policies", "must be a mapping of policy name to policy")
    policies: dict[str, Policy] = {}
    for name, body in document.items():
        if not isinstance(name, str) or not _POLICY_NAME.match(name):
            raise SettingsError(
                f"policies.{name}",
                "a policy name is letters, digits, '_', '.', '-', starting with a letter or digit",
            )
        policies[name] = _policy(name, body if body is not None else {}, settings)
    return policies


def _policy(name: str, body: object, settings: Settings) -> Policy:
    """One policy: fields left out (or null) take the flat settings' values.

    `issuer: ""`, `audience: []` and `allowed_cidrs: []` explicitly drop that requirement.
    """
    prefix = f"policies.{name}"
    if not isinstance(body, dict):
        raise SettingsError(prefix, "must be a mapping of policy fields")
    for key in body:
        if key not in _POLICY_KEYS:
            raise SettingsError(
                f"{prefix}.{key}", f"unknown policy field{_suggest(key, _POLICY_KEYS)}"
            )
    fields = {key: value for key, value in body.items() if value is not None}

    def convert(key: str, converter: Callable[[object], Any], inherited: Any) -> Any:
        if key not in fields:
            return inherited
        try:
            return converter(fields[key])
        except ValueError as exc:
            raise SettingsError(f"{prefix}.{key}", str(exc)) from None

    policy = Policy(
        name=name,
        jwt_enabled=convert("jwt_enabled", _boolean, settings.jwt_enabled),
        allowed_networks=convert("allowed_cidrs", _cidrs, settings.allowed_cidrs),
        issuer=convert("issuer", _optional_text, settings.issuer),
        audiences=convert("audience", _string_list, settings.audience),
        required_claims=convert("required_claims", _claim_rules, ()),
        forward_claims=convert("forward_claims", _forward_claims, ()),
    )
    if policy.jwt_enabled and not _has_key_source(settings):
        raise SettingsError(f"{prefix}.jwt_enabled", _NO_KEY)
    if not policy.jwt_enabled:
        for key in ("required_claims", "forward_claims"):
            if fields.get(key):
                raise SettingsError(f"{prefix}.{key}", "needs JWT checking on for this policy")
    return policy


def _claim_value(value: object) -> JSONValue:
    # YAML also yields dates, sets and mappings; a claim is compared with JSON scalars only.
    if isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"a claim value must be a string, number or boolean, got {_shown(value)}")


def _claim_rules(value: object) -> tuple[ClaimRule, ...]:
    """`[{claim: role, one_of: [admin, publisher]}, {claim: scope, contains: publish}, ...]`"""
    if not isinstance(value, list):
        raise ValueError("must be a list of rules like {claim: role, equals: admin}")
    rules: list[ClaimRule] = []
    for number, rule in enumerate(value, start=1):
        where = f"rule {number}"
        if not isinstance(rule, dict):
            raise ValueError(f"{where} must be a mapping like {{claim: role, equals: admin}}")
        claim = rule.get("claim")
        if not isinstance(claim, str) or not claim:
            raise ValueError(f"{where} needs `claim:` naming the claim")
        ops = [key for key in rule if key != "claim"]
        unknown = [key for key in ops if key not in _CLAIM_OPS]
        if unknown:
            raise ValueError(
                f"{where}: unknown test {_shown(unknown[0])}{_suggest(unknown[0], _CLAIM_OPS)}"
            )
        if len(ops) != 1:
            raise ValueError(f"{where} needs exactly one of equals, one_of, contains")
        op = cast(Literal["equals", "one_of", "contains"], ops[0])
        operand = rule[op]
        if op == "one_of":
            items = operand if isinstance(operand, list) else [operand]
            if not items:
                raise ValueError(f"{where}: one_of needs at least one value")
            values = tuple(_claim_value(item) for item in items)
        elif isinstance(operand, list):
            raise ValueError(f"{where}: {op} takes one value; write one rule per value")
        else:
            values = (_claim_value(operand),)
        rules.append(ClaimRule(claim=claim, op=op, values=values))
    return tuple(rules)


def _forward_claims(value: object) -> tuple[tuple[str, str], ...]:
    """`{claim: header}`; header names are lowercased and must start with `x-jwt-`.

    Only `x-jwt-*` headers are stripped from client requests (SPEC section 5), so a claim
    forwarded under any other name could be forged by a client when the claim is absent.
    That rule also keeps pseudo-headers, `host` and `authorization` out.
    """
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of claim name to header name")
    pairs: list[tuple[str, str]] = []
    used: set[str] = set()
    for claim, header in value.items():
        if not isinstance(claim, str) or not claim:
            raise ValueError(f"claim names must be non-empty strings, got {_shown(claim)}")
        if not isinstance(header, str):
            raise ValueError(f"{claim}: header name must be a string, got {_shown(header)}")
        name = header.strip().lower()
        if name.startswith(":"):
            raise ValueError(f"{claim}: {_shown(header)} is a pseudo-header")
        if not _TOKEN.match(name):
            raise ValueError(f"{claim}: {_shown(header)} is not a legal header name")
        if not name.startswith("x-jwt-") or name in _RESERVED_HEADERS:
            raise ValueError(
                f"{claim}: header {_shown(name)} must start with x-jwt- and not be x-jwt-sub "
                "(clients' x-jwt-* headers are stripped, so upstream can trust it)"
            )
        if name in used:
            raise ValueError(f"{claim}: header {_shown(name)} is already used by another claim")
        used.add(name)
        pairs.append((claim, name))
    return tuple(pairs)
