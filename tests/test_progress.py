"""Progress outside a terminal: plain lines with step, rate, elapsed time, ETA and the task's info."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from elmd_sdk.progress import PlainProgress, make_progress


def test_plain_lines_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    progress = make_progress()
    assert isinstance(progress, PlainProgress)  # pytest's captured stderr is no terminal
    progress.every = 0.0
    with progress:
        task = progress.add_task("train erm", total=4, info="")
        progress.update(task, advance=1, info="loss 0.5000")
        progress.advance(task, 3)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("train erm: 1/4 (25%), ") and "elapsed, ETA " in lines[0]
    assert lines[0].endswith("loss 0.5000")
    assert lines[1].startswith("train erm: 4/4 (100%), ")


def test_short_runs_print_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with PlainProgress(every=3600) as progress:
        task = progress.add_task("encode", total=10, info="")
        progress.advance(task, 10)
    assert capsys.readouterr().err == ""


def test_commands_do_not_leak_third_party_loading_bars(tmp_path: Path) -> None:
    data = tmp_path / "c.jsonl"
    data.write_text(
        '{"dialogue_id": "d", "utterance": {"speaker": "A", "text": "Hi", "emotion": "happy"}, '
        '"response": {"speaker": "B", "text": "Hello", "emotion": "happy"}}\n',
        encoding="utf-8",
    )
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_DISABLE_PROGRESS_BARS"}
    command = [sys.executable, "-m", "elmd_sdk.cli.main", "index", "build", "--data", str(data)]
    done = subprocess.run(
        [*command, "--encoder", "default", "--out", str(tmp_path / "i")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr and "it/s]" not in done.stderr
