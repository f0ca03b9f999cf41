"""Training examples: targets, demonstrations from other dialogues, history cutting, metrics, batch order, schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document
from retriever_fakes import HashEncoder
from train_fakes import text_samples, tiny_tokenizer

from elmd_sdk.answer.wording import render_answer
from elmd_sdk.bundle import data_sha256
from elmd_sdk.data import write_jsonl
from elmd_sdk.data.records import Sample, Turn, VideoRef
from elmd_sdk.errors import InputError
from elmd_sdk.retrievers import EmotionalRetriever, build_index
from elmd_sdk.trainers.emotion_eval import emotion_metrics
from elmd_sdk.trainers.examples import (
    PromptConfig,
    answer_ids,
    build_examples,
    label_candidates,
    retrieve_demonstrations,
)
from elmd_sdk.trainers.pipeline import samples_sha256
from elmd_sdk.trainers.schedule import lr_factor
from elmd_sdk.trainers.stage import epoch_order

LABELS = ("happy", "sad", "anger")


DEMO = Document(page_content="take care", metadata={"utterance": "my dog is ill", "response_emotion": "sad"})


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def test_rep_target_is_the_emotion_line_and_eerg_adds_response_and_eos(tokenizer) -> None:
    [sample] = text_samples(1)
    config = PromptConfig(labels=LABELS)
    [rep] = build_examples([sample], [None], tokenizer, config, with_response=False, video_tokens=0)
    [eerg] = build_examples([sample], [None], tokenizer, config, with_response=True, video_tokens=0)
    assert tokenizer.decode(list(rep.target)) == render_answer("happy") == "Emotion: happy"
    assert tokenizer.decode(list(eerg.target)) == render_answer("happy", "That is happy news") + "<|im_end|>"
    assert eerg.target[-1] == tokenizer.eos_token_id and rep.pieces == eerg.pieces and rep.label == 0
    assert label_candidates(tokenizer, config) == [answer_ids(tokenizer, e, None, "en") for e in LABELS]


def test_prompt_is_the_chat_template_of_the_six_part_prompt(tokenizer) -> None:
    sample = Sample(
        "d0",
        Turn("A", "hi there", "sad"),
        Turn("B", "oh no", "sad"),
        [Turn("B", "hello")],
        "a cafe",
        VideoRef("clip.mp4", 1.0, 2.0),
    )
    [with_video] = build_examples(
        [sample], [DEMO], tokenizer, PromptConfig(labels=LABELS), with_response=False, video_tokens=3
    )
    before, after = (tokenizer.decode(list(p)) for p in with_video.pieces)
    assert before.startswith("<|im_start|>system\nYou are an empathetic partner")
    assert "Background: a cafe\n\nDialogue history:\nB: hello\n\nCurrent utterance (A): hi there" in before
    assert (
        "Current utterance: my dog is ill<|im_end|>\n<|im_start|>assistant\nEmotion: sad\nResponse: take care" in before
    )
    assert before.index("take care") < before.index("Background: a cafe")  # R is an example exchange before u
    assert before.endswith("Video of A's scene: ")
    assert after == "\n\nAnswer with the emotion, then the response.<|im_end|>\n<|im_start|>assistant\n"
    assert with_video.video == sample.video
    [no_video] = build_examples(
        [sample], [None], tokenizer, PromptConfig(labels=LABELS, use_video=False), with_response=False, video_tokens=3
    )
    assert len(no_video.pieces) == 1 and no_video.video is None
    assert "Video of" not in tokenizer.decode(list(no_video.pieces[0]))
    assert "take care" not in tokenizer.decode(list(no_video.pieces[0]))


def test_demonstration_comes_from_another_dialogue(tmp_path: Path) -> None:
    same = Turn("A", "I lost my keys again", "sad")
    samples = [
        Sample("mine", same, Turn("B", "my own reply", "sad")),
        Sample("other", same, Turn("B", "the other reply", "sad")),
    ]
    build_index(HashEncoder(), samples, tmp_path / "index")
    retriever = EmotionalRetriever.load(tmp_path / "index", encoder=HashEncoder())
    found = retrieve_demonstrations(retriever, samples)
    assert [doc.page_content if doc else None for doc in found] == ["the other reply", "my own reply"]


def test_history_is_cut_oldest_first_to_fit_max_length(tokenizer) -> None:
    [sample] = text_samples(1)
    sample = Sample(
        sample.dialogue_id, sample.utterance, sample.response, [Turn("A", "first turn words"), Turn("B", "second turn")]
    )
    full = build_examples(
        [sample], [None], tokenizer, PromptConfig(labels=LABELS), with_response=False, video_tokens=0
    )[0].length(0)
    one_less = PromptConfig(labels=LABELS, max_length=full - 1)
    [cut] = build_examples([sample], [None], tokenizer, one_less, with_response=False, video_tokens=0)
    text = tokenizer.decode(list(cut.pieces[0]))
    assert "first turn words" not in text and "B: second turn" in text and cut.length(0) < full
    with pytest.raises(InputError, match=r"sample 1 \(dialogue 'd0'\) needs .* without any history"):
        build_examples(
            [sample], [None], tokenizer, PromptConfig(labels=LABELS, max_length=20), with_response=False, video_tokens=0
        )


def test_history_is_cut_oldest_first_to_fit_max_prompt_tokens(tokenizer) -> None:
    [sample] = text_samples(1)
    sample = Sample(
        sample.dialogue_id, sample.utterance, sample.response, [Turn("A", "first turn words"), Turn("B", "second turn")]
    )
    config = PromptConfig(labels=LABELS)
    [full] = build_examples([sample], [None], tokenizer, config, with_response=True, video_tokens=0)
    prompt_tokens = sum(len(p) for p in full.pieces)
    capped = PromptConfig(labels=LABELS, max_prompt_tokens=prompt_tokens - 1)
    [cut] = build_examples([sample], [None], tokenizer, capped, with_response=True, video_tokens=0)
    text = tokenizer.decode(list(cut.pieces[0]))
    assert "first turn words" not in text and "B: second turn" in text
    assert sum(len(p) for p in cut.pieces) <= prompt_tokens - 1 and cut.target == full.target  # the answer stays
    exact = PromptConfig(labels=LABELS, max_prompt_tokens=prompt_tokens)
    assert build_examples([sample], [None], tokenizer, exact, with_response=True, video_tokens=0) == [full]
    too_long = r"needs \d+ prompt tokens without any history; max_prompt_tokens is 5"
    with pytest.raises(InputError, match=too_long) as info:
        build_examples(
            [sample], [None], tokenizer, PromptConfig(labels=LABELS, max_prompt_tokens=5), with_response=True,
            video_tokens=0,
        )  # fmt: skip
    assert info.value.field == "max_prompt_tokens"


def test_emotion_outside_the_label_set_is_an_input_error(tokenizer) -> None:
    samples = text_samples(2, labels=("happy", "fear"))
    with pytest.raises(InputError, match=r"sample 2 .*emotion 'fear' is not in the label set") as info:
        build_examples(
            samples, [None, None], tokenizer, PromptConfig(labels=LABELS), with_response=False, video_tokens=0
        )
    assert info.value.field == "response.emotion"


def test_emotion_metrics_by_hand() -> None:
    gold = [0, 0, 1, 1, 2, 2]
    predicted = [0, 1, 1, 1, 0, 2]
    accuracy, macro_f1 = emotion_metrics(gold, predicted)
    # label 0: TP 1, FP 1, FN 1 -> 0.5; label 1: TP 2, FP 1, FN 0 -> 0.8; label 2: TP 1, FP 0, FN 1 -> 2/3
    assert accuracy == pytest.approx(4 / 6)
    assert macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert emotion_metrics([1, 1], [1, 1]) == (1.0, 1.0)


def test_emotion_metrics_count_a_predicted_label_absent_from_gold() -> None:
    # label 0: TP 1, FN 1 -> 2/3; label 1: TP 1 -> 1; label 2 is only predicted: TP 0, FP 1 -> 0, and it counts
    accuracy, macro_f1 = emotion_metrics([0, 0, 1], [0, 2, 1])
    assert accuracy == pytest.approx(2 / 3)
    assert macro_f1 == pytest.approx((2 / 3 + 1 + 0) / 3)
    # a label never gold nor predicted is left out: the same numbers whatever the label ids are
    assert emotion_metrics([5, 5, 7], [5, 9, 7]) == pytest.approx((2 / 3, (2 / 3 + 1 + 0) / 3))
    assert emotion_metrics([0], [1]) == (0.0, 0.0)


def test_scored_examples_hold_each_labels_log_likelihood_and_the_answers_own_loss(tokenizer) -> None:
    import torch
    from llm_fakes import tiny_llm

    from elmd_sdk.trainers.emotion_eval import ScoredExample, score_examples
    from elmd_sdk.trainers.stage_model import StageModel

    model, _ = tiny_llm()
    config = PromptConfig(labels=LABELS)
    examples = build_examples(text_samples(3), [None] * 3, tokenizer, config, with_response=True, video_tokens=0)
    candidates = label_candidates(tokenizer, config)
    scored = score_examples(StageModel(model, None), examples, [2, 0], candidates, lambda _: None)

    def log_likelihood(prompt: tuple[int, ...], answer: list[int] | tuple[int, ...]) -> float:
        """Sum of the answer's token log-probabilities after the prompt, one pass without a cache."""
        with torch.no_grad():
            log_probs = model(torch.tensor([[*prompt, *answer]])).logits[0].log_softmax(-1)
        return float(sum(log_probs[len(prompt) - 1 + t, token] for t, token in enumerate(answer)))

    assert [s.index for s in scored] == [2, 0]
    for result in scored:
        example = examples[result.index]
        [prompt] = example.pieces
        expected = [log_likelihood(prompt, candidate) for candidate in candidates]
        assert result.scores == pytest.approx(expected, abs=1e-4)
        assert result.nll == pytest.approx(-log_likelihood(prompt, example.target), abs=1e-4) and result.nll > 0
        assert (result.gold, result.tokens) == (example.label, len(example.target))
    assert ScoredExample(0, (-3.0, -1.0, -2.0), 0, 1.0, 1).predicted == 1  # the most likely line
    assert ScoredExample(0, (-1.0, -1.0, -2.0), 0, 1.0, 1).predicted == 0  # a tie goes to the first label


@pytest.mark.parametrize("grouped", [False, True])
def test_epoch_order_wraps_to_whole_batches_and_depends_on_seed_and_epoch(grouped: bool) -> None:
    lengths = [3, 9, 4, 8, 5]
    order = epoch_order(lengths, 4, seed=0, epoch=0, group_by_length=grouped)
    assert len(order) == 8 and sorted(order[:5].tolist()) == [0, 1, 2, 3, 4]
    assert order[5:].tolist() == order[:3].tolist()
    same = epoch_order(lengths, 4, 0, 0, grouped).tolist()
    assert order.tolist() == same != epoch_order(lengths, 4, 1, 0, grouped).tolist()


def test_length_grouped_batches_pad_less_than_random_ones() -> None:
    lengths = [int(x) for x in np.random.default_rng(0).integers(10, 400, size=800)]

    def padding(order: np.ndarray) -> int:  # padded positions summed over the batches of 16
        batches = order.reshape(-1, 16)
        return sum(16 * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    grouped = epoch_order(lengths, 16, 0, 0, group_by_length=True)
    shuffled = epoch_order(lengths, 16, 0, 0, group_by_length=False)
    assert sorted(grouped.tolist()) == sorted(shuffled.tolist()) == list(range(800))
    assert padding(grouped) < padding(shuffled) / 5  # mega-batches of 12 batches here: about 9x less
    first = grouped[:16].tolist()
    assert max(lengths[i] for i in first) == max(lengths)  # the longest batch comes first (memory errors early)


def test_linear_schedule_decays_to_zero() -> None:
    assert [lr_factor(s, 4, "linear") for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_factor(3, 4, "constant") == 1.0


def test_samples_hash_equals_the_bundle_hash_of_the_jsonl_file(tmp_path: Path) -> None:
    samples = text_samples(3)
    write_jsonl(tmp_path / "train.jsonl", samples)
    assert samples_sha256(samples) == data_sha256([tmp_path / "train.jsonl"])
