"""Replies a chatbot can ship: closed-set emotion scoring, emotion control, where a reply ends, the copy guard,
the utterance emotion, retriever thresholds, the structured-output and tool faces, and the reply metrics."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from chain_fakes import FixedRetriever
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage
from pydantic import BaseModel
from retriever_fakes import HashEncoder, tiny_corpus
from transformers import LogitsProcessorList

from elmd_sdk.answer.reading import StreamingAnswerParser
from elmd_sdk.answer.wording import render_answer
from elmd_sdk.chains import ELMDChain, ELMDResult
from elmd_sdk.data import EMOTIONS
from elmd_sdk.errors import ElmdError, InputError
from elmd_sdk.metrics.emotion import confusion_matrix, emotion_baselines, emotion_scores
from elmd_sdk.metrics.reply import copy_rate, distinct_n, is_copy, lcs_length, leaks_template, template_leak_rate
from elmd_sdk.models.chat_model import ELMDChatModel
from elmd_sdk.models.closed_set import EmotionChoice, batch_log_prior, copy_guard
from elmd_sdk.models.decoding import Chooser, Sampling, decode_steps, prefill, score_continuations
from elmd_sdk.retrievers import EmotionalRetriever, build_index
from elmd_sdk.retrievers.retriever import emotion_vote


def _added(chunks: list[ELMDResult]) -> ELMDResult:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


INPUT = {"utterance": "I finally got the job!", "history": ["Hi there.", "Hello! How did the interview go?"]}


# -- label scoring -------------------------------------------------------------------------------------------------


def test_label_scores_equal_an_independent_sum_of_token_log_probabilities(chat: ELMDChatModel) -> None:
    model, tokenizer = chat.hf_model, chat.tokenizer
    prompt = tokenizer("Emotion: happy\nResponse: That is wonderful news", add_special_tokens=False)["input_ids"]
    candidates = [tokenizer(render_answer(e), add_special_tokens=False)["input_ids"] for e in ("happy", "sad")]
    candidates.append(candidates[0][:1])  # one-token candidate: only the prompt's last logits count
    ids = torch.tensor([prompt])
    scores = score_continuations(model, prefill(model, torch.ones_like(ids), input_ids=ids), candidates)
    for candidate, got in zip(candidates, scores, strict=True):
        full = torch.tensor([prompt + candidate])
        with torch.no_grad():
            log_probs = model(full).logits[0].log_softmax(-1)  # (T, vocab), no cache, no padding
        expected = sum(log_probs[len(prompt) - 1 + t, token] for t, token in enumerate(candidate))
        assert float(got) == pytest.approx(float(expected), abs=1e-4)


def test_greedy_emotion_is_the_argmax_of_probabilities_that_sum_to_one(chain: ELMDChain) -> None:
    result = chain.invoke(INPUT)
    scores = result.emotion_scores
    assert scores is not None and set(scores) == set(EMOTIONS)
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert result.emotion == max(scores, key=scores.__getitem__)
    assert result.response  # never an empty reply


def _line_log_likelihoods(chain: ELMDChain, chat: ELMDChatModel, utterance: str | dict) -> torch.Tensor:
    """Independent of the chain's choice: the (L,) log-likelihoods of the answer lines after its prompt."""
    messages, _ = chain.prepare(utterance)
    prompt = chat._prepare(messages)
    context = prefill(chat.hf_model, prompt.attention_mask, input_ids=prompt.input_ids)
    lines = [chat.get_token_ids(render_answer(label)) for label in EMOTIONS]
    return score_continuations(chat.hf_model, context, lines)


def test_scores_are_the_softmax_of_the_answer_line_likelihoods(chat: ELMDChatModel) -> None:
    chain = ELMDChain(chat_model=chat, retriever=FixedRetriever(), emotion_calibration=False)
    expected = torch.softmax(_line_log_likelihoods(chain, chat, INPUT), dim=-1)
    got = chain.invoke(INPUT).emotion_scores
    assert got is not None
    assert [got[label] for label in EMOTIONS] == pytest.approx(expected.tolist(), abs=1e-5)


def test_calibration_divides_by_the_content_free_prior(chat: ELMDChatModel) -> None:
    chain = ELMDChain(chat_model=chat, retriever=FixedRetriever(), use_retrieval=False)
    free = [_line_log_likelihoods(chain, chat, text).log_softmax(-1) for text in ("N/A", "[MASK]")]
    log_prior = (free[0] + free[1]) / 2  # mean log-probability of each label for content-free input
    expected = torch.softmax(_line_log_likelihoods(chain, chat, INPUT) - log_prior, dim=-1)
    got = chain.invoke(INPUT).emotion_scores
    assert got is not None
    assert [got[label] for label in EMOTIONS] == pytest.approx(expected.tolist(), abs=1e-5)
    uncalibrated = chain.model_copy(update={"emotion_calibration": False}).invoke(INPUT).emotion_scores
    assert uncalibrated != pytest.approx(got, abs=1e-3)


def test_batch_log_prior_is_the_log_of_the_mean_label_probability() -> None:
    three = math.log(3)
    # p per prompt: (1/4, 3/4), (3/4, 1/4), (1/2, 1/2); mean (1/2, 1/2)
    prior = batch_log_prior(torch.tensor([[0.0, three], [three, 0.0], [5.0, 5.0]]))
    assert prior == pytest.approx((math.log(0.5), math.log(0.5)))
    assert batch_log_prior(torch.tensor([[0.0, three]])) == pytest.approx((math.log(0.25), math.log(0.75)))
    with pytest.raises(ValueError, match="shape"):
        batch_log_prior(torch.zeros(0, 2))
    certain = batch_log_prior(torch.tensor([[0.0, -2000.0]]))  # p(second) underflows to 0
    assert certain[0] == 0.0 and math.isfinite(certain[1]) and certain[1] < -600


def test_a_fitted_prior_is_the_batch_prior_of_those_prompts_and_replaces_the_content_free_one(
    chat: ELMDChatModel,
) -> None:
    chain = ELMDChain(chat_model=chat, retriever=FixedRetriever())
    inputs = [INPUT, "I lost my keys again.", {"utterance": "Who ate my sandwich?", "history": ["Hi."]}]
    rows = torch.stack([_line_log_likelihoods(chain, chat, item) for item in inputs])  # (3, L)
    prior = chain.fit_emotion_prior(inputs)
    assert prior == pytest.approx(torch.softmax(rows, dim=-1).mean(dim=0).log().tolist(), abs=1e-5)
    fitted = chain.model_copy(update={"emotion_log_prior": prior})
    expected = torch.softmax(_line_log_likelihoods(chain, chat, INPUT) - torch.tensor(prior), dim=-1)
    got = fitted.invoke(INPUT).emotion_scores
    assert got is not None
    assert [got[label] for label in EMOTIONS] == pytest.approx(expected.tolist(), abs=1e-5)
    with pytest.raises(InputError, match="no inputs"):
        chain.fit_emotion_prior([])
    with pytest.raises(ValueError, match="one value per label"):  # pydantic's ValidationError
        ELMDChain(chat_model=chat, emotion_log_prior=(-1.0, -1.0))


def test_sampling_draws_the_emotion_from_its_distribution(chat: ELMDChatModel) -> None:
    chain = ELMDChain(chat_model=chat.model_copy(update={"do_sample": True}), retriever=FixedRetriever())
    drawn = {chain.invoke(INPUT, seed=seed).emotion for seed in range(12)}
    probs = chain.invoke(INPUT, seed=0).emotion_scores or {}
    assert len(drawn) > 1 or max(probs.values()) > 0.9  # seeded draws vary unless one label dominates
    assert drawn <= {label for label, p in probs.items() if p > 0}


def test_forced_and_allowed_emotions(chain: ELMDChain) -> None:
    forced = chain.invoke({**INPUT, "emotion": "fear"})
    assert forced.emotion == "fear" and forced.emotion_scores is not None
    allowed = chain.invoke({**INPUT, "allowed_emotions": ["sad", "neutral"]})
    assert allowed.emotion_scores is not None
    assert {k for k, p in allowed.emotion_scores.items() if p > 0} == {"sad", "neutral"}
    assert sum(allowed.emotion_scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert allowed.emotion == max(allowed.emotion_scores, key=allowed.emotion_scores.__getitem__)  # greedy
    desk = ELMDChain(chat_model=chain.chat_model, allowed_emotions=("happy", "neutral"))  # a chain-wide restriction
    restricted = desk.invoke(INPUT)
    assert restricted.emotion_scores is not None
    assert {k for k, p in restricted.emotion_scores.items() if p > 0} == {"happy", "neutral"}
    assert restricted.emotion == max(restricted.emotion_scores, key=restricted.emotion_scores.__getitem__)
    with pytest.raises(InputError, match="allowed labels: happy, surprise, sad") as error:
        chain.invoke({**INPUT, "emotion": "joy"})
    assert error.value.field == "emotion"
    with pytest.raises(InputError, match="unknown label 'rage'") as error:
        chain.invoke({**INPUT, "allowed_emotions": ["sad", "rage"]})
    assert error.value.field == "allowed_emotions"
    with pytest.raises(InputError, match="not among allowed_emotions"):
        chain.invoke({**INPUT, "emotion": "fear", "allowed_emotions": ["sad"]})
    with pytest.raises(InputError, match="non-empty list"):
        chain.invoke({**INPUT, "allowed_emotions": "sad"})


def test_free_mode_keeps_the_parser_and_reports_no_scores(chat: ELMDChatModel) -> None:
    result = ELMDChain(chat_model=chat, emotion_mode="free").invoke(INPUT)
    assert result.emotion_scores is None


def test_free_mode_reads_the_emotion_and_response_with_an_article() -> None:
    parser = StreamingAnswerParser()
    chunks = [*parser.feed("The emotion: Sad\nThe response: I'm sorry to hear that."), *parser.finish()]
    assert _added(chunks) == ELMDResult("sad", "I'm sorry to hear that.")


def test_closed_mode_needs_a_model_that_can_score_labels() -> None:
    from langchain_core.language_models import FakeListChatModel

    fake = FakeListChatModel(responses=["Emotion: sad\nResponse: Oh no."])
    with pytest.raises(ElmdError, match="emotion_mode='free'"):
        ELMDChain(chat_model=fake).invoke(INPUT)
    reply = ELMDChain(chat_model=fake, emotion_mode="free").invoke(INPUT)
    assert reply == ELMDResult("sad", "Oh no.", finish_reason="stop")  # the fake model reports no usage
    junk = "Emotion: sad\nResponse: Oh no. (No copying)\nJoey: more\nNote: The response is sad."
    free = ELMDChain(chat_model=FakeListChatModel(responses=[junk]), emotion_mode="free")
    assert free.invoke(INPUT) == ELMDResult("sad", "Oh no.", finish_reason="stop")
    assert _added(list(free.stream(INPUT))) == ELMDResult("sad", "Oh no.", finish_reason="stop")


def test_stream_adds_up_to_invoke_and_first_chunk_carries_everything(chain: ELMDChain) -> None:
    chunks = list(chain.stream(INPUT))
    first = chunks[0]
    assert first.emotion is not None and first.emotion_scores is not None and first.response == ""
    assert first.demonstration is not None and first.utterance_emotion == "happy"
    assert _added(chunks) == chain.invoke(INPUT)


# -- where a reply ends --------------------------------------------------------------------------------------------

JUNK = [
    ("That's great news!\nUser: thanks", "That's great news!"),
    ("That's great news! (No copying)", "That's great news!"),
    ("That's great news!\n(Note: the response is happy)", "That's great news!"),
    ("That's great news! Note: The response is short.", "That's great news!"),
    ("That's great news!\nJoey: Hey, what about me?", "That's great news!"),
    ("That's great news!\n\nI'm glad to hear that you're enjoying it.", "That's great news!"),
    ("That's great news!\nEmotion: happy\nResponse: again", "That's great news!"),
    ("(Rachel) That's great news!   ", "That's great news!"),
    ("Rachel: That's great news!\n", "That's great news!"),
    ("That's great news!<|im_end|>junk", "That's great news!"),
    ("Well, I'm not sure.\nMaybe tomorrow?", "Well, I'm not sure.\nMaybe tomorrow?"),
]


@pytest.mark.parametrize(("generated", "reply"), JUNK)
def test_a_reply_ends_before_template_text_and_invented_turns(generated: str, reply: str) -> None:
    whole = StreamingAnswerParser(emotion="happy")
    chunks = [*whole.feed(generated), *whole.finish()]
    assert "".join(c.response for c in chunks) == reply
    rng = random.Random(len(generated))
    for _ in range(20):  # streamed in random pieces: the same reply, never text taken back
        cuts = sorted(rng.sample(range(1, len(generated)), min(4, len(generated) - 1)))
        pieces = [generated[a:b] for a, b in zip([0, *cuts], [*cuts, len(generated)], strict=True)]
        parser = StreamingAnswerParser(emotion="happy")
        streamed = [c for piece in pieces for c in parser.feed(piece)] + parser.finish()
        assert "".join(c.response for c in streamed) == reply


# -- copy guard and decoding rules ---------------------------------------------------------------------------------


def _greedy_ids(chat: ELMDChatModel, text: str, processors: LogitsProcessorList | None = None) -> list[int]:
    prompt = chat._prepare([HumanMessage(text)])
    context = prefill(chat.hf_model, prompt.attention_mask, input_ids=prompt.input_ids)
    sampling = Sampling(do_sample=False, temperature=1.0, top_p=1.0, top_k=0, seed=None)
    chooser = Chooser(sampling, context.logits.device, max_new_tokens=24, eos_ids=[], processors=processors)
    return list(decode_steps(chat.hf_model, context, chooser))


def _ngrams(ids: list[int], n: int) -> set[tuple[int, ...]]:
    return {tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)}


def test_copy_guard_blocks_every_demonstration_ngram(chat: ELMDChatModel) -> None:
    text = "Tell me something nice."
    plain = _greedy_ids(chat, text)
    demonstration = chat.tokenizer.decode(plain)
    banned = set().union(*(_ngrams(chat.get_token_ids(form), 4) for form in (demonstration, " " + demonstration)))
    assert _ngrams(plain, 4) & banned  # unguarded, the reply reproduces the text
    guard = copy_guard(chat.tokenizer, [demonstration])
    guarded = _greedy_ids(chat, text, LogitsProcessorList([guard]))
    assert not _ngrams(guarded, 4) & banned


def test_copy_guard_bans_both_tokenizations_short_texts_whole_and_single_tokens_never(chat: ELMDChatModel) -> None:
    text = "That is wonderful news"
    guard = copy_guard(chat.tokenizer, [text], n=2)
    assert guard is not None
    banned = set(guard.sequence_bias)
    for form in (text, " " + text):  # as the reply's first words and after other words
        ids = chat.get_token_ids(form)
        assert {tuple(ids[i : i + 2]) for i in range(len(ids) - 1)} <= banned
    short = chat.get_token_ids(" Congratulations!")
    assert 1 < len(short) < 8
    assert tuple(short) in set(copy_guard(chat.tokenizer, ["Congratulations!"], n=8).sequence_bias)  # banned whole
    assert copy_guard(chat.tokenizer, ["a"], n=4) is None  # one token: never banned outright


def test_no_repeat_ngram_size_applies_to_the_reply(chat: ELMDChatModel) -> None:
    settings = chat._settings(None, {"no_repeat_ngram_size": 2})
    plain = _greedy_ids(chat, "Hi")
    assert len(_ngrams(plain, 2)) < len(plain) - 1  # the tiny model repeats itself unless told not to
    ids = _greedy_ids(chat, "Hi", settings.processors(chat._vocabulary(), None))
    assert len(_ngrams(ids, 2)) == len(ids) - 1


def test_min_new_tokens_holds_back_the_end_of_sequence(chat: ELMDChatModel) -> None:
    message = chat.invoke([HumanMessage("Hi")], max_new_tokens=6, min_new_tokens=6)
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] == 6


def test_emotion_choice_validates_its_labels() -> None:
    with pytest.raises(ValueError, match="one answer line per label"):
        EmotionChoice(labels=("sad",), lines=(), response_key="\nResponse:")
    with pytest.raises(InputError, match="unknown label 'joy'"):
        EmotionChoice(labels=("sad",), lines=("Emotion: sad",), response_key="\nResponse:", force="joy")


def test_token_counting_uses_the_models_own_tokenizer(chat: ELMDChatModel) -> None:
    text = "That is wonderful news"
    assert chat.get_token_ids(text) == chat.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert chat.get_num_tokens(text) == len(chat.get_token_ids(text))


# -- utterance emotion and retriever scores ------------------------------------------------------------------------


def test_emotion_vote_weights_neighbours_by_similarity() -> None:
    docs = [
        Document("a", metadata={"utterance_emotion": "sad", "score": 0.9}),
        Document("b", metadata={"utterance_emotion": "happy", "score": 0.5}),
        Document("c", metadata={"utterance_emotion": "happy", "score": 0.5}),
        Document("d", metadata={"utterance_emotion": "fear", "score": -0.3}),  # negative similarity: no vote
        Document("e", metadata={"utterance_emotion": "joy", "score": 0.9}),  # not a label: no vote
    ]
    votes = emotion_vote(docs, EMOTIONS)
    assert votes is not None
    assert votes["happy"] == pytest.approx(1.0 / 1.9) and votes["sad"] == pytest.approx(0.9 / 1.9)
    assert votes["fear"] == 0.0 and sum(votes.values()) == pytest.approx(1.0)
    assert emotion_vote([], EMOTIONS) is None


def test_chain_reports_the_utterance_emotion_from_the_index(tmp_path: Path, chat: ELMDChatModel) -> None:
    encoder = HashEncoder(dim=64)
    build_index(encoder, tiny_corpus(), tmp_path / "index")
    retriever = EmotionalRetriever.load(tmp_path / "index", encoder=encoder)
    labels = ("happy", "sad", "anger", "neutral")
    chain = ELMDChain(chat_model=chat, retriever=retriever, labels=labels, emotion_vote_k=3)
    result = chain.invoke("sad words d9 t9")
    expected = emotion_vote(retriever.invoke("sad words d9 t9", k=3), labels)
    assert result.utterance_emotion == "sad" and result.utterance_emotion_scores == expected
    assert result.demonstration is not None and result.demonstration.metadata["utterance"].startswith("sad")
    assert ELMDChain(chat_model=chat, retriever=retriever, use_retrieval=False).invoke("sad").utterance_emotion is None


def test_retriever_score_threshold_and_search_kwargs(tmp_path: Path) -> None:
    encoder = HashEncoder(dim=64)
    build_index(encoder, tiny_corpus(), tmp_path / "index")
    query = "happy words d0 t9"  # similarity 0.75 with "happy words d0 t0", at most 0.5 with the others
    retriever = EmotionalRetriever.load(tmp_path / "index", k=5, encoder=encoder)
    docs = retriever.invoke(query)
    assert len(docs) == 5
    top = docs[0].metadata["score"]
    assert top > docs[1].metadata["score"] + 0.2  # on the relative scale the best match stands out
    assert [d.metadata["similarity"] for d in retriever.invoke(query, score_threshold=top - 0.01)] == [
        pytest.approx(0.75)
    ]
    strict = EmotionalRetriever.load(
        tmp_path / "index", encoder=encoder, search_kwargs={"k": 5, "score_threshold": top}
    )
    assert len(strict.invoke(query)) == 1 and len(strict.invoke(query, score_threshold=-1.0)) == 5
    field = EmotionalRetriever.load(tmp_path / "index", k=5, encoder=encoder, score_threshold=0.99)
    assert field.invoke(query) == []
    with pytest.raises(InputError, match="unknown key") as error:
        EmotionalRetriever.load(tmp_path / "index", encoder=encoder, search_kwargs={"top_k": 3})
    assert error.value.field == "search_kwargs"
    with pytest.warns(UserWarning, match="ignores unknown parameter.*top_k"):
        EmotionalRetriever.load(tmp_path / "index", encoder=encoder, top_k=3)
    with pytest.raises(InputError, match="greater than or equal to 1") as error:
        EmotionalRetriever.load(tmp_path / "index", encoder=encoder, k=0)
    assert error.value.field == "k"
    with pytest.raises(InputError, match="positive integer"):
        retriever.invoke(query, k=True)
    with pytest.raises(InputError, match="must be a string"):
        retriever.invoke(["a", "list"])  # type: ignore[arg-type]


# -- structured output and tools -----------------------------------------------------------------------------------


class Answer(BaseModel):
    emotion: Literal["happy", "sad"]
    response: str


def test_with_structured_output_answers_the_emotion_response_schema(chat: ELMDChatModel) -> None:
    answer = chat.with_structured_output(Answer).invoke([HumanMessage("I finally got the job!")])
    assert isinstance(answer, Answer) and answer.emotion in ("happy", "sad") and answer.response
    schema = {"title": "a", "type": "object", "properties": {"emotion": {"type": "string"}, "response": {}}}
    raw = chat.with_structured_output(schema, include_raw=True).invoke("Hello")
    assert raw["parsed"]["emotion"] in EMOTIONS and raw["parsing_error"] is None
    assert set(raw["raw"].response_metadata["emotion_scores"]) == set(EMOTIONS)


def test_other_schemas_and_tools_are_refused_clearly(chat: ELMDChatModel) -> None:
    class Person(BaseModel):
        name: str

    with pytest.raises(ElmdError, match="only the \\{emotion, response\\} schema"):
        chat.with_structured_output(Person)
    with pytest.raises(NotImplementedError, match="does not call tools"):
        chat.bind_tools([Person])


def test_results_serialise_to_json_ready_data(chain: ELMDChain) -> None:
    data = chain.invoke(INPUT).to_dict()
    assert set(data) == {
        "emotion",
        "response",
        "demonstration",
        "emotion_scores",
        "utterance_emotion",
        "utterance_emotion_scores",
        "usage",
        "finish_reason",
    }
    assert data["demonstration"]["text"] == "Congratulations, you earned it!"


def test_usage_and_finish_reason_match_the_chat_models_call(chain: ELMDChain) -> None:
    messages, options = chain.prepare(INPUT)
    direct = chain.chat_model.invoke(messages, **options)
    result = chain.invoke(INPUT)
    usage = direct.usage_metadata
    assert usage is not None and usage["input_tokens"] > 0
    assert result.usage == {key: usage[key] for key in ("input_tokens", "output_tokens", "total_tokens")}
    chunks = list(chain.stream(INPUT))
    assert sum(c.usage["output_tokens"] for c in chunks if c.usage) == usage["output_tokens"]
    assert [c.finish_reason for c in chunks].count(None) == len(chunks) - 1 and chunks[-1].finish_reason
    short = chain.invoke(INPUT, max_new_tokens=2)
    assert short.usage is not None and short.usage["output_tokens"] <= 2
    assert short.finish_reason == ("length" if short.usage["output_tokens"] == 2 else "stop")
    assert chain.invoke(INPUT, stop=[short.response[:1] or "x"]).response == ""  # a caller's stop string cuts too


# -- reply metrics -------------------------------------------------------------------------------------------------


def test_reply_metrics_by_hand() -> None:
    replies = [["i", "am", "so", "happy"], ["i", "am", "so", "sad"]]
    assert distinct_n(replies, 1) == pytest.approx(100 * 5 / 8)
    assert distinct_n(replies, 2) == pytest.approx(100 * 4 / 6)  # "i am", "am so" twice
    assert lcs_length(["a", "b", "c", "d", "e"], ["a", "x", "c", "e"]) == 3
    demo = ["that", "is", "so", "great"]
    assert is_copy(["oh", "that", "is", "really", "so", "great"], demo)  # LCS 4 of 4
    assert not is_copy(["that", "sounds", "great"], demo)  # LCS 2 of 4 < 60%
    assert copy_rate([["that", "is", "so", "great"], ["no"], ["x"]], [demo, demo, None]) == pytest.approx(50.0)
    assert copy_rate([["x"]], [None]) is None
    assert leaks_template("Sure!\nEmotion: happy") and leaks_template("Great. (No copying)")
    assert leaks_template("Joey: hey") and leaks_template("情感：开心") and leaks_template("Okay <video>")
    assert not leaks_template("That's great news, congratulations!")
    assert template_leak_rate(["fine", "Response: fine", "ok", "ok"]) == pytest.approx(25.0)


def test_emotion_precision_recall_confusion_and_baselines_by_hand() -> None:
    labels = ("happy", "sad", "neutral")
    gold = ["happy", "happy", "sad", "neutral"]
    pred = ["happy", "sad", "sad", None]
    scores = emotion_scores(pred, gold, labels)
    assert scores["emotion_precision"] == {"happy": 100.0, "sad": 50.0, "neutral": None}
    assert scores["emotion_recall"] == {"happy": 50.0, "sad": 100.0, "neutral": 0.0}
    # F1: happy 2/3, sad 2/3, neutral 0 -> weighted by support (2, 1, 1) over 4
    assert scores["emotion_weighted_f1"] == pytest.approx(100 * (2 * 2 / 3 + 2 / 3) / 4)
    assert confusion_matrix(pred, gold, labels)["counts"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
    baselines = emotion_baselines(gold, ["sad", "happy", None, "neutral"], labels)
    assert baselines["majority"]["label"] == "happy" and baselines["majority"]["emotion_accuracy"] == 50.0
    assert baselines["demonstration"]["emotion_accuracy"] == 50.0  # right on the 2nd and 4th samples


# -- which setting wins: the input's, the chain's, the bundle's ----------------------------------------------------


def _offered(result: ELMDResult) -> set[str]:
    """The labels the reply's emotion was chosen among (those with a non-zero probability)."""
    assert result.emotion_scores is not None and result.emotion in result.emotion_scores
    assert result.emotion_scores[result.emotion] > 0
    return {label for label, p in result.emotion_scores.items() if p > 0}


def test_an_inputs_allowed_emotions_narrow_the_chains_and_a_forced_one_must_be_allowed(chain: ELMDChain) -> None:
    desk = ELMDChain(chat_model=chain.chat_model, allowed_emotions=("happy", "neutral", "sad"))
    assert _offered(desk.invoke(INPUT)) == {"happy", "neutral", "sad"}  # the chain's set when the input has none
    assert _offered(desk.invoke({**INPUT, "allowed_emotions": ["sad", "neutral"]})) == {"sad", "neutral"}
    assert _offered(desk.invoke({**INPUT, "allowed_emotions": ["neutral"]})) == {"neutral"}
    assert _offered(desk.invoke({**INPUT, "allowed_emotions": ["anger", "sad"]})) == {"sad"}  # never widened
    with pytest.raises(InputError, match=r"none of \['anger', 'fear'\] is among this chain's") as error:
        desk.invoke({**INPUT, "allowed_emotions": ["anger", "fear"]})
    assert error.value.field == "allowed_emotions"
    assert desk.invoke({**INPUT, "emotion": "sad"}).emotion == "sad"
    with pytest.raises(InputError, match="'fear' is not among allowed_emotions") as error:
        desk.invoke({**INPUT, "emotion": "fear"})  # the chain never answers outside its set
    assert error.value.field == "emotion"
    assert _offered(chain.invoke({**INPUT, "allowed_emotions": ["fear"]})) == {"fear"}  # no chain-wide set
    assert _offered(chain.invoke(INPUT)) == set(EMOTIONS)


def test_a_free_mode_chain_chooses_from_the_closed_set_when_the_input_restricts_or_forces(chat: ELMDChatModel) -> None:
    free = ELMDChain(chat_model=chat, retriever=FixedRetriever(), emotion_mode="free")
    assert free.invoke(INPUT).emotion_scores is None
    assert _offered(free.invoke({**INPUT, "allowed_emotions": ["sad", "anger"]})) == {"sad", "anger"}
    forced = free.invoke({**INPUT, "emotion": "disgust"})
    assert forced.emotion == "disgust" and forced.emotion_scores is not None
    restricted = ELMDChain(chat_model=chat, emotion_mode="free", allowed_emotions=("fear", "neutral"))
    assert _offered(restricted.invoke(INPUT)) == {"fear", "neutral"}


def test_the_call_options_add_the_callers_stops_to_the_chains_and_the_caller_wins_the_rest(chain: ELMDChain) -> None:
    from elmd_sdk.chains.reply import call_options

    chains = {"stop": ["\nUser:"], "emotion_choice": "chain's", "avoid_copying": ["r'"]}
    assert call_options(chains, {}) == chains
    called = call_options(chains, {"stop": "END", "max_new_tokens": 3, "emotion_choice": "caller's"})
    assert called == {"stop": ["\nUser:", "END"], "emotion_choice": "caller's", "avoid_copying": ["r'"],
                      "max_new_tokens": 3}  # fmt: skip
    assert call_options(chains, {"stop": ["A", "B"]})["stop"] == ["\nUser:", "A", "B"]
    assert call_options(chains, {"stop": None})["stop"] == ["\nUser:"]
    assert chains["stop"] == ["\nUser:"]  # the chain's own options are not changed by a call
    _, options = chain.prepare(INPUT)
    assert options["avoid_copying"][:2] == ["Congratulations, you earned it!", INPUT["utterance"]]  # r' and u
    assert "\nUser:" in options["stop"]
    assert "avoid_copying" not in chain.model_copy(update={"copy_guard": False}).prepare(INPUT)[1]
    plain = ELMDChain(chat_model=chain.chat_model)  # no retriever, no history: only the utterance is guarded
    assert plain.prepare(INPUT["utterance"])[1]["avoid_copying"] == [INPUT["utterance"]]


def test_a_bundles_generation_defaults_give_way_to_the_chains_then_to_the_calls(tmp_path: Path) -> None:
    from chain_fakes import tiny_bundle

    from elmd_sdk.chains.reply import call_options

    bundle = tiny_bundle(tmp_path / "b")  # greedy, 6 new tokens

    def output_tokens(chain: ELMDChain, **call: Any) -> int:
        messages, options = chain.prepare("hello")
        message = chain.chat_model.invoke(messages, **call_options(options, call))
        assert message.usage_metadata is not None
        return message.usage_metadata["output_tokens"]

    default = ELMDChain.from_bundle(bundle)
    assert (default.chat_model.max_new_tokens, default.chat_model.do_sample) == (6, False)  # type: ignore[attr-defined]
    # min_new_tokens holds back the end of the reply, so each count below is the limit in force
    assert output_tokens(default, min_new_tokens=50) == 6  # the bundle's limit
    chained = ELMDChain.from_bundle(bundle, max_new_tokens=9)
    assert (chained.chat_model.max_new_tokens, chained.chat_model.do_sample) == (9, False)  # type: ignore[attr-defined]
    assert output_tokens(chained, min_new_tokens=50) == 9  # the chain's, over the bundle's
    assert output_tokens(chained, max_new_tokens=3, min_new_tokens=50) == 3  # the call's, over the chain's
    result = chained.invoke("hello", max_new_tokens=2)
    assert result.usage is not None and result.usage["output_tokens"] <= 2


# -- closed-set probabilities, choice and copy guard by hand -------------------------------------------------------


def _choice(**fields: Any) -> EmotionChoice:
    labels = ("happy", "sad", "fear")
    return EmotionChoice(labels=labels, lines=tuple(f"Emotion: {label}" for label in labels),
                         response_key="\nResponse:", **fields)  # fmt: skip


def test_emotion_probabilities_divide_by_the_prior_and_mask_the_labels_not_allowed() -> None:
    from elmd_sdk.models.closed_set import emotion_probabilities

    scores = torch.tensor([0.0, math.log(2), math.log(3)])
    assert emotion_probabilities(_choice(), scores) == pytest.approx({"happy": 1 / 6, "sad": 2 / 6, "fear": 3 / 6})
    # dividing by the prior (1/2, 1, 1/2): the scores become log 2, log 2 and log 6
    calibrated = emotion_probabilities(_choice(log_prior=(math.log(1 / 2), 0.0, math.log(1 / 2))), scores)
    assert calibrated == pytest.approx({"happy": 2 / 10, "sad": 2 / 10, "fear": 6 / 10})
    allowed = emotion_probabilities(_choice(allowed=("happy", "fear")), scores)
    assert allowed == pytest.approx({"happy": 1 / 4, "sad": 0.0, "fear": 3 / 4})
    assert allowed["sad"] == 0.0
    # sad and fear both become log 6 once divided; happy's low prior would make it win, but it is not allowed
    prior = (-5.0, math.log(1 / 3), math.log(1 / 2))
    both = emotion_probabilities(_choice(allowed=("sad", "fear"), log_prior=prior), scores)
    assert both == pytest.approx({"happy": 0.0, "sad": 0.5, "fear": 0.5})
    with pytest.raises(ValueError, match="one value per label"):
        _choice(log_prior=(0.0, 0.0))


def test_the_pick_is_forced_else_the_argmax_else_a_draw_among_the_allowed() -> None:
    from elmd_sdk.models.closed_set import pick_emotion

    probabilities = {"happy": 0.2, "sad": 0.0, "fear": 0.8}
    assert pick_emotion(_choice(), probabilities, False, None) == "fear"
    assert pick_emotion(_choice(), {"happy": 0.5, "sad": 0.4, "fear": 0.1}, False, None) == "happy"
    forced = _choice(force="sad", allowed=("sad", "fear"))
    assert pick_emotion(forced, probabilities, False, None) == "sad"
    assert pick_emotion(forced, probabilities, True, torch.Generator().manual_seed(0)) == "sad"
    generator = torch.Generator().manual_seed(0)
    drawn = [pick_emotion(_choice(), probabilities, True, generator) for _ in range(200)]
    assert set(drawn) == {"happy", "fear"}  # never a label of probability 0, both others drawn
    assert 100 < drawn.count("fear") < 200  # about 160 of 200


def test_the_copy_guard_needs_n_of_at_least_one_and_bans_both_apostrophes(chat: ELMDChatModel) -> None:
    with pytest.raises(InputError, match="must be at least 1, got 0") as error:
        copy_guard(chat.tokenizer, ["That is wonderful news"], n=0)
    assert error.value.field == "copy_guard_ngram"
    assert copy_guard(chat.tokenizer, ["That is wonderful news"], n=1) is None  # single tokens are never banned
    assert copy_guard(chat.tokenizer, [], n=4) is None
    guard = copy_guard(chat.tokenizer, ["It’s wonderful"], n=2)
    assert guard is not None
    banned = set(guard.sequence_bias)
    for form in ("It's wonderful", "It’s wonderful", " It's wonderful", " It’s wonderful"):
        ids = chat.get_token_ids(form)
        assert {tuple(ids[i : i + 2]) for i in range(len(ids) - 1)} <= banned, form
