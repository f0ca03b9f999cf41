"""CPED CSV loader on small fixtures: BOM, 13-label mapping, drop mode, and each bad-input case."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from elmd_sdk.data import Turn, load_cped, prepare_corpus
from elmd_sdk.errors import InputError

HEADER = [
    "TV_ID", "Dialogue_ID", "Utterance_ID", "Speaker", "Gender", "Age", "Neuroticism", "Extraversion", "Openness",
    "Agreeableness", "Conscientiousness", "Scene", "FacePosition_LU", "FacePosition_RD", "Sentiment", "Emotion",
    "DA", "Utterance",
]  # fmt: skip


def cped_row(dialogue: str, n: int, speaker: str, emotion: str, text: str) -> list[str]:
    traits = ["female", "young", "high", "high", "low", "high", "high", "car", "0_0", "0_0", "neutral"]
    return ["1", dialogue, f"{dialogue}_{n:03d}", speaker, *traits, emotion, "question", text]


ROWS = [
    cped_row("1_000", 0, "于春晓", "astonished", "怎么了"),
    cped_row("1_000", 1, "于春晓", "astonished", "撞车了吗"),
    cped_row("1_000", 2, "戴娜", "depress", "撞你个头"),
    cped_row("1_000", 3, "戴娜", "negative-other", "好意思吗你"),
    cped_row("1_000", 4, "于春晓", "relaxed", "别闹了"),
    cped_row("1_001", 0, "彭凯旋", "grateful", "谢谢"),
    cped_row("1_001", 1, "于春晓", "worried", "小心"),
]


def write_cped(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    path.write_bytes(buffer.getvalue().encode("utf-8-sig"))  # CPED files start with a BOM
    return path


def test_cped_needs_a_choice_for_negative_other(tmp_path: Path) -> None:
    path = write_cped(tmp_path / "valid_split.csv", HEADER, ROWS)
    with pytest.raises(InputError) as err:
        prepare_corpus("cped", path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 5, "Emotion")
    assert "'negative-other' has no counterpart" in err.value.problem and "--drop-unmapped" in err.value.problem


def test_cped_samples_with_drop(tmp_path: Path) -> None:
    path = write_cped(tmp_path / "valid_split.csv", HEADER, ROWS)
    assert [d.dialogue_id for d in load_cped(path)] == ["1_000", "1_001"]
    result = prepare_corpus("cped", path, drop_unmapped=True)
    assert result.dropped_labels == {"negative-other": 1} and result.skipped_pairs == 0
    first, second = Turn("于春晓", "怎么了撞车了吗", "surprise"), Turn("戴娜", "撞你个头好意思吗你", "sad")
    assert [(s.dialogue_id, s.utterance, s.response, s.history) for s in result.samples] == [
        ("1_000", first, second, []),
        ("1_000", second, Turn("于春晓", "别闹了", "happy"), [first]),
        ("1_001", Turn("彭凯旋", "谢谢", "happy"), Turn("于春晓", "小心", "fear"), []),
    ]


def test_cped_user_mapping(tmp_path: Path) -> None:
    path = write_cped(tmp_path / "v.csv", HEADER, ROWS)
    labels = tmp_path / "labels.json"
    labels.write_text(
        '{"astonished": "surprise", "depress": "sad", "negative-other": "anger", "relaxed": "neutral",'
        ' "grateful": "happy", "worried": "fear"}',
        encoding="utf-8",
    )
    samples = prepare_corpus("cped", path, labels=labels).samples
    assert [s.response.emotion for s in samples] == ["anger", "neutral", "fear"]  # depress/anger tie -> anger


def test_cped_missing_column(tmp_path: Path) -> None:
    path = write_cped(tmp_path / "v.csv", [h if h != "Emotion" else "Emo" for h in HEADER], ROWS)
    with pytest.raises(InputError) as err:
        load_cped(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 1, "Emotion")


def test_cped_malformed_row(tmp_path: Path) -> None:
    path = write_cped(tmp_path / "v.csv", HEADER, [*ROWS[:3], ROWS[3][:-1]])
    with pytest.raises(InputError) as err:
        load_cped(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 5, "Utterance")
    assert "expected 18 fields, found 17" in err.value.problem


def test_cped_undecodable_file(tmp_path: Path) -> None:
    path = write_cped(tmp_path / "v.csv", HEADER, ROWS)
    path.write_bytes(path.read_bytes().replace("撞你个头".encode(), "撞你".encode() + b"\xe4\xb8"))
    with pytest.raises(InputError) as err:
        load_cped(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 4, "Utterance")
