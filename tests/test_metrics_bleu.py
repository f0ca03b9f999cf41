"""Tokenization and BLEU-2/4: hand-counted n-grams in English, Chinese words and Chinese characters, and nltk itself on
the same tokens (on characters exactly as ChatGLM2's p-tuning evaluation calls it)."""

from __future__ import annotations

import math

import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from elmd_sdk.errors import InputError
from elmd_sdk.metrics import bleu, characters, tokenize

EN_HYPS = ["The cat sat on the mat.", "Hello there!"]
EN_REFS = ["the cat is on the mat", "Hello, my friend."]
ZH_HYPS = ["我今天很开心。", "你别这样，我们好好谈谈。"]
ZH_REFS = ["今天我非常开心！", "我们好好谈谈吧"]


def test_english_tokenization_lowercases_and_drops_punctuation() -> None:
    assert tokenize("The cat's hat – isn’t it GREAT? Well-known 3.5", "en") == [
        "the",
        "cat's",
        "hat",
        "isn't",
        "it",
        "great",
        "well",
        "known",
        "3",
        "5",
    ]


def test_chinese_tokenization_is_jieba_words_without_punctuation() -> None:
    assert [tokenize(t, "zh") for t in ZH_HYPS] == [
        ["我", "今天", "很", "开心"],
        ["你别", "这样", "我们", "好好", "谈谈"],
    ]
    assert [tokenize(t, "zh") for t in ZH_REFS] == [["今天", "我", "非常", "开心"], ["我们", "好好", "谈谈", "吧"]]
    assert tokenize("OK，3.5元", "zh") == ["ok", "3.5", "元"]


def test_unknown_language_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unsupported language 'fr'"):
        tokenize("bonjour", "fr")


def test_english_bleu_by_hand() -> None:
    hyps = [tokenize(t, "en") for t in EN_HYPS]
    refs = [tokenize(t, "en") for t in EN_REFS]
    # Pair 1, equal lengths (BP 1): 1-grams 5/6 (the x2, cat, on, mat), 2-grams 3/5 (the cat, on the, the mat),
    # 3-grams 1/4 (on the mat), 4-grams 0/3 -> method3 gives 1/(2^1 * 3).
    pair1_b2 = math.sqrt(5 / 6 * 3 / 5)
    pair1_b4 = (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    # Pair 2, 2 tokens vs 3 (BP e^(1-3/2)): 1-grams 1/2, then 0/1 2-, 3-, 4-grams -> 1/2, 1/4, 1/8.
    bp = math.exp(1 - 3 / 2)
    pair2_b2 = bp * math.sqrt(1 / 2 * 1 / 2)
    pair2_b4 = bp * (1 / 2 * 1 / 2 * 1 / 4 * 1 / 8) ** 0.25
    assert bleu(hyps, refs, 2) == pytest.approx(100 * (pair1_b2 + pair2_b2) / 2)
    assert bleu(hyps, refs, 4) == pytest.approx(100 * (pair1_b4 + pair2_b4) / 2)


def test_chinese_bleu_by_hand() -> None:
    hyps = [tokenize(t, "zh") for t in ZH_HYPS]
    refs = [tokenize(t, "zh") for t in ZH_REFS]
    # Pair 1 (4 vs 4 words): 1-grams 3/4, no 2-, 3-, 4-gram match -> 1/(2*3), 1/(4*2), 1/(8*1).
    pair1_b2 = math.sqrt(3 / 4 * 1 / 6)
    pair1_b4 = (3 / 4 * 1 / 6 * 1 / 8 * 1 / 8) ** 0.25
    # Pair 2 (5 vs 4 words, BP 1): 3/5, 2/4 (我们好好, 好好谈谈), 1/3 (我们好好谈谈), 4-grams 0/2 -> 1/(2*2).
    pair2_b2 = math.sqrt(3 / 5 * 2 / 4)
    pair2_b4 = (3 / 5 * 2 / 4 * 1 / 3 * 1 / 4) ** 0.25
    assert bleu(hyps, refs, 2) == pytest.approx(100 * (pair1_b2 + pair2_b2) / 2)
    assert bleu(hyps, refs, 4) == pytest.approx(100 * (pair1_b4 + pair2_b4) / 2)


def test_chinese_character_bleu_by_hand() -> None:
    hyps = [characters(t) for t in ZH_HYPS]
    refs = [characters(t) for t in ZH_REFS]
    assert hyps[0] == ["我", "今", "天", "很", "开", "心", "。"]  # punctuation kept, as list(text)
    # Pair 1, 7 vs 8 characters (BP e^(1-8/7)): 1-grams 5/7 (我 今 天 开 心), 2-grams 2/6 (今天, 开心), no 3- or
    # 4-gram match -> method3 gives 1/(2*5) and 1/(4*4).
    bp = math.exp(1 - 8 / 7)
    pair1_b2 = bp * math.sqrt(5 / 7 * 2 / 6)
    pair1_b4 = bp * (5 / 7 * 2 / 6 * 1 / 10 * 1 / 16) ** 0.25
    # Pair 2, 12 vs 7 characters (BP 1): 1-grams 6/12 (我 们 好 好 谈 谈), 2-grams 5/11 (我们 们好 好好 好谈 谈谈),
    # 3-grams 4/10, 4-grams 3/9 (我们好好 们好好谈 好好谈谈).
    pair2_b2 = math.sqrt(6 / 12 * 5 / 11)
    pair2_b4 = (6 / 12 * 5 / 11 * 4 / 10 * 3 / 9) ** 0.25
    assert bleu(hyps, refs, 2) == pytest.approx(100 * (pair1_b2 + pair2_b2) / 2)
    assert bleu(hyps, refs, 4) == pytest.approx(100 * (pair1_b4 + pair2_b4) / 2)


def test_character_bleu_4_is_chatglm2_ptuning_bleu() -> None:
    """ChatGLM2's ptuning/main.py: sentence_bleu([list(label)], list(pred), smoothing_function=method3), x100, mean."""
    expected = [
        sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)
        for pred, label in zip(ZH_HYPS, ZH_REFS, strict=True)
    ]
    hyps = [characters(t) for t in ZH_HYPS]
    refs = [characters(t) for t in ZH_REFS]
    assert bleu(hyps, refs, 4) == pytest.approx(100 * sum(expected) / len(expected), abs=1e-12)


@pytest.mark.parametrize(("hyp_texts", "ref_texts", "language"), [(EN_HYPS, EN_REFS, "en"), (ZH_HYPS, ZH_REFS, "zh")])
def test_bleu_matches_nltk_on_the_same_tokens(hyp_texts: list[str], ref_texts: list[str], language: str) -> None:
    hyps = [tokenize(t, language) for t in hyp_texts]
    refs = [tokenize(t, language) for t in ref_texts]
    smooth = SmoothingFunction().method3
    for n, weights in ((2, (0.5, 0.5)), (4, (0.25,) * 4)):
        expected = [
            sentence_bleu([r], h, weights=weights, smoothing_function=smooth) for h, r in zip(hyps, refs, strict=True)
        ]
        assert bleu(hyps, refs, n) == pytest.approx(100 * sum(expected) / len(expected))


def test_identical_text_scores_100_and_empty_hypothesis_scores_0() -> None:
    tokens = tokenize("See you at the station tomorrow morning", "en")
    assert bleu([tokens], [tokens], 4) == pytest.approx(100.0)
    assert bleu([[], tokens], [tokens, tokens], 4) == pytest.approx(50.0)


def test_bleu_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="as many hypotheses as references"):
        bleu([["a"]], [], 2)
