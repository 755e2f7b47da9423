"""versemi.environment: the one place that names and reads VERSEMI_* environment variables."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from versemi import environment

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = REPO_ROOT / "training" / "src" / "versemi"
NAMES = [getattr(environment, n) for n in dir(environment) if n.endswith("_ENV")]


def test_no_other_module_names_a_variable() -> None:
    found = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        if path.name == "environment.py" and path.parent == PACKAGE_ROOT:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"VERSEMI_\w+", node.value):
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "name environment variables in versemi.environment only:\n" + "\n".join(found)


@pytest.mark.parametrize("name", NAMES)
def test_every_variable_is_documented(name: str) -> None:
    assert f"``{name}``" in (environment.__doc__ or "")
    assert f"`{name}`" in (REPO_ROOT / "docs" / "DEVELOPMENT.md").read_text(encoding="utf-8")


def test_values_are_read_when_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(environment.CATALOGUE_ENV, "  ")
    assert environment.catalogue_source() is None
    monkeypatch.setenv(environment.CATALOGUE_ENV, f" {tmp_path / 'c.json'} ")
    assert environment.catalogue_source() == str(tmp_path / "c.json")
    monkeypatch.setenv(environment.MEMORY_LIMIT_ENV, " 8G ")
    assert environment.memory_limit_text() == "8G"
    monkeypatch.delenv(environment.NO_MALLOC_TUNING_ENV, raising=False)
    assert not environment.malloc_tuning_disabled()
    monkeypatch.setenv(environment.NO_MALLOC_TUNING_ENV, "1")
    assert environment.malloc_tuning_disabled()
