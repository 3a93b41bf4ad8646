"""The Envoy configs the benchmark compares, all derived from the project's envoy.yaml.

- `authz`: envoy.yaml as shipped (only ports change, done by the test harness).
- `noauth`: the same with the ext_authz filter and the authz cluster removed.
- `native`: the same with ext_authz replaced by Envoy's own jwt_authn filter, verifying
  the same tokens with the same key (HS256 `oct` JWK or the RS256 public key) on the same
  REST routes, and forwarding `sub` as x-jwt-sub as authz does.
- `authz_stream`: envoy.yaml as shipped with the route of an HLS segment path asking
  authz's play check (`context_extensions: {stream: play}`, SPEC section 9); when the
  shipped route already does, the config is the shipped one unchanged.
- `native_stream`: ext_authz replaced by jwt_authn on that same route, reading the play
  token from `?token=` with the stream secret as an `oct` JWK, `exp` required and (RBAC on
  the verified payload) `type: play`. What it cannot do is bind `streamId` to the path:
  any valid play token opens every stream.
- `upstream`: a stand-in media server that Envoy itself answers (direct_response), so the
  upstream costs little and the same in every variant.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

from authz._support.envoy_config import PROJECT_ENVOY_YAML

_HCM = "envoy.filters.network.http_connection_manager"
_EXT_AUTHZ = "envoy.filters.http.ext_authz"
_JWT_AUTHN = "envoy.filters.http.jwt_authn"
_RBAC = "envoy.filters.http.rbac"
_REST_ROUTES = "^/[^/]+/rest/.*"
_STREAM_CONTEXT = {"stream": "play"}
# jwt_authn writes the verified payload into its dynamic metadata under this key.
_PAYLOAD_KEY = "jwt_payload"
_TYPE_PREFIX = "type.googleapis.com/envoy.extensions.filters.http."


def _project() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(PROJECT_ENVOY_YAML.read_text())
    return config


def _manager(config: dict[str, Any]) -> dict[str, Any]:
    for chain in config["static_resources"]["listeners"][0]["filter_chains"]:
        for network_filter in chain["filters"]:
            if network_filter["name"] == _HCM:
                manager: dict[str, Any] = network_filter["typed_config"]
                return manager
    raise ValueError("envoy.yaml has no HTTP connection manager")


def _without_ext_authz(config: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A copy without ext_authz (filter, per-route settings, cluster); the filter's index."""
    config = copy.deepcopy(config)
    manager = _manager(config)
    names = [f["name"] for f in manager["http_filters"]]
    index = names.index(_EXT_AUTHZ)
    del manager["http_filters"][index]
    for host in manager["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            route.get("typed_per_filter_config", {}).pop(_EXT_AUTHZ, None)
            if not route.get("typed_per_filter_config", True):
                del route["typed_per_filter_config"]
    clusters = config["static_resources"]["clusters"]
    config["static_resources"]["clusters"] = [c for c in clusters if c["name"] != "authz"]
    return config, index


def _header_matches(matcher: dict[str, Any], value: str) -> bool:
    string_match = matcher.get("string_match", {})
    if set(string_match) - {"exact", "safe_regex", "prefix"} or set(matcher) - {
        "name", "string_match"
    }:
        raise ValueError(f"bench: cannot evaluate header matcher {matcher}")
    if "exact" in string_match:
        return bool(value == string_match["exact"])
    if "prefix" in string_match:
        return value.startswith(string_match["prefix"])
    return re.fullmatch(string_match["safe_regex"]["regex"], value) is not None


def _route_matches(match: dict[str, Any], path: str, method: str) -> bool:
    # The subset of RouteMatch envoy.yaml uses; anything else is refused, never guessed.
    if set(match) - {"prefix", "path", "safe_regex", "headers"}:
        raise ValueError(f"bench: cannot evaluate route match {match}")
    if "prefix" in match:
        path_ok = path.startswith(match["prefix"])
    elif "path" in match:
        path_ok = path == match["path"]
    else:
        path_ok = re.fullmatch(match["safe_regex"]["regex"], path) is not None
    for header in match.get("headers", []):
        if header["name"] != ":method":
            raise ValueError(f"bench: cannot evaluate header matcher {header}")
        path_ok = path_ok and _header_matches(header, method)
    return path_ok


def route_for(config: dict[str, Any], path: str, method: str = "GET") -> dict[str, Any]:
    """The route of `config` that Envoy picks for `method` `path` (first match wins)."""
    for route in _manager(config)["route_config"]["virtual_hosts"][0]["routes"]:
        if _route_matches(route["match"], path, method):
            found: dict[str, Any] = route
            return found
    raise ValueError(f"bench: no route for {method} {path}")


def asks_play_check(config: dict[str, Any], path: str) -> bool:
    """Whether `config` routes GET `path` to authz with `context_extensions: stream: play`."""
    per_route = route_for(config, path).get("typed_per_filter_config", {}).get(_EXT_AUTHZ, {})
    extensions = per_route.get("check_settings", {}).get("context_extensions", {})
    return not per_route.get("disabled", False) and extensions.get("stream") == "play"


def authz_stream_config(path: str) -> tuple[dict[str, Any], bool]:
    """envoy.yaml whose route for `path` asks authz's play check; and whether the shipped
    envoy.yaml already does (then the config is the shipped one, unchanged)."""
    config = _project()
    if asks_play_check(config, path):
        return config, True
    route = route_for(config, path)
    route.setdefault("typed_per_filter_config", {})[_EXT_AUTHZ] = {
        "@type": f"{_TYPE_PREFIX}ext_authz.v3.ExtAuthzPerRoute",
        "check_settings": {"context_extensions": dict(_STREAM_CONTEXT)},
    }
    return config, False


def noauth_config() -> dict[str, Any]:
    """envoy.yaml with no authorization at all: the ceiling."""
    return _without_ext_authz(_project())[0]


def native_config(jwk: dict[str, Any]) -> dict[str, Any]:
    """envoy.yaml with Envoy's jwt_authn in ext_authz's place, trusting the one key `jwk`."""
    config, index = _without_ext_authz(_project())
    jwt_authn = {
        "name": _JWT_AUTHN,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3."
            "JwtAuthentication",
            "providers": {
                "bench": {
                    "local_jwks": {"inline_string": json.dumps({"keys": [jwk]})},
                    # The raw `Authorization: <token>` form is authz's only; the bench
                    # sends `Bearer` to both.
                    "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                    "claim_to_headers": [{"header_name": "x-jwt-sub", "claim_name": "sub"}],
                }
            },
            "rules": [
                {
                    "match": {"safe_regex": {"regex": _REST_ROUTES}},
                    "requires": {"provider_name": "bench"},
                }
            ],
        },
    }
    _manager(config)["http_filters"].insert(index, jwt_authn)
    return config


def native_stream_config(jwk: dict[str, Any], path: str) -> dict[str, Any]:
    """envoy.yaml with jwt_authn in ext_authz's place on the route of `path`: the token from
    `?token=`, verified with `jwk` (the stream secret), `exp` required, `type: play` required
    by RBAC on the verified payload, `streamId` forwarded as x-jwt-stream-id. It cannot
    compare `streamId` with the stream the path names."""
    config, index = _without_ext_authz(_project())
    route = route_for(config, path)
    jwt_authn = {
        "name": _JWT_AUTHN,
        "typed_config": {
            "@type": f"{_TYPE_PREFIX}jwt_authn.v3.JwtAuthentication",
            "providers": {
                "stream": {
                    "local_jwks": {"inline_string": json.dumps({"keys": [jwk]})},
                    "from_params": ["token"],
                    "require_expiration": True,
                    "payload_in_metadata": _PAYLOAD_KEY,
                    "claim_to_headers": [
                        {"header_name": "x-jwt-stream-id", "claim_name": "streamId"}
                    ],
                }
            },
            # The route's own matcher, so exactly the routed stream paths need a token.
            "rules": [{"match": copy.deepcopy(route["match"]),
                       "requires": {"provider_name": "stream"}}],
        },
    }
    # No rules at the filter: RBAC applies only where a route sets them (the stream route).
    rbac = {"name": _RBAC, "typed_config": {"@type": f"{_TYPE_PREFIX}rbac.v3.RBAC"}}
    _manager(config)["http_filters"][index:index] = [jwt_authn, rbac]
    route.setdefault("typed_per_filter_config", {})[_RBAC] = {
        "@type": f"{_TYPE_PREFIX}rbac.v3.RBACPerRoute",
        "rbac": {
            "rules": {
                "action": "ALLOW",
                "policies": {
                    "play-token": {
                        "permissions": [{"any": True}],
                        "principals": [{"metadata": {
                            "filter": _JWT_AUTHN,
                            "path": [{"key": _PAYLOAD_KEY}, {"key": "type"}],
                            "value": {"string_match": {"exact": "play"}},
                        }}],
                    }
                },
            }
        },
    }
    return config


def upstream_config(port: int) -> dict[str, Any]:
    """An Envoy answering 200 `ok` to everything on 127.0.0.1:`port` (admin off)."""
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "upstream",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": _HCM,
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters."
                                        "network.http_connection_manager.v3."
                                        "HttpConnectionManager",
                                        "stat_prefix": "upstream",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "direct_response": {
                                                                "status": 200,
                                                                "body": {"inline_string": "ok"},
                                                            },
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy."
                                                    "extensions.filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    }


def write(config: dict[str, Any], path: Path) -> Path:
    """`config` as YAML at `path`."""
    path.write_text(yaml.safe_dump(config))
    return path
