"""The gRPC front door behind the real Envoy with `encode_raw_headers: true`.

In that mode Envoy sends `header_map` (raw bytes, repeats not merged) instead of the
`headers` map; the project's envoy.yaml uses the map, which tests/e2e/test_e2e_envoy.py covers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.credentials import AMS_DOCS_TOKEN
from tests.harness import (
    ENVOY_YAML,
    Envoy,
    echo_upstream,
    request,
    run_authz,
    run_envoy,
)

pytestmark = pytest.mark.e2e

REST = "/LiveApp/rest/v2/broadcasts/list/0/10"


def _ext_authz_configs(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("name") == "envoy.filters.http.ext_authz" and "typed_config" in node:
            yield node["typed_config"]
        for value in node.values():
            yield from _ext_authz_configs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _ext_authz_configs(value)


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    config = yaml.safe_load(ENVOY_YAML.read_text())
    filters = list(_ext_authz_configs(config))
    assert filters, "envoy.yaml has an ext_authz filter"
    for typed_config in filters:
        typed_config["encode_raw_headers"] = True
    source: Path = tmp_path_factory.mktemp("envoy") / "envoy-raw-headers.yaml"
    source.write_text(yaml.safe_dump(config))
    with (
        echo_upstream() as upstream,
        run_authz() as authz,
        run_envoy({"authz": authz.grpc_port, "ant_media": upstream}, source=source) as envoy,
    ):
        yield envoy


def test_allow_overwrites_sub_and_strips_spoofed_headers(envoy: Envoy) -> None:
    headers = {"Authorization": f"Bearer {AMS_DOCS_TOKEN}", "X-JWT-Sub": "admin", "x-jwt-role": "a"}
    response = request(envoy.port, REST, headers)
    assert response.status == 200, response.body
    seen = response.json()["headers"]
    assert seen["x-jwt-sub"] == ["token"]
    assert "x-jwt-role" not in seen


@pytest.mark.parametrize(
    ("headers", "reason"),
    [({}, "missing_token"), ({"Authorization": "Bearer not.a.jws"}, "malformed")],
)
def test_deny(envoy: Envoy, headers: dict[str, str], reason: str) -> None:
    response = request(envoy.port, REST, headers)
    assert response.status == 401, response.body
    assert response.json() == {"error": "unauthorized", "reason": reason}
    assert response.headers["www-authenticate"].startswith("Bearer")
