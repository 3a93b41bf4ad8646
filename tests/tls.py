"""TLS parts for the tests: a throwaway PKI written out as cert-manager would mount it, the
shipped mTLS Envoy configs pointed at it, and probes that do one fresh handshake."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from authz._support.throwaway_ca import Issued, SecretVolume, ThrowawayCA
from tests.harness import ROOT

ENVOY_TLS_YAML = ROOT / "envoy-tls.yaml"
ENVOY_HTTP_TLS_YAML = ROOT / "envoy-http-tls.yaml"
# Where the shipped single-host configs read Envoy's certificate files (deploy/sync.py).
ENVOY_TLS_FOLDER = "/etc/envoy/tls"
SERVER_NAME = "authz"


def server_certificate(ca: ThrowawayCA) -> Issued:
    """authz's certificate as the shipped configs expect it (SAN `authz`)."""
    return ca.issue(SERVER_NAME, dns_names=(SERVER_NAME,), ip_addresses=("127.0.0.1",))


def volume_files(issued: Issued, ca: ThrowawayCA) -> dict[str, bytes]:
    """A cert-manager Secret's files."""
    return {"tls.crt": issued.cert_pem, "tls.key": issued.key_pem, "ca.crt": ca.cert_pem}


@dataclass
class Pki:
    """authz's mounted certificate (a Secret volume), Envoy's client files, a stranger."""

    ca: ThrowawayCA
    authz: SecretVolume
    envoy_folder: Path
    other_ca: ThrowawayCA
    stranger_folder: Path  # a client certificate from other_ca, same layout

    @property
    def authz_env(self) -> dict[str, str]:
        return {
            "AUTHZ_TLS_CERT_FILE": self.authz.path("tls.crt"),
            "AUTHZ_TLS_KEY_FILE": self.authz.path("tls.key"),
            "AUTHZ_TLS_CLIENT_CA_FILE": self.authz.path("ca.crt"),
        }

    def rotate(self) -> Issued:
        """A new server certificate from the same CA, swapped in as kubelet does."""
        issued = server_certificate(self.ca)
        self.authz.swap(volume_files(issued, self.ca))
        return issued


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def make_pki(folder: Path) -> Pki:
    ca, other = ThrowawayCA(), ThrowawayCA("another CA")
    authz = SecretVolume(folder / "authz", volume_files(server_certificate(ca), ca))
    envoy = _write(folder / "envoy", volume_files(ca.issue("envoy-gateway", client=True), ca))
    stranger = _write(
        folder / "stranger", volume_files(other.issue("envoy-gateway", client=True), ca)
    )
    return Pki(ca, authz, envoy, other, stranger)


def envoy_tls_config(source: Path, files: Path, out: Path) -> Path:
    """The shipped mTLS config `source` reading Envoy's certificate files from `files`."""
    out.write_text(source.read_text().replace(ENVOY_TLS_FOLDER, str(files)))
    return out


def client_context(client: Path | None, alpn: str, trust: Path) -> ssl.SSLContext:
    """A client context trusting `trust`/ca.crt, presenting `client`/tls.crt when given."""
    context = ssl.create_default_context(cafile=str(trust / "ca.crt"))
    if client is not None:
        context.load_cert_chain(str(client / "tls.crt"), str(client / "tls.key"))
    context.set_alpn_protocols([alpn])
    return context


def handshake_serial(port: int, context: ssl.SSLContext, timeout: float = 10.0) -> int:
    """The serial of the certificate a fresh handshake with 127.0.0.1:`port` shows."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number
