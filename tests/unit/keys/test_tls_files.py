"""read_tls_material: the start and reload rules for the TLS files, and what a refusal says."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz._support.throwaway_ca import ThrowawayCA
from authz.keys.tls_files import TlsFiles, read_tls_material
from authz.settings.errors import SettingsError
from authz.settings.load import load_settings
from tests.credentials import SECRET


@pytest.fixture(scope="module")
def ca() -> ThrowawayCA:
    return ThrowawayCA()


def _files(folder: Path, ca: ThrowawayCA, key_from: ThrowawayCA | None = None) -> TlsFiles:
    issued = ca.issue("authz", dns_names=("authz",))
    (folder / "tls.crt").write_bytes(issued.cert_pem)
    key = issued.key_pem if key_from is None else key_from.issue("x").key_pem
    (folder / "tls.key").write_bytes(key)
    (folder / "ca.crt").write_bytes(ca.cert_pem)
    return TlsFiles(str(folder / "tls.crt"), str(folder / "tls.key"), str(folder / "ca.crt"))


def test_a_good_set_reads_with_its_serial(tmp_path: Path, ca: ThrowawayCA) -> None:
    material = read_tls_material(_files(tmp_path, ca))
    assert material.requires_client_certificate
    assert material.client_ca == ca.cert_pem
    assert "PRIVATE" not in repr(material)
    assert material.serial > 0


def test_a_key_of_another_certificate_is_refused(tmp_path: Path, ca: ThrowawayCA) -> None:
    files = _files(tmp_path, ca, key_from=ca)
    with pytest.raises(SettingsError) as refused:
        read_tls_material(files)
    assert refused.value.setting == "AUTHZ_TLS_KEY_FILE"
    assert "does not match" in str(refused.value)
    assert "PRIVATE" not in str(refused.value)


@pytest.mark.parametrize(
    ("name", "setting"),
    [("tls.crt", "AUTHZ_TLS_CERT_FILE"), ("tls.key", "AUTHZ_TLS_KEY_FILE"),
     ("ca.crt", "AUTHZ_TLS_CLIENT_CA_FILE")],
)
def test_a_missing_or_garbled_file_names_its_setting(
    tmp_path: Path, ca: ThrowawayCA, name: str, setting: str
) -> None:
    files = _files(tmp_path, ca)
    key_text = (tmp_path / "tls.key").read_text()
    (tmp_path / name).write_text("-----BEGIN NONSENSE-----\nsecret-looking\n")
    with pytest.raises(SettingsError) as garbled:
        read_tls_material(files)
    assert garbled.value.setting == setting
    assert "secret-looking" not in str(garbled.value)
    (tmp_path / name).unlink()
    with pytest.raises(SettingsError) as missing:
        read_tls_material(files)
    assert missing.value.setting == setting and "cannot read" in str(missing.value)
    assert key_text.splitlines()[1] not in str(missing.value)


def test_settings_read_the_files_at_start_and_refuse_half_a_pair(
    tmp_path: Path, ca: ThrowawayCA
) -> None:
    files = _files(tmp_path, ca)
    env = {"AUTHZ_HS256_SECRET": SECRET, "AUTHZ_TLS_CERT_FILE": files.cert_file,
           "AUTHZ_TLS_KEY_FILE": files.key_file}
    settings = load_settings(None, None, env)
    assert settings.tls_material is not None
    assert not settings.tls_material.requires_client_certificate
    assert "tls_material" not in repr(settings)
    for dropped, named in (("AUTHZ_TLS_KEY_FILE", "AUTHZ_TLS_KEY_FILE"),
                           ("AUTHZ_TLS_CERT_FILE", "AUTHZ_TLS_CERT_FILE")):
        half = {k: v for k, v in env.items() if k != dropped}
        with pytest.raises(SettingsError) as refused:
            load_settings(None, None, half)
        assert refused.value.setting == named
    only_ca = {"AUTHZ_HS256_SECRET": SECRET, "AUTHZ_TLS_CLIENT_CA_FILE": str(files.client_ca_file)}
    with pytest.raises(SettingsError) as no_cert:
        load_settings(None, None, only_ca)
    assert no_cert.value.setting == "AUTHZ_TLS_CLIENT_CA_FILE"
