"""bench/http stays runnable: its Envoy configs validate and the native key is the bench's."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from bench.http.run import BENCH_SECRET, ENVOY_GRPC_YAML, ENVOY_HTTP_YAML, NATIVE_YAML, bench_config
from tests.harness import assert_envoy_config_valid


@pytest.mark.parametrize("upstream", [5080, None], ids=["upstream", "direct"])
@pytest.mark.parametrize(
    ("source", "h2"),
    [
        (ENVOY_HTTP_YAML, False),
        (ENVOY_HTTP_YAML, True),
        (ENVOY_GRPC_YAML, False),
        (NATIVE_YAML, False),
    ],
)
def test_bench_rendersassert_envoy_config_valid(
    tmp_path: Path, source: Path, h2: bool, upstream: int | None
) -> None:
    config = bench_config(source, 9002, upstream, h2)
    routes = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["route_config"]["virtual_hosts"][0]["routes"]
    assert all("route" not in route for route in routes) == (upstream is None)
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    assert_envoy_config_valid(path)


def test_native_config_validates_with_the_bench_secret() -> None:
    assert_envoy_config_valid(NATIVE_YAML)
    key = base64.urlsafe_b64encode(BENCH_SECRET.encode()).rstrip(b"=").decode()
    assert key in NATIVE_YAML.read_text()
