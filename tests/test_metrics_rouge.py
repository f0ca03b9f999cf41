"""ROUGE-1 and ROUGE-L F by hand in English and Chinese, and against Google's rouge-score on the same tokens."""

from __future__ import annotations

import pytest
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
    scores = rouge(hyps, refs)
    assert scores["rouge_1"] == pytest.approx(100 * r1, abs=1e-5)
    assert scores["rouge_l"] == pytest.approx(100 * rl, abs=1e-5)


def test_chinese_rouge_by_hand() -> None:
    hyps = [tokenize("我今天很开心。", "zh"), tokenize("你别这样，我们好好谈谈。", "zh")]
    refs = [tokenize("今天我非常开心！", "zh"), tokenize("我们好好谈谈吧", "zh")]
    # Pair 1: 3 of 4 words shared (我 今天 开心), LCS 2 (我 … 开心). Pair 2: 3 shared of 5 and 4, LCS 3.
    r1 = (_f1(3 / 4, 3 / 4) + _f1(3 / 5, 3 / 4)) / 2
    rl = (_f1(2 / 4, 2 / 4) + _f1(3 / 5, 3 / 4)) / 2
    scores = rouge(hyps, refs)
    assert scores["rouge_1"] == pytest.approx(100 * r1, abs=1e-5)
    assert scores["rouge_l"] == pytest.approx(100 * rl, abs=1e-5)


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
def test_rouge_equals_rouge_score_on_same_tokens(hyp_texts: list[str], ref_texts: list[str], language: str) -> None:
    hyps = [tokenize(t, language) for t in hyp_texts]
    refs = [tokenize(t, language) for t in ref_texts]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], tokenizer=_Pretokenized())
    expected = [scorer.score(" ".join(r), " ".join(h)) for h, r in zip(hyps, refs, strict=True)]
    scores = rouge(hyps, refs)
    assert scores["rouge_1"] == pytest.approx(100 * sum(e["rouge1"].fmeasure for e in expected) / 2, abs=1e-5)
    assert scores["rouge_l"] == pytest.approx(100 * sum(e["rougeL"].fmeasure for e in expected) / 2, abs=1e-5)


def test_empty_hypothesis_scores_zero_instead_of_raising() -> None:
    assert rouge([[], ["a", "b"]], [["a"], ["a", "b"]]) == pytest.approx({"rouge_1": 50.0, "rouge_l": 50.0}, abs=1e-5)
