"""The cost of TLS on the Check hop: the same Envoy config and authz, plaintext against mTLS,
for the gRPC door and the HTTP door, in interleaved rounds.

Run: .venv/bin/python -m bench.tls [--rounds 3] [--seconds 5]   (wrk: bash bench/install-tools.sh)

Four Envoys (envoy.yaml, envoy-tls.yaml, envoy-http.yaml, envoy-http-tls.yaml) in front of
the upstream Envoy of `python -m bench`, asking two authz processes (one plaintext, one
with AUTHZ_TLS_* from a throwaway CA), each with both doors. Load through Envoy:
`wrk -t1 -c32`, one valid HS256 token. CPU per Check from /proc: Envoy and authz only.
A separate module from bench/run.py so the main bench's scenario list stays as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from authz._support.throwaway_ca import ThrowawayCA
from bench.measure import cpu_seconds, median, wrk
from bench.run import _upstream
from tests.credentials import SECRET, hs256
from tests.harness import ENVOY_HTTP_YAML, ENVOY_YAML, free_port, run_authz, run_envoy
from tests.tls import (
    ENVOY_HTTP_TLS_YAML,
    ENVOY_TLS_YAML,
    envoy_tls_config,
    server_certificate,
    volume_files,
)

PATH = "/LiveApp/rest/v2/broadcasts/list/0/10"


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@contextlib.contextmanager
def _stack(tmp: Path) -> Iterator[dict[str, tuple[int, list[int]]]]:
    """scenario -> (Envoy's port, the pids whose CPU counts)."""
    ca = ThrowawayCA()
    authz_files = _write(tmp / "authz", volume_files(server_certificate(ca), ca))
    envoy_files = _write(tmp / "envoy", volume_files(ca.issue("envoy", client=True), ca))
    tls_env = {
        "AUTHZ_TLS_CERT_FILE": str(authz_files / "tls.crt"),
        "AUTHZ_TLS_KEY_FILE": str(authz_files / "tls.key"),
        "AUTHZ_TLS_CLIENT_CA_FILE": str(authz_files / "ca.crt"),
    }
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(_upstream())
        scenarios: dict[str, tuple[int, list[int]]] = {}
        for mode, env in (("plaintext", {}), ("mtls", tls_env)):
            http_door = free_port()
            authz = stack.enter_context(run_authz(
                {**env, "AUTHZ_HTTP_AUTHZ_ADDRESS": f"127.0.0.1:{http_door}",
                 "AUTHZ_LOG_LEVEL": "warning"}))
            for door, plain, tls, port, health in (
                ("grpc", ENVOY_YAML, ENVOY_TLS_YAML, authz.grpc_port, None),
                ("http", ENVOY_HTTP_YAML, ENVOY_HTTP_TLS_YAML, http_door, authz.http_port),
            ):
                source = plain if mode == "plaintext" else envoy_tls_config(
                    tls, envoy_files, tmp / f"{door}-{tls.name}")
                envoy = stack.enter_context(run_envoy(
                    {"authz": port, "ant_media": upstream}, source=source,
                    health_check_ports={"authz": health} if health else None))
                scenarios[f"{door}/{mode}"] = (envoy.port, [envoy.process.pid,
                                                           authz.process.pid])
        yield scenarios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    token = hs256(SECRET, ttl=24 * 3600)
    samples: dict[str, list[tuple[float, float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as folder, _stack(Path(folder)) as scenarios:
        for port, _ in scenarios.values():  # warm every connection up
            wrk(port, PATH, {"authorization": token}, 1)
        for round_no in range(args.rounds):
            for name, (port, pids) in scenarios.items():
                envoy_before, authz_before = cpu_seconds(pids[:1]), cpu_seconds(pids[1:])
                load = wrk(port, PATH, {"authorization": token}, args.seconds)
                envoy_ms = (cpu_seconds(pids[:1]) - envoy_before) * 1000 / load.requests
                authz_ms = (cpu_seconds(pids[1:]) - authz_before) * 1000 / load.requests
                if load.failed:
                    raise SystemExit(f"{name}: {load.failed} failed requests in round {round_no}")
                samples.setdefault(name, []).append((load.rps, load.p50_ms, envoy_ms, authz_ms))
    print("| scenario | req/s | p50 ms | CPU ms per Check: Envoy | authz |")
    print("|---|---:|---:|---:|---:|")
    for name, runs in samples.items():
        rps, p50, envoy_ms, authz_ms = (median([r[i] for r in runs]) for i in range(4))
        print(f"| {name} | {rps:,.0f} | {p50:.2f} | {envoy_ms:.3f} | {authz_ms:.3f} |")
    for door in ("grpc", "http"):
        ratio = median([t[0] / p[0] for p, t in
                        zip(samples[f"{door}/plaintext"], samples[f"{door}/mtls"], strict=True)])
        print(f"{door}: mTLS req/s = {ratio:.2f} x plaintext (median of per-round ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
