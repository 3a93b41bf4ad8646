"""Throughput through the real Envoy: authz's HTTP door, HTTP do-nothing floors, native jwt_authn.

Each target runs behind its own Envoy (1 worker) in front of the project bench's stand-in
media server (an upstream Envoy answering 200; `--direct`: the gateway answers itself);
`wrk -t1 -c32 -d6s` with one repeated valid HS256 token, after a 2 s warm-up, median of
`--runs` runs; non-200 answers are counted. All targets run at once and their runs are
interleaved, so background load hits all alike; CPU per request of Envoy and of the
authorization server is read from /proc.

Targets:
  native            Envoy's jwt_authn HS256 (bench/http/envoy-native-jwt.yaml)
  authz-http        authz serve, Envoy on envoy-http.yaml (http_service)
  authz-http-h2     the same with the authz cluster over h2c
  authz-grpc        authz serve, Envoy on envoy.yaml (grpc_service), for reference
  floor-SERVER      envoy-http.yaml against bench/http/floor.py --server SERVER
  floor-SERVER-h2   the same over h2c (granian only)
  floor-...-rt      granian with its (experimental) Rust task implementation
  floor-...-hdr     the floor answering with the headers authz's allow carries (httptools):
                    what Envoy's own work on those headers costs

Run: python -m bench.http.run [--runs 3] [--duration 6] [--direct] [TARGET ...]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authz._support.envoy_config import PROJECT_ROOT, envoy_command, render_envoy_config
from authz._support.loopback import free_port, stop_process, wait_until
from authz.core.mint import mint_hmac
from bench import configs
from bench.http.floor import SERVERS
from bench.measure import Load, cpu_seconds, wrk

HERE = Path(__file__).resolve().parent
NATIVE_YAML = HERE / "envoy-native-jwt.yaml"
ENVOY_GRPC_YAML = PROJECT_ROOT / "envoy.yaml"
ENVOY_HTTP_YAML = PROJECT_ROOT / "envoy-http.yaml"
BENCH_SECRET = "bench-secret-0123456789abcdefghijklmnop"
PATH = "/LiveApp/rest/v2/broadcasts/list/0/10"
DEFAULT_TARGETS = ("native", "authz-http", "floor-httptools")
# What the "vs floor" column divides by: the do-nothing server on authz's own HTTP/1.1 stack.
REFERENCE_FLOOR = "floor-httptools"


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@contextlib.contextmanager
def _process(command: list[str], env: dict[str, str] | None = None) -> Iterator[int]:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=PROJECT_ROOT
    )
    try:
        yield process.pid
    finally:
        stop_process(process)


def bench_config(
    source: Path, authz_port: int, upstream_port: int | None, h2: bool = False
) -> dict[str, Any]:
    """`source` rendered for the bench: no access log, no health checks, the authz cluster
    on `authz_port` (over h2c when `h2`), the media server on `upstream_port`, or with
    None the routes answer themselves (direct_response)."""
    config = render_envoy_config(
        source, 0, 0, {"authz": authz_port, "ant_media": upstream_port or 0}
    )
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    manager["typed_config"].pop("access_log", None)
    for host in manager["typed_config"]["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            if "route" in route and upstream_port is None:
                del route["route"]
                route["direct_response"] = {"status": 200, "body": {"inline_string": "ok"}}
    for cluster in config["static_resources"]["clusters"]:
        cluster.pop("health_checks", None)
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                endpoint["endpoint"].pop("health_check_config", None)
        if h2 and cluster["name"] == "authz":
            options = cluster["typed_extension_protocol_options"][
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
            ]
            options["explicit_http_config"] = {"http2_protocol_options": {}}
    return config


@contextlib.contextmanager
def _envoy(config: dict[str, Any]) -> Iterator[tuple[int, int]]:
    port, admin = free_port(), free_port()
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=port)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "envoy.yaml"
        path.write_text(yaml.safe_dump(config))
        with _process(envoy_command(path, "error")) as pid:
            wait_until(
                lambda: _status(f"http://127.0.0.1:{admin}/ready") == 200,
                timeout=30,
                what="envoy ready",
            )
            yield port, pid


@contextlib.contextmanager
def _authz(http_door: bool) -> Iterator[tuple[int, int]]:
    grpc, probes, door = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    env.update(
        AUTHZ_GRPC_ADDRESS=f"127.0.0.1:{grpc}",
        AUTHZ_HTTP_ADDRESS=f"127.0.0.1:{probes}",
        AUTHZ_HS256_SECRET=BENCH_SECRET,
        AUTHZ_LOG_LEVEL="warning",
    )
    if http_door:
        env["AUTHZ_HTTP_AUTHZ_ADDRESS"] = f"127.0.0.1:{door}"
    with _process([sys.executable, "-m", "authz.cli", "serve"], env) as pid:
        wait_until(
            lambda: _status(f"http://127.0.0.1:{probes}/readyz") == 200,
            timeout=30,
            what="authz ready",
        )
        yield (door if http_door else grpc), pid


@contextlib.contextmanager
def _floor(
    server: str, h2: bool, rust_tasks: bool, answer_headers: bool
) -> Iterator[tuple[int, int]]:
    port = free_port()
    command = [sys.executable, "-m", "bench.http.floor", "--server", server, "--port", str(port)]
    command += ["--h2"] * h2 + ["--rust-tasks"] * rust_tasks
    command += ["--answer-headers"] * answer_headers
    with _process(command) as pid:
        wait_until(lambda: _accepts(port), timeout=30, what=f"floor {server}")
        yield port, pid


@dataclass
class Gateway:
    """Envoy's listen port, Envoy's pid and the authorization server's (None for native)."""

    port: int
    envoy_pid: int
    server_pid: int | None


@contextlib.contextmanager
def upstream() -> Iterator[int]:
    """The stand-in media server of the project's bench: an Envoy answering 200 `ok`."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = configs.write(configs.upstream_config(port), Path(tmp) / "upstream.yaml")
        with _process(envoy_command(path, "error")):
            wait_until(lambda: _accepts(port), timeout=30, what="upstream envoy")
            yield port


@contextlib.contextmanager
def gateway(target: str, upstream_port: int | None) -> Iterator[Gateway]:
    """`target`'s Envoy, with everything behind it running."""
    if target == "native":
        with _envoy(bench_config(NATIVE_YAML, 0, upstream_port)) as (port, envoy):
            yield Gateway(port, envoy, None)
    elif target in ("authz-http", "authz-http-h2", "authz-grpc"):
        http = target != "authz-grpc"
        with (
            _authz(http) as (authz_port, server),
            _envoy(
                bench_config(
                    ENVOY_HTTP_YAML if http else ENVOY_GRPC_YAML,
                    authz_port,
                    upstream_port,
                    target.endswith("-h2"),
                )
            ) as (port, envoy),
        ):
            yield Gateway(port, envoy, server)
    elif target.startswith("floor-"):
        answer_headers = target.endswith("-hdr")
        rest = target.removesuffix("-hdr")
        rust_tasks = rest.endswith("-rt")
        name = rest.removeprefix("floor-").removesuffix("-rt").removesuffix("-h2")
        h2 = rest.removesuffix("-rt").endswith("-h2")
        if name not in SERVERS:
            raise SystemExit(f"unknown floor server {name!r}: one of {', '.join(SERVERS)}")
        with (
            _floor(name, h2, rust_tasks, answer_headers) as (floor_port, pid),
            _envoy(bench_config(ENVOY_HTTP_YAML, floor_port, upstream_port, h2)) as (port, envoy),
        ):
            yield Gateway(port, envoy, pid)
    else:
        raise SystemExit(f"unknown target {target!r}")


@dataclass
class Run:
    """One wrk run; CPU per request of Envoy and of the authorization server, in µs.

    The CPU figures hold up on a busy machine where req/s does not: they say what each
    request costs, not how much CPU was left to spend."""

    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int  # and socket errors, wrk's 2 s timeouts included
    envoy_us: float
    server_us: float


def _wrk(port: int, token: str, seconds: int) -> Load:
    return wrk(port, PATH, {"Authorization": f"Bearer {token}"}, seconds)


def _measured(gate: Gateway, token: str, seconds: int) -> Run:
    envoy, server = [gate.envoy_pid], ([gate.server_pid] if gate.server_pid else [])
    envoy_before, server_before = cpu_seconds(envoy), cpu_seconds(server)
    load = _wrk(gate.port, token, seconds)
    served = load.rps * seconds
    return Run(
        load.rps,
        load.p50_ms,
        load.p99_ms,
        load.failed,
        (cpu_seconds(envoy) - envoy_before) / served * 1e6,
        (cpu_seconds(server) - server_before) / served * 1e6,
    )


def measure(
    targets: list[str], runs: int, seconds: int, token: str, with_upstream: bool
) -> dict[str, list[Run]]:
    """`runs` wrk runs per target, all gateways up at once and runs interleaved (round robin),
    so noise from anything else on the machine falls on every target alike."""
    results: dict[str, list[Run]] = {target: [] for target in targets}
    with contextlib.ExitStack() as stack:
        upstream_port = stack.enter_context(upstream()) if with_upstream else None
        gates = {target: stack.enter_context(gateway(target, upstream_port)) for target in targets}
        for target, gate in gates.items():
            url = f"http://127.0.0.1:{gate.port}{PATH}"
            assert _status(url, {"Authorization": f"Bearer {token}"}) == 200, target
            assert _status(url) == (200 if target.startswith("floor") else 401), target
            _wrk(gate.port, token, 2)
        for _ in range(runs):
            for target, gate in gates.items():
                results[target].append(_measured(gate, token, seconds))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("targets", nargs="*", default=list(DEFAULT_TARGETS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="checked routes answer in the gateway Envoy (direct_response) instead of an\n"
        "upstream Envoy (the project bench's stand-in media server)",
    )
    args = parser.parse_args()
    jwk_k = base64.urlsafe_b64encode(BENCH_SECRET.encode()).rstrip(b"=").decode()
    if jwk_k not in NATIVE_YAML.read_text():
        raise SystemExit(f"{NATIVE_YAML.name}'s oct key is not BENCH_SECRET")
    token = mint_hmac({"sub": "bench", "exp": time.time() + 86400}, BENCH_SECRET.encode())
    medians: dict[str, float] = {}
    report: dict[str, Any] = {"load_average_before": os.getloadavg()}
    for target, results in measure(
        args.targets, args.runs, args.duration, token, not args.direct
    ).items():
        medians[target] = statistics.median(run.rps for run in results)
        report[target] = [vars(run) for run in results]
        print(
            f"{target:24} median {medians[target]:7.0f} req/s; runs "
            + ", ".join(
                f"{run.rps:.0f} (p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
                f"CPU/req envoy {run.envoy_us:.0f} µs, server {run.server_us:.0f} µs)"
                for run in results
            ),
            flush=True,
        )
    print(f"\nload average before: {report['load_average_before']}")
    # Non-200 answers under load are Envoy's fail-closed 503s (ext_authz timeout 0.5 s):
    # counted, because a run that sheds requests is not a clean throughput figure.
    print(f"| target | req/s (median) | vs native | vs {REFERENCE_FLOOR} | non-200 (all runs) |")
    print("|---|---|---|---|---|")
    for target, rps in medians.items():
        native = f"{rps / medians['native']:.2f}x" if "native" in medians else "-"
        floor = medians.get(REFERENCE_FLOOR)
        vs_floor = f"{rps / floor:.2f}x" if floor else "-"
        failed = sum(run["non_2xx"] for run in report[target])
        print(f"| {target} | {rps:,.0f} | {native} | {vs_floor} | {failed} |")
    if args.json:
        args.json.write_text(json.dumps({"medians": medians, "runs": report}, indent=2))


if __name__ == "__main__":
    main()
