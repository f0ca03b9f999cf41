"""The rules that keep a conversation together (issue #21): the soft limit that ends a reply at a sentence, no
parenthesised asides, the demonstration cut-off, the history amount, the fused response emotion, and the bundle's
``chain`` block that carries them to chat, serve, eval and the Python chain."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from chain_fakes import FixedRetriever
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage
from llm_fakes import bigram_llama, logits_row, tiny_tokenizer
from tolerances import SAME_MATH

from elmd_sdk.chains.fusion import EmotionFusion, fit_fusion
from elmd_sdk.chains.reply import Retrieved
from elmd_sdk.chains.settings import check_chain_settings
from elmd_sdk.data import EMOTIONS
from elmd_sdk.errors import InputError
from elmd_sdk.models.call import ReplyEnd, last_sentence_end
from elmd_sdk.models.chat_model import ELMDChatModel
from elmd_sdk.models.closed_set import emotion_choice, emotion_probabilities


def test_sentence_ends_are_punctuation_before_a_space_or_the_end() -> None:
    assert last_sentence_end("It costs 3.5 dollars") == 0  # a decimal point ends nothing
    assert last_sentence_end('Really?" she said. Then') == 18
    assert last_sentence_end("好的。你呢") == 3 and last_sentence_end("Wait...") == 7


def test_past_the_soft_limit_the_reply_ends_at_the_first_sentence_end_and_holds_back_the_rest() -> None:
    end = ReplyEnd([], soft=3, hold_whitespace=False)
    assert end.step("Hello", 1) == ("Hello", 5, False)
    assert end.step("Hello there", 3) == ("Hello there", 5, False)  # past the soft limit: " there" is held back
    assert end.step("Hello there. And", 4) == ("Hello there.", 12, True)
    stops = ReplyEnd(["\nUser:"], soft=None, hold_whitespace=False)
    assert stops.step("Fine.\nUs", 2) == ("Fine.\nUs", 5, False)  # the start of a stop string is held back
    assert stops.step("Fine.\nUser: hi", 3) == ("Fine.", 5, True)


def test_at_the_hard_limit_a_reply_ends_at_its_last_complete_sentence() -> None:
    end = ReplyEnd([], soft=2, hold_whitespace=False)
    end.step("One. Two", 1)  # below the soft limit: all of it may go out
    assert end.step("One. Two three", 2) == ("One. Two three", 8, False)
    assert end.final("One. Two three", at_limit=True) == "One. Two"  # what was sent is never taken back
    held = ReplyEnd([], soft=1, hold_whitespace=False)
    held.step("Yes", 1)
    assert held.step("Yes. But no", 2) == ("Yes.", 4, True)
    late = ReplyEnd([], soft=8, hold_whitespace=False)
    for n, text in enumerate(["h", "hi", "hi.", "hi. ", "hi. h", "hi. hi", "hi. hi.", "hi. hi. ", "hi. hi. h"], 1):
        late.step(text, n)
    assert late.final("hi. hi. h", at_limit=True) == "hi. hi."
    assert late.final("hi. hi. h", at_limit=False) == "hi. hi. h"  # the model ended it: its choice
    assert ReplyEnd([], soft=1, hold_whitespace=False).final("no end at all", at_limit=True) == "no end at all"


def _id(tokenizer: Any, text: str) -> int:
    [token] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(token)


@pytest.fixture(scope="module")
def looping_chat() -> ELMDChatModel:
    """Greedy "hi. hi. hi. ..." for ever (never EOS): every reply reaches the limit unless a rule ends it."""
    tokenizer = tiny_tokenizer()
    h, i, dot, space = (_id(tokenizer, t) for t in ("h", "i", ".", " "))
    vocab = len(tokenizer)
    turns = [{"role": "user", "content": "x"}]
    prompt_end = list(tokenizer.apply_chat_template(turns, add_generation_prompt=True)["input_ids"])[-1]
    table = {prompt_end: logits_row(vocab, {h: 0.0}), h: logits_row(vocab, {i: 0.0}),
             i: logits_row(vocab, {dot: 0.0}), dot: logits_row(vocab, {space: 0.0}),
             space: logits_row(vocab, {h: 0.0})}  # fmt: skip
    model = bigram_llama(tokenizer, table)
    return ELMDChatModel(hf_model=model, tokenizer=tokenizer, do_sample=False, max_new_tokens=10)


@pytest.mark.parametrize(
    ("soft", "text", "reason"),
    [(None, "hi. hi. hi", "length"), (5, "hi. hi.", "stop"), (8, "hi. hi.", "length"), (10, "hi. hi. h", "length")],
    # 10: no soft limit before the hard one, so "hi. hi. h" went out before the last token and stays
)
def test_the_soft_limit_in_invoke_and_stream(
    looping_chat: ELMDChatModel, soft: int | None, text: str, reason: str
) -> None:
    messages = [HumanMessage("x")]
    message = looping_chat.invoke(messages, soft_max_new_tokens=soft)
    assert (message.text, message.response_metadata["finish_reason"]) == (text, reason)
    chunks = list(looping_chat.stream(messages, soft_max_new_tokens=soft))
    assert "".join(str(chunk.text) for chunk in chunks) == text
    assert chunks[-1].response_metadata["finish_reason"] == reason


@pytest.fixture(scope="module")
def run_on_chat() -> ELMDChatModel:
    """Greedy "hi, hi, hi, ..." for ever: after "i" a comma at 0, a full stop at -2 (never chosen unless pushed)."""
    tokenizer = tiny_tokenizer()
    h, i, comma, dot, space = (_id(tokenizer, t) for t in ("h", "i", ",", ".", " "))
    vocab = len(tokenizer)
    turns = [{"role": "user", "content": "x"}]
    prompt_end = list(tokenizer.apply_chat_template(turns, add_generation_prompt=True)["input_ids"])[-1]
    table = {prompt_end: logits_row(vocab, {h: 0.0}), h: logits_row(vocab, {i: 0.0}),
             i: logits_row(vocab, {comma: 0.0, dot: -2.0}), comma: logits_row(vocab, {space: 0.0}),
             dot: logits_row(vocab, {space: 0.0}), space: logits_row(vocab, {h: 0.0})}  # fmt: skip
    model = bigram_llama(tokenizer, table)
    return ELMDChatModel(hf_model=model, tokenizer=tokenizer, do_sample=False, max_new_tokens=20)


@pytest.mark.parametrize(
    ("push", "text", "reason"),
    # 3: k tokens past the soft limit (4) the full stop's -2 becomes -2 + k log 3, above the comma's 0 from k = 2 (the
    # 7th token); "!" at -1e4 stays below; 1.5: from k = 5 (the 10th token, after "i" again at the 11th);
    # 1.0 (off): the run-on reaches the hard limit with no sentence end to cut at
    [(3.0, "hi, hi.", "stop"), (1.5, "hi, hi, hi.", "stop"), (1.0, "hi, hi, hi, hi, hi, ", "length")],
)
def test_past_the_soft_limit_the_push_brings_a_run_on_reply_to_a_sentence_end(
    run_on_chat: ELMDChatModel, push: float, text: str, reason: str
) -> None:
    options = {"soft_max_new_tokens": 4, "sentence_end_push": push}
    message = run_on_chat.invoke([HumanMessage("x")], **options)
    assert (message.text, message.response_metadata["finish_reason"]) == (text, reason)
    chunks = list(run_on_chat.stream([HumanMessage("x")], **options))
    assert "".join(str(chunk.text) for chunk in chunks) == text


def test_the_push_needs_a_soft_limit_and_acts_on_sentence_end_tokens_alone(run_on_chat: ELMDChatModel) -> None:
    vocabulary = run_on_chat._vocabulary()
    tokenizer = run_on_chat.tokenizer
    assert _id(tokenizer, ".") in vocabulary.sentence_end_ids and _id(tokenizer, "!") in vocabulary.sentence_end_ids
    assert (
        _id(tokenizer, ",") not in vocabulary.sentence_end_ids
        and _id(tokenizer, "h") not in vocabulary.sentence_end_ids
    )
    assert (
        run_on_chat.invoke([HumanMessage("x")], sentence_end_push=3.0).text == "hi, hi, hi, hi, hi, "
    )  # no soft limit
    with pytest.raises(InputError, match="sentence_end_push"):
        run_on_chat.invoke([HumanMessage("x")], sentence_end_push=0.5)


def test_no_parentheses_bans_every_token_that_opens_one(chat: ELMDChatModel) -> None:
    settings = chat._settings(None, {"no_parentheses": True})
    vocabulary = chat._vocabulary()
    banned = vocabulary.parenthesis_ids
    assert banned and all("(" in vocabulary.decode([i]) or "（" in vocabulary.decode([i]) for i in banned)
    assert _id(chat.tokenizer, "(") in banned and _id(chat.tokenizer, "a") not in banned
    processors = settings.processors(vocabulary, None)
    scores = processors(torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, len(chat.tokenizer)))
    assert torch.isinf(scores[0, banned]).all() and scores[0, _id(chat.tokenizer, "a")] == 0
    assert chat._settings(None, {}).processors(vocabulary, None) == []


def _document(score: float, utterance_emotion: str, response_emotion: str) -> Document:
    metadata = {"score": score, "utterance_emotion": utterance_emotion, "response_emotion": response_emotion}
    return Document(page_content=f"r' {score}", metadata=metadata)


def test_a_demonstration_below_the_cut_off_is_left_out_but_still_votes() -> None:
    documents = [_document(0.3, "sad", "neutral"), _document(0.1, "happy", "happy")]
    kept = Retrieved.of(documents, EMOTIONS, min_score=0.3)
    dropped = Retrieved.of(documents, EMOTIONS, min_score=0.31)
    assert kept.demonstration is documents[0] and dropped.demonstration is None
    assert dropped.utterance_emotion_scores == pytest.approx(
        {**dict.fromkeys(EMOTIONS, 0.0), "sad": 0.75, "happy": 0.25}
    )
    assert dropped.response_emotion_scores == pytest.approx(
        {**dict.fromkeys(EMOTIONS, 0.0), "neutral": 0.75, "happy": 0.25}
    )


def test_with_a_topic_cut_off_the_demonstration_is_the_pair_closest_in_topic() -> None:
    documents = [_document(0.9, "sad", "sad"), _document(0.8, "happy", "happy"), _document(0.7, "anger", "anger")]
    chosen = Retrieved.of(documents, EMOTIONS, topics=[0.1, 0.6, 0.6], min_topic=0.5)
    assert chosen.demonstration is not None
    assert chosen.demonstration.page_content == "r' 0.8"  # a tie keeps the retriever's order
    assert chosen.demonstration.metadata["topic_similarity"] == 0.6
    assert Retrieved.of(documents, EMOTIONS, topics=[0.1, 0.6, 0.6], min_topic=0.61).demonstration is None
    below_score = Retrieved.of(documents, EMOTIONS, min_score=0.75, topics=[0.1, 0.2, 0.9], min_topic=0.5)
    assert below_score.demonstration is None  # the pair close in topic is too far by score
    assert chosen.utterance_emotion_scores == Retrieved.of(documents, EMOTIONS).utterance_emotion_scores


def test_a_topic_cut_off_needs_a_retriever_that_measures_topics(chain: Any) -> None:
    with pytest.raises(ValueError, match="'demonstration_min_topic': needs a retriever with topic_similarities"):
        type(chain)(chat_model=chain.chat_model, retriever=FixedRetriever(), demonstration_min_topic=0.3)
    with pytest.raises(InputError) as error:
        check_chain_settings({"demonstration_min_topic": 1.5})
    assert error.value.field == "chain.demonstration_min_topic"


def test_the_chain_takes_the_demonstration_on_the_users_topic(chain: Any, tmp_path: Path) -> None:
    from retriever_fakes import HashEncoder, tiny_corpus

    from elmd_sdk.retrievers import EmotionalRetriever, build_index

    encoder = HashEncoder(dim=512)
    build_index(encoder, tiny_corpus(), tmp_path / "index")
    retriever = EmotionalRetriever.load(tmp_path / "index", encoder=encoder)
    on_topic = type(chain)(chat_model=chain.chat_model, retriever=retriever, demonstration_min_topic=0.99)
    found = on_topic.invoke({"utterance": "neutral words d2 t1"}).demonstration
    assert found is not None and found.metadata["utterance"] == "neutral words d2 t1"
    assert found.metadata["topic_similarity"] == pytest.approx(1.0)
    assert on_topic.invoke({"utterance": "nothing in common here"}).demonstration is None
    awaited = asyncio.run(on_topic.ainvoke({"utterance": "neutral words d2 t1"})).demonstration
    assert awaited is not None and awaited.metadata == found.metadata


def test_sample_emotion_off_keeps_the_most_probable_emotion_while_the_words_are_sampled(chain: Any) -> None:
    utterance = {"utterance": "I got the job!"}
    scores = chain.invoke(utterance).emotion_scores
    best = max(scores, key=scores.__getitem__)
    drawn = [chain.invoke(utterance, do_sample=True, seed=seed) for seed in range(8)]
    assert len({result.emotion for result in drawn}) > 1
    kept = [chain.invoke(utterance, do_sample=True, sample_emotion=False, seed=seed) for seed in range(8)]
    assert {result.emotion for result in kept} == {best}
    assert all(result.emotion_scores == pytest.approx(scores) for result in kept)
    assert len({result.response for result in kept}) > 1  # the words are still sampled


def test_the_prompt_holds_at_most_max_history_turns(chain: Any) -> None:
    history = ["one", "two", "three", "four", "five"]
    limited = chain.model_copy(update={"max_history_turns": 2})
    text = "\n".join(str(m.content) for m in limited.build_messages({"utterance": "hi", "history": history}))
    assert "four" in text and "five" in text and "three" not in text
    text = "\n".join(str(m.content) for m in chain.build_messages({"utterance": "hi", "history": history}))
    assert all(turn in text for turn in history)


def test_fused_probabilities_are_the_weighted_log_linear_combination() -> None:
    labels = ("happy", "sad", "neutral")
    fusion = EmotionFusion(llm=2.0, utterance=0.5, response=1.0, bias={"neutral": 0.25})
    utterance, response = {"happy": 0.5, "sad": 0.5, "neutral": 0.0}, None
    evidence = fusion.evidence(labels, utterance, response)
    third = -math.log(3)
    assert evidence == pytest.approx((0.5 * math.log(0.5) + third, 0.5 * math.log(0.5) + third,
                                      0.5 * math.log(1e-3) + third + 0.25))  # fmt: skip
    choice = emotion_choice(labels)
    scores = torch.tensor([-1.0, -2.0, -3.0])
    fused = emotion_probabilities(type(choice)(**{**choice.__dict__, "evidence": evidence, "llm_weight": 2.0}), scores)
    llm = torch.log_softmax(scores, dim=-1)
    expected = torch.softmax(2.0 * llm + torch.tensor(evidence), dim=-1)
    assert list(fused.values()) == pytest.approx(expected.tolist(), abs=SAME_MATH)
    assert list(emotion_probabilities(choice, scores).values()) == pytest.approx(llm.exp().tolist(), abs=SAME_MATH)


def test_fitting_recovers_the_weights_that_made_the_labels() -> None:
    labels = ("happy", "sad", "neutral")
    generator = torch.Generator().manual_seed(0)
    n = 3000
    llm = torch.log_softmax(torch.randn(n, 3, generator=generator) * 2, dim=-1)
    votes = torch.softmax(torch.randn(n, 3, generator=generator) * 2, dim=-1)
    utterance = [dict(zip(labels, row.tolist(), strict=True)) for row in votes]
    truth = EmotionFusion(llm=1.5, utterance=0.8, response=0.0, bias={"happy": 0.0, "sad": -0.5, "neutral": 0.5})
    evidence = torch.tensor([truth.evidence(labels, u, None) for u in utterance])
    gold = torch.multinomial(torch.softmax(1.5 * llm + evidence, dim=-1), 1, generator=generator).squeeze(1)
    fitted = fit_fusion(llm, utterance, [None] * n, gold.tolist(), labels, bias_l2=0.0)
    assert fitted.llm == pytest.approx(1.5, abs=0.15) and fitted.utterance == pytest.approx(0.8, abs=0.15)
    bias = fitted.bias
    assert bias["neutral"] - bias["sad"] == pytest.approx(1.0, abs=0.25)
    with pytest.raises(ValueError, match="one row of LLM scores"):
        fit_fusion(llm[:2], utterance[:3], [None] * 3, [0, 1, 2], labels)


def test_a_fused_chain_reports_the_fused_probabilities(chain: Any) -> None:
    fusion = EmotionFusion(llm=1.0, utterance=0.0, response=2.0, bias={})
    fused = chain.model_copy(update={"emotion_source": "fused", "emotion_fusion": fusion})
    plain_scores = chain.invoke({"utterance": "I got the job!"}).emotion_scores
    fused_scores = fused.invoke({"utterance": "I got the job!"}).emotion_scores
    # FixedRetriever's one pair answered with happy: the response vote is all happy (the floor elsewhere)
    evidence = torch.tensor([0.0 if label == "happy" else 2.0 * math.log(1e-3) for label in EMOTIONS])
    plain = torch.tensor([plain_scores[label] for label in EMOTIONS])
    expected = torch.softmax(torch.log(plain) + evidence, dim=-1)
    assert [fused_scores[label] for label in EMOTIONS] == pytest.approx(expected.tolist(), abs=1e-4)
    with pytest.raises(ValueError, match="needs emotion_fusion"):
        type(chain)(chat_model=chain.chat_model, retriever=FixedRetriever(), emotion_source="fused")


def test_the_bundle_chain_block_is_checked_naming_the_file_and_the_setting(tmp_path: Path) -> None:
    assert check_chain_settings({"demonstration_min_score": 0.2, "max_history_turns": 6}) == {
        "demonstration_min_score": 0.2,
        "max_history_turns": 6,
    }
    with pytest.raises(InputError, match="greater than or equal to 0") as error:
        check_chain_settings({"max_history_turns": -1}, file=tmp_path / "bundle.json")
    assert error.value.field == "chain.max_history_turns"
    with pytest.raises(InputError) as error:
        check_chain_settings({"history": 3})
    assert error.value.field == "chain.history"
    block = {"emotion_source": "fused", "emotion_fusion": {"llm": 1.0, "utterance": 0.5, "response": 0.5}}
    assert json.loads(json.dumps(check_chain_settings(block))) == block


def test_the_decision_rule_divides_by_the_label_share_to_the_power_alpha() -> None:
    from elmd_sdk.chains.fusion import decision_for
    from elmd_sdk.models.closed_set import pick_emotion

    choice = emotion_choice(("a", "b"))
    biased = replace(choice, choice_bias=(0.0, math.log(2.0)))
    assert pick_emotion(choice, {"a": 0.6, "b": 0.4}, False, None) == "a"
    assert pick_emotion(biased, {"a": 0.6, "b": 0.4}, False, None) == "b"  # 0.4 x 2 > 0.6
    labels = ("a", "b")
    # "a" is always the more probable label, but "b" samples have it less so: only dividing by the share finds them
    probabilities = torch.tensor([[0.9, 0.1]] * 6 + [[0.6, 0.4]] * 2)
    gold = [0] * 6 + [1] * 2
    decision = decision_for(probabilities, gold, labels)
    alpha, weights = decision.alpha, decision.log_weights
    share = {"a": 7 / 10, "b": 3 / 10}  # add-one smoothed
    assert 0 < alpha <= 1 and decision.min_ratio == 0.0
    assert weights == pytest.approx({label: -alpha * math.log(share[label]) for label in labels})
    chosen = (probabilities.log() + torch.tensor([weights["a"], weights["b"]])).argmax(dim=-1).tolist()
    assert chosen == gold
    same = decision_for(torch.tensor([[0.9, 0.1], [0.1, 0.9]]), [0, 1], labels)
    assert (same.alpha, same.min_ratio) == (0.0, 0.0)  # already right: no change


def test_the_decision_rule_chooses_only_labels_near_the_top_probability() -> None:
    from elmd_sdk.chains.fusion import decision_for
    from elmd_sdk.models.closed_set import pick_emotion

    choice = replace(emotion_choice(("a", "b", "c")), choice_bias=(0.0, math.log(40.0), math.log(4.0)))
    probabilities = {"a": 0.6, "b": 0.05, "c": 0.35}
    assert pick_emotion(choice, probabilities, False, None) == "b"  # 0.05 x 40 > 0.35 x 4 > 0.6
    assert pick_emotion(replace(choice, choice_min_ratio=0.25), probabilities, False, None) == "c"  # b < 0.15
    with pytest.raises(ValueError, match="choice_min_ratio"):
        replace(choice, choice_min_ratio=1.0)
    # "b" is rare: dividing by the label shares (a 100x, c 3x as frequent) needs alpha > 0.63 to choose it over c
    # where it is gold, but then also chooses it over a at a ninth of a's probability; only a least ratio to the top
    # probability gets both right
    rows = [[0.9, 0.1, 0.0001]] * 299 + [[0.1, 0.3, 0.6]] * 2 + [[0.1, 0.1, 0.8]] * 8
    decision = decision_for(torch.tensor(rows), [0] * 299 + [1] * 2 + [2] * 8, ("a", "b", "c"))
    assert decision.min_ratio == 0.25 and decision.alpha > 0.63
