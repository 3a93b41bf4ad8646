"""A real OpenID Provider for the e2e tests: panva's `oidc-provider` (Node, installed by
tests/install-oidc-provider.sh into tests/oidc/node_modules) run by tests/oidc/provider.mjs
on 127.0.0.1 with keys the test chooses, issuing real JWT access tokens through the
`client_credentials` grant with a resource indicator (RFC 8707)."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authz._support.loopback import stop_process, wait_until
from tests.harness import ROOT, request
from tests.jwks_server import PrivateKey, _b64u_int, b64u, jwk

OIDC = ROOT / "tests" / "oidc"
CLIENT_ID = "ams-gateway"
CLIENT_SECRET = "test-client-secret-0123456789abcdef"
AUDIENCE = "ams-rest"


def private_jwk(key: PrivateKey, kid: str, alg: str) -> dict[str, Any]:
    """The private JWK of `key` (what the provider signs with), with `kid` and `alg`."""
    out = jwk(key, kid, alg=alg, use="sig")
    if isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        out.update(d=_b64u_int(n.d), p=_b64u_int(n.p), q=_b64u_int(n.q),
                   dp=_b64u_int(n.dmp1), dq=_b64u_int(n.dmq1), qi=_b64u_int(n.iqmp))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        out["d"] = _b64u_int(key.private_numbers().private_value, size)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        out["d"] = b64u(key.private_bytes_raw())
    return out


def node_or_fail() -> str:
    node = shutil.which("node")
    if node is None or not (OIDC / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("oidc-provider not installed: run tests/install-oidc-provider.sh")
    return node


@dataclass
class OpenIDProvider:
    issuer: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def access_token(self, alg: str) -> str:
        """A real access token (a JWT signed with the provider's `alg` key) for the
        client_credentials grant with the resource indicator of `alg`."""
        form = urllib.parse.urlencode({
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "resource": f"https://ams.example/rest/{alg}",
        })
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", "/token", body=form.encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            answer = conn.getresponse()
            status, raw = answer.status, answer.read()
        finally:
            conn.close()
        assert status == 200, (status, raw, self.logs()[-2000:])
        body = json.loads(raw)
        assert body["token_type"].lower() == "bearer"
        token: str = body["access_token"]
        return token


@contextlib.contextmanager
def run_provider(
    port: int, issuer: str, keys: Sequence[tuple[PrivateKey, str, str]]
) -> Iterator[OpenIDProvider]:
    """oidc-provider for `issuer` on 127.0.0.1:`port`, signing with `keys` ((key, kid, alg)
    each); ready once its discovery document answers."""
    node = node_or_fail()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "provider.json"
        config.write_text(json.dumps({
            "issuer": issuer, "port": port, "audience": AUDIENCE,
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "keys": [private_jwk(key, kid, alg) for key, kid, alg in keys],
        }))
        log_path = Path(tmp) / "provider.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [node, str(OIDC / "provider.mjs"), str(config)],
                stdout=log_file, stderr=subprocess.STDOUT, cwd=OIDC,
            )
            provider = OpenIDProvider(issuer, port, process, log_path)
            try:
                wait_until(
                    lambda: process.poll() is None and _answers(port), timeout=60,
                    what=f"oidc-provider on {port}",
                )
                yield provider
            finally:
                stop_process(process)


def _answers(port: int) -> bool:
    try:
        return request(port, "/.well-known/openid-configuration", timeout=5).status == 200
    except OSError:
        return False
