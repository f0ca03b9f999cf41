"""``elmd-sdk data prepare`` and ``elmd-sdk data split`` through the real CLI app."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from elmd_sdk.cli.main import app, main
from elmd_sdk.data import read_jsonl
from elmd_sdk.errors import InputError

HEADER = ["Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID"]


def meld_csv(path: Path, dialogues: int = 30, bad_label: str | None = None) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    for d in range(dialogues):
        for u, (speaker, emotion) in enumerate([("Ross", "joy"), ("Rachel", "anger"), ("Ross", "sadness")]):
            writer.writerow([f"line {d}-{u}", speaker, emotion, d, u])
    if bad_label:
        writer.writerow(["oops", "Joey", bad_label, dialogues, 0])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def test_prepare_then_split(tmp_path: Path) -> None:
    runner = CliRunner()
    src, out = meld_csv(tmp_path / "train.csv"), tmp_path / "samples.jsonl"
    result = runner.invoke(
        app, ["data", "prepare", "--format", "meld", str(src), "--out", str(out), "--max-history", "0"]
    )
    assert result.exit_code == 0, result.output
    samples = read_jsonl(out)
    assert len(samples) == 60 and all(s.history == [] for s in samples)
    assert "samples" in result.output and "happy" in result.output

    result = runner.invoke(app, ["data", "split", str(out), "--out", str(tmp_path / "splits"), "--seed", "7"])
    assert result.exit_code == 0, result.output
    parts = {name: read_jsonl(tmp_path / "splits" / f"{name}.jsonl") for name in ("train", "valid", "test")}
    assert [len(p) for p in parts.values()] == [48, 6, 6]
    for name, part in parts.items():
        assert f"{name} (response)" in result.output
        others = {s.dialogue_id for other, p in parts.items() if other != name for s in p}
        assert not {s.dialogue_id for s in part} & others
    names = sorted(p.name for p in (tmp_path / "splits").iterdir())
    assert names == ["split.json", "test.jsonl", "train.jsonl", "valid.jsonl"]


def test_prepare_drop_unmapped_reports_counts(tmp_path: Path) -> None:
    src, out = meld_csv(tmp_path / "t.csv", 2, bad_label="bored"), tmp_path / "o.jsonl"
    result = CliRunner().invoke(
        app, ["data", "prepare", "--format", "meld", str(src), "--out", str(out), "--drop-unmapped"]
    )
    assert result.exit_code == 0, result.output
    assert "dropped unmapped labels ('bored': 1)" in result.output
    assert len(read_jsonl(out)) == 4


def test_bad_input_stops_without_output(tmp_path: Path) -> None:
    src, out = meld_csv(tmp_path / "t.csv", 2, bad_label="bored"), tmp_path / "o.jsonl"
    result = CliRunner().invoke(app, ["data", "prepare", "--format", "meld", str(src), "--out", str(out)])
    assert result.exit_code != 0 and isinstance(result.exception, InputError)
    assert (result.exception.line, result.exception.field) == (8, "Emotion")
    assert not out.exists()
    bad_ratio = CliRunner().invoke(app, ["data", "split", str(src), "--out", str(tmp_path), "--ratios", "8:2"])
    assert bad_ratio.exit_code != 0


def test_console_entry_prints_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = meld_csv(tmp_path / "t.csv", 2, bad_label="bored")
    argv = ["elmd-sdk", "data", "prepare", "--format", "meld", str(src), "--out", str(tmp_path / "o.jsonl")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: {src}:8: field 'Emotion': emotion 'bored' is not a known label")


def test_jsonl_format_rejects_label_options(tmp_path: Path) -> None:
    src, out = meld_csv(tmp_path / "t.csv", 2), tmp_path / "o.jsonl"
    assert CliRunner().invoke(app, ["data", "prepare", "--format", "meld", str(src), "--out", str(out)]).exit_code == 0
    result = CliRunner().invoke(
        app,
        ["data", "prepare", "--format", "jsonl", str(out), "--out", str(tmp_path / "c.jsonl"), "--max-history", "1"],
    )
    assert result.exit_code == 0 and [len(s.history) for s in read_jsonl(tmp_path / "c.jsonl")] == [0, 1] * 2
    result = CliRunner().invoke(
        app, ["data", "prepare", "--format", "jsonl", str(out), "--out", str(tmp_path / "c.jsonl"), "--drop-unmapped"]
    )
    assert isinstance(result.exception, InputError) and result.exception.field == "--drop-unmapped"
