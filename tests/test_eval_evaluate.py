"""elmd_sdk.evaluate: chain inputs from samples, generation order, scoring, report JSON, and the real default chain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda

from elmd_sdk.answer.result import ELMDResult
from elmd_sdk.data import write_jsonl
from elmd_sdk.data.records import Sample, Turn, VideoRef
from elmd_sdk.errors import InputError
from elmd_sdk.evaluate import (
    EvalSettings,
    eval_report,
    evaluate,
    generate,
    sample_input,
    score,
    write_report,
)
from elmd_sdk.metrics import TextMetricOptions, score_generations

SAMPLES = [
    Sample(
        "dia1",
        Turn("Ross", "I got the job at the museum!", "happy"),
        Turn("Rachel", "that is so great I am proud of you", "happy"),
        history=[Turn("Rachel", "So how did it go?", "neutral")],
        background="Central Perk, morning",
        video=VideoRef("clips/dia1_utt1.mp4", 1.5, 3.0),
    ),
    Sample(
        "dia2",
        Turn("Joey", "My fish died this morning.", "sad"),
        Turn("Chandler", "oh no I am so sorry about your fish", "sad"),
    ),
    Sample(
        "dia3",
        Turn("Monica", "Where is the remote?", "neutral"),
        Turn("Phoebe", "it is under the couch cushion over there", "neutral"),
    ),
]
# What the fake chain answers per utterance: (predicted emotion, response).
ANSWERS = {
    "I got the job at the museum!": ("happy", "that is so great I am proud of you"),
    "My fish died this morning.": (None, "oh no I am so sorry about your fish"),
    "Where is the remote?": ("sad", "it is under the couch cushion over there"),
}


def fake_chain(calls: list[dict[str, Any]] | None = None) -> RunnableLambda[dict[str, Any], ELMDResult]:
    """Answers from ANSWERS, with a demonstration naming the utterance; records the inputs it saw."""

    def answer(inputs: dict[str, Any]) -> ELMDResult:
        if calls is not None:
            calls.append(inputs)
        emotion, response = ANSWERS[inputs["utterance"]]
        demo = Document(page_content=f"demo for {inputs['utterance']}", metadata={"score": 0.5})
        return ELMDResult(emotion, f"  {response}\n", demo)

    return RunnableLambda(answer)


def test_sample_input_carries_every_part() -> None:
    assert sample_input(SAMPLES[0]) == {
        "utterance": "I got the job at the museum!",
        "speaker": "Ross",
        "history": [{"speaker": "Rachel", "text": "So how did it go?"}],
        "background": "Central Perk, morning",
        "video": {"path": "clips/dia1_utt1.mp4", "start": 1.5, "end": 3.0},
    }
    assert sample_input(SAMPLES[1])["video"] is None
    assert sample_input(SAMPLES[1])["history"] == []


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_generate_keeps_sample_order_and_references(batch_size: int) -> None:
    calls: list[dict[str, Any]] = []
    done: list[int] = []
    generations = generate(fake_chain(calls), SAMPLES, batch_size=batch_size, on_advance=done.append)
    assert [g.utterance for g in generations] == [s.utterance.text for s in SAMPLES]
    assert [g.reference for g in generations] == [s.response.text for s in SAMPLES]
    assert [g.reference_emotion for g in generations] == ["happy", "sad", "neutral"]
    assert [g.emotion for g in generations] == ["happy", None, "sad"]
    assert generations[0].response == "that is so great I am proud of you"  # stripped
    assert generations[0].demonstration == {"response": "demo for I got the job at the museum!", "score": 0.5}
    assert sum(done) == 3 and len(done) == -(-3 // batch_size)
    assert len(calls) == 3


def test_evaluate_scores_emotions_by_hand_and_text_against_score_generations() -> None:
    result = evaluate(fake_chain(), SAMPLES, show_progress=False)
    metrics = result.metrics
    # Responses equal the references: BLEU and ROUGE are perfect.
    assert metrics["bleu_2"] == pytest.approx(100.0)
    assert metrics["bleu_4"] == pytest.approx(100.0)
    assert metrics["rouge_1"] == pytest.approx(100.0)
    assert metrics["rouge_l"] == pytest.approx(100.0)
    # gold happy/sad/neutral, predicted happy/None/sad: 1 of 3 right; F1 happy 100, sad 0, neutral 0.
    assert metrics["emotion_accuracy"] == pytest.approx(100 / 3)
    assert metrics["emotion_macro_f1"] == pytest.approx(100 / 3)
    assert metrics["emotion_f1"]["happy"] == pytest.approx(100.0)
    assert metrics["emotion_f1"]["fear"] is None
    assert metrics["count"] == 3 and metrics["language"] == "en"
    assert {"tokenization", "meteor_synonyms", "bleu_method", "rouge_method"} <= set(metrics)
    expected = score_generations(
        [a[1] for a in ANSWERS.values()], [s.response.text for s in SAMPLES], "en", meteor_synonyms=False
    )
    unsynonymed = score(result.generations, "en", meteor_synonyms=False)
    assert unsynonymed["meteor"] == pytest.approx(expected["meteor"])
    assert unsynonymed["meteor_synonyms"] is False


def test_evaluate_scores_chinese_with_the_chosen_bleu_tokens_and_rouge_counting() -> None:
    samples = [Sample("d1", Turn("A", "我们走吗？", "neutral"), Turn("B", "好的，我们走", "happy"))]
    chain = RunnableLambda(lambda inputs: ELMDResult("happy", "好的好的，我们走吧"))
    default = evaluate(chain, samples, language="zh", show_progress=False).metrics
    # Characters, as ChatGLM2: 好的好的，我们走吧 (9) vs 好的，我们走 (6), BP 1; clipped n-gram matches
    # 6/9 (好 的 ， 我 们 走), 5/8 (好的 的， ，我 我们 们走), 4/7, 3/6.
    assert default["bleu_4"] == pytest.approx(100 * (6 / 9 * 5 / 8 * 4 / 7 * 3 / 6) ** 0.25)
    # ROUGE-1 on jieba words 好 的 好 的 我们 走 吧 vs 好 的 我们 走, each distinct word once: F(4/5, 1) = 8/9.
    assert default["rouge_1"] == pytest.approx(100 * 8 / 9, abs=1e-5)
    assert (default["bleu_tokens"], default["rouge_counting"]) == ("chars", "unique")
    words = TextMetricOptions(zh_bleu_tokens="words", zh_rouge_counting="clipped")
    chosen = evaluate(chain, samples, language="zh", text_metrics=words, show_progress=False).metrics
    # Jieba words, 7 vs 4: 4/7, 3/6 (好的 的我们 我们走), 2/5, 1/4 (好的我们走).
    assert chosen["bleu_4"] == pytest.approx(100 * (4 / 7 * 3 / 6 * 2 / 5 * 1 / 4) ** 0.25)
    assert chosen["rouge_1"] == pytest.approx(100 * 8 / 11, abs=1e-5)  # every word counted: F(4/7, 1)
    assert (chosen["bleu_tokens"], chosen["rouge_counting"]) == ("words", "clipped")


def test_evaluate_refuses_no_samples_and_names_a_refused_sample() -> None:
    with pytest.raises(InputError, match="no samples"):
        evaluate(fake_chain(), [], show_progress=False)

    def refuse_joey(inputs: dict[str, Any]) -> ELMDResult:
        if inputs["speaker"] == "Joey":
            raise InputError("must be a non-empty string", field="utterance")
        return ELMDResult(None, "x")

    with pytest.raises(InputError, match=r"sample 2 \(dialogue dia2\).*utterance"):
        generate(RunnableLambda(refuse_joey), SAMPLES)
    with pytest.raises(InputError, match=r"samples 1-2 \(dialogue dia1\)"):
        generate(RunnableLambda(refuse_joey), SAMPLES, batch_size=2)


def test_settings_validate_and_generation_overrides() -> None:
    assert EvalSettings().generation == {"seed": 0}
    with pytest.raises(InputError, match=r"generation.*max_new_tokens: Input should be greater than 0, got 0"):
        EvalSettings(generation={"max_new_tokens": 0}).validate()
    with pytest.raises(InputError, match=r"generation.*unknown setting"):
        EvalSettings(generation={"max_length": 8}).validate()
    with pytest.raises(InputError, match="batch_size"):
        EvalSettings(batch_size=0).validate()
    with pytest.raises(InputError, match="limit"):
        EvalSettings(limit=0).validate()
    with pytest.raises(InputError, match="zh_rouge_counting"):
        EvalSettings(text_metrics=TextMetricOptions(zh_rouge_counting="lin")).validate()  # type: ignore[arg-type]


def test_report_json_holds_metrics_settings_bundle_and_every_generation(tmp_path: Path) -> None:
    data = tmp_path / "test.jsonl"
    write_jsonl(data, SAMPLES)
    settings = EvalSettings(limit=3, generation={"max_new_tokens": 16, "seed": 0})
    result = evaluate(fake_chain(), SAMPLES, show_progress=False)
    bundle = {"name": "b", "manifest_sha256": "ab" * 32}
    out, picture = write_report(
        tmp_path / "r" / "report.json",
        eval_report(result, settings=settings, data=data, samples_total=5, bundle=bundle),
    )
    assert picture == tmp_path / "r" / "report.confusion.png" and picture.stat().st_size > 1000
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["format"] == "elmd-eval-report" and report["kind"] == "eval"
    assert report["bundle"] == bundle
    assert report["data"]["samples_total"] == 5 and report["data"]["samples_used"] == 3
    assert len(report["data"]["sha256"]) == 64
    assert report["settings"]["generation"] == {"max_new_tokens": 16, "seed": 0}
    assert report["settings"]["text_metrics"] == {"zh_bleu_tokens": "chars", "zh_rouge_counting": "unique"}
    assert report["metrics"]["bleu_4"] == pytest.approx(100.0)
    assert [g["reference"] for g in report["generations"]] == [s.response.text for s in SAMPLES]
    first = report["generations"][0]
    assert first == {
        "dialogue_id": "dia1",
        "speaker": "Ross",
        "utterance": "I got the job at the museum!",
        "reference": "that is so great I am proud of you",
        "reference_emotion": "happy",
        "response": "that is so great I am proud of you",
        "emotion": "happy",
        "demonstration": {"response": "demo for I got the job at the museum!", "score": 0.5},
        "emotion_scores": None,
        "utterance_emotion": None,
        "reference_utterance_emotion": "happy",
        "utterance_emotion_scores": None,
    }
    assert not list(out.parent.glob("*.tmp"))


def test_real_default_chain_on_two_samples(elmd_home: str, tmp_path: Path) -> None:
    """Through the embedded default bundle (SmolLM2 + ERM), greedy, few tokens: generations are scored."""
    import dataclasses

    from elmd_sdk.bundle import MANIFEST_FILE
    from elmd_sdk.chains.chain import default_bundle_path
    from elmd_sdk.evaluate import load_chain

    if not (default_bundle_path() / MANIFEST_FILE).is_file():
        pytest.skip("the embedded default bundle is not built")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chain = load_chain(default_bundle_path(), EvalSettings(generation={"max_new_tokens": 6, "do_sample": False}))
        clip = tmp_path / "clip.mp4"
        clip.write_bytes(b"never decoded: the bundle has no projector")
        samples = [dataclasses.replace(SAMPLES[0], video=VideoRef(str(clip), 1.5, 3.0)), SAMPLES[1]]
        with pytest.warns(UserWarning, match="no trained video projector"):  # the first sample has a video
            result = evaluate(chain, samples, show_progress=False)
    finally:
        torch.set_num_threads(threads)
    assert len(result.generations) == 2
    assert all(g.demonstration is not None and g.demonstration["response"] for g in result.generations)
    assert result.generation_settings["max_new_tokens"] == 6
    assert result.generation_settings["do_sample"] is False
    assert 0.0 <= result.metrics["bleu_4"] <= 100.0
    assert result.metrics["emotion_accuracy"] is not None


def test_batched_generation_decodes_together_and_equals_one_at_a_time(chain: Any, monkeypatch) -> None:
    import dataclasses

    from elmd_sdk.models.chat_model import ELMDChatModel

    samples = [dataclasses.replace(s, video=None) for s in SAMPLES]
    alone = generate(chain, samples, batch_size=1)
    engines: list[int] = []
    original = ELMDChatModel.batched
    monkeypatch.setattr(ELMDChatModel, "batched", lambda self, n=8: engines.append(n) or original(self, n))
    together = generate(chain, samples, batch_size=3)
    assert engines == [3]  # one engine for the whole run, three sequences per forward pass
    assert [(g.emotion, g.response) for g in together] == [(g.emotion, g.response) for g in alone]
