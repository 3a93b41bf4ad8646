"""The HS256 secret file watcher: rotation in place, by rename, by Kubernetes' symlink swap,
and keeping the last good secrets when the file goes bad."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from authz.keys.secret_file import SecretFileWatcher
from authz.keys.store import KeyStore
from authz.settings.load import load_settings
from authz.settings.model import Settings

A = b"a" * 32 + b"-first-secret"
B = b"b" * 32 + b"-second-secret"
C = b"c" * 32 + b"-third-secret"
ENV = "e" * 40
POLL = 0.02


def reloads(result: str) -> float:
    return REGISTRY.get_sample_value("authz_secret_reloads_total", {"result": result}) or 0.0


def settings_for(path: Path, env_secret: str | None = None) -> Settings:
    environ = {"AUTHZ_HS256_SECRET_FILE": str(path)}
    if env_secret is not None:
        environ["AUTHZ_HS256_SECRET"] = env_secret
    return load_settings(None, None, environ)


async def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(POLL)


async def settle() -> None:
    """Give the watcher several polls to (wrongly) act."""
    await asyncio.sleep(POLL * 10)


def run_watching(path: Path, scenario: Callable[[KeyStore], object],
                 env_secret: str | None = None) -> None:
    async def main() -> None:
        store = KeyStore(settings_for(path, env_secret))
        watcher = SecretFileWatcher(str(path), store, poll_seconds=POLL)
        watcher.start()
        try:
            result = scenario(store)
            if asyncio.iscoroutine(result):
                await result
        finally:
            await watcher.stop()

    asyncio.run(main())


def test_edit_in_place_and_rename_over_are_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(A + b"\n")

    async def scenario(store: KeyStore) -> None:
        assert store.snapshot.secrets == (A,)
        path.write_bytes(B + b"\n" + A + b"\n")
        await eventually(lambda: store.snapshot.secrets == (B, A))
        staged = tmp_path / "staged"
        staged.write_bytes(C + b"\r\n")
        os.replace(staged, path)
        await eventually(lambda: store.snapshot.secrets == (C,))

    run_watching(path, scenario)


def test_kubernetes_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    # The layout kubelet writes for a mounted Secret: secret -> ..data/secret,
    # ..data -> ..<timestamp>; an update writes a new timestamped dir and renames a new
    # ..data symlink over the old one.
    old = tmp_path / "..2026_01_01_00_00_00.1"
    old.mkdir()
    (old / "secret").write_bytes(A + b"\n")
    (tmp_path / "..data").symlink_to(old.name)
    path = tmp_path / "secret"
    path.symlink_to("..data/secret")

    async def scenario(store: KeyStore) -> None:
        assert store.snapshot.secrets == (A,)
        new = tmp_path / "..2026_01_01_00_05_00.2"
        new.mkdir()
        # Same size and same mtime as the old file: only the inode and target path differ.
        same_size = b"z" * len(A)
        (new / "secret").write_bytes(same_size + b"\n")
        stamp = (old / "secret").stat()
        os.utime(new / "secret", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        (tmp_path / "..data_tmp").symlink_to(new.name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        for child in old.iterdir():
            child.unlink()
        old.rmdir()
        await eventually(lambda: store.snapshot.secrets == (same_size,))

    run_watching(path, scenario)


def test_missing_empty_or_invalid_file_keeps_the_last_good_secrets(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(A + b"\n")

    async def scenario(store: KeyStore) -> None:
        failures = reloads("failure")
        path.unlink()
        await eventually(lambda: reloads("failure") == failures + 1)
        await settle()
        assert reloads("failure") == failures + 1, "a missing file is counted once, not per poll"
        assert store.snapshot.secrets == (A,)

        path.write_bytes(b"\n\n")
        await eventually(lambda: reloads("failure") == failures + 2)
        path.write_bytes(b"too-short\n")
        await eventually(lambda: reloads("failure") == failures + 3)
        path.write_bytes(b"")
        await eventually(lambda: reloads("failure") == failures + 4)
        assert store.snapshot.secrets == (A,)

        path.write_bytes(B + b"\n")
        await eventually(lambda: store.snapshot.secrets == (B,))

    run_watching(path, scenario)


def test_unreadable_file_keeps_the_last_good_secrets(tmp_path: Path) -> None:
    # A directory in the file's place: stat succeeds, reading fails (as it does for root
    # too, unlike a chmod 000 file).
    path = tmp_path / "secret"
    path.write_bytes(A + b"\n")

    async def scenario(store: KeyStore) -> None:
        failures = reloads("failure")
        path.unlink()
        path.mkdir()
        await eventually(lambda: reloads("failure") >= failures + 1)
        assert store.snapshot.secrets == (A,)
        path.rmdir()
        path.write_bytes(B + b"\n")
        await eventually(lambda: store.snapshot.secrets == (B,))

    run_watching(path, scenario)


def test_file_secrets_come_first_and_the_env_secret_keeps_verifying(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(A + b"\n")

    async def scenario(store: KeyStore) -> None:
        assert store.snapshot.secrets == (A, ENV.encode())
        path.write_bytes(B + b"\n" + ENV.encode() + b"\n")
        await eventually(lambda: store.snapshot.secrets == (B, ENV.encode()))
        path.unlink()
        await settle()
        assert store.snapshot.secrets == (B, ENV.encode())

    run_watching(path, scenario, env_secret=ENV)


def test_reload_keeps_the_jwks_half_of_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(A + b"\n")
    environ = {"AUTHZ_HS256_SECRET_FILE": str(path), "AUTHZ_JWKS_URL": "http://127.0.0.1:1"}

    async def main() -> None:
        store = KeyStore(load_settings(None, None, environ))
        store.set_public_keys(())
        watcher = SecretFileWatcher(str(path), store, poll_seconds=POLL)
        watcher.start()
        path.write_bytes(B + b"\n")
        await eventually(lambda: store.snapshot.secrets == (B,))
        await watcher.stop()
        assert store.snapshot.jwks_configured and store.snapshot.jwks_loaded

    asyncio.run(main())


def test_secrets_never_reach_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "secret"
    path.write_bytes(A + b"\n")

    async def scenario(store: KeyStore) -> None:
        path.write_bytes(b"short-" + B[:8] + b"\n")
        await settle()
        path.write_bytes(B + b"\n")
        await eventually(lambda: store.snapshot.secrets == (B,))

    run_watching(path, scenario)
    logged = " ".join(str(vars(r)) for r in caplog.records)
    assert "secret file" in logged
    for secret in (A, B, B[:8]):
        assert secret.decode() not in logged
