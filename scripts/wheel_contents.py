"""Check that a built wheel holds every file the package ships: each tracked file under the package folders of
pyproject.toml (``elmd_sdk/``, and ``chains/``, ``retrievers/``, ``trainers/`` installed as ``elmd_sdk.*``), at its
installed path. Prints what is missing and exits 1, or prints the count.

    python scripts/wheel_contents.py dist/elmd_sdk-0.1.0-py3-none-any.whl
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def shipped_files() -> dict[str, str]:
    """Installed path -> repository path of every tracked file the package folders hold (no tests, no caches)."""
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = {}
    for path in tracked.splitlines():
        for package, folder in folders.items():
            if path.startswith(folder + "/"):
                files[package.replace(".", "/") + path[len(folder) :]] = path
    return files


def main(wheel: str) -> int:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = shipped_files()
    missing = sorted(repo for installed, repo in expected.items() if installed not in names)
    for path in missing:
        print(f"missing from {Path(wheel).name}: {path}")
    if not missing:
        print(f"{Path(wheel).name}: all {len(expected)} shipped files present")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
