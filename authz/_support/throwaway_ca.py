"""A throwaway certificate authority for `authz demo --tls`, the tests and the benchmark:
a CA made at start, the certificates it issues, and a folder that swaps them in as a
Kubernetes Secret volume does (cert-manager's `tls.crt`, `tls.key`, `ca.crt`).

Nothing here is for production: the keys live as long as the process that made them.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "SecretVolume", "ThrowawayCA"]

_LIFETIME = datetime.timedelta(days=1)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Issued:
    """One certificate and its key, PEM."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    serial: int


class ThrowawayCA:
    """A self-signed CA (ECDSA P-256) that issues server and client certificates."""

    def __init__(self, name: str = "authz throwaway CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._name = subject
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
        client: bool = False,
        serial: int | None = None,
    ) -> Issued:
        """A leaf certificate for a server (`client=False`) or a client, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(serial if serial is not None else x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key),
                      cert.serial_number)


class SecretVolume:
    """A folder laid out as kubelet mounts a Secret: `<name> -> ..data/<name>`, `..data ->
    ..<timestamp>/`; `swap` writes a new timestamped folder and renames a new `..data`
    link over the old one (one atomic step), then removes the old folder."""

    def __init__(self, folder: Path, files: Mapping[str, bytes]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._current: Path | None = None
        self.swap(files)
        for name in files:
            (folder / name).symlink_to(Path("..data") / name)

    def path(self, name: str) -> str:
        """The path a program is configured with."""
        return str(self.folder / name)

    def swap(self, files: Mapping[str, bytes]) -> None:
        """Replace every file at once."""
        version = self.folder / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
        version.mkdir()
        for name, data in files.items():
            (version / name).write_bytes(data)
            os.chmod(version / name, 0o600)
        staged = self.folder / "..data_tmp"
        staged.symlink_to(version.name)
        os.replace(staged, self.folder / "..data")
        old, self._current = self._current, version
        if old is not None:
            shutil.rmtree(old)
