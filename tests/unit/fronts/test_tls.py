"""TlsCredentials and TlsWatcher: a reload reaches new handshakes of both doors, a bad file
keeps the last good material, a Kubernetes symlink swap is seen."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

from prometheus_client import REGISTRY

from authz._support.throwaway_ca import Issued, SecretVolume, ThrowawayCA
from authz.fronts.tls import TlsCredentials, TlsWatcher
from authz.keys.tls_files import TlsFiles, read_tls_material

POLL = 0.02


def _reloads(result: str) -> float:
    return REGISTRY.get_sample_value("authz_tls_reloads_total", {"result": result}) or 0.0


def _files(issued: Issued, ca: ThrowawayCA) -> dict[str, bytes]:
    return {"tls.crt": issued.cert_pem, "tls.key": issued.key_pem, "ca.crt": ca.cert_pem}


async def _until(condition: object, seconds: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(POLL)


def _handshake_serial(context: ssl.SSLContext, ca: ThrowawayCA) -> int:
    """One in-memory handshake against `context`; the serial the client saw."""
    from cryptography import x509

    client_context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    client_context.check_hostname = False
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(c_in, c_out, server_hostname="authz")
    server = context.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_swap_reaches_new_handshakes_and_a_bad_pair_is_kept_out(tmp_path: Path) -> None:
    ca = ThrowawayCA()
    first = ca.issue("authz", dns_names=("authz",))
    volume = SecretVolume(tmp_path / "tls", _files(first, ca))
    files = TlsFiles(volume.path("tls.crt"), volume.path("tls.key"))
    credentials = TlsCredentials(read_tls_material(files))
    listening = credentials.ssl_context()
    credentials.grpc_credentials()  # builds with the same material
    watcher = TlsWatcher(files, credentials, poll_seconds=POLL)

    async def scenario() -> None:
        failures = _reloads("failure")
        watcher.start()
        assert _handshake_serial(listening, ca) == first.serial
        second = ca.issue("authz", dns_names=("authz",))
        volume.swap(_files(second, ca))
        await _until(lambda: credentials.material.serial == second.serial)
        assert _handshake_serial(listening, ca) == second.serial
        # A certificate with the old key: refused, counted, the good pair stays.
        third = ca.issue("authz")
        volume.swap({**_files(third, ca), "tls.key": second.key_pem})
        await _until(lambda: _reloads("failure") == failures + 1)
        assert credentials.material.serial == second.serial
        assert _handshake_serial(listening, ca) == second.serial
        await watcher.stop()

    asyncio.run(scenario())
