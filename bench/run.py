"""authz against Envoy's native jwt_authn, through Envoy and direct, in interleaved rounds.

Run: .venv/bin/python -m bench [--rounds 3] [--seconds 8] [--quick]
(tools: bash bench/install-tools.sh). Prints a table and the goals of issue #4, and writes
everything to bench/results/<time>.json. It refuses to report when any authorizing target
lets a bad token through.

Through Envoy (wrk, 1 thread, 32 connections, HTTP/1.1): the project's envoy.yaml with no
auth, with native jwt_authn (HS256 and RS256, the same keys), and with authz (1 and 2
workers); one connection for the unloaded latency. The segment scenario: the same load on
an HLS segment URL with `?token=<play token>` (SPEC section 9), through authz-1w's Envoy
(the segment route asks the play check) and through native jwt_authn reading `?token=`
with the stream secret, next to the REST case in the same rounds. Direct gRPC (h2load, 1
connection, 32 streams, the CheckRequest bytes a real Envoy sent): authz and a
transport-floor server that answers fixed bytes on the same grpcio server flavour.
Never-seen tokens: a Python client sends a new token per Check (HS256 and RS256), also to
the floor for the like-for-like difference. CPU per request is read from /proc for the
server processes only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from authz._pb.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from authz._support.envoy_config import envoy_command
from authz._support.loopback import free_port, stop_process, wait_until
from authz.core.mint import mint_hmac
from authz.fronts.grpc import CHECK_METHOD_PATH
from bench import configs
from bench.capture import capture_check_request
from bench.loadgen import send_each
from bench.measure import Load, cpu_seconds, h2load, median, rss_mb, wrk
from tests.credentials import SECRET
from tests.harness import Authz, request, run_authz, run_envoy
from tests.jwks_server import JWKSServer, b64u, jwk, jwks, rsa_key, sign

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REST = "/LiveApp/rest/v2/broadcasts/list/0/10"
# An HLS segment of stream `stream1` as Ant Media names it ({id}%09d.ts), and the play
# tokens' secret (Ant Media's settings.jwtStreamSecretKey; never verifies REST tokens).
STREAM_ID = "stream1"
SEGMENT = f"/LiveApp/streams/{STREAM_ID}000000001.ts"
STREAM_SECRET = "bench-stream-secret-of-at-least-32-bytes"
KID = "bench"
# Never-seen tokens are sent at this fixed rate to authz and to the floor alike, so both
# see the same arrival pattern; it is below what authz sustains for RS256 on 2 busy cores.
DISTINCT_RATE = 1500.0
# The repeated-token comparison with the floor is paced the same way: unpaced, CPU per call
# follows how many calls each wake-up finds, so the faster server looks cheaper per call.
DIRECT_RATE = 4000.0


class BadTokenAllowed(SystemExit):
    """A target allowed a token it must refuse: no figures are reported."""


@dataclass
class Sample:
    """One measured run of one scenario."""

    scenario: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    failed: int
    cpu_ms_per_req: dict[str, float] = field(default_factory=dict)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _family(pid: int) -> list[int]:
    return [pid, *_children(pid)]


@dataclass
class Tokens:
    hs256: str
    rs256: str
    bad: str
    rsa_jwk: dict[str, Any]
    hs_jwk: dict[str, Any]
    play: str  # stream STREAM_ID, type play, signed with STREAM_SECRET
    play_bad: str  # the same, tampered
    play_other: str  # a valid play token for another stream
    publish: str  # a valid token of type publish for STREAM_ID
    stream_jwk: dict[str, Any]

    def segment(self, token: str | None) -> str:
        """The segment URL with `?token=`, or without a token for None."""
        return SEGMENT if token is None else f"{SEGMENT}?token={token}"


def _tamper(token: str) -> str:
    # Flip one character in the middle of the signature: still well-formed, wrong signature.
    head, _, signature = token.rpartition(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{signature[:middle]}{flipped}{signature[middle + 1:]}"


def _tokens() -> Tokens:
    now = int(time.time())
    claims = {"sub": "bench-user", "iat": now, "exp": now + 6 * 3600}
    key = rsa_key(KID)
    stream_key = STREAM_SECRET.encode()

    def stream(stream_id: str, kind: str) -> str:
        return mint_hmac({"streamId": stream_id, "type": kind, "exp": now + 6 * 3600},
                         stream_key)

    return Tokens(
        hs256=mint_hmac(claims, SECRET.encode()),
        rs256=sign("RS256", key, claims, kid=KID),
        bad=_tamper(mint_hmac(claims, SECRET.encode())),
        rsa_jwk=jwk(key, KID, alg="RS256", use="sig"),
        hs_jwk={"kty": "oct", "k": b64u(SECRET.encode()), "alg": "HS256"},
        play=stream(STREAM_ID, "play"),
        play_bad=_tamper(stream(STREAM_ID, "play")),
        play_other=stream("stream2", "play"),
        publish=stream(STREAM_ID, "publish"),
        stream_jwk={"kty": "oct", "k": b64u(stream_key), "alg": "HS256"},
    )


def _distinct(kind: str, count: int, salt: str) -> list[str]:
    now = int(time.time())
    key = rsa_key(KID)
    out = []
    for index in range(count):
        claims = {"sub": f"user-{salt}-{index:07d}", "iat": now, "exp": now + 6 * 3600}
        if kind == "hs256":
            out.append(mint_hmac(claims, SECRET.encode()))
        else:
            out.append(sign("RS256", key, claims, kid=KID))
    return out


class Payloads:
    """CheckRequests shaped exactly like the one Envoy sent, with the token swapped."""

    def __init__(self, template: bytes) -> None:
        self._template = CheckRequest.FromString(template)

    def for_token(self, token: str | None) -> bytes:
        message = CheckRequest()
        message.CopyFrom(self._template)
        headers = message.attributes.request.http.headers
        if token is None:
            del headers["authorization"]
        else:
            headers["authorization"] = f"Bearer {token}"
        return message.SerializeToString()


def _direct_allowed(port: int, payload: bytes) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        raw = channel.unary_unary(CHECK_METHOD_PATH)(payload, timeout=5)
    return CheckResponse.FromString(raw).status.code == 0


def _gate_direct(name: str, port: int, payloads: Payloads, tokens: Tokens) -> None:
    for good in (tokens.hs256, tokens.rs256):
        if not _direct_allowed(port, payloads.for_token(good)):
            raise SystemExit(f"bench: {name} refused a valid token; fix the setup first")
    for bad in (tokens.bad, None):
        if _direct_allowed(port, payloads.for_token(bad)):
            raise BadTokenAllowed(f"bench: {name} ALLOWED A BAD TOKEN: refusing to report")


def _gate_envoy(name: str, port: int, good: str, bad: str) -> None:
    if request(port, REST, {"Authorization": f"Bearer {good}"}).status != 200:
        raise SystemExit(f"bench: {name} refused a valid token; fix the setup first")
    for headers in ({"Authorization": f"Bearer {bad}"}, {}):
        if request(port, REST, headers).status == 200:
            raise BadTokenAllowed(f"bench: {name} ALLOWED A BAD TOKEN: refusing to report")


def _gate_segment(name: str, port: int, tokens: Tokens, binds_stream: bool) -> bool:
    """Refuse to report unless `name` serves the segment for its play token and denies a
    tampered one, none, a publish token and a REST token (and, when it `binds_stream`,
    another stream's play token); whether it let another stream's token through."""
    if request(port, tokens.segment(tokens.play)).status != 200:
        raise SystemExit(f"bench: {name} refused a valid play token; fix the setup first")
    bad = [tokens.play_bad, None, tokens.publish, tokens.hs256]
    if binds_stream:
        bad.append(tokens.play_other)
    for token in bad:
        if request(port, tokens.segment(token)).status == 200:
            raise BadTokenAllowed(f"bench: {name} ALLOWED A BAD TOKEN on {SEGMENT}: "
                                  "refusing to report")
    return request(port, tokens.segment(tokens.play_other)).status == 200


@contextlib.contextmanager
def _process(command: list[str], ready: Callable[[], bool], what: str) -> Iterator[int]:
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=BENCH_DIR.parent)
        try:
            wait_until(lambda: process.poll() is None and ready(), timeout=30, what=what)
            yield process.pid
        finally:
            stop_process(process)


def _grpc_up(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=0.5)
        except grpc.FutureTimeoutError:
            return False
    return True


@contextlib.contextmanager
def _floor(flavour: str) -> Iterator[tuple[int, int]]:
    port = free_port()
    command = [sys.executable, "-m", "bench.floor", "--port", str(port), "--flavour", flavour]
    with _process(command, lambda: _grpc_up(port), f"floor ({flavour})") as pid:
        yield port, pid


@contextlib.contextmanager
def _upstream() -> Iterator[int]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = configs.write(configs.upstream_config(port), Path(tmp) / "upstream.yaml")
        with _process(envoy_command(path, "error"),
                      lambda: request(port, "/").status == 200, "upstream Envoy"):
            yield port


@contextlib.contextmanager
def _envoy_on(config: dict[str, Any], clusters: dict[str, int],
              healthy: str | None) -> Iterator[Any]:
    with tempfile.TemporaryDirectory() as tmp:
        source = configs.write(config, Path(tmp) / "variant.yaml")
        with run_envoy(clusters, source=source, wait_cluster_healthy=healthy) as envoy:
            yield envoy


def _send_counting(port: int, batch: list[bytes], allowed: list[int]) -> Load:
    load, count = send_each(port, batch, rate=DISTINCT_RATE)
    allowed.append(count)
    return load


def _measure(groups: dict[str, list[int]], run: Callable[[], Load],
             scenario: str, round_no: int) -> Sample:
    before = {name: cpu_seconds(p) for name, p in groups.items()}
    load = run()
    after = {name: cpu_seconds(p) for name, p in groups.items()}
    per_req = {
        name: (after[name] - before[name]) * 1000 / load.requests if load.requests else 0.0
        for name in groups
    }
    return Sample(scenario, round_no, load.rps, load.p50_ms, load.p99_ms, load.failed, per_req)


def _summary(samples: list[Sample]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(s.scenario for s in samples):
        runs = [s for s in samples if s.scenario == name]
        cpu_names = dict.fromkeys(k for s in runs for k in s.cpu_ms_per_req)
        out[name] = {
            "rps": median([s.rps for s in runs]),
            "p50_ms": median([s.p50_ms for s in runs]),
            "p99_ms": median([s.p99_ms for s in runs]),
            "failed": sum(s.failed for s in runs),
            "cpu_ms_per_req": {
                k: median([s.cpu_ms_per_req[k] for s in runs if k in s.cpu_ms_per_req])
                for k in cpu_names
            },
            "runs": len(runs),
        }
    return out


def _machine() -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor())
    envoy = subprocess.run([*envoy_command(Path("/dev/null"))[:1], "--version"],
                           capture_output=True, text=True).stdout.strip().split()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "envoy": envoy[-1] if envoy else "?",
    }


def _memory_run(tokens_count: int, payloads: Payloads, env: dict[str, str]) -> dict[str, Any]:
    """RSS of a fresh authz before and after `tokens_count` distinct valid tokens."""
    with run_authz(env) as authz:
        started = rss_mb(authz.process.pid)
        distinct = _distinct("hs256", tokens_count, "mem")
        load, allowed = send_each(authz.grpc_port,
                                  [payloads.for_token(t) for t in distinct])
        if allowed != tokens_count:
            raise SystemExit(f"bench: memory run: {tokens_count - allowed} valid tokens refused")
        filled = rss_mb(authz.process.pid)
        # A second pass over the same tokens: all hits, RSS must stay flat.
        send_each(authz.grpc_port, [payloads.for_token(t) for t in distinct[:20000]])
        after_hits = rss_mb(authz.process.pid)
        metrics = authz.metrics()
    lookups = {
        result: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        for result in ("hit", "miss")
        if line.startswith(f'authz_token_cache_lookups_total{{result="{result}"}}')
    }
    return {"tokens": tokens_count, "rss_start_mb": started, "rss_filled_mb": filled,
            "rss_after_hits_mb": after_hits, "cache_lookups": lookups,
            "checks_per_s": load.rps}


def run(rounds: int, seconds: float, distinct_count: int, memory_tokens: int) -> dict[str, Any]:
    """Run every scenario `rounds` times interleaved; the report (also written as JSON)."""
    for tool in ("wrk", "h2load"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            raise SystemExit(f"bench: {tool} not found: run bash bench/install-tools.sh")
    tokens = _tokens()
    print("capturing a CheckRequest from Envoy ...", flush=True)
    payloads = Payloads(capture_check_request(f"Bearer {tokens.hs256}", REST))
    hs_payload = payloads.for_token(tokens.hs256)
    rs_payload = payloads.for_token(tokens.rs256)
    print(f"minting {2 * rounds * distinct_count} never-seen tokens ...", flush=True)
    fresh = {
        kind: [_distinct(kind, distinct_count, f"{kind}{r}") for r in range(rounds)]
        for kind in ("hs256", "rs256")
    }
    samples: list[Sample] = []
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(JWKSServer(jwks(tokens.rsa_jwk)))
        env = {"AUTHZ_JWKS_URL": server.url, "AUTHZ_LOG_LEVEL": "warning",
               "AUTHZ_PLAY_JWT_ENABLED": "true", "AUTHZ_STREAM_SECRET": STREAM_SECRET}
        # authz-1w's Envoy also serves the segment scenario: its segment route asks the
        # play check (added here until the shipped envoy.yaml's stream routes do).
        authz_stream, shipped = configs.authz_stream_config(SEGMENT)
        upstream = stack.enter_context(_upstream())
        authz1: Authz = stack.enter_context(run_authz(env))
        authz2: Authz = stack.enter_context(run_authz(env, args=("--workers", "2")))
        floor_port, floor_pid = stack.enter_context(_floor("threads"))
        aio_port, aio_pid = stack.enter_context(_floor("aio"))
        envoys = {
            "noauth": stack.enter_context(
                _envoy_on(configs.noauth_config(), {"ant_media": upstream}, None)),
            "native-hs256": stack.enter_context(_envoy_on(
                configs.native_config(tokens.hs_jwk), {"ant_media": upstream}, None)),
            "native-rs256": stack.enter_context(_envoy_on(
                configs.native_config(tokens.rsa_jwk), {"ant_media": upstream}, None)),
            "authz-1w": stack.enter_context(_envoy_on(
                authz_stream, {"authz": authz1.grpc_port, "ant_media": upstream}, "authz")),
            "authz-2w": stack.enter_context(run_envoy(
                {"authz": authz2.grpc_port, "ant_media": upstream})),
            # The project's envoy.yaml asking the fixed-bytes floor: what the ext_authz hop
            # costs with no decision at all (it allows everything, so it is not gated).
            "floor": stack.enter_context(run_envoy(
                {"authz": floor_port, "ant_media": upstream}, wait_cluster_healthy=None)),
        }
        native_segment = stack.enter_context(_envoy_on(
            configs.native_stream_config(tokens.stream_jwk, SEGMENT), {"ant_media": upstream},
            None))
        segment_targets = {"authz-1w": envoys["authz-1w"], "native-hs256": native_segment}
        _gate_segment("authz-1w", envoys["authz-1w"].port, tokens, binds_stream=True)
        native_other = _gate_segment("native-hs256 (segment)", native_segment.port, tokens,
                                     binds_stream=False)
        _gate_direct("authz (1 worker)", authz1.grpc_port, payloads, tokens)
        _gate_direct("authz (2 workers)", authz2.grpc_port, payloads, tokens)
        _gate_envoy("native-hs256", envoys["native-hs256"].port, tokens.hs256, tokens.bad)
        _gate_envoy("native-rs256", envoys["native-rs256"].port, tokens.rs256,
                    _tamper(tokens.rs256))
        for name in ("authz-1w", "authz-2w"):
            _gate_envoy(name, envoys[name].port, tokens.hs256, tokens.bad)
        good_for = {"native-rs256": tokens.rs256}
        authz_pids = {"authz-1w": authz1.process.pid, "authz-2w": authz2.process.pid,
                      "floor": floor_pid}
        floor_pids = {"floor-threads": floor_pid, "floor-aio": aio_pid}
        direct = [
            ("floor-threads", floor_port, hs_payload),
            ("floor-aio", aio_port, hs_payload),
            ("authz-hs256", authz1.grpc_port, hs_payload),
            ("authz-rs256", authz1.grpc_port, rs_payload),
        ]

        def server_pids(name: str) -> dict[str, list[int]]:
            pid = floor_pids.get(name, authz1.process.pid)
            return {"server": [pid]}

        for round_no in range(1, rounds + 1):
            print(f"round {round_no}/{rounds}", flush=True)
            for name, envoy in envoys.items():
                headers = {} if name == "noauth" else {
                    "Authorization": f"Bearer {good_for.get(name, tokens.hs256)}"}
                pids = {"envoy": [envoy.process.pid]}
                if name in authz_pids:
                    pids["floor" if name == "floor" else "authz"] = _family(authz_pids[name])
                samples.append(_measure(pids, partial(wrk, envoy.port, REST, headers, seconds),
                                        f"envoy/{name}", round_no))
            segment = tokens.segment(tokens.play)
            for name, envoy in segment_targets.items():
                pids = {"envoy": [envoy.process.pid]}
                if name in authz_pids:
                    pids["authz"] = _family(authz_pids[name])
                samples.append(_measure(pids, partial(wrk, envoy.port, segment, {}, seconds),
                                        f"envoy-segment/{name}", round_no))
            for name in ("native-hs256", "authz-1w", "floor"):
                envoy = envoys[name]
                unloaded = partial(wrk, envoy.port, REST,
                                   {"Authorization": f"Bearer {tokens.hs256}"},
                                   max(1.0, seconds / 2), connections=1)
                samples.append(_measure({"envoy": [envoy.process.pid]}, unloaded,
                                        f"envoy-unloaded/{name}", round_no))
            for name, envoy in segment_targets.items():
                unloaded = partial(wrk, envoy.port, segment, {}, max(1.0, seconds / 2),
                                   connections=1)
                samples.append(_measure({"envoy": [envoy.process.pid]}, unloaded,
                                        f"envoy-segment-unloaded/{name}", round_no))
            for name, port, payload in direct:
                loaded = partial(h2load, port, CHECK_METHOD_PATH, payload, seconds)
                samples.append(_measure(server_pids(name), loaded, f"direct/{name}", round_no))
            for name, port, payload in (direct[0], direct[2]):
                paced = partial(h2load, port, CHECK_METHOD_PATH, payload, seconds,
                                rate=DIRECT_RATE)
                samples.append(_measure(server_pids(name), paced, f"direct-paced/{name}",
                                        round_no))
                unloaded = partial(h2load, port, CHECK_METHOD_PATH, payload,
                                   max(1.0, seconds / 2), streams=1)
                samples.append(_measure(server_pids(name), unloaded,
                                        f"direct-unloaded/{name}", round_no))
            for kind in ("hs256", "rs256"):
                batch = [payloads.for_token(t) for t in fresh[kind][round_no - 1]]
                for name, port in (("floor-threads", floor_port), ("authz", authz1.grpc_port)):
                    allowed: list[int] = []
                    samples.append(_measure(server_pids(name),
                                            partial(_send_counting, port, batch, allowed),
                                            f"distinct-{kind}/{name}", round_no))
                    if allowed[0] != len(batch):
                        raise SystemExit(f"bench: {name} refused {len(batch) - allowed[0]} "
                                         f"valid {kind} tokens")
        # Once more after the load: a bad token must still be refused.
        _gate_direct("authz (1 worker)", authz1.grpc_port, payloads, tokens)
        _gate_envoy("authz-2w", envoys["authz-2w"].port, tokens.hs256, tokens.bad)
        _gate_segment("authz-1w", envoys["authz-1w"].port, tokens, binds_stream=True)
    # After everything else has stopped; HS256 only, so nothing but authz itself runs.
    memory = (
        _memory_run(memory_tokens, payloads, {"AUTHZ_LOG_LEVEL": "warning"})
        if memory_tokens
        else {}
    )
    facts = {"path": SEGMENT, "stream_id": STREAM_ID,
             "route": "shipped" if shipped else "stream: play added by the bench",
             "native_allows_another_streams_token": native_other}
    return _report(samples, memory, rounds, seconds, distinct_count, facts)


@dataclass
class Goal:
    """One goal of issue #4 and the figure measured for it."""

    goal: str
    value: float
    target: float
    detail: str
    higher_is_better: bool = False

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target


def _per_round(samples: list[Sample], scenario: str, reference: str,
               figure: Callable[[Sample], float],
               compare: Callable[[float, float], float]) -> float:
    # Each round's pair was measured minutes apart at most: comparing within a round and
    # taking the median keeps other load on the machine from skewing the result.
    by_round = {s.round: s for s in samples if s.scenario == reference}
    return median([compare(figure(s), figure(by_round[s.round]))
                   for s in samples if s.scenario == scenario and s.round in by_round])


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _total_cpu(sample: Sample) -> float:
    return sum(sample.cpu_ms_per_req.values())


def _segment(samples: list[Sample], summary: dict[str, dict[str, Any]],
             facts: dict[str, Any]) -> dict[str, Any]:
    """The segment scenario next to REST: each target's figures, and the ratios (each the
    median over rounds of that round's pair) segment vs REST and authz vs native."""
    def rps(sample: Sample) -> float:
        return sample.rps

    def p50(sample: Sample) -> float:
        return sample.p50_ms

    figures = {"rps": rps, "cpu_ms_per_req": _total_cpu, "p50_ms": p50}
    targets = {}
    for name in ("authz-1w", "native-hs256"):
        rows = {"rest": f"envoy/{name}", "segment": f"envoy-segment/{name}",
                "rest_unloaded": f"envoy-unloaded/{name}",
                "segment_unloaded": f"envoy-segment-unloaded/{name}"}
        targets[name] = {
            **{case: {"rps": summary[row]["rps"], "p50_ms": summary[row]["p50_ms"],
                      "p99_ms": summary[row]["p99_ms"],
                      "cpu_ms_per_req": sum(summary[row]["cpu_ms_per_req"].values())}
               for case, row in rows.items()},
            "segment_vs_rest": {
                what: round(_per_round(samples, rows["segment"], rows["rest"], figure, _ratio), 3)
                for what, figure in figures.items()},
            "segment_vs_rest_unloaded_p50": round(_per_round(
                samples, rows["segment_unloaded"], rows["rest_unloaded"], p50, _ratio), 3),
        }
    authz_vs_native = {
        case: {what: round(_per_round(samples, f"{prefix}/authz-1w", f"{prefix}/native-hs256",
                                      figure, _ratio), 3)
               for what, figure in figures.items()}
        for case, prefix in (("rest", "envoy"), ("segment", "envoy-segment"),
                             ("rest_unloaded", "envoy-unloaded"),
                             ("segment_unloaded", "envoy-segment-unloaded"))}
    return {**facts, "targets": targets, "authz_vs_native": authz_vs_native}


def _print_segment(segment: dict[str, Any]) -> None:
    print(f"\nsegment ({segment['path']}?token=<play token>; route: {segment['route']}) vs "
          "REST, ratios: the median over rounds of that round's pair:")
    print(f"  {'':14} {'REST req/s':>10} {'segment':>8} {'seg/REST':>8}  "
          f"{'CPU ms/req REST':>15} {'segment':>8} {'seg/REST':>8}  "
          f"{'unloaded p50 REST':>17} {'segment':>8}")
    for name, row in segment["targets"].items():
        ratio = row["segment_vs_rest"]
        print(f"  {name:14} {row['rest']['rps']:10.0f} {row['segment']['rps']:8.0f} "
              f"{ratio['rps']:8.3f}  {row['rest']['cpu_ms_per_req']:15.3f} "
              f"{row['segment']['cpu_ms_per_req']:8.3f} {ratio['cpu_ms_per_req']:8.3f}  "
              f"{row['rest_unloaded']['p50_ms']:17.3f} {row['segment_unloaded']['p50_ms']:8.3f}")
    versus = segment["authz_vs_native"]
    print(f"  {'authz/native':14} {versus['rest']['rps']:10.3f} "
          f"{versus['segment']['rps']:8.3f} {'':8}  {versus['rest']['cpu_ms_per_req']:15.3f} "
          f"{versus['segment']['cpu_ms_per_req']:8.3f} {'':8}  "
          f"{versus['rest_unloaded']['p50_ms']:17.3f} {versus['segment_unloaded']['p50_ms']:8.3f}")
    if segment["native_allows_another_streams_token"]:
        print("  native jwt_authn serves the segment for another stream's play token "
              "(it cannot bind streamId to the path); authz refuses it")


def _goals(samples: list[Sample], summary: dict[str, dict[str, Any]],
           memory: dict[str, Any]) -> list[Goal]:
    def cpu(scenario: str, who: str = "server") -> float:
        value: float = summary[scenario]["cpu_ms_per_req"][who]
        return value

    per_round = partial(_per_round, samples)

    def server_cpu(sample: Sample) -> float:
        return sample.cpu_ms_per_req["server"]

    def rps(sample: Sample) -> float:
        return sample.rps

    floor = cpu("direct-paced/floor-threads")
    native = summary["envoy/native-hs256"]["rps"]
    authz_cpu, rs_cpu = cpu("direct-paced/authz-hs256"), cpu("distinct-rs256/authz")
    rs_floor = cpu("distinct-rs256/floor-threads")
    goals = [
        Goal("direct CPU per Check, repeated valid token <= 1.25x floor",
             round(per_round("direct-paced/authz-hs256", "direct-paced/floor-threads",
                             server_cpu, lambda a, b: a / b), 2), 1.25,
             f"medians at {DIRECT_RATE:.0f} Checks/s: authz {authz_cpu:.3f} ms, "
             f"floor {floor:.3f} ms"),
        Goal("never-seen RS256 token <= floor + 0.15 ms CPU",
             round(per_round("distinct-rs256/authz", "distinct-rs256/floor-threads", server_cpu,
                             lambda a, b: a - b), 3), 0.15,
             f"medians: authz {rs_cpu:.3f} ms, floor {rs_floor:.3f} ms (same paced client)"),
    ]
    for name in ("authz-1w", "authz-2w"):
        authz_rps = summary[f"envoy/{name}"]["rps"]
        goals.append(Goal(f"through Envoy ({name}) >= 0.20x native HS256 req/s",
                          round(per_round(f"envoy/{name}", "envoy/native-hs256", rps,
                                          lambda a, b: a / b), 3), 0.20,
                          f"medians: {authz_rps:.0f} vs {native:.0f} req/s",
                          higher_is_better=True))
    goals.append(Goal("unloaded p50 through Envoy <= 0.5 ms",
                      round(summary["envoy-unloaded/authz-1w"]["p50_ms"], 3), 0.5,
                      f"native {summary['envoy-unloaded/native-hs256']['p50_ms']:.3f} ms, "
                      f"Envoy asking the floor {summary['envoy-unloaded/floor']['p50_ms']:.3f} ms"))
    if memory:
        goals.append(Goal(f"RSS after {memory['tokens']} distinct tokens <= 150 MB",
                          round(memory["rss_filled_mb"], 1), 150,
                          f"start {memory['rss_start_mb']:.1f} MB, after 20k hits "
                          f"{memory['rss_after_hits_mb']:.1f} MB"))
    return goals


def _report(samples: list[Sample], memory: dict[str, Any], rounds: int, seconds: float,
            distinct_count: int, segment_facts: dict[str, Any]) -> dict[str, Any]:
    summary = _summary(samples)
    # x native: REST rows against native REST, segment rows against native on the segment.
    native = {"envoy/": summary["envoy/native-hs256"]["rps"],
              "envoy-segment/": summary["envoy-segment/native-hs256"]["rps"]}
    print(f"\n{'scenario':34} {'req/s':>8} {'x native':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'fail':>5}  CPU ms/req")
    for name, row in summary.items():
        prefix = name.split("/", 1)[0] + "/"
        ratio = f"{row['rps'] / native[prefix]:.3f}" if prefix in native else ""
        cpu_text = " ".join(f"{k}={v:.3f}" for k, v in row["cpu_ms_per_req"].items())
        print(f"{name:34} {row['rps']:8.0f} {ratio:>8} {row['p50_ms']:7.3f} "
              f"{row['p99_ms']:7.2f} {row['failed']:5d}  {cpu_text}")
    segment = _segment(samples, summary, segment_facts)
    _print_segment(segment)
    goals = _goals(samples, summary, memory)
    print("\ngoals (issue #4; each ratio or difference: the median over rounds of that round's "
          "pair):")
    for goal in goals:
        mark = "met" if goal.met else "NOT MET"
        print(f"  [{mark:7}] {goal.goal}: {goal.value} ({goal.detail})")
    if memory:
        print(f"\nmemory: {memory}")
    report = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "machine": _machine(),
        "rounds": rounds, "seconds": seconds, "distinct_tokens_per_run": distinct_count,
        "summary": summary, "segment": segment,
        "goals": [{**asdict(g), "met": g.met} for g in goals],
        "memory": memory,
        "samples": [asdict(s) for s in samples],
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {path}")
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m bench`: run, print, write the JSON; exit 1 if a bad token was allowed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--seconds", type=float, default=8, help="length of each load run")
    parser.add_argument("--distinct", type=int, default=4000,
                        help="never-seen tokens per distinct-token run")
    parser.add_argument("--memory-tokens", type=int, default=100_000,
                        help="distinct tokens for the RSS check (0: skip)")
    parser.add_argument("--quick", action="store_true",
                        help="one short round, small token counts (a smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.distinct, args.memory_tokens = 1, 1, 200, 2000
    try:
        run(args.rounds, args.seconds, args.distinct, args.memory_tokens)
    except BadTokenAllowed as refused:
        print(refused, file=sys.stderr)
        return 1
    return 0
