"""``elmd-sdk serve`` as a process: serves a bundle under its folder's name and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from chain_fakes import tiny_bundle
from serve_fakes import free_port


def _exe() -> str:
    return shutil.which("elmd-sdk", path=str(Path(sys.executable).parent)) or "elmd-sdk"


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path / "my-bot")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [_exe(), "serve", "--bundle", str(bundle), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == "my-bot"
        lines: list[str] = []
        body = {"model": "my-bot", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 400}

        def stream() -> None:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
                lines.extend(line for line in response.iter_lines() if line)

        client = threading.Thread(target=stream)
        client.start()
        while not lines:
            time.sleep(0.01)
        server.send_signal(signal.SIGTERM)
        client.join(timeout=60)
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
    output = server.stdout.read() if server.stdout else ""
    assert f"serving my-bot on http://127.0.0.1:{port}" in output
    assert lines[-1] == "data: [DONE]"  # the request in flight was answered in full
    assert "Traceback" not in output


def test_a_missing_video_root_is_an_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [_exe(), "serve", "--bundle", str(tiny_bundle(tmp_path / "b")), "--video-root", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 2 and "--video-root" in result.stderr and "not a folder" in result.stderr
