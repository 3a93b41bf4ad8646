"""The bench's segment-scenario Envoy configs: valid for the real Envoy, the segment's route
asks the play check (authz) or needs the stream token (native), and nothing else moves."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from bench import configs
from bench.run import REST, SEGMENT, _tokens
from tests.harness import assert_envoy_config_valid

_EXT_AUTHZ = "envoy.filters.http.ext_authz"


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = configs._manager(config)["route_config"]["virtual_hosts"][0][
        "routes"
    ]
    return routes


def test_the_authz_config_asks_the_play_check_on_the_segment_route_only(tmp_path: Path) -> None:
    config, shipped = configs.authz_stream_config(SEGMENT)
    assert configs.asks_play_check(config, SEGMENT)
    project = configs._project()
    assert shipped == configs.asks_play_check(project, SEGMENT)
    segment_route = configs.route_for(config, SEGMENT)
    # Every other route, the REST one included, is the shipped one.
    others = [r for r in _routes(config) if r is not segment_route]
    shipped_others = [r for r in _routes(project) if r["match"] != segment_route["match"]]
    assert others == shipped_others
    assert configs.route_for(config, REST) == configs.route_for(project, REST)
    assert_envoy_config_valid(configs.write(config, tmp_path / "authz.yaml"))


def test_a_shipped_play_route_is_used_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    patched, _ = configs.authz_stream_config(SEGMENT)
    monkeypatch.setattr(configs, "_project", lambda: copy.deepcopy(patched))
    assert configs.authz_stream_config(SEGMENT) == (patched, True)


def test_the_native_config_requires_the_stream_token_on_the_segment_route(tmp_path: Path) -> None:
    config = configs.native_stream_config(_tokens().stream_jwk, SEGMENT)
    filters = {f["name"]: f for f in configs._manager(config)["http_filters"]}
    assert _EXT_AUTHZ not in filters and "envoy.filters.http.rbac" in filters
    rules = filters["envoy.filters.http.jwt_authn"]["typed_config"]["rules"]
    assert [rule["match"] for rule in rules] == [configs.route_for(config, SEGMENT)["match"]]
    assert_envoy_config_valid(configs.write(config, tmp_path / "native.yaml"))


def test_a_route_matcher_the_bench_cannot_evaluate_is_refused() -> None:
    config = {"static_resources": {"listeners": [{"filter_chains": [{"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {"route_config": {"virtual_hosts": [{"routes": [
            {"match": {"prefix": "/", "query_parameters": [{"name": "token"}]}},
        ]}]}},
    }]}]}]}}
    with pytest.raises(ValueError, match="cannot evaluate"):
        configs.route_for(config, SEGMENT)
