"""File-system faults at the command line: one ``error: PATH: reason`` line and exit status 2, found before a long
run starts, and an input file never overwritten by its own output."""

from __future__ import annotations

import errno
import sys
import tempfile
from pathlib import Path

import pytest

from elmd_sdk.cli.main import main
from elmd_sdk.errors import InputError
from elmd_sdk.io import check_writable

MELD = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n1,Hi there,Joey,joy,positive,0,0\n"


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["elmd-sdk", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    return int(stop.value.code or 0), capsys.readouterr().err


def test_an_output_that_is_a_directory_stops_eval_before_it_loads_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import elmd_sdk.evaluate as ev

    monkeypatch.setattr(ev, "resolve_bundle", lambda _: pytest.fail("the bundle was loaded before the check"))
    data = tmp_path / "test.jsonl"
    data.write_text("", encoding="utf-8")
    (tmp_path / "report").mkdir()
    code, err = _run(monkeypatch, capsys, "eval", "--data", str(data), "--out", str(tmp_path / "report"))
    assert code == 2 and err == f"error: {tmp_path / 'report'}: is a directory, not a file\n"


@pytest.mark.parametrize("command", ["prepare", "split", "index", "erm"])
def test_an_output_under_a_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x", encoding="utf-8")
    out = str(blocker / "sub" / "out")
    data = tmp_path / "in.csv"
    data.write_text(MELD, encoding="utf-8")
    args = {
        "prepare": ["data", "prepare", "--format", "meld", str(data), "--out", out],
        "split": ["data", "split", str(data), "--out", out],
        "index": ["index", "build", "--data", str(data), "--encoder", "default", "--out", out],
        "erm": ["train", "erm", "--data", str(data), "--out", out],
    }[command]
    code, err = _run(monkeypatch, capsys, *args)
    assert code == 2 and err == f"error: {blocker}: is a file, not a folder\n"


def test_a_read_only_or_full_file_system_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*_: object, **__: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    data = tmp_path / "in.csv"
    data.write_text(MELD, encoding="utf-8")
    code, err = _run(
        monkeypatch, capsys, "data", "prepare", "--format", "meld", str(data), "--out", str(tmp_path / "o")
    )
    assert code == 2 and err == f"error: {tmp_path}: Read-only file system\n"


def test_prepare_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from elmd_sdk.cli.main import app

    data = tmp_path / "corpus.jsonl"
    data.write_text("{}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["data", "prepare", "--format", "jsonl", str(data), "--out", str(data)])
    assert isinstance(result.exception, InputError) and "is the input file" in str(result.exception)
    assert data.read_text(encoding="utf-8") == "{}\n"


def test_check_writable_accepts_a_new_file_and_folder(tmp_path: Path) -> None:
    assert check_writable(tmp_path / "a" / "b" / "report.json") == tmp_path / "a" / "b" / "report.json"
    assert check_writable(tmp_path / "folder", folder=True) == tmp_path / "folder"
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe is gone


def test_a_bad_video_at_chat_start_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import elmd_sdk.chains.chain as chain_module

    monkeypatch.setattr(chain_module.ELMDChain, "from_bundle", lambda *a, **k: pytest.fail("loaded before the check"))
    code, err = _run(monkeypatch, capsys, "chat", "--video", str(tmp_path / "missing.mp4"))
    assert code == 2 and err == f"error: {tmp_path / 'missing.mp4'}: file not found\n"
    not_a_video = tmp_path / "notes.txt"
    not_a_video.write_text("hello", encoding="utf-8")
    code, err = _run(monkeypatch, capsys, "chat", "--video", str(not_a_video))
    assert code == 2 and err.startswith(f"error: {not_a_video}: ")


def test_a_directory_where_a_file_is_read_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "in.csv"
    data.write_text(MELD, encoding="utf-8")
    (tmp_path / "labels").mkdir()
    args = ["data", "prepare", "--format", "meld", str(data), "--labels", str(tmp_path / "labels")]
    code, err = _run(monkeypatch, capsys, *args, "--out", str(tmp_path / "o.jsonl"))
    assert code == 2 and err.startswith(f"error: {tmp_path / 'labels'}: ") and err.count("\n") == 1
