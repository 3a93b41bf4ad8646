"""Where authz's CPU goes per Check, under load through Envoy: py-spy samples of `authz serve`.

For each target (`authz-http`, `authz-grpc`: bench/http/run.py's gateways, Envoy in front of
the bench's stand-in media server) this runs `wrk -t1 -c32` with one repeated valid HS256
token and, meanwhile, `py-spy record --gil --format raw` on the authz process (only the
thread holding the GIL is sampled: where the Python time goes), then sums the samples by
the first frame from the leaf that names a known part (the table in bench/README.md,
"Profile (issue 17)"); and the CPU per request of each of authz's threads by name, from
/proc (the Rust and C threads of granian and grpc core run without the GIL). Raw
collapsed stacks are written to --out, for flame graphs.

Run: python -m bench.profile [--seconds 10] [--out DIR] [TARGET ...]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from authz.core.mint import mint_hmac
from bench.http.run import BENCH_SECRET, _wrk, gateway, upstream

# (part, substrings of a frame): the first part whose substring a stack's frames contain,
# looking from the leaf, names where the sample's time went.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("logging/__init__.py",)),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("decision (authz.core)", ("authz/core/",)),
    ("checker (authz/service/checker.py)", ("authz/service/checker.py",)),
    ("adapter: response (answer/encode)", ("answer (", "_answer_of", "encode_response",
                                           "check_response", "_metadata_headers")),
    ("adapter: request view", ("request_view", "_RawHeaders")),
    ("protobuf parse", ("FromString", "upb", "_message")),
    ("adapter: rest of authz/fronts", ("authz/fronts/",)),
    ("grpcio Python (_server.py, threads)", ("grpc/_server.py", "threading.py",
                                              "concurrent/futures", "queue.py")),
    ("grpc core (cygrpc, with the GIL)", ("cygrpc",)),
    ("granian's Python side", ("granian",)),
    ("asyncio event loop", ("asyncio/",)),
)


def part_of(stack: str) -> str:
    """The part a collapsed stack ("frame;frame;...;leaf") is counted under."""
    frames = stack.split(";")[::-1]
    for frame in frames:
        for part, needles in PARTS:
            if any(needle in frame for needle in needles):
                return part
    return "other (interpreter, libc, idle waits)"


def summary(raw: Path) -> list[tuple[str, int]]:
    """Samples per part of one py-spy raw file, largest first."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[part_of(stack)] += int(count)
    return counts.most_common()


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of `pid`'s threads, summed by thread name."""
    ticks = os.sysconf("SC_CLK_TCK")
    by_name: collections.defaultdict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            stat = (task / "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            by_name[name.rstrip("0123456789_-")] += (int(fields[11]) + int(fields[12])) / ticks
    return dict(by_name)


def profile(
    target: str, seconds: int, token: str, out: Path, upstream_port: int
) -> tuple[Path, dict[str, float]]:
    """Load `target` with wrk while py-spy records its authz process: the raw file, and
    CPU ms per request by thread name."""
    raw = out / f"{target}.raw"
    with gateway(target, upstream_port) as gate:
        pid = gate.server_pid
        assert pid is not None
        _wrk(gate.port, token, 2)
        spy = shutil.which("py-spy") or "py-spy"
        command = [spy, "record", "--gil", "--format", "raw", "--rate", "250", "--nonblocking",
                   "--duration", str(seconds), "--pid", str(pid), "-o", str(raw)]
        before = thread_cpu(pid)
        started = time.monotonic()
        spy_run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load = _wrk(gate.port, token, seconds)
        spent = {name: cpu - before.get(name, 0.0) for name, cpu in thread_cpu(pid).items()}
        served = load.rps * (time.monotonic() - started)
        spy_run.wait()
    return raw, {name: cpu / served * 1e3 for name, cpu in spent.items() if cpu > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("targets", nargs="*", default=["authz-http", "authz-grpc"])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="profile-")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    token = mint_hmac({"sub": "bench", "exp": time.time() + 86400}, BENCH_SECRET.encode())
    with upstream() as upstream_port:
        for target in args.targets:
            raw, threads = profile(target, args.seconds, token, args.out, upstream_port)
            print(f"{target}: CPU ms per request by thread")
            for name, ms in sorted(threads.items(), key=lambda item: -item[1]):
                print(f"  {name:42} {ms:6.3f}")
            parts = summary(raw)
            total = sum(count for _, count in parts)
            print(f"{target}: {total} GIL-held samples ({raw})")
            for part, count in parts:
                print(f"  {part:42} {count / total:6.1%}")


if __name__ == "__main__":
    main()
