"""Process CPU from /proc, and load tools (h2load, wrk) run and parsed."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by `pids` (threads included)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICKS


def rss_mb(pid: int) -> float:
    """Resident set size of `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Load:
    """One load run: completed requests, throughput, latency percentiles (ms), failures."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failed: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of `values` (nearest rank), nan when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def h2load(port: int, path: str, body: bytes, seconds: float, connections: int = 1,
           streams: int = 32, rate: float | None = None) -> Load:
    """gRPC unary calls with fixed request bytes for `seconds` (h2load, h2c), as fast as
    the server answers or at `rate` calls per second."""
    with tempfile.TemporaryDirectory() as tmp:
        data, log = Path(tmp) / "body", Path(tmp) / "log"
        data.write_bytes(grpc_frame(body))
        out = subprocess.run(
            ["h2load", "-D", str(max(1, round(seconds))), "-c", str(connections),
             "-m", str(streams), *(["--rps", str(round(rate))] if rate else []),
             "-d", str(data), "-H", "content-type: application/grpc", "-H", "te: trailers",
             "--log-file", str(log), f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout
        lines = [line.split("\t") for line in log.read_text().splitlines() if line]
    match = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored", out)
    finished = re.search(r"finished in ([\d.]+)(m?s)", out)
    if match is None or finished is None:
        raise RuntimeError(f"cannot parse h2load output:\n{out}")
    elapsed = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    latencies = [int(fields[2]) / 1000 for fields in lines]
    return Load(int(match.group(2)), elapsed, percentile(latencies, 0.5),
                percentile(latencies, 0.99), int(match.group(3)) + int(match.group(4)))


def median(values: list[float]) -> float:
    """The median, or nan for no values."""
    return statistics.median(values) if values else float("nan")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str, label: str) -> float:
    match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {label}% in wrk output:\n{text}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(port: int, path: str, headers: dict[str, str], seconds: float,
        connections: int = 32) -> Load:
    """HTTP/1.1 load through Envoy for `seconds` (wrk, one thread); non-2xx count as failed."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*command, f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)", out)
    if done is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    elapsed = float(done.group(2)) * _UNITS[done.group(3)] / 1000
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    failed = (int(bad.group(1)) if bad else 0) + (
        sum(int(g) for g in errors.groups()) if errors else 0)
    return Load(int(done.group(1)), elapsed, _wrk_ms(out, "50"), _wrk_ms(out, "99"), failed)
