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

import contextlib
import ctypes
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import mark_process_dead

from authz.service.handover import CONTROL_FD_ENV, HANDOVER, LEAVING, READY, STOP
from authz.service.server import DRAIN_GRACE_SECONDS

__all__ = [
    "MAX_RESTARTS",
    "MULTIPROC_ENV",
    "RESTART_WINDOW_SECONDS",
    "STOP_MARGIN_SECONDS",
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
# On top of its drain delay, a stopping worker gets its drain grace plus a margin for
# closing down.
STOP_MARGIN_SECONDS = DRAIN_GRACE_SECONDS + 10.0
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


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen[bytes]
    control: socket.socket  # the supervisor's end of the worker's control socket
    # The leaving worker this one replaces: told `handover` once this one is ready.
    predecessor: _Worker | None = None
    leaving: bool = False
    received: bytes = b""

    def tell(self, message: bytes) -> None:
        with contextlib.suppress(OSError):  # it may have exited meanwhile
            self.control.sendall(message + b"\n")


class _Supervisor:
    def __init__(
        self, count: int, worker_argv: list[str], env: dict[str, str], stop_timeout: float
    ) -> None:
        self._count = count
        self._stop_timeout = stop_timeout
        self._argv = worker_argv
        self._env = env
        self._workers: list[_Worker] = []
        self._deaths: list[float] = []
        self._stopping = False
        self._selector = selectors.DefaultSelector()

    def _spawn(self, predecessor: _Worker | None = None) -> _Worker:
        ours, theirs = socket.socketpair()
        env = {**self._env, CONTROL_FD_ENV: str(theirs.fileno())}
        # stdout/stderr are inherited: the workers' JSON log lines go where the parent's go.
        # Its own session: a terminal's Ctrl-C (or a signal to the process group) reaches
        # the supervisor only, which passes it on once.
        process = subprocess.Popen(
            self._argv,
            env=env,
            pass_fds=(theirs.fileno(),),
            start_new_session=True,
            preexec_fn=partial(_die_with_parent, os.getpid()),
        )
        theirs.close()
        ours.setblocking(False)
        worker = _Worker(process, ours, predecessor)
        self._selector.register(ours, selectors.EVENT_READ, worker)
        self._workers.append(worker)
        return worker

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        for worker in self._workers:
            if worker.process.poll() is None:
                worker.tell(STOP)
                worker.process.send_signal(signum)

    def _on_message(self, worker: _Worker, line: bytes) -> None:
        """One line from `worker`, its newline taken off."""
        if line == LEAVING:
            worker.leaving = True
            if self._stopping:
                worker.tell(STOP)
                return
            successor = self._spawn(predecessor=worker)
            log.info(
                "worker leaving: successor started",
                extra={"pid": worker.process.pid, "successor": successor.process.pid},
            )
        elif line == READY and worker.predecessor is not None:
            # The successor serves on the shared ports: now its predecessor may close them.
            worker.predecessor.tell(HANDOVER)
            log.info(
                "successor ready: handover",
                extra={"pid": worker.process.pid, "predecessor": worker.predecessor.process.pid},
            )
            worker.predecessor = None

    def _read(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout):
            worker: _Worker = key.data
            try:
                data = worker.control.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self._selector.unregister(worker.control)
                continue
            worker.received += data
            while b"\n" in worker.received:
                line, _, worker.received = worker.received.partition(b"\n")
                self._on_message(worker, line)

    def _reap(self, worker: _Worker, code: int) -> bool:
        """Forget an exited worker, restarting it unless it left as planned; False when
        the workers keep dying (a crash loop)."""
        self._workers.remove(worker)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker.control)
        worker.control.close()
        # Before the replacement starts: a reused pid must not lose its new files.
        mark_process_dead(worker.process.pid, self._env[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
        if worker.leaving and worker.predecessor is None:
            log.info("worker left", extra={"pid": worker.process.pid, "exit_code": code})
            return True
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW_SECONDS]
        self._deaths.append(now)
        if len(self._deaths) > MAX_RESTARTS:
            log.error(
                "workers keep dying: stopping",
                extra={"pid": worker.process.pid, "exit_code": code},
            )
            return False
        # A successor that died before it was ready still owes its predecessor a handover.
        replacement = self._spawn(predecessor=worker.predecessor)
        log.warning(
            "worker died: restarted",
            extra={"pid": worker.process.pid, "exit_code": code,
                   "new_pid": replacement.process.pid},
        )
        return True

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        for _ in range(self._count):
            self._spawn()
        log.info("workers started", extra={"workers": [w.process.pid for w in self._workers]})
        while not self._stopping:
            self._read(_POLL_SECONDS)
            for worker in list(self._workers):
                code = worker.process.poll()
                if code is None or self._stopping:
                    continue
                if not self._reap(worker, code):
                    self._on_signal(signal.SIGTERM, None)
                    self._wait_all()
                    return 1
        return 0 if self._wait_all() else 1

    def _wait_all(self) -> bool:
        clean = True
        deadline = time.monotonic() + self._stop_timeout
        for worker in self._workers:
            try:
                code = worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                code = worker.process.wait()
            # Killed by the signal passed on: a worker still starting, before its handlers.
            clean = clean and code in (0, -signal.SIGTERM, -signal.SIGINT)
            worker.control.close()
        log.info("workers stopped", extra={"clean": clean})
        return clean


def supervise(
    count: int, config: str | None, ams_properties: str | None, drain_delay: float
) -> int:
    """Run `count` workers of `authz serve --workers 1` with these settings files, whose
    drain delay is `drain_delay` seconds.

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
        return _Supervisor(count, argv, env, drain_delay + STOP_MARGIN_SECONDS).run()
    finally:
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
