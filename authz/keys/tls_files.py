"""The TLS key material of the two Check doors (SPEC section 11): `TlsFiles` names the
certificate, key and client CA files, `read_tls_material` reads and checks them into a
`TlsMaterial` (the same rules at start and on every reload).

Checked: the certificate file holds PEM certificates, the key file an unencrypted PEM
private key whose public half is the first certificate's, the client CA file PEM
certificates. Every refusal is a `SettingsError` naming the setting and the path, never the
file's content (a key file's bytes are secret; so is the library's message about them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authz.settings.errors import SettingsError

__all__ = [
    "CERT_SETTING",
    "CLIENT_CA_SETTING",
    "KEY_SETTING",
    "TlsFiles",
    "TlsMaterial",
    "read_tls_material",
]

CERT_SETTING = "AUTHZ_TLS_CERT_FILE"
KEY_SETTING = "AUTHZ_TLS_KEY_FILE"
CLIENT_CA_SETTING = "AUTHZ_TLS_CLIENT_CA_FILE"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the doors' certificate chain, private key and (for mTLS) client CA live."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        """The files to watch."""
        extra = (self.client_ca_file,) if self.client_ca_file else ()
        return (self.cert_file, self.key_file, *extra)


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """One consistent read of `TlsFiles`: PEM bytes as the TLS libraries take them."""

    cert_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None
    serial: int  # the leaf certificate's, for logs and tests
    not_after: float  # its expiry, Unix time

    @property
    def requires_client_certificate(self) -> bool:
        """mTLS: a client certificate signed by `client_ca` is required."""
        return self.client_ca is not None


def _read(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError as exc:
        raise SettingsError(setting, f"cannot read {path}: {exc.strerror or exc}") from None


def _certificates(data: bytes, path: str, setting: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise SettingsError(setting, f"{path} holds no PEM certificate")
    return certificates


def _spki(key: object) -> bytes:
    public_bytes = key.public_bytes  # type: ignore[attr-defined]
    spki: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return spki


def read_tls_material(files: TlsFiles) -> TlsMaterial:
    """Read and check `files`; raises `SettingsError` (naming the setting) when one cannot
    be read, holds no usable PEM data, or the key does not belong to the certificate."""
    chain = _read(files.cert_file, CERT_SETTING)
    leaf = _certificates(chain, files.cert_file, CERT_SETTING)[0]
    key_pem = _read(files.key_file, KEY_SETTING)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        # Not the library's text: it could describe the key's content.
        raise SettingsError(
            KEY_SETTING, f"{files.key_file} holds no unencrypted PEM private key"
        ) from None
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise SettingsError(
            KEY_SETTING,
            f"the key in {files.key_file} does not match the certificate in {files.cert_file} "
            f"({CERT_SETTING})",
        )
    client_ca = None
    if files.client_ca_file is not None:
        client_ca = _read(files.client_ca_file, CLIENT_CA_SETTING)
        _certificates(client_ca, files.client_ca_file, CLIENT_CA_SETTING)
    return TlsMaterial(
        cert_chain=chain,
        private_key=key_pem,
        client_ca=client_ca,
        serial=leaf.serial_number,
        not_after=leaf.not_valid_after_utc.timestamp(),
    )
