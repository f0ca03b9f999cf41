#!/usr/bin/env bash
# ruff and mypy over the package. mypy cannot follow the setuptools package-dir mapping
# (chains/ -> elmd_sdk.chains, ...), so it checks a symlink tree that mirrors the installed layout.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
$BIN/ruff check elmd_sdk chains retrievers trainers tests benchmarks scripts
$BIN/ruff format --check elmd_sdk chains retrievers trainers tests benchmarks scripts
tree=build/typecheck
rm -rf "$tree" && mkdir -p "$tree/elmd_sdk"
for entry in elmd_sdk/*; do ln -s "$PWD/$entry" "$tree/elmd_sdk/"; done
for sub in chains retrievers trainers; do ln -s "$PWD/$sub" "$tree/elmd_sdk/$sub"; done
MYPYPATH="$tree" $BIN/mypy -p elmd_sdk
