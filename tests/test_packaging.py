"""pyproject.toml's package list is the package folders: every folder with an ``__init__.py`` under the four
package roots installs, under its ``elmd_sdk.*`` name, and nothing else is listed (a missing entry installs an
editable checkout fine and breaks a wheel: ``scripts/check_wheel.sh`` builds one in CI)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder_packages() -> set[str]:
    names = set()
    for package, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            names.add(".".join((package, *relative)))
    return names


def test_every_package_folder_is_listed_and_every_listed_package_is_a_folder() -> None:
    listed = set(SETUPTOOLS["packages"])
    assert len(listed) == len(SETUPTOOLS["packages"])  # no entry twice
    assert _folder_packages() - listed == set(), "folders with __init__.py missing from pyproject's packages"
    assert listed - _folder_packages() == set(), "pyproject lists packages that have no folder"


def test_the_package_folder_map_covers_the_repository_layout() -> None:
    assert SETUPTOOLS["package-dir"] == {
        "elmd_sdk": "elmd_sdk",
        "elmd_sdk.chains": "chains",
        "elmd_sdk.retrievers": "retrievers",
        "elmd_sdk.trainers": "trainers",
    }
    # no top-level generic names: every listed package is inside the elmd_sdk namespace
    assert all(name == "elmd_sdk" or name.startswith("elmd_sdk.") for name in SETUPTOOLS["packages"])
