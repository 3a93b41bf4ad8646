"""TLS for the Check doors (SPEC section 11): `TlsCredentials` holds the current key
material and hands it to both doors, `TlsWatcher` reloads it when the files change.

- gRPC: grpcio's dynamic server credentials; their fetcher runs before every new
  handshake and returns the new certificate configuration once after each reload.
- HTTP: an `ssl.SSLContext` whose SNI callback (OpenSSL runs it on every ClientHello, with
  or without SNI) moves each new handshake onto the context built from the current
  material; a reload builds a whole new context, so a rotated client CA replaces the old
  one instead of being added to it.

Either way a reload touches only handshakes that start after it: established connections
keep the credentials they started with, and nothing restarts. A bad file later keeps the
last good material (logged, counted in `authz_tls_reloads_total{result="failure"}`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc

from authz.keys.file_watch import FilePoller, Signature
from authz.keys.tls_files import TlsFiles, TlsMaterial, read_tls_material
from authz.observability import TLS_RELOAD_FAILURE, TLS_RELOAD_SUCCESS
from authz.settings.errors import SettingsError

__all__ = ["POLL_SECONDS", "TlsCredentials", "TlsWatcher", "server_context"]

log = logging.getLogger("authz.tls")

POLL_SECONDS = 1.0
# What the HTTP door's TLS offers: granian behind it speaks both (HTTPModes.auto).
_ALPN = ["h2", "http/1.1"]


@contextlib.contextmanager
def _pem_paths(material: TlsMaterial) -> Iterator[tuple[str, str]]:
    """Paths `load_cert_chain` can read the material from (it takes no bytes): anonymous
    memory files where Linux has them, so the key never lands on a disk; else a private
    temporary folder."""
    if hasattr(os, "memfd_create"):
        fds = [os.memfd_create("authz-tls", 0) for _ in range(2)]
        try:
            for fd, data in zip(fds, (material.cert_chain, material.private_key), strict=True):
                with open(fd, "wb", closefd=False) as stream:
                    stream.write(data)
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="authz-tls-") as folder:
        cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert.write_bytes(material.cert_chain)
        key.touch(0o600)
        key.write_bytes(material.private_key)
        yield str(cert), str(key)


def server_context(material: TlsMaterial) -> ssl.SSLContext:
    """A server-side SSLContext of `material`: TLS 1.2 or newer, the client certificate
    required and checked against the client CA when there is one. Raises ssl.SSLError when
    OpenSSL refuses the material."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with _pem_paths(material) as (cert, key):
        context.load_cert_chain(cert, key)
    if material.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=material.client_ca.decode("ascii", "replace"))
    context.set_alpn_protocols(_ALPN)
    return context


def _grpc_configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.private_key, material.cert_chain)], root_certificates=material.client_ca
    )


class TlsCredentials:
    """The doors' current TLS material; `update` swaps it for new handshakes."""

    def __init__(self, material: TlsMaterial) -> None:
        self._material = material
        self._context = server_context(material)
        self._generation = 0
        self._grpc_configuration = _grpc_configuration(material)

    @property
    def material(self) -> TlsMaterial:
        """What new handshakes use."""
        return self._material

    def update(self, material: TlsMaterial) -> None:
        """Use `material` for every handshake from now on; raises ssl.SSLError (and changes
        nothing) when OpenSSL refuses it."""
        context = server_context(material)
        configuration = _grpc_configuration(material)
        # The context and configuration before the generation: a handshake that sees the new
        # generation must find the new configuration.
        self._context, self._grpc_configuration, self._material = context, configuration, material
        self._generation += 1

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Server credentials for `add_secure_port` that follow `update`."""
        served = self._generation

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # grpcio calls this before every new handshake: None keeps the current one.
            nonlocal served
            if self._generation == served:
                return None
            served = self._generation
            return self._grpc_configuration

        return grpc.dynamic_ssl_server_credentials(
            self._grpc_configuration,
            fetch,
            require_client_authentication=self._material.requires_client_certificate,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The context to accept with: every handshake switches to the current material's."""
        listening = server_context(self._material)
        listening.sni_callback = self._pick
        return listening

    def _pick(self, connection: ssl.SSLObject, _server_name: str | None,
              _context: ssl.SSLContext) -> None:
        connection.context = self._context


class TlsWatcher:
    """Reloads `files` into `credentials` whenever one of them changes (Kubernetes symlink
    swaps included); keeps the last good material when they become unusable."""

    def __init__(
        self, files: TlsFiles, credentials: TlsCredentials, poll_seconds: float = POLL_SECONDS
    ) -> None:
        self._files = files
        self._credentials = credentials
        self._poller = FilePoller(files.paths, self._load, poll_seconds)

    def start(self) -> None:
        """Load the files now and keep polling them in the running event loop."""
        self._poller.start()

    async def stop(self) -> None:
        """Stop polling."""
        await self._poller.stop()

    def _load(self, signatures: tuple[Signature | None, ...]) -> None:
        try:
            for path, signature in zip(self._files.paths, signatures, strict=True):
                if signature is None:
                    raise ValueError(f"cannot stat {path}")
            material = read_tls_material(self._files)
            if material != self._credentials.material:
                self._credentials.update(material)
        except (SettingsError, ValueError, ssl.SSLError) as exc:
            TLS_RELOAD_FAILURE.inc()
            # An SSLError's text names OpenSSL's reason, never key bytes; SettingsError's
            # never quotes a file.
            log.warning("TLS files unusable; keeping the last good certificate and key",
                        extra={"error": str(exc), "files": list(self._files.paths)})
            return
        TLS_RELOAD_SUCCESS.inc()
        log.info("TLS files loaded", extra={"serial": f"{material.serial:x}",
                                            "not_after": material.not_after})
