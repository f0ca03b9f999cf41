"""Native JSONL: round trip, atomic writes, and located errors for each kind of bad line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from elmd_sdk.data import Sample, Turn, VideoRef, read_jsonl, sample_from_dict, write_jsonl
from elmd_sdk.errors import InputError


def make_sample(dialogue_id: str = "d1") -> Sample:
    return Sample(
        dialogue_id=dialogue_id,
        utterance=Turn("A", "我很高兴 — “yes”", "happy"),
        response=Turn("B", "why?", "surprise"),
        history=[Turn("B", "hi", "neutral"), Turn("A", "x", None)],
        background="episode summary",
        video=VideoRef("v/a_1.mp4", 1.2, 3.0),
    )


def test_round_trip_keeps_schema_and_unicode(tmp_path: Path) -> None:
    path = tmp_path / "out" / "s.jsonl"
    samples = [make_sample("d1"), Sample("d2", Turn("A", "u", "sad"), Turn("B", "r", "fear"))]
    assert write_jsonl(path, samples) == 2
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == asdict(samples[0])
    assert "我很高兴" in lines[0]  # written as UTF-8, not escaped
    assert set(json.loads(lines[1])) == {"dialogue_id", "utterance", "response", "history", "background", "video"}
    assert read_jsonl(path) == samples
    assert [p.name for p in path.parent.iterdir()] == ["s.jsonl"]  # no temporary file left behind


def test_failed_write_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_jsonl(path, [make_sample()])
    before = path.read_bytes()

    def broken() -> Iterator[Sample]:
        yield make_sample("d9")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.jsonl"]


def test_blank_lines_and_optional_fields(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    minimal = {"dialogue_id": "d", "utterance": {"speaker": "A", "text": "u", "emotion": "anger"}}
    minimal["response"] = {"speaker": "B", "text": "r", "emotion": "disgust"}
    path.write_text("\n" + json.dumps(minimal) + "\n\n", encoding="utf-8")
    assert read_jsonl(path) == [Sample("d", Turn("A", "u", "anger"), Turn("B", "r", "disgust"))]


def good_line() -> dict:
    return asdict(make_sample())


def with_change(path: list[str | int], value: object) -> dict:
    obj = good_line()
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("obj", "field", "problem"),
    [
        (with_change(["response"], KeyError), "response", "missing field"),
        (with_change(["utterance", "text"], KeyError), "utterance.text", "missing field"),
        (with_change(["dialogue_id"], 7), "dialogue_id", "expected str, found 7"),
        (with_change(["history", 1, "speaker"], None), "history[1].speaker", "expected str"),
        (with_change(["video", "start"], "1.2"), "video.start", "expected int or float or null"),
        (
            with_change(["utterance", "emotion"], "joy"),
            "utterance.emotion",
            "unknown emotion label 'joy'; allowed: happy",
        ),
        (with_change(["response", "emotion"], None), "response.emotion", "expected str"),
        (with_change(["utterance", "mood"], "x"), "utterance.mood", "unknown field"),
        ([1, 2], None, "expected a JSON object, found list"),
    ],
)
def test_bad_fields_are_located(tmp_path: Path, obj: object, field: str | None, problem: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good_line()) + "\n" + json.dumps(obj) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_jsonl(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 2, field)
    assert problem in err.value.problem


def test_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good_line()) + "\n\n" + '{"dialogue_id": "d",\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl:3: invalid JSON"):
        read_jsonl(path)


def test_undecodable_bytes_name_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    line = json.dumps(good_line(), ensure_ascii=False).replace("why?", "why\udcff?")
    path.write_bytes(json.dumps(good_line()).encode() + b"\n" + line.encode("utf-8", "surrogateescape") + b"\n")
    with pytest.raises(InputError) as err:
        read_jsonl(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 2, "text")
    assert "0xff" in err.value.problem and "not valid utf-8" in err.value.problem


def test_sample_from_dict_without_location() -> None:
    assert sample_from_dict(good_line()) == make_sample()
    with pytest.raises(InputError, match=r"^field 'utterance': missing field$"):
        sample_from_dict({"dialogue_id": "d"})
    with pytest.raises(InputError, match=r"^f\.jsonl:4: field 'response': missing field$"):
        sample_from_dict({"dialogue_id": "d", "utterance": good_line()["utterance"]}, file="f.jsonl", line=4)
