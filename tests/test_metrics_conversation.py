"""Per-turn conversation checks on hand-made replies: repeats and echoes, sentence ends, asides, contradictions."""

from __future__ import annotations

from pathlib import Path

import pytest

from elmd_sdk.metrics.conversation import (
    REPEAT_WORDS,
    contradicts,
    ends_mid_sentence,
    has_aside,
    shares_run,
)
from elmd_sdk.metrics.tokenize import tokenize


def _words(text: str) -> list[str]:
    return tokenize(text, "en")


def test_a_run_of_exactly_six_shared_words_counts_and_five_do_not() -> None:
    earlier = [_words("I hope you are doing well today, my friend.")]
    assert REPEAT_WORDS == 6
    assert shares_run(_words("Well, I hope you are doing well today!"), earlier)  # 7 shared in a row
    assert shares_run(_words("So I hope you are doing well."), earlier)  # exactly 6
    assert not shares_run(_words("So I hope you are doing fine."), earlier)  # 5 in a row
    assert not shares_run(_words("well doing are you hope I"), earlier)  # the same words, not a run


def test_a_run_is_found_in_any_earlier_reply_and_never_in_none() -> None:
    replies = [_words("a b c d e f"), _words("g h i j k l m")]
    assert shares_run(_words("x h i j k l m"), replies)  # the second one
    assert not shares_run(_words("a b c d e f"), [])
    assert not shares_run(_words("a b c"), [_words("a b c")])  # too short to hold a run
    assert shares_run(_words("a b c"), [_words("a b c d")], n=3)


@pytest.mark.parametrize(
    ("reply", "cut"),
    [
        ("I'm so sorry.", False),
        ("Really?!", False),
        ("Well...", False),
        ('He said "go."', False),
        ("(laughs) Fine!)", False),
        ("我很好。", False),
        ("真的吗？", False),
        ("I'm so sorry to hear that your", True),
        ("Fine, I guess,", True),
        ("", False),
        ("   ", False),
    ],
)
def test_a_reply_ends_mid_sentence_unless_its_last_mark_ends_one(reply: str, cut: bool) -> None:
    assert ends_mid_sentence(reply) is cut


def test_asides_are_remarks_in_parentheses_brackets_or_asterisks() -> None:
    assert has_aside("Sure (smiling) I will.")
    assert has_aside("好的（笑）") and has_aside("好的【笑】")
    assert has_aside("*smiling*") and has_aside("[smiling and smiling]")
    assert not has_aside("2 * 3 is six.")
    assert not has_aside("Sure, I will :)")
    assert not has_aside("No brackets here.")


@pytest.mark.parametrize("reply", ["anger", "disgust", "sad", "fear"])
def test_a_happy_user_answered_negatively_is_a_contradiction(reply: str) -> None:
    assert contradicts("happy", reply)


@pytest.mark.parametrize("user", ["sad", "fear", "anger"])
def test_an_upset_user_answered_happily_is_a_contradiction(user: str) -> None:
    assert contradicts(user, "happy")
    assert not contradicts(user, "sad") and not contradicts(user, "neutral")


def test_neutral_surprise_disgust_and_unknown_users_are_never_contradicted() -> None:
    for user in ("neutral", "surprise", "disgust", None):
        assert not any(contradicts(user, reply) for reply in ("happy", "sad", "anger", "fear", "neutral"))
    assert not contradicts("happy", None) and not contradicts("happy", "happy") and not contradicts("happy", "surprise")


def test_reply_rates_of_single_turns_count_echo_cuts_asides_and_contradictions() -> None:
    from elmd_sdk.metrics.conversation import reply_rates

    rates = reply_rates(
        ["I got the job at the big museum too!", "Well, I think that", "Sure (laughs).", "Great!"],
        ["I got the job at the big museum", "hi", "hi", "hi"],
        ["happy", "neutral", "anger", None],
        ["happy", "sad", "happy", "sad"],
        "en",
    )
    assert rates == {"echo_rate": 25.0, "mid_sentence_rate": 25.0, "aside_rate": 25.0, "contradiction_rate": 100 / 3}


def test_ece_and_the_reliability_bins_by_hand(tmp_path: Path) -> None:
    from elmd_sdk.metrics.calibration import reliability, write_reliability_png

    tables = [{"a": 0.9, "b": 0.1}, {"a": 0.8, "b": 0.2}, {"a": 0.35, "b": 0.65}, {"a": 0.5, "b": 0.5}]
    diagram = reliability(tables, ["a", "b", "b", "a"], bins=10)
    # bins: 0.9 -> [0.9, 1] right; 0.8 -> [0.8, 0.9) wrong; 0.65 -> [0.6, 0.7) right; 0.5 (a wins ties) -> right
    assert diagram["ece"] == pytest.approx(100 * (0.1 + 0.8 + 0.35 + 0.5) / 4)
    assert [b["count"] for b in diagram["bins"]] == [0, 0, 0, 0, 0, 1, 1, 0, 1, 1]
    assert diagram["bins"][8] == pytest.approx({"lower": 0.8, "upper": 0.9, "count": 1, "confidence": 0.8,
                                                "accuracy": 0.0})  # fmt: skip
    assert reliability([{"a": 1.0}], ["a"])["ece"] == 0.0
    with pytest.raises(ValueError, match="one probability table per gold label"):
        reliability(tables, ["a"])
    picture = write_reliability_png({"emotion_scores": diagram}, tmp_path / "r.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
