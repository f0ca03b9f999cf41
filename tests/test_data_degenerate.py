"""Degenerate data is refused with the file, line and field: no samples, NUL characters, other encodings, huge
cells, an empty validation set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elmd_sdk.data import prepare_corpus
from elmd_sdk.errors import InputError

HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"


def _sample(text: str) -> str:
    return json.dumps(
        {
            "dialogue_id": "d",
            "utterance": {"speaker": "A", "text": text, "emotion": "happy"},
            "response": {"speaker": "B", "text": "ok", "emotion": "neutral"},
        },
        ensure_ascii=False,
    )


def test_a_corpus_without_samples_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "one_speaker.csv"
    path.write_text(HEADER + "1,Hi,Joey,joy,positive,0,0\n2,Anyone?,Joey,neutral,neutral,0,1\n", encoding="utf-8")
    with pytest.raises(InputError, match="yields no samples") as err:
        prepare_corpus("meld", path)
    assert err.value.file == str(path)


def test_nul_characters_name_the_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "nul.jsonl"
    path.write_text(_sample("fine") + "\n" + _sample("bro\x00ken") + "\n", encoding="utf-8")  # escaped \u0000
    with pytest.raises(InputError, match="NUL character") as err:
        prepare_corpus("jsonl", path)
    assert (err.value.line, err.value.field) == (2, "utterance.text")
    csv = tmp_path / "nul.csv"
    csv.write_text(HEADER + "1,Hi,Joey,joy,positive,0,0\n2,Oh\x00no,Ross,sadness,negative,0,1\n", encoding="utf-8")
    with pytest.raises(InputError, match="NUL character") as err:
        prepare_corpus("meld", csv)
    assert (err.value.line, err.value.field) == (3, "Utterance")


def test_encoding_is_honoured_by_every_format(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes((_sample("Café crème") + "\n").encode("cp1252"))
    with pytest.raises(InputError, match="pass it with --encoding"):
        prepare_corpus("jsonl", path)
    assert prepare_corpus("jsonl", path, encoding="cp1252").samples[0].utterance.text == "Café crème"


def test_a_csv_cell_longer_than_csvs_default_limit_is_read(tmp_path: Path) -> None:
    long = "word " * 40_000  # 200,000 characters, above csv's 131,072 default
    path = tmp_path / "long.csv"
    path.write_text(HEADER + f'1,"{long}",Joey,joy,positive,0,0\n2,Wow,Ross,surprise,positive,0,1\n', encoding="utf-8")
    assert prepare_corpus("meld", path).samples[0].utterance.text == long.strip()


def test_an_empty_validation_file_is_refused(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from elmd_sdk.cli.main import app

    data, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    data.write_text(_sample("Hi") + "\n", encoding="utf-8")
    valid.write_text("\n", encoding="utf-8")
    for command in (["train", "erm"], ["train", "rep"], ["train", "eerg", "--no-retrieval"]):
        result = CliRunner().invoke(app, [*command, "--data", str(data), "--valid", str(valid), "--out", "o"])
        assert isinstance(result.exception, InputError), (command, result.output)
        assert "no samples" in str(result.exception) and str(valid) in str(result.exception)
