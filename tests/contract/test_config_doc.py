"""The docs follow the code: docs/configuration.md is what tools/gen_config_doc.py makes from
the settings model, and README.md explains every metric and every reason label."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from prometheus_client import REGISTRY

import authz.service.server  # noqa: F401 - registers every metric the service exports
from authz.core.decision import Reason, status_of
from authz.settings.load import load_settings
from tests.credentials import SECRET
from tests.harness import ROOT

GENERATOR = ROOT / "tools" / "gen_config_doc.py"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_doc", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_section(title: str) -> str:
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match is not None, f"README.md has no '## {title}' section"
    return match[1]


def test_configuration_doc_is_current(generator: ModuleType) -> None:
    assert CONFIG_DOC.read_text() == generator.render(), (
        "docs/configuration.md is out of date: run .venv/bin/python tools/gen_config_doc.py"
    )


def test_check_mode_of_the_script() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_a_setting_without_prose_stops_the_generator(
    generator: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    prose = dict(generator.SETTINGS)
    del prose["leeway_seconds"]
    monkeypatch.setattr(generator, "SETTINGS", prose)
    with pytest.raises(SystemExit, match="leeway_seconds"):
        generator.render()


def test_the_policy_example_in_the_doc_loads(tmp_path: Path) -> None:
    block = CONFIG_DOC.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    policies = yaml.safe_load(block)["policies"]
    config = tmp_path / "authz.yaml"
    config.write_text(yaml.safe_dump({"hs256_secret": SECRET, "policies": policies}))
    settings = load_settings(str(config), None, {})
    assert [rule.op for rule in settings.policies["admin"].required_claims] == [
        "one_of", "contains",
    ]


def test_readme_metrics_reference_names_every_metric() -> None:
    section = readme_section("Metrics")
    names = []
    for family in REGISTRY.collect():
        if family.name.startswith("authz_"):
            names.append(family.name + ("_total" if family.type == "counter" else ""))
    assert "authz_checks_total" in names
    missing = [name for name in names if f"`{name}`" not in section]
    assert not missing, f"README.md's Metrics section does not explain {missing}"


def test_readme_troubleshooting_explains_every_reason() -> None:
    section = readme_section("Troubleshooting by reason")
    for reason in Reason:
        row = re.search(rf"^\| `{reason.value}` \| (\d+|passes) \|", section, re.M)
        assert row is not None, f"README.md's troubleshooting has no row for {reason.value}"
        shown = row[1]
        assert shown == ("passes" if status_of(reason) == 200 else str(status_of(reason)))


def test_readme_keeps_the_two_commands() -> None:
    section = readme_section("The two commands")
    assert "bash scripts/run" in section and "bash scripts/test" in section
