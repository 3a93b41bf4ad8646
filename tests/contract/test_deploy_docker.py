"""The Dockerfile, checked without a container engine: what it copies exists and survives
.dockerignore, the entrypoint is a real command of the package, the final stage runs as an
unprivileged user with no compiler, and it exposes the ports authz listens on by default.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field

from authz.cli.main import build_parser
from authz.settings.addresses import split_host_port
from authz.settings.model import Settings
from tests.harness import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            found.append((keyword.upper(), args.strip()))
    return found


def _stages() -> tuple[dict[str, str], list[Stage]]:
    build_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, args in _instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            words = args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: build_args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and keyword == "ARG":
            key, _, value = args.partition("=")
            build_args[key] = value
        else:
            stages[-1].instructions.append((keyword, args))
    return build_args, stages


def _final() -> Stage:
    return _stages()[1][-1]


def _exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"shell form: {args}"
    words: list[str] = json.loads(args)
    return words


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for token in re.split(r"(\*\*/?|\*|\?)", pattern.strip("/")):
        if token in ("**", "**/"):
            parts.append("(?:.*/)?" if token == "**/" else ".*")
        elif token == "*":
            parts.append("[^/]*")
        elif token == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts) + "$")


def _ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path or a parent."""
    rules = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    prefixes = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    ignored = False
    for rule in rules:
        negated = rule.startswith("!")
        regex = _dockerignore_regex(rule.lstrip("!"))
        if any(regex.match(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_multi_stage_on_a_slim_python_matching_the_package() -> None:
    _, stages = _stages()
    assert len(stages) >= 2
    assert all(re.fullmatch(r"python:3\.\d+-slim(-\w+)?", s.base) for s in stages)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.search(r"3\.(\d+)", requires)
    image = re.search(r"3\.(\d+)", stages[-1].base)
    assert minimum and image and int(image.group(1)) >= int(minimum.group(1))
    final = stages[-1]
    copies_from_build = [a for a in final.all("COPY") if a.startswith("--from=")]
    assert copies_from_build == [f"--from={stages[0].name} /opt/authz /opt/authz"]


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    _, stages = _stages()
    sources = [
        source
        for stage in stages
        for args in stage.all("COPY")
        if not args.startswith("--from=")
        for source in shlex.split(args)[:-1]
    ]
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
        for file in files:
            assert not _ignored(str(file.relative_to(ROOT))), f"{file} is in .dockerignore"


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (".venv/bin/python", ".git/HEAD", "tests/harness.py", "authz/__pycache__/x.pyc"):
        assert _ignored(path), path
    assert not _ignored("authz/cli/main.py")


def test_final_stage_runs_authz_serve_as_an_unprivileged_user() -> None:
    final = _final()
    users = final.all("USER")
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can verify it.
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    entrypoint = _exec_form(final.all("ENTRYPOINT")[-1])
    command = _exec_form(final.all("CMD")[-1])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["authz"] and entrypoint[0] in scripts
    args = build_parser().parse_args(command)
    assert args.command == "serve"
    # The Deployment runs the same command with the same user.
    deployment = (ROOT / "deploy" / "kubernetes" / "base" / "authz-deployment.yaml").read_text()
    assert f"runAsUser: {uid}" in deployment and "args: [serve]" in deployment


def test_no_compiler_or_package_install_in_the_final_stage() -> None:
    runs = " ".join(_final().all("RUN"))
    for word in ("apt-get", "apk", "gcc", "build-essential", "pip install"):
        assert word not in runs, word


def test_exposes_the_default_ports() -> None:
    exposed = {int(p.split("/")[0]) for args in _final().all("EXPOSE") for p in args.split()}
    defaults = Settings()
    assert split_host_port(defaults.grpc_address)[1] in exposed
    assert split_host_port(defaults.http_address)[1] in exposed


def test_healthcheck_or_the_reason_for_none() -> None:
    if not _final().all("HEALTHCHECK"):
        assert re.search(r"# No HEALTHCHECK: \w+", DOCKERFILE.read_text())


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_import_of_the_package_is_a_declared_dependency() -> None:
    # The image installs only [project].dependencies: a module authz imports from anything
    # else works in the dev venv and fails in the container.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        _normalized(m.group(0))
        for spec in project["dependencies"]
        if (m := re.match(r"[A-Za-z0-9._-]+", spec))
    }
    distributions = importlib.metadata.packages_distributions()
    missing: dict[str, str] = {}
    for source in (ROOT / "authz").rglob("*.py"):
        if "_pb" in source.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "authz":
                    continue
                owners = {_normalized(d) for d in distributions.get(top, [top])}
                if not owners & declared:
                    missing[top] = str(source.relative_to(ROOT))
    assert not missing, f"imported but not in [project].dependencies: {missing}"
