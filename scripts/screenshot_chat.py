"""Screenshot of the web chat of ``elmd-sdk serve``: two turns with the real model, saved as a PNG.

Starts ``elmd-sdk serve`` (the embedded default bundle, or ``--bundle``) on a free loopback port, opens its page in
headless Chromium, fills the background, sends two messages, waits for both streamed replies and writes the window
to PATH (default: docs/serve-chat.png of the repository) atomically. The page's requests get ``temperature`` 0
(greedy), so each reply has its most likely emotion and the picture is the same from run to run. The server's output
is shown only on a failure.

    .venv/bin/python scripts/screenshot_chat.py [PATH] [--bundle DIR] [--chromium EXE]

Chromium: ``--chromium``, else ``$ELMD_CHROMIUM``, else /usr/bin/chromium, else ``chromium`` on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from elmd_sdk.io import atomic_write_bytes

REPO = Path(__file__).resolve().parent.parent
BACKGROUND = "Two old friends catch up over coffee."
MESSAGES = ("I finally got the job I wanted!", "But I'm scared I won't be good enough.")
# True once reply number ``turn`` (from 0) has ended, or an error shows.
REPLY_ENDED = (
    "turn => document.querySelectorAll('.bot[data-done=true]').length > turn"
    " || !document.getElementById('error').hidden"
)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path, nargs="?", default=REPO / "docs" / "serve-chat.png", help="PNG to write")
    p.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the embedded default bundle)")
    p.add_argument("--chromium", default=None, help="Chromium executable")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the server's /health")
    p.add_argument("--reply-timeout", type=float, default=300.0, help="seconds to wait for each reply")
    return p.parse_args()


def chromium_path(given: str | None) -> str:
    """The Chromium executable to launch (see the module docstring); exits when there is none."""
    candidates = [given, os.environ.get("ELMD_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")]
    found = next((path for path in candidates if path and os.access(path, os.X_OK)), None)
    if found is None:
        sys.exit("no Chromium: pass --chromium, set ELMD_CHROMIUM or install chromium")
    return found


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout: float) -> None:
    """Return once ``url``/health answers ok; RuntimeError when the server exits or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before /health answered")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if json.load(response).get("status") == "ok":
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"/health did not answer within {timeout} s")


def greedy(route: Any) -> None:
    """Send the page's chat request on with temperature 0."""
    route.continue_(post_data=json.dumps({**route.request.post_data_json, "temperature": 0}))


def screenshot(url: str, chromium: str, reply_timeout: float) -> bytes:
    """The chat page at ``url`` after both MESSAGES got their replies, as PNG bytes."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page: Any = browser.new_page(viewport={"width": 1100, "height": 900})
        page.route("**/v1/chat/completions", greedy)
        page.goto(f"{url}/")
        page.fill("#background", BACKGROUND)
        for turn, message in enumerate(MESSAGES):
            page.fill("#message", message)
            page.click("#send")
            page.wait_for_function(REPLY_ENDED, arg=turn, timeout=reply_timeout * 1000)
            if page.locator("#error").is_visible():
                raise RuntimeError(page.locator("#error").inner_text())
        png = page.screenshot()
        browser.close()
        return bytes(png)


def main() -> None:
    args = parse_args()
    chromium = chromium_path(args.chromium)
    port = free_port()
    command = [sys.executable, "-m", "elmd_sdk.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--bundle", str(args.bundle)] if args.bundle else []
    with tempfile.TemporaryFile() as log:
        env = {name: value for name, value in os.environ.items() if name != "ELMD_API_KEY"}  # the page sends no key
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(proc, url, args.start_timeout)
            png = screenshot(url, chromium, args.reply_timeout)
        except Exception:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    atomic_write_bytes(args.path, png)
    print(f"wrote {args.path}")


if __name__ == "__main__":
    main()
