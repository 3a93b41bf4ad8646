"""Loading the settings: `load_settings` layers the sources (later wins): built-in
defaults, the YAML file (`--config`), Ant Media Server's `red5-web.properties`
(`--ams-properties`), then `AUTHZ_*` environment variables; then converts, reads the
secret files and the TLS files, and runs the start checks. Every problem raises
`SettingsError`, whose text is one line naming the setting and never containing a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import yaml

from authz.keys.secrets import read_secret_file
from authz.keys.tls_files import read_tls_material
from authz.settings.ams import read_ams
from authz.settings.checks import (
    check_addresses,
    check_key_source,
    check_stream_secret,
    check_tls_files,
)
from authz.settings.convert import CONVERTERS, Raw
from authz.settings.errors import SettingsError, env_name, suggest
from authz.settings.issuers import check_required_issuers, combine_issuers, read_issuers
from authz.settings.model import IssuerConfig, Settings
from authz.settings.policies import read_policies

__all__ = ["YAML_KEYS", "load_settings"]

# The top-level keys of the YAML file: the flat settings, `issuers` and `policies`.
YAML_KEYS = (*CONVERTERS, "issuers", "policies")


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
        if key not in YAML_KEYS:
            raise SettingsError(str(key), f"unknown setting in {path}{suggest(key, YAML_KEYS)}")
    return document


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
    raw: dict[str, Raw] = {}
    policies_yaml: object = None
    listed: tuple[IssuerConfig, ...] | None = None
    if config_file is not None:
        document = _read_yaml(config_file)
        policies_yaml = document.pop("policies", None)
        issuers_yaml = document.pop("issuers", None)
        if issuers_yaml is not None:
            listed = read_issuers(issuers_yaml)
        raw.update(
            (key, Raw(value, f"from {key} in {config_file}"))
            for key, value in document.items()
            if value is not None
        )
    if ams_properties_file is not None:
        raw.update(read_ams(ams_properties_file))
    for key in CONVERTERS:
        value = environ.get(env_name(key))
        if value == "":
            raw.pop(key, None)
        elif value is not None:
            raw[key] = Raw(value, "")

    values: dict[str, Any] = {}
    for key, item in raw.items():
        try:
            values[key] = CONVERTERS[key](item.value)
        except ValueError as exc:
            where = f" ({item.origin})" if item.origin else ""
            raise SettingsError(env_name(key), f"{exc}{where}") from None
    settings = Settings(**values)
    if settings.hs256_secret_file is not None:
        file_secrets = read_secret_file(settings.hs256_secret_file)
        settings = replace(settings, hs256_file_secrets=file_secrets)
    if settings.stream_secret_file is not None:
        stream_secrets = read_secret_file(
            settings.stream_secret_file, env_name("stream_secret_file")
        )
        settings = replace(settings, stream_file_secrets=stream_secrets)
    settings = combine_issuers(settings, listed)
    check_key_source(settings)
    check_stream_secret(settings)
    check_tls_files(settings)
    if settings.tls_files is not None:
        settings = replace(settings, tls_material=read_tls_material(settings.tls_files))
    check_addresses(settings)
    if policies_yaml is not None:
        settings = replace(settings, policies=read_policies(policies_yaml, settings))
    check_required_issuers(settings)
    return settings
