#!/usr/bin/env bash
# Install elmd-sdk as a user of the built package would, not as an editable checkout: build the sdist and, from it,
# the wheel; check the wheel holds every shipped file; install it into a fresh venv with the pinned dependencies
# (scripts/install.sh --wheel); then, from outside the repository, run `elmd-sdk eval --help`, one chat turn on the
# embedded default, and `elmd-sdk serve` up to a 200 from /health. Run by .ci/run after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
.venv/bin/python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/*.whl)
.venv/bin/python scripts/wheel_contents.py "$wheel"
ELMD_VENV="$work/venv" bash scripts/install.sh --wheel "$wheel"
cd "$work"  # nothing of the checkout on the import path
bin="$work/venv/bin"
"$bin/python" -c 'import elmd_sdk, sys; "site-packages" in elmd_sdk.__file__ or sys.exit(f"not the wheel: {elmd_sdk.__file__}")'
"$bin/elmd-sdk" eval --help >/dev/null
reply=$(printf 'I got the job!\n' | "$bin/elmd-sdk" chat --max-new-tokens 8 --seed 0 2>/dev/null)
grep -q '^bot (' <<<"$reply" || { echo "no chat reply from the installed wheel: $reply"; exit 1; }
port=$("$bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin/elmd-sdk" serve --port "$port" >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 240); do
  if "$bin/python" -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:$port/health').status != 200)" 2>/dev/null; then
    echo "wheel check: eval --help, one chat turn and serve /health all work from the installed wheel"
    exit 0
  fi
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 1
done
cat "$work/serve.log"
echo "serve from the installed wheel did not answer /health"
exit 1
