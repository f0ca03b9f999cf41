"""``data prepare --background``: a JSON mapping from dialogue id or show to each sample's background B."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from elmd_sdk.cli.main import app
from elmd_sdk.data import Sample, Turn, prepare_corpus, read_backgrounds, read_jsonl, write_jsonl
from elmd_sdk.errors import InputError


def _utt(speaker: str, text: str, emotion: str) -> dict[str, Any]:
    return {"Text": text, "Speaker": speaker, "EmoAnnotation": {"final_main_emo": emotion}}


def m3ed(path: Path) -> Path:
    """Two shows: anjia with clips 1 and 2, huanle with clip 1; every clip is one (u, r) pair."""
    clip = {"SpeakerInfo": {}, "Dialog": {"a": _utt("A", "你好", "Happy"), "b": _utt("B", "走吧", "Sad")}}
    annotation = {"anjia": {"anjia_1": clip, "anjia_2": clip}, "huanle": {"huanle_1": clip}}
    path.write_text(json.dumps(annotation, ensure_ascii=False), encoding="utf-8")
    return path


def mapping(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_m3ed_show_background_with_a_dialogue_override(tmp_path: Path) -> None:
    texts = {"anjia": "上海的房产中介公司。", "anjia_2": "门店晨会。"}
    samples = prepare_corpus("m3ed", m3ed(tmp_path / "a.json"), background=mapping(tmp_path / "b.json", texts)).samples
    assert [(s.dialogue_id, s.background) for s in samples] == [
        ("anjia_1", "上海的房产中介公司。"),  # its show's
        ("anjia_2", "门店晨会。"),  # its own entry wins over the show's
        ("huanle_1", None),  # neither given
    ]


def test_cped_series_and_meld_dialogue_keys(tmp_path: Path) -> None:
    cped = tmp_path / "cped.csv"
    cped.write_text(
        "TV_ID,Dialogue_ID,Speaker,Emotion,Utterance\n"
        "32,32_000,于春晓,happy,怎么了\n32,32_000,戴娜,sadness,没事\n"
        "40,40_000,甲,happy,好\n40,40_000,乙,fear,小心\n",
        encoding="utf-8",
    )
    samples = prepare_corpus("cped", cped, background=mapping(tmp_path / "c.json", {"32": "一部都市剧。"})).samples
    assert [(s.dialogue_id, s.background) for s in samples] == [("32_000", "一部都市剧。"), ("40_000", None)]
    meld = tmp_path / "meld.csv"
    meld.write_text(
        "Utterance,Speaker,Emotion,Dialogue_ID,Utterance_ID\nHi,Ross,joy,0,0\nHey,Rachel,joy,0,1\n", encoding="utf-8"
    )
    samples = prepare_corpus("meld", meld, background=mapping(tmp_path / "m.json", {"dia0": "Central Perk."})).samples
    assert [s.background for s in samples] == ["Central Perk."]


def test_jsonl_backgrounds_replace_by_dialogue_id(tmp_path: Path) -> None:
    given = [
        Sample("d1", Turn("A", "hi", "happy"), Turn("B", "hey", "happy"), background="old"),
        Sample("d2", Turn("A", "yo", "happy"), Turn("B", "sup", "happy"), background="kept"),
    ]
    write_jsonl(tmp_path / "in.jsonl", given)
    texts = mapping(tmp_path / "b.json", {"d1": "new"})
    samples = prepare_corpus("jsonl", tmp_path / "in.jsonl", background=texts).samples
    assert [s.background for s in samples] == ["new", "kept"]


@pytest.mark.parametrize(
    ("content", "line", "field", "problem"),
    [
        ('{"anjia": "a",\n "huanle" "b"}', 2, None, "invalid JSON (Expecting ':' delimiter at column 11)"),
        ('["anjia"]', None, None, "expected a JSON object {dialogue id or show: background text}"),
        ({"anjia": 3}, None, "anjia", "expected a non-empty background text, found 3"),
        ({"anjia": ["a"]}, None, "anjia", 'expected a non-empty background text, found ["a"]'),
        ({"anjia": " "}, None, "anjia", 'expected a non-empty background text, found " "'),
        ('{"anjia": "a", "anjia": "b"}', None, "anjia", "given twice"),
    ],
)
def test_bad_mapping_files_name_the_file_and_key(
    tmp_path: Path, content: Any, line: int | None, field: str | None, problem: str
) -> None:
    path = mapping(tmp_path / "bg.json", content)
    with pytest.raises(InputError) as err:
        read_backgrounds(path)
    assert (err.value.file, err.value.line, err.value.field, err.value.problem) == (str(path), line, field, problem)


def test_a_key_naming_no_dialogue_or_show_is_an_input_error(tmp_path: Path) -> None:
    path = mapping(tmp_path / "bg.json", {"anjia": "a", "anjai_1": "typo"})
    with pytest.raises(InputError) as err:
        prepare_corpus("m3ed", m3ed(tmp_path / "a.json"), background=path)
    assert str(err.value) == f"{path}: field 'anjai_1': names no dialogue id or show of the input"
    write_jsonl(tmp_path / "in.jsonl", [Sample("d1", Turn("A", "hi", "happy"), Turn("B", "hey", "happy"))])
    with pytest.raises(InputError, match="field 'anjia': names no dialogue id"):  # native samples carry no show
        prepare_corpus("jsonl", tmp_path / "in.jsonl", background=path)


def test_cli_prepare_background(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    args = ["data", "prepare", "--format", "m3ed", str(m3ed(tmp_path / "a.json")), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--background", str(mapping(tmp_path / "b.json", {"huanle": "喜剧。"}))])
    assert result.exit_code == 0, result.output
    assert [s.background for s in read_jsonl(out)] == [None, None, "喜剧。"]
    result = CliRunner().invoke(app, [*args, "--background", str(tmp_path / "missing.json")])
    assert isinstance(result.exception, InputError) and "missing.json: file not found" in str(result.exception)
