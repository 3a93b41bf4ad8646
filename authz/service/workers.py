"""`authz serve --workers N`: N worker processes sharing the gRPC and metrics ports.

Why processes: one Python process decides on one core (the GIL). Each worker is a plain
`authz serve` (its own gRPC server, key refresher and token cache) bound with SO_REUSEPORT,
so the kernel spreads incoming connections over the workers; nothing is shared at run time
but the metric files. The unit spread is a connection: Envoy opens one HTTP/2 connection
per Envoy worker thread, so N authz workers pay off behind an Envoy with several workers
(or several Envoys), not behind a single-threaded one.

Metrics: the parent points PROMETHEUS_MULTIPROC_DIR at a fresh directory before any worker
starts (prometheus_client picks its storage at import), and every worker's `/metrics`
answers with all workers' samples merged, so a scrape may land on any of them. The gauges
count live workers only: when the parent reaps a worker it deletes that worker's gauge
files (`mark_process_dead`); its counters stay, since a counter must never go down.

The parent only supervises (and a worker whose parent dies, even by SIGKILL, gets SIGTERM
from the kernel and drains):
- SIGTERM/SIGINT: passed to every worker, which drains (readiness off, in-flight Checks
  finish); the parent exits 0 once all exited 0.
- A worker that dies is restarted (its siblings keep serving meanwhile), so one crash
  does not cost the pod its capacity; more than MAX_RESTARTS deaths within
  RESTART_WINDOW_SECONDS is a crash loop, and the parent then stops the others and exits 1
  so the orchestrator sees the failure and restarts the pod.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from types import FrameType

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import mark_process_dead

from authz.service.server import DRAIN_GRACE_SECONDS

__all__ = [
    "MAX_RESTARTS",
    "MULTIPROC_ENV",
    "RESTART_WINDOW_SECONDS",
    "STOP_TIMEOUT_SECONDS",
    "SUPERVISOR_ENV",
    "is_worker",
    "metrics_registry",
    "parse_workers",
    "supervise",
]

log = logging.getLogger("authz.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Each worker's environment names its supervisor's pid: what is done once per pod, such as
# the warnings about the settings at start, is left to the supervisor.
SUPERVISOR_ENV = "_AUTHZ_SUPERVISOR_PID"
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
# A worker gets its own drain grace plus a margin for closing down.
STOP_TIMEOUT_SECONDS = DRAIN_GRACE_SECONDS + 10.0
_POLL_SECONDS = 0.2


def parse_workers(text: str) -> int:
    """`N` (1 or more) or `auto` (the CPUs this process may run on)."""
    if text.strip().lower() == "auto":
        return len(os.sched_getaffinity(0))
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"--workers must be a number or auto, got {text!r}") from None
    if count < 1:
        raise ValueError(f"--workers must be at least 1, got {count}")
    return count


def is_worker() -> bool:
    """True in a worker process that `supervise` started."""
    return os.environ.get(SUPERVISOR_ENV) == str(os.getppid())


def metrics_registry() -> CollectorRegistry:
    """The registry `/metrics` serves: all workers' samples merged when running as a worker."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    # Runs in the worker between fork and exec: if the parent dies, even by SIGKILL, the
    # kernel sends the worker SIGTERM and it drains, so no worker outlives its supervisor.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


class _Supervisor:
    def __init__(self, count: int, worker_argv: list[str], env: dict[str, str]) -> None:
        self._count = count
        self._argv = worker_argv
        self._env = env
        self._workers: list[subprocess.Popen[bytes]] = []
        self._deaths: list[float] = []
        self._stopping = False

    def _spawn(self) -> subprocess.Popen[bytes]:
        # stdout/stderr are inherited: the workers' JSON log lines go where the parent's go.
        return subprocess.Popen(
            self._argv, env=self._env, preexec_fn=partial(_die_with_parent, os.getpid())
        )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        for worker in self._workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self._workers = [self._spawn() for _ in range(self._count)]
        log.info("workers started", extra={"workers": [w.pid for w in self._workers]})
        while not self._stopping:
            for index, worker in enumerate(self._workers):
                code = worker.poll()
                if code is None or self._stopping:
                    continue
                # Before the replacement starts: a reused pid must not lose its new files.
                mark_process_dead(worker.pid, self._env[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
                now = time.monotonic()
                self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW_SECONDS]
                self._deaths.append(now)
                if len(self._deaths) > MAX_RESTARTS:
                    log.error(
                        "workers keep dying: stopping",
                        extra={"pid": worker.pid, "exit_code": code},
                    )
                    self._on_signal(signal.SIGTERM, None)
                    self._wait_all()
                    return 1
                self._workers[index] = self._spawn()
                log.warning(
                    "worker died: restarted",
                    extra={"pid": worker.pid, "exit_code": code,
                           "new_pid": self._workers[index].pid},
                )
            time.sleep(_POLL_SECONDS)
        return 0 if self._wait_all() else 1

    def _wait_all(self) -> bool:
        clean = True
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for worker in self._workers:
            try:
                code = worker.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
                code = worker.wait()
            # Killed by the signal passed on: a worker still starting, before its handlers.
            clean = clean and code in (0, -signal.SIGTERM, -signal.SIGINT)
        log.info("workers stopped", extra={"clean": clean})
        return clean


def supervise(count: int, config: str | None, ams_properties: str | None) -> int:
    """Run `count` workers of `authz serve --workers 1` with these settings files.

    Returns the exit code: 0 after a clean SIGTERM drain, 1 after a crash loop.
    """
    serve_args: list[str] = []
    if config is not None:
        serve_args += ["--config", config]
    if ams_properties is not None:
        serve_args += ["--ams-properties", ams_properties]
    env = dict(os.environ)
    own_dir = not env.get(MULTIPROC_ENV)
    directory = Path(env[MULTIPROC_ENV]) if not own_dir else Path(
        tempfile.mkdtemp(prefix="authz-metrics-")
    )
    if not own_dir:
        # Files of an earlier run would be summed into this one's counters.
        for stale in directory.glob("*.db"):
            stale.unlink()
    env[MULTIPROC_ENV] = str(directory)
    env[SUPERVISOR_ENV] = str(os.getpid())
    argv = [sys.executable, "-m", "authz.cli", "serve", *serve_args, "--workers", "1"]
    try:
        return _Supervisor(count, argv, env).run()
    finally:
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
