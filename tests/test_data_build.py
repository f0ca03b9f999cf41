"""Label mappings, the predominant-emotion tie rule, sentence merging and (u, r, history) sample building."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elmd_sdk.data import (
    EMOTIONS,
    Dialogue,
    Sentence,
    Turn,
    VideoRef,
    build_samples,
    builtin_label_map,
    join_sentences,
    merge_turns,
    predominant_emotion,
    read_label_map,
)
from elmd_sdk.data.sources import clean_text
from elmd_sdk.errors import InputError


def sent(speaker: str, text: str, label: str, line: int = 2, video: VideoRef | None = None) -> Sentence:
    return Sentence(speaker, text, label, file="corpus.csv", line=line, label_field="Emotion", video=video)


def test_seven_labels_in_paper_order() -> None:
    assert EMOTIONS == ("happy", "surprise", "sad", "disgust", "anger", "fear", "neutral")


def test_shipped_mappings_cover_each_corpus() -> None:
    meld = builtin_label_map("meld")
    assert {meld.mapping[k] for k in ("joy", "sadness", "surprise")} == {"happy", "sad", "surprise"}
    assert set(meld.mapping.values()) == set(EMOTIONS)
    m3ed = builtin_label_map("m3ed")
    assert m3ed.resolve("Happy", drop_unmapped=False, field="f") == "happy"  # case-insensitive
    cped = builtin_label_map("cped")
    assert len(cped.mapping) == 13
    assert cped.mapping["depress"] == "sad" and cped.mapping["worried"] == "fear"
    assert cped.mapping["astonished"] == "surprise" and cped.mapping["grateful"] == "happy"
    assert cped.mapping["negative-other"] is None and "negative-other" not in cped.allowed


def test_unknown_label_error_lists_allowed_and_location() -> None:
    with pytest.raises(InputError) as err:
        builtin_label_map("meld").resolve("happiness", drop_unmapped=False, file="a.csv", line=7, field="Emotion")
    message = str(err.value)
    assert message.startswith("a.csv:7: field 'Emotion': emotion 'happiness' is not a known label")
    assert "allowed: joy, surprise, sadness, disgust, anger, fear, neutral" in message
    assert builtin_label_map("meld").resolve("happiness", drop_unmapped=True, field="Emotion") is None


def test_user_label_file_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "labels.json"
    good.write_text(json.dumps({"Glad": "happy", "meh": None}), encoding="utf-8")
    labels = read_label_map(good)
    assert labels.mapping == {"glad": "happy", "meh": None} and labels.source == str(good)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"glad": "joyful"}), encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.json: field 'glad': target 'joyful' is not one of the seven"):
        read_label_map(bad)


@pytest.mark.parametrize(
    ("emotions", "expected"),
    [
        (["sad", "anger", "sad"], "sad"),  # plain majority
        (["anger", "sad"], "sad"),  # 1-1 tie: the last one said wins
        (["sad", "anger", "anger", "sad", "fear"], "sad"),  # 2-2 tie: sad is the later of the tied
        (["happy", None, None], "happy"),  # unlabelled sentences do not vote
        ([None, None], None),
    ],
)
def test_predominant_emotion_tie_rule(emotions: list[str | None], expected: str | None) -> None:
    assert predominant_emotion(emotions) == expected


def test_merge_turns_joins_text_and_spans_shared_clip() -> None:
    clip = "v/s/s_1.mp4"
    sentences = [
        sent("A", "one", "x", video=VideoRef(clip, 1.0, 2.0)),
        sent("A", "two", "x", video=VideoRef(clip, 2.5, 4.0)),
        sent("B", "three", "x", video=VideoRef(clip, 4.5, 5.0)),
    ]
    merged = merge_turns(sentences, ["anger", "fear", "sad"])
    assert [turn for turn, _ in merged] == [Turn("A", "one two", "fear"), Turn("B", "three", "sad")]
    assert merged[0][1] == VideoRef(clip, 1.0, 4.0)
    separate = merge_turns(
        [sent("A", "a", "x", video=VideoRef("u0.mp4")), sent("A", "b", "x", video=VideoRef("u1.mp4"))], ["sad", "sad"]
    )
    assert separate[0][1] == VideoRef("u1.mp4")  # separate clips: the last sentence's


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["Hi.", "How are you?"], "Hi. How are you?"),
        (["你好", "欢迎光临"], "你好欢迎光临"),
        (["怎么了？", "撞车了吗"], "怎么了？撞车了吗"),  # full-width punctuation is Chinese script too
        (["好的", "OK"], "好的OK"),  # Chinese on either side of the break: no space
        (["OK", "好的"], "OK好的"),
        (["ありがとう", "ございます"], "ありがとうございます"),
        (["안녕하세요", "반가워요"], "안녕하세요 반가워요"),  # Korean spaces its words
        (["one"], "one"),
    ],
)
def test_join_sentences_spaces_only_between_spaced_scripts(texts: list[str], expected: str) -> None:
    assert join_sentences(texts) == expected


def test_merge_turns_joins_chinese_without_a_space_unless_told() -> None:
    sentences = [sent("A", "你好", "x"), sent("A", "欢迎光临", "x"), sent("B", "谢谢", "x")]
    merged = merge_turns(sentences, ["happy", "happy", "neutral"])
    assert [turn.text for turn, _ in merged] == ["你好欢迎光临", "谢谢"]
    assert merge_turns(sentences, ["happy", "happy", "neutral"], joiner=" / ")[0][0].text == "你好 / 欢迎光临"


def test_build_samples_pairs_and_history() -> None:
    dialogue = Dialogue(
        "d1",
        [
            sent("A", "hi", "neutral"),
            sent("A", "great day", "joy"),
            sent("B", "is it?", "surprise"),
            sent("A", "yes", "joy"),
            sent("B", "ok", "sadness"),
        ],
    )
    lonely = Dialogue("d2", [sent("C", "alone", "neutral"), sent("C", "still", "neutral")])
    result = build_samples([dialogue, lonely], builtin_label_map("meld"))
    a1, b1, a2, b2 = (
        Turn("A", "hi great day", "happy"),
        Turn("B", "is it?", "surprise"),
        Turn("A", "yes", "happy"),
        Turn("B", "ok", "sad"),
    )
    assert [(s.utterance, s.response, s.history) for s in result.samples] == [
        (a1, b1, []),
        (b1, a2, [a1]),
        (a2, b2, [a1, b1]),
    ]
    assert {s.dialogue_id for s in result.samples} == {"d1"}
    capped = build_samples([dialogue], builtin_label_map("meld"), max_history=1)
    assert [s.history for s in capped.samples] == [[], [a1], [b1]]
    assert [s.history for s in build_samples([dialogue], builtin_label_map("meld"), max_history=0).samples] == [
        [],
        [],
        [],
    ]


def test_build_samples_unmapped_label_error_or_drop() -> None:
    dialogue = Dialogue(
        "d",
        [
            sent("A", "hm", "negative-other", line=2),
            sent("B", "what", "astonished", line=3),
            sent("A", "nothing", "negative-other", line=4),
            sent("A", "really", "worried", line=5),
            sent("B", "fine", "neutral", line=6),
        ],
    )
    cped = builtin_label_map("cped")
    with pytest.raises(
        InputError, match=r"corpus\.csv:2: field 'Emotion': emotion 'negative-other' has no counterpart"
    ):
        build_samples([dialogue], cped)
    result = build_samples([dialogue], cped, drop_unmapped=True)
    assert result.dropped_labels == {"negative-other": 2}
    assert result.skipped_pairs == 1  # (A "hm" -> B): u has no label left
    assert [(s.utterance.text, s.utterance.emotion, s.response.emotion) for s in result.samples] == [
        ("what", "surprise", "fear"),
        ("nothing really", "fear", "neutral"),  # the unlabelled sentence stays in the text but does not vote
    ]
    assert result.samples[0].history == [Turn("A", "hm", None)]


def test_clean_text_repairs_mojibake_and_spacing() -> None:
    assert clean_text("Itâ€™s  fine\u00a0 now ") == "It’s fine now"
    assert clean_text("Ãngel café") == "Ãngel café"  # correct text is left alone
