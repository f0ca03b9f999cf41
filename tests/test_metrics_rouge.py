"""ROUGE-1 and ROUGE-L F by hand in English and Chinese under both countings, against Google's rouge-score (clipped) and
rouge-chinese's own default (unique) on the same tokens."""

from __future__ import annotations

import pytest
from rouge_chinese import Rouge
from rouge_score import rouge_scorer, tokenizers

from elmd_sdk.metrics import rouge, tokenize


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r)


def test_english_rouge_by_hand() -> None:
    hyps = [tokenize("On the mat, the cat sat.", "en"), tokenize("the the the", "en")]
    refs = [tokenize("The cat sat on the mat", "en"), tokenize("the cat", "en")]
    # Pair 1: every unigram matches (F 1); the longest common subsequence is 3 of 6 words ("the cat sat").
    # Pair 2: "the" x3 against "the" x1 is clipped to 1 match: P 1/3, R 1/2; the LCS is 1 word too.
    r1 = (1.0 + _f1(1 / 3, 1 / 2)) / 2
    rl = (_f1(3 / 6, 3 / 6) + _f1(1 / 3, 1 / 2)) / 2
    scores = rouge(hyps, refs, counting="clipped")
    assert scores["rouge_1"] == pytest.approx(100 * r1, abs=1e-5)
    assert scores["rouge_l"] == pytest.approx(100 * rl, abs=1e-5)


def test_chinese_rouge_by_hand() -> None:
    hyps = [tokenize("我今天很开心。", "zh"), tokenize("你别这样，我们好好谈谈。", "zh")]
    refs = [tokenize("今天我非常开心！", "zh"), tokenize("我们好好谈谈吧", "zh")]
    # Pair 1: 3 of 4 words shared (我 今天 开心), LCS 2 (我 … 开心). Pair 2: 3 shared of 5 and 4, LCS 3.
    r1 = (_f1(3 / 4, 3 / 4) + _f1(3 / 5, 3 / 4)) / 2
    rl = (_f1(2 / 4, 2 / 4) + _f1(3 / 5, 3 / 4)) / 2
    for counting in ("unique", "clipped"):  # no word repeats: both countings agree
        scores = rouge(hyps, refs, counting=counting)
        assert scores["rouge_1"] == pytest.approx(100 * r1, abs=1e-5)
        assert scores["rouge_l"] == pytest.approx(100 * rl, abs=1e-5)


def test_unique_and_clipped_counting_by_hand() -> None:
    # 好 的 好 的 我们 走 吧 (7 words, 5 distinct) against 好 的 我们 走 (4): the repeats are what differs.
    hyps = [tokenize("好的好的，我们走吧", "zh"), tokenize("the the the", "en")]
    refs = [tokenize("好的，我们走", "zh"), tokenize("the cat", "en")]
    assert hyps[0] == ["好", "的", "好", "的", "我们", "走", "吧"] and refs[0] == ["好", "的", "我们", "走"]
    # unique: 5 distinct hypothesis words, 4 reference words, all 4 shared -> P 4/5, R 1; "the" once: P 1, R 1/2.
    unique = (_f1(4 / 5, 1.0) + _f1(1.0, 1 / 2)) / 2
    # clipped: 4 of 7 hypothesis words match -> P 4/7, R 1; "the" x3 clipped to 1 -> P 1/3, R 1/2.
    clipped = (_f1(4 / 7, 1.0) + _f1(1 / 3, 1 / 2)) / 2
    # ROUGE-L is one LCS either way: 4 words (P 4/7, R 1) and 1 word (P 1/3, R 1/2).
    lcs = (_f1(4 / 7, 1.0) + _f1(1 / 3, 1 / 2)) / 2
    assert rouge(hyps, refs, counting="unique") == pytest.approx(
        {"rouge_1": 100 * unique, "rouge_l": 100 * lcs}, abs=1e-5
    )
    assert rouge(hyps, refs, counting="clipped") == pytest.approx(
        {"rouge_1": 100 * clipped, "rouge_l": 100 * lcs}, abs=1e-5
    )


def test_unique_counting_is_rouge_chinese_default_on_jieba_words() -> None:
    """ChatGLM2's evaluation: rouge_chinese.Rouge() (exclusive=True by default) on space-joined jieba words."""
    hyp_texts = ["好的好的，我们走吧", "谢谢，谢谢你", "对对对，就是这样"]
    ref_texts = ["好的，我们走", "谢谢你", "就是这样对不对"]
    hyps = [tokenize(t, "zh") for t in hyp_texts]
    refs = [tokenize(t, "zh") for t in ref_texts]
    expected = [Rouge().get_scores(" ".join(h), " ".join(r))[0] for h, r in zip(hyps, refs, strict=True)]
    scores = rouge(hyps, refs, counting="unique")
    assert scores["rouge_1"] == pytest.approx(100 * sum(e["rouge-1"]["f"] for e in expected) / 3, abs=1e-9)
    assert scores["rouge_l"] == pytest.approx(100 * sum(e["rouge-l"]["f"] for e in expected) / 3, abs=1e-9)
    assert scores["rouge_1"] > rouge(hyps, refs, counting="clipped")["rouge_1"]  # repeats no longer dilute precision


def test_unknown_counting_is_refused() -> None:
    with pytest.raises(ValueError, match="counting must be one of unique, clipped"):
        rouge([["a"]], [["a"]], counting="lin")  # type: ignore[arg-type]


class _Pretokenized(tokenizers.Tokenizer):
    """Hands rouge-score the tokens already made (space-joined), untouched."""

    def tokenize(self, text: str) -> list[str]:
        return text.split()


@pytest.mark.parametrize(
    ("hyp_texts", "ref_texts", "language"),
    [
        (
            ["I'm so sorry, that sounds awful.", "Great, see you then!"],
            ["That sounds awful, I'm sorry.", "See you"],
            "en",
        ),
        (["他昨天去北京了", "你别这样，我们好好谈谈。"], ["明天我去北京", "我们好好谈谈吧"], "zh"),
    ],
)
def test_clipped_rouge_equals_rouge_score_on_same_tokens(
    hyp_texts: list[str], ref_texts: list[str], language: str
) -> None:
    hyps = [tokenize(t, language) for t in hyp_texts]
    refs = [tokenize(t, language) for t in ref_texts]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], tokenizer=_Pretokenized())
    expected = [scorer.score(" ".join(r), " ".join(h)) for h, r in zip(hyps, refs, strict=True)]
    scores = rouge(hyps, refs, counting="clipped")
    assert scores["rouge_1"] == pytest.approx(100 * sum(e["rouge1"].fmeasure for e in expected) / 2, abs=1e-5)
    assert scores["rouge_l"] == pytest.approx(100 * sum(e["rougeL"].fmeasure for e in expected) / 2, abs=1e-5)


def test_empty_hypothesis_scores_zero_instead_of_raising() -> None:
    for counting in ("unique", "clipped"):
        scores = rouge([[], ["a", "b"]], [["a"], ["a", "b"]], counting=counting)
        assert scores == pytest.approx({"rouge_1": 50.0, "rouge_l": 50.0}, abs=1e-5)
