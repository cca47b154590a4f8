"""scripts/release.py's checks: one version everywhere, a dated changelog section, a compatibility corpus."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from anycastd import __version__

ROOT = Path(__file__).resolve().parents[2]
INIT = '"""anycastd."""\n\n__version__ = "0.2.0"\n'
CHANGELOG = "# Changelog\n\n## [Unreleased]\n\n## [0.2.0] - 2027-01-15\n\n### Added\n- x\n\n## [0.1.0] - 2026-12-06\n"


def release() -> ModuleType:
    spec = importlib.util.spec_from_file_location("release", ROOT / "scripts" / "release.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_ready_tree_has_no_problem() -> None:
    assert release().version_problems("0.2.0", INIT, CHANGELOG, {"0.1.0", "0.2.0"}) == []


@pytest.mark.parametrize(
    ("version", "init", "changelog", "corpora", "problem"),
    [
        ("v0.2.0", INIT, CHANGELOG, {"0.2.0"}, "VERSION must be MAJOR.MINOR.PATCH"),
        ("0.2", INIT, CHANGELOG, {"0.2.0"}, "VERSION must be MAJOR.MINOR.PATCH"),
        ("0.2.0", INIT.replace("0.2.0", "0.1.0"), CHANGELOG, {"0.2.0"}, 'says 0.1.0: set __version__ = "0.2.0"'),
        ("0.2.0", "x = 1\n", CHANGELOG, {"0.2.0"}, "anycastd/__init__.py says nothing"),
        ("0.2.0", INIT, CHANGELOG.replace("[0.2.0] - 2027-01-15", "[0.2.1] - 2027-01-15"), {"0.2.0"}, "no section"),
        ("0.2.0", INIT, CHANGELOG.replace("[0.2.0] - 2027-01-15", "[0.2.0]"), {"0.2.0"}, "has no date"),
        ("0.2.0", INIT, CHANGELOG.replace("## [Unreleased]\n\n", ""), {"0.2.0"}, "right after an (empty) [Unreleased]"),
        ("0.2.0", INIT, CHANGELOG, {"0.1.0"}, "tests/compat/0.2.0 is missing"),
    ],
)
def test_each_problem_is_named(version: str, init: str, changelog: str, corpora: set[str], problem: str) -> None:
    found = release().version_problems(version, init, changelog, corpora)
    assert len(found) == 1 and problem in found[0], found


def test_this_tree_names_its_version_once_and_has_its_corpus() -> None:
    found = release().version_problems(
        __version__,
        (ROOT / "anycastd" / "__init__.py").read_text(),
        (ROOT / "CHANGELOG.md").read_text(),
        {p.name for p in (ROOT / "tests" / "compat").iterdir()},
    )
    # until a release is cut, the changelog's entries wait under [Unreleased]: that is the only gap allowed
    assert all("CHANGELOG.md has no section" in p for p in found), found
