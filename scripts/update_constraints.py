"""Regenerate constraints.txt from the versions installed in the active environment.

Pins everything that ``pip install -e .[dev,recipes]`` and the data-only packages of scripts/install.sh pull
in (followed through the installed metadata, markers evaluated here), plus the build backend and pip. Run it
inside a virtual environment where ``bash scripts/test.sh`` passes (Python >= 3.11, for ``tomllib``):
``python scripts/update_constraints.py``.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("dev", "recipes")
TOOLS = ("pip", "setuptools")  # pip resolves the install; setuptools builds hf_mtl (see [build-system])


def data_packages() -> list[str]:
    """The packages scripts/install.sh installs with ``--no-deps``."""
    line = next(line for line in (ROOT / "scripts" / "install.sh").read_text().splitlines() if "--no-deps" in line)
    return re.findall(r"--no-deps\s+(.*)", line)[0].split()


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    for extra in EXTRAS:
        names += project["optional-dependencies"][extra]
    return [Requirement(name) for name in names]


def applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**default_environment(), "extra": extra}) for extra in extras or {""})


def closure() -> dict[str, str]:
    """Canonical name -> installed public version (a local label like ``+cpu`` dropped) of every dependency."""
    pins: dict[str, str] = {}
    pending: list[tuple[Requirement, set[str]]] = [(r, set()) for r in declared_requirements()]
    pending += [(Requirement(name), set()) for name in (*data_packages(), *TOOLS)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement, parent_extras = pending.pop()
        if not applies(requirement, parent_extras):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(requirement.name)
        pins[name] = Version(dist.version).public
        if name in map(canonicalize_name, data_packages()):
            continue  # installed with --no-deps
        pending += [(Requirement(r), set(requirement.extras)) for r in dist.requires or []]
    return pins


def main() -> None:
    header = ("# Exact versions for the test environment (scripts/install.sh installs with -c constraints.txt);\n"
              "# pyproject.toml keeps open ranges for users. Regenerate: python scripts/update_constraints.py\n")
    body = "".join(f"{name}=={version}\n" for name, version in sorted(closure().items()))
    (ROOT / "constraints.txt").write_text(header + body)


if __name__ == "__main__":
    main()
