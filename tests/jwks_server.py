"""Test helpers for the key sources: a real JWKS HTTP server on 127.0.0.1 that a test drives
at run time, JWK builders for `cryptography` keys, and a signer for public-key JWS algs."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64u_int(value: int, size: int | None = None) -> str:
    return b64u(value.to_bytes(size or (value.bit_length() + 7) // 8, "big"))


@cache
def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """A fresh RSA key per name, generated once per test session (generation is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def jwk(key: PrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    """The public JWK of `key`, with `kid` and any extra members (alg, use, ...)."""
    out: dict[str, Any]
    if isinstance(key, rsa.RSAPrivateKey):
        nums = key.public_key().public_numbers()
        out = {"kty": "RSA", "n": _b64u_int(nums.n), "e": _b64u_int(nums.e)}
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        pub = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
        out = {"kty": "EC", "crv": crv, "x": _b64u_int(pub.x, size), "y": _b64u_int(pub.y, size)}
    else:
        raw = key.public_key().public_bytes_raw()
        out = {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw)}
    if kid is not None:
        out["kid"] = kid
    out.update(extra)
    return out


def jwks(*keys: Mapping[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512,
}


def sign(alg: str, key: PrivateKey, claims: Mapping[str, Any], kid: str | None = None) -> str:
    """A compact JWS of `claims` signed with `key` under `alg` (RS*/PS*/ES*/EdDSA)."""
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = (
        b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())
    ).encode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(signing_input)
    elif isinstance(key, rsa.RSAPrivateKey):
        digest = _HASHES[alg[2:]]()
        pad: padding.AsymmetricPadding = (
            padding.PKCS1v15() if alg.startswith("RS")
            else padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        )
        signature = key.sign(signing_input, pad, digest)
    else:
        der = key.sign(signing_input, ec.ECDSA(_HASHES[alg[2:]]()))
        r, s = decode_dss_signature(der)
        size = (key.curve.key_size + 7) // 8
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return signing_input.decode() + "." + b64u(signature)


def free_port() -> int:
    """A loopback port nothing listens on right now (for "server not up yet" tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class JWKSServer:
    """A real HTTP server on 127.0.0.1; the test sets what it answers between requests.

    `status`, `body` and `headers` are the answer, taken when a request arrives; `delay`
    holds the answer back that many seconds (until closed: a large value hangs);
    `send_length=False` omits Content-Length (the body then ends when the connection
    closes). `dribble` sends the whole answer, status line and headers included, one byte
    every that many seconds, and `hangups` holds how long each such answer had run when
    the client went away. `requests` counts the GETs received, `arrivals` holds their
    monotonic times. `tls` serves HTTPS with that context. `routes` maps a request path to
    the body answered there instead of `body` (an OpenID Provider's discovery document
    beside its JWKS); `paths` holds every path requested, in order.
    """

    def __init__(self, body: bytes = b'{"keys": []}', port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.status = 200
        self.body = body
        self.headers: dict[str, str] = {"Content-Type": "application/json"}
        self.delay = 0.0
        self.send_length = True
        self.dribble = 0.0
        self.hangups: list[float] = []
        self.requests = 0
        self.arrivals: list[float] = []
        self.routes: dict[str, bytes] = {}
        self.paths: list[str] = []
        self._count_lock = threading.Lock()
        self._released = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                # Take the answer first, then count: a test that sees the count may change
                # the answer without racing this request.
                status, headers = outer.status, dict(outer.headers)
                body = outer.routes.get(self.path, outer.body)
                delay, send_length = outer.delay, outer.send_length
                dribble = outer.dribble
                with outer._count_lock:
                    outer.requests += 1
                    outer.arrivals.append(time.monotonic())
                    outer.paths.append(self.path)
                if delay and outer._released.wait(delay):
                    return
                if dribble:
                    lines = [f"HTTP/1.1 {status} Status", *(f"{k}: {v}" for k, v in
                                                          headers.items())]
                    self._dribble(("\r\n".join(lines) + "\r\n\r\n").encode() + body, dribble)
                    return
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if send_length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _dribble(self, data: bytes, every: float) -> None:
                started = time.monotonic()
                sock = self.connection
                for index in range(len(data)):
                    if outer._released.wait(every):
                        return
                    try:
                        # The client sends nothing more: readable means it closed or reset.
                        gone = bool(select.select([sock], [], [], 0)[0])
                        if not gone:
                            sock.sendall(data[index:index + 1])
                    except OSError:
                        gone = True
                    if gone:
                        outer.hangups.append(time.monotonic() - started)
                        return

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._scheme = "http"
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
            self._scheme = "https"
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        port: int = self._httpd.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}/.well-known/jwks.json"

    @property
    def origin(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}"

    def discovery(self, issuer: str, claimed: str | None = None,
                  jwks_uri: str | None = None) -> None:
        """Serve OpenID Provider metadata for `issuer` at its discovery path (OpenID Connect
        Discovery 1.0 section 4), naming `claimed` as its issuer (default: `issuer`) and
        `jwks_uri` (default: this server's `url`)."""
        path = issuer.rstrip("/").removeprefix(self.origin) + "/.well-known/openid-configuration"
        document = {"issuer": issuer if claimed is None else claimed,
                    "jwks_uri": jwks_uri or self.url}
        self.routes[path] = json.dumps(document).encode()

    def close(self) -> None:
        """Stop listening (later fetches get connection refused) and release hung requests."""
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> JWKSServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def loopback_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 signed by a fresh test CA, and the CA's PEM file."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authz test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = directory / "server.pem"
    chain.write_bytes(
        leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
        + leaf.public_bytes(serialization.Encoding.PEM)
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return context, ca_file
