"""constraints.txt pins the test environment: it covers every declared dependency within its pyproject range,
and (under scripts/test.sh) the running environment has exactly those versions."""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, Version]:
    result = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            assert canonicalize_name(name) not in result, f"{name} pinned twice"
            result[canonicalize_name(name)] = Version(version)
    return result


def declared() -> list[Requirement]:
    """pyproject's dependencies, every extra, the build requirements and install.sh's ``--no-deps`` packages."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    names = [*project["dependencies"], *pyproject["build-system"]["requires"]]
    names += [name for extra in project["optional-dependencies"].values() for name in extra]
    install = (ROOT / "scripts" / "install.sh").read_text()
    names += [name for line in re.findall(r"--no-deps\s+(.*)", install) for name in line.split()]
    return [Requirement(name) for name in names]


def test_every_declared_dependency_is_pinned_within_its_range():
    pinned = pins()
    requirements = declared()
    assert len(requirements) > 20 and pinned["torch"] == Version("2.13.0")
    missing = [str(r) for r in requirements if canonicalize_name(r.name) not in pinned]
    assert not missing, f"not in constraints.txt: {missing} (python scripts/update_constraints.py)"
    outside = [f"{r} pinned {pinned[canonicalize_name(r.name)]}" for r in requirements
               if not r.specifier.contains(pinned[canonicalize_name(r.name)], prereleases=True)]
    assert not outside, f"pins outside the pyproject range: {outside}"


def test_installed_versions_match_the_pins():
    if os.environ.get("HF_MTL_CHECK_PINS") != "1":
        pytest.skip("set HF_MTL_CHECK_PINS=1 (scripts/test.sh does, in the venv it installs from constraints.txt) "
                    f"to check this environment ({sys.prefix}) against constraints.txt")
    found = {}
    for name in pins():
        try:
            found[name] = Version(Version(metadata.version(name)).public)
        except metadata.PackageNotFoundError:
            found[name] = None
    wrong = {name: f"installed {found[name]}, pinned {pin}" for name, pin in pins().items() if found[name] != pin}
    assert not wrong, f"the environment differs from constraints.txt: {wrong}"
