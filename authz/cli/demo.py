"""`authz demo`: authz, the real Envoy and a stand-in Ant Media Server, wired on loopback.

Everything runs on 127.0.0.1 with free ports (Envoy's listener can be fixed with --port).
authz runs inside this process on a freshly generated secret; its settings file is written
to a private temporary folder so `authz token --config <it>` can mint more tokens. Envoy
runs the project's envoy.yaml with only its ports changed. The stand-in answers every
request with what reached it. SIGINT (Ctrl-C) or SIGTERM stops all three and removes the
folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authz._support.envoy_config import (
    ENVOY_TLS_FOLDER,
    PROJECT_ENVOY_TLS_YAML,
    PROJECT_ENVOY_YAML,
    EnvoyNotFoundError,
    envoy_command,
    find_envoy_yaml,
    render_envoy_config,
)
from authz._support.loopback import cluster_healthy, echo_server, free_port, stop_process
from authz._support.throwaway_ca import ThrowawayCA
from authz.core.mint import mint_hmac
from authz.observability import setup_logging
from authz.service.server import Service
from authz.settings.load import load_settings

__all__ = [
    "EXIT_CANNOT_START",
    "EXIT_FAILED",
    "EXIT_STOPPED",
    "REST_PATH",
    "STRICT_PATH",
    "Example",
    "examples",
    "run_demo",
]

EXIT_STOPPED = 0
EXIT_FAILED = 1
EXIT_CANNOT_START = 2

REST_PATH = "/LiveApp/rest/v2/broadcasts/list/0/10"
STRICT_PATH = "/StrictApp/rest/v2/broadcasts/list/0/10"
_START_TIMEOUT = 30.0


def _stand_in_body(method: str, path: str, seen: list[tuple[str, str]]) -> dict[str, Any]:
    """Ant Media's REST API as far as the demo needs it: it says what reached it."""
    headers: dict[str, str] = {}
    for key, value in seen:
        # The token did reach the upstream; its length says so without repeating it.
        shown = f"<{len(value)} characters>" if key == "authorization" else value
        headers[key] = f"{headers[key]}, {shown}" if key in headers else shown
    return {
        "stand_in": "Ant Media Server REST API",
        "method": method,
        "path": path,
        "headers": headers,
    }


@dataclass(frozen=True)
class _Answer:
    status: int
    phrase: str
    headers: dict[str, str]
    body: str


def _get(port: int, path: str, headers: dict[str, str], timeout: float = 5.0) -> _Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        return _Answer(
            response.status,
            response.reason,
            {k.lower(): v for k, v in response.getheaders()},
            body,
        )
    finally:
        conn.close()


@dataclass(frozen=True)
class Example:
    """One curl line the demo prints, runs and answers."""

    title: str
    path: str
    token: str | None

    def curl(self, port: int) -> str:
        words = ["curl", "-i"]
        if self.token is not None:
            words += ["-H", f"Authorization: {self.token}"]
        words.append(f"http://127.0.0.1:{port}{self.path}")
        return shlex.join(words)


def examples(secret: bytes, now: int) -> list[Example]:
    """Allowed with a fresh token, denied without one, denied with an expired one; then the
    stricter StrictApp route of envoy.yaml (policy `admin`) without and with a role."""

    def token(lifetime: int, **claims: Any) -> str:
        issued = now if lifetime > 0 else now + lifetime - 3600
        return mint_hmac({"sub": "demo-user", "iat": issued, "exp": now + lifetime, **claims},
                         secret)

    fresh = token(3600)
    return [
        Example("allowed: a token minted with the demo's secret", REST_PATH, fresh),
        Example("denied: no token", REST_PATH, None),
        Example("denied: a token that expired an hour ago", REST_PATH, token(-3600)),
        Example("denied: StrictApp's policy `admin` wants role admin or publisher",
                STRICT_PATH, fresh),
        Example("allowed: StrictApp with role=publisher", STRICT_PATH,
                token(3600, role="publisher")),
    ]


def _show(answer: _Answer) -> str:
    lines = [f"  -> HTTP {answer.status} {answer.phrase}"]
    challenge = answer.headers.get("www-authenticate")
    if challenge is not None:
        lines.append(f"     www-authenticate: {challenge}")
    if answer.body:
        lines.append(f"     {answer.body}")
    return "\n".join(lines)


def _settings_yaml(secret: str, grpc_port: int, http_port: int) -> dict[str, Any]:
    return {
        "grpc_address": f"127.0.0.1:{grpc_port}",
        "http_address": f"127.0.0.1:{http_port}",
        "hs256_secret": secret,
        "log_level": "warning",
        # One local Envoy and no Kubernetes: nothing has to be told before the ports close.
        "drain_delay_seconds": 0,
        # envoy.yaml routes /StrictApp/rest/... to this policy.
        "policies": {
            "admin": {"required_claims": [{"claim": "role", "one_of": ["admin", "publisher"]}]}
        },
    }


def _envoy_ready(admin_port: int) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException):
        return _get(admin_port, "/ready", {}).status == 200 and cluster_healthy(
            _get(admin_port, "/clusters", {}).body, "authz"
        )
    return False


class _StartFailedError(RuntimeError):
    pass


def _say(text: str = "") -> None:
    print(text, flush=True)


def _write_pem(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(mode=0o700)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def _make_pki(folder: Path) -> tuple[Path, Path]:
    """A throwaway CA's server certificate for authz and client certificate for Envoy, as
    cert-manager would write them (tls.crt, tls.key, ca.crt): the two folders."""
    ca = ThrowawayCA("authz demo CA")
    server = ca.issue("authz", dns_names=("authz",), ip_addresses=("127.0.0.1",))
    client = ca.issue("envoy", client=True)
    authz = _write_pem(folder / "tls-authz", {"tls.crt": server.cert_pem,
                                              "tls.key": server.key_pem, "ca.crt": ca.cert_pem})
    envoy = _write_pem(folder / "tls-envoy", {"tls.crt": client.cert_pem,
                                              "tls.key": client.key_pem, "ca.crt": ca.cert_pem})
    return authz, envoy


def _refused_without_certificate(port: int, ca_file: Path) -> bool:
    """A client trusting the demo CA but presenting no certificate gets no gRPC answer."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="authz") as tls,
        ):
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            return tls.recv(100) == b""
    except (ssl.SSLError, OSError):
        return True


class _Demo:
    def __init__(self, envoy_yaml: Path, port: int, folder: Path, tls: bool = False) -> None:
        self.envoy_yaml = envoy_yaml
        self.tls = tls
        self.fixed_port = port != 0
        self.listen_port = port or free_port()
        self.admin_port = free_port()
        self.folder = folder
        self.envoy: subprocess.Popen[bytes] | None = None
        self.service: Service | None = None

    @property
    def envoy_log(self) -> Path:
        return self.folder / "envoy.log"

    async def start(self, upstream_port: int) -> bytes:
        """Start authz and Envoy; the secret that signs."""
        secret = secrets.token_urlsafe(32)
        grpc_port, http_port = free_port(), free_port()
        settings_path = self.folder / "authz.yaml"
        document = _settings_yaml(secret, grpc_port, http_port)
        envoy_tls: Path | None = None
        if self.tls:
            authz_tls, envoy_tls = _make_pki(self.folder)
            document.update(tls_cert_file=str(authz_tls / "tls.crt"),
                            tls_key_file=str(authz_tls / "tls.key"),
                            tls_client_ca_file=str(authz_tls / "ca.crt"))
        settings_path.write_text(yaml.safe_dump(document))
        settings = load_settings(str(settings_path), None, {})
        setup_logging(settings.log_level)
        self.service = Service(settings)
        await self.service.start()

        config = render_envoy_config(
            self.envoy_yaml,
            self.listen_port,
            self.admin_port,
            {"authz": grpc_port, "ant_media": upstream_port},
        )
        config_path = self.folder / "envoy.yaml"
        text = yaml.safe_dump(config)
        if envoy_tls is not None:
            text = text.replace(ENVOY_TLS_FOLDER, str(envoy_tls))
        config_path.write_text(text)
        with self.envoy_log.open("wb") as log:
            # A session of its own: Ctrl-C reaches the demo only, which stops Envoy in order.
            self.envoy = subprocess.Popen(
                envoy_command(config_path, log_level="warning"),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while not await asyncio.to_thread(_envoy_ready, self.admin_port):
            if self.envoy.poll() is not None:
                raise _StartFailedError(f"Envoy exited with code {self.envoy.returncode}")
            if time.monotonic() > deadline:
                raise _StartFailedError(f"Envoy was not ready within {_START_TIMEOUT:g} s")
            await asyncio.sleep(0.1)
        _say("authz demo: ready")
        _say(f"  Envoy ({self.envoy_yaml.name})   http://127.0.0.1:{self.listen_port}   "
             f"admin http://127.0.0.1:{self.admin_port}")
        grpc = "gRPC over mTLS" if self.tls else "gRPC"
        _say(f"  authz                {grpc} 127.0.0.1:{grpc_port}   "
             f"metrics http://127.0.0.1:{http_port}/metrics")
        if envoy_tls is not None:
            _say(f"  mTLS: a throwaway CA made at start ({envoy_tls.parent}/tls-*); Envoy "
                 "presents its client certificate, authz requires it")
            refused = await asyncio.to_thread(
                _refused_without_certificate, grpc_port, envoy_tls / "ca.crt"
            )
            _say("  a client without Envoy's certificate: "
                 + ("refused at the handshake" if refused else "NOT refused"))
        _say(f"  stand-in Ant Media   http://127.0.0.1:{upstream_port} (answers with what "
             "reached it)")
        fixed = " (Envoy's fixed by --port)" if self.fixed_port else ""
        _say(f"  ports: free loopback ports picked at start{fixed}")
        return secret.encode()

    async def show_examples(self, secret: bytes) -> None:
        for number, example in enumerate(examples(secret, int(time.time())), start=1):
            headers = {"authorization": example.token} if example.token is not None else {}
            answer = await asyncio.to_thread(_get, self.listen_port, example.path, headers)
            _say()
            _say(f"{number}. {example.title}")
            _say(f"$ {example.curl(self.listen_port)}")
            _say(_show(answer))

    def envoy_exited(self) -> bool:
        return self.envoy is not None and self.envoy.poll() is not None

    async def stop(self) -> None:
        if self.envoy is not None and self.envoy.poll() is None:
            await asyncio.to_thread(stop_process, self.envoy)
        if self.service is not None:
            await self.service.drain()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.envoy_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def _run(envoy_yaml: Path, port: int, tls: bool = False) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # mkdtemp makes the folder private (0700): its settings file holds the secret.
    folder = Path(tempfile.mkdtemp(prefix="authz-demo-"))
    _say("authz demo: starting authz, Envoy and a stand-in Ant Media Server on 127.0.0.1 ...")
    demo = _Demo(envoy_yaml, port, folder, tls)
    code = EXIT_STOPPED
    try:
        with echo_server(_stand_in_body, (",", ":")) as upstream_port:
            starting = asyncio.create_task(demo.start(upstream_port))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
                await demo.stop()
                _say("authz demo: stopped before it was ready")
                return EXIT_STOPPED
            stopping.cancel()
            try:
                secret = starting.result()
            except (RuntimeError, OSError) as error:  # a port taken, Envoy refusing to start
                print(f"authz demo: cannot start: {error}", file=sys.stderr)
                tail = demo.log_tail()
                if tail:
                    print(f"Envoy's last log lines:\n{tail}", file=sys.stderr)
                await demo.stop()
                return EXIT_CANNOT_START
            await demo.show_examples(secret)
            _say()
            _say("More tokens for this demo (its secret lives only as long as the demo):")
            _say(f"  authz token --config {folder / 'authz.yaml'} --sub you --claim role=admin")
            _say(f"Envoy's access log (with authz's reason per request): {demo.envoy_log}")
            _say("Ctrl-C stops the demo.")
            while not stop.is_set():
                if demo.envoy_exited():
                    print("authz demo: Envoy stopped unexpectedly:\n" + demo.log_tail(),
                          file=sys.stderr)
                    code = EXIT_FAILED
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
            await demo.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _say("authz demo: stopped")
    return code


def run_demo(port: int = 0, envoy_config: str | None = None, tls: bool = False) -> int:
    """Run the demo until SIGINT/SIGTERM; the exit code (0 after a clean stop). `tls`: mTLS
    between Envoy and authz, certificates from a throwaway CA (envoy-tls.yaml)."""
    try:
        envoy_yaml = find_envoy_yaml(
            envoy_config, PROJECT_ENVOY_TLS_YAML if tls else PROJECT_ENVOY_YAML
        )
        envoy_command(envoy_yaml)  # finds the binary now, before anything starts
    except EnvoyNotFoundError as error:
        print(f"authz demo: {error}", file=sys.stderr)
        return EXIT_CANNOT_START
    if not 0 <= port <= 65535:
        print(f"authz demo: --port {port} is not a port (0 picks a free one)", file=sys.stderr)
        return EXIT_CANNOT_START
    return asyncio.run(_run(envoy_yaml, port, tls))
