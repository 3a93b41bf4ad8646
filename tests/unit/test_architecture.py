"""The layers hold: the core does no I/O, data flows one way, and no module imports in a cycle.

Read from the source with `ast` (nothing is imported), so a violation fails here with the
module and the import that breaks the rule.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ROOT

PACKAGE = ROOT / "authz"

# What the pure core may never import: anything that does I/O, keeps time or threads,
# counts metrics, or loads settings.
CORE_FORBIDDEN = (
    "asyncio",
    "grpc",
    "http",
    "logging",
    "os",
    "prometheus_client",
    "socket",
    "subprocess",
    "threading",
    "time",
    "urllib",
    "yaml",
    "authz.cli",
    "authz.fronts",
    "authz.keys.jwks_source",
    "authz.keys.secret_file",
    "authz.keys.store",
    "authz.observability",
    "authz.service",
    "authz.settings",
    "authz._support",
)
# Layer -> the authz layers it must not import (the arrows point fronts -> service -> core,
# keys -> snapshot -> core; the command line sits on top of everything).
NOT_BELOW = {
    "authz.core": ("authz.keys.jwks_source", "authz.keys.secret_file", "authz.keys.store"),
    "authz.keys": ("authz.fronts", "authz.service", "authz.cli", "authz._support"),
    "authz.settings": ("authz.fronts", "authz.service", "authz.cli", "authz._support"),
    "authz.service": ("authz.cli", "authz._support"),
    "authz.fronts": ("authz.cli", "authz._support"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_pb" not in path.relative_to(PACKAGE).parts:
            yield _module_name(path), path


def _imports(path: Path, module: str) -> set[str]:
    """Every module `path` imports at any level (function bodies included)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


MODULES = dict(_modules())
IMPORTS = {name: _imports(path, name) for name, path in MODULES.items()}


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_layers_exist() -> None:
    for layer in ("core", "keys", "fronts", "service", "settings", "cli", "_support"):
        assert (PACKAGE / layer / "__init__.py").is_file(), layer


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _is_under(m, "authz.core")))
def test_the_core_imports_nothing_with_io(module: str) -> None:
    bad = sorted(
        name for name in IMPORTS[module] if any(_is_under(name, f) for f in CORE_FORBIDDEN)
    )
    assert bad == [], f"{module} imports {bad}"


@pytest.mark.parametrize("layer", sorted(NOT_BELOW))
def test_imports_point_down_the_layers(layer: str) -> None:
    bad = sorted(
        f"{module} -> {name}"
        for module, names in IMPORTS.items()
        if _is_under(module, layer)
        for name in names
        if any(_is_under(name, above) for above in NOT_BELOW[layer])
    )
    assert bad == []


def test_no_import_cycles() -> None:
    # Edges between authz modules only; `from authz.x import name` counts as importing x.
    graph = {
        module: {name for name in names if name in MODULES and name != module}
        for module, names in IMPORTS.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # A package's __init__ importing its own submodule is not a cycle of concern.
    real = [c for c in cycles if not all(_is_under(m, c[0]) or _is_under(c[0], m) for m in c)]
    assert real == []


@pytest.mark.parametrize(
    "module",
    sorted(m for m, p in MODULES.items() if p.name not in ("__init__.py", "__main__.py")),
)
def test_each_module_says_what_it_exports(module: str) -> None:
    imported = importlib.import_module(module)
    exported = getattr(imported, "__all__", None)
    assert exported is not None, f"{module} has no __all__"
    missing = [name for name in exported if not hasattr(imported, name)]
    assert missing == [], f"{module}.__all__ names what it does not define"


def _authz_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module, path in MODULES.items():
        if path.name == "__main__.py":  # importing it runs the command line
            continue
        for value in vars(importlib.import_module(module)).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == module
                and not value.__name__.startswith("_")
            ):
                found[value.__name__] = value
    return found


def test_every_error_authz_raises_is_an_authz_error_and_drawn_in_the_tree() -> None:
    from authz.errors import AuthzError

    errors = _authz_exceptions()
    assert sorted(n for n, e in errors.items() if not issubclass(e, AuthzError)) == []
    tree = importlib.import_module("authz.errors").__doc__ or ""
    drawn = set(re.findall(r"[├└]── (\w+)", tree))
    assert drawn == set(errors) - {"AuthzError"}
