"""The Envoy configs the benchmark compares, all derived from the project's envoy.yaml.

- `authz`: envoy.yaml as shipped (only ports change, done by the test harness).
- `noauth`: the same with the ext_authz filter and the authz cluster removed.
- `native`: the same with ext_authz replaced by Envoy's own jwt_authn filter, verifying
  the same tokens with the same key (HS256 `oct` JWK or the RS256 public key) on the same
  REST routes, and forwarding `sub` as x-jwt-sub as authz does.
- `upstream`: a stand-in media server that Envoy itself answers (direct_response), so the
  upstream costs little and the same in every variant.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from authz._support.envoy_config import PROJECT_ENVOY_YAML

_HCM = "envoy.filters.network.http_connection_manager"
_EXT_AUTHZ = "envoy.filters.http.ext_authz"
_JWT_AUTHN = "envoy.filters.http.jwt_authn"
_REST_ROUTES = "^/[^/]+/rest/.*"


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
