"""M3ED annotation.json loader on small fixtures: speakers, clip references, timestamps, bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from elmd_sdk.data import Turn, VideoRef, load_m3ed, parse_timestamp, prepare_corpus
from elmd_sdk.errors import InputError


def utt(speaker: str, text: str, emotion: str, start: str, end: str) -> dict[str, Any]:
    votes = {f"EmoAnnotator{i}": emotion for i in (1, 2, 3)}
    return {
        "StartTime": start,
        "EndTime": end,
        "Text": text,
        "Speaker": speaker,
        "EmoAnnotation": {**votes, "final_mul_emo": emotion, "final_main_emo": emotion},
    }


ANNOTATION: dict[str, Any] = {
    "anjia": {
        "anjia_1": {
            "SpeakerInfo": {"A": {"Name": "房似锦", "Age": "mid", "Gender": "female", "OtherName": []}, "B": {}},
            "Dialog": {
                "anjia_1_1": utt("A", "你好", "Neutral", "00:00:00:01", "00:00:01:04"),
                "anjia_1_2": utt("A", "欢迎光临", "Happy", "00:00:01:10", "00:00:02:00"),
                "anjia_1_3": utt("B", "什么？", "Surprise", "00:00:02:05", "00:00:03:20"),
                "anjia_1_4": utt("A", "没事", "Sad", "00:01:00:00", "00:01:01:12"),
            },
        },
        "anjia_2": {
            "SpeakerInfo": {},
            "Dialog": {
                "anjia_2_1": utt("B", "走吧", "Anger", "00:00:00:00", "00:00:01:00"),
                "anjia_2_2": utt("A", "好", "Fear", "00:00:01:00", "00:00:02:00"),
            },
        },
    }
}


def write(path: Path, obj: Any = ANNOTATION) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line)


def test_parse_timestamp_units() -> None:
    assert parse_timestamp("00:01:02:05") == pytest.approx(62.2)  # 5 frames at 25 fps
    assert parse_timestamp("01:00:00:50", ticks_per_second=100) == pytest.approx(3600.5)
    for bad in ("00:00:01:25", "00:00:01", "00:61:00:00", "aa:00:00:00"):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def test_m3ed_samples_and_videos(tmp_path: Path) -> None:
    path = write(tmp_path / "annotation.json")
    dialogues = load_m3ed(path)
    assert [(d.dialogue_id, len(d.sentences)) for d in dialogues] == [("anjia_1", 4), ("anjia_2", 2)]
    assert dialogues[0].sentences[2].line == line_of(path, '"anjia_1_3"')
    samples = prepare_corpus("m3ed", path, video_root="videos").samples
    a1 = Turn(
        "房似锦", "你好欢迎光临", "happy"
    )  # Chinese merges without a space; tie -> the later label; SpeakerInfo name
    b1 = Turn("B", "什么？", "surprise")  # no Name: the speaker letter
    assert [(s.dialogue_id, s.utterance, s.response, s.history) for s in samples] == [
        ("anjia_1", a1, b1, []),
        ("anjia_1", b1, Turn("房似锦", "没事", "sad"), [a1]),
        ("anjia_2", Turn("B", "走吧", "anger"), Turn("A", "好", "fear"), []),
    ]
    clip = str(Path("videos") / "anjia" / "anjia_1.mp4")
    spans = [(s.video.path, s.video.start, s.video.end) for s in samples if s.video is not None]
    assert spans == [(clip, pytest.approx(0.04), 2.0), (clip, pytest.approx(2.2), pytest.approx(3.8)), spans[2]]
    assert spans[2][0] == str(Path("videos") / "anjia" / "anjia_2.mp4")
    assert prepare_corpus("m3ed", path).samples[0].video is None


def test_m3ed_fps_setting_checks_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path / "annotation.json")
    with pytest.raises(InputError) as err:
        load_m3ed(path, video_root="v", ticks_per_second=20)  # "00:00:03:20" is out of range at 20 per second
    assert (err.value.line, err.value.field) == (line_of(path, '"anjia_1_3"'), "anjia.anjia_1.Dialog.anjia_1_3.EndTime")
    assert "--fps" in err.value.problem
    assert load_m3ed(path, video_root="v", ticks_per_second=100)[0].sentences[0].video == VideoRef(
        str(Path("v") / "anjia" / "anjia_1.mp4"), 0.01, 1.04
    )


def test_m3ed_missing_field(tmp_path: Path) -> None:
    broken = copy.deepcopy(ANNOTATION)
    del broken["anjia"]["anjia_2"]["Dialog"]["anjia_2_2"]["Text"]
    path = write(tmp_path / "annotation.json", broken)
    with pytest.raises(InputError) as err:
        load_m3ed(path)
    assert (err.value.file, err.value.line) == (str(path), line_of(path, '"anjia_2_2"'))
    assert err.value.field == "anjia.anjia_2.Dialog.anjia_2_2.Text"


def test_m3ed_ill_typed_dialog(tmp_path: Path) -> None:
    broken = copy.deepcopy(ANNOTATION)
    broken["anjia"]["anjia_2"]["Dialog"] = ["not", "an", "object"]
    path = write(tmp_path / "annotation.json", broken)
    with pytest.raises(InputError) as err:
        load_m3ed(path)
    assert (err.value.line, err.value.field) == (line_of(path, '"anjia_2"'), "anjia.anjia_2.Dialog")


def test_m3ed_unknown_label(tmp_path: Path) -> None:
    broken = copy.deepcopy(ANNOTATION)
    broken["anjia"]["anjia_1"]["Dialog"]["anjia_1_4"]["EmoAnnotation"]["final_main_emo"] = "Contempt"
    path = write(tmp_path / "annotation.json", broken)
    with pytest.raises(InputError) as err:
        prepare_corpus("m3ed", path)
    assert (err.value.file, err.value.line) == (str(path), line_of(path, '"anjia_1_4"'))
    assert err.value.field == "anjia.anjia_1.Dialog.anjia_1_4.EmoAnnotation.final_main_emo"
    assert "'Contempt' is not a known label" in err.value.problem and "allowed: happy, surprise" in err.value.problem


def test_m3ed_invalid_json_and_undecodable(tmp_path: Path) -> None:
    path = tmp_path / "annotation.json"
    path.write_text('{\n  "anjia": {\n    "anjia_1": \n}', encoding="utf-8")
    with pytest.raises(InputError, match=r"annotation\.json:4: invalid JSON"):
        load_m3ed(path)
    write(path)
    path.write_bytes(path.read_bytes().replace("走吧".encode(), b"\xff\xfe"))
    with pytest.raises(InputError) as err:
        load_m3ed(path)
    bad_line = next(i for i, line in enumerate(path.read_bytes().split(b"\n"), 1) if b"\xff\xfe" in line)
    assert (err.value.line, err.value.field) == (bad_line, "Text")
