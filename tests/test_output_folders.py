"""Outputs that would destroy or fail late (issue 26): a command that replaces its ``--out`` folder refuses a folder
of other files unless ``--overwrite``; the embedded default bundle is read-only to every command; an output that
cannot be written stops ``calibrate`` before any work. Each refusal is one ``error:`` line and exit status 2, and
leaves the files as they were."""

from __future__ import annotations

import errno
import sys
import tempfile
from pathlib import Path

import pytest

from elmd_sdk.bundle import MANIFEST_FILE, BundleManifest, save_manifest
from elmd_sdk.cli.main import main
from elmd_sdk.data import EMOTIONS
from elmd_sdk.paths import default_bundle_path

SAMPLES = "".join(
    f'{{"dialogue_id": "d{i}", "utterance": {{"speaker": "A", "text": "Hi {i}", "emotion": "happy"}}, '
    '"response": {"speaker": "B", "text": "Hello", "emotion": "neutral"}}\n'
    for i in range(10)
)


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["elmd-sdk", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    return int(stop.value.code or 0), capsys.readouterr().err


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def users_folder(tmp_path: Path) -> Path:
    """A folder of the user's own files."""
    folder = tmp_path / "mydocs"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes", encoding="utf-8")
    (folder / "sub" / "photo.jpg").write_bytes(b"\xff\xd8 a photo")
    return folder


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "samples.jsonl"
    path.write_text(SAMPLES, encoding="utf-8")
    return path


COMMANDS = {
    "index build": ["index", "build", "--encoder", "default"],
    "data split": ["data", "split"],
    "train erm": ["train", "erm"],
    "train rep": ["train", "rep", "--no-video"],
    "train eerg": ["train", "eerg", "--no-retrieval", "--no-video"],
}


def _args(command: str, data: Path, out: Path) -> list[str]:
    source = [str(data)] if command == "data split" else ["--data", str(data)]
    return [*COMMANDS[command], *source, "--out", str(out)]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_folder_of_other_files_is_refused_and_left_as_it_was(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], users_folder: Path, data: Path, command: str
) -> None:
    before = _tree(users_folder)
    code, err = _run(monkeypatch, capsys, *_args(command, data, users_folder))
    assert code == 2
    assert err.startswith(f"error: {users_folder}: field '--out': is a folder of other files") and err.count("\n") == 1
    assert "--overwrite" in err and "Traceback" not in err
    assert _tree(users_folder) == before


def test_overwrite_replaces_the_folder_and_a_folder_the_command_wrote_needs_no_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], users_folder: Path, data: Path
) -> None:
    code, _ = _run(monkeypatch, capsys, *_args("data split", data, users_folder), "--overwrite")
    assert code == 0
    names = ["split.json", "test.jsonl", "train.jsonl", "valid.jsonl"]
    assert sorted(_tree(users_folder)) == names  # the user's files are gone: they asked for it
    code, _ = _run(monkeypatch, capsys, *_args("data split", data, users_folder), "--seed", "3")  # a split folder
    assert code == 0 and sorted(_tree(users_folder)) == names
    empty = users_folder.parent / "empty"
    empty.mkdir()
    assert _run(monkeypatch, capsys, *_args("data split", data, empty))[0] == 0


def test_the_embedded_default_bundle_is_read_only_to_every_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    default = default_bundle_path()
    before = _tree(default)
    calibrate = ["calibrate", "--bundle", str(default), "--data", str(data)]
    index = [*_args("index build", data, default / "index"), "--overwrite"]
    split = [*_args("data split", data, default / "splits"), "--overwrite"]
    train = [*_args("train rep", data, default), "--overwrite"]
    for args in (calibrate, index, split, train):
        code, err = _run(monkeypatch, capsys, *args)
        assert code == 2 and err.count("\n") == 1, args
        assert "inside the embedded default bundle" in err and f"cp -r {default.resolve()}" in err, args
    assert _tree(default) == before and not (default / "splits").exists()


def test_calibrate_stops_before_any_work_when_the_bundle_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    import elmd_sdk.chains.calibrate as calibrate

    save_manifest(tmp_path, BundleManifest(name="b", base_llm_config_sha256="x", labels=list(EMOTIONS)))
    before = _tree(tmp_path)

    def read_only(*_: object, **__: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(calibrate, "gather_evidence", lambda *_: pytest.fail("the labels were scored before the check"))
    code, err = _run(monkeypatch, capsys, "calibrate", "--bundle", str(tmp_path), "--data", str(data))
    assert code == 2 and err == f"error: {tmp_path}: Read-only file system\n"
    assert _tree(tmp_path) == before and (tmp_path / MANIFEST_FILE).is_file()
