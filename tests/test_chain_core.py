"""ELMDChain on a tiny random LLM: six-part prompt, Runnable API, ablations, input checks and context fitting."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest
from chain_fakes import FixedRetriever
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from pydantic import ValidationError

from elmd_sdk.chains import ELMDChain, ELMDResult
from elmd_sdk.chains.prompt import VIDEO_PLACEHOLDER
from elmd_sdk.errors import InputError
from elmd_sdk.models.chat_model import ELMDChatModel

INPUT = {
    "utterance": "I finally got the job!",
    "history": ["Hi there.", "Hello! How did the interview go?"],
    "background": "Two friends meet in a cafe.",
}


def test_prompt_holds_the_six_parts(chain: ELMDChain) -> None:
    demo = FixedRetriever().invoke("x")[0]
    system, reference, answer, human = chain.build_messages(INPUT, demo)
    assert isinstance(system, SystemMessage) and isinstance(human, HumanMessage)
    assert "happy, surprise, sad, disgust, anger, fear, neutral" in system.text  # I, with the label set
    assert "Emotion: <one of the emotions>\nResponse: <your reply>" in system.text
    assert "do not copy it" in system.text
    # R: the retrieved pair as an example exchange, marked as a reference, answered in the answer format
    assert isinstance(reference, HumanMessage) and isinstance(answer, AIMessage)
    assert reference.text == "(Reference from a similar situation, not to be copied)\nCurrent utterance: I got promoted"
    assert answer.text == "Emotion: happy\nResponse: Congratulations, you earned it!"
    text = human.text
    assert text.startswith("Background: Two friends meet in a cafe.")  # B
    assert "Dialogue history:\nUser: Hi there.\nAssistant: Hello! How did the interview go?" in text  # H
    assert "Current utterance (User): I finally got the job!\n\n" in text  # u
    assert text.endswith("Answer with the emotion, then the response.")  # the closing format reminder
    assert VIDEO_PLACEHOLDER not in text  # no video given


def test_chinese_wording(chat: ELMDChatModel) -> None:
    chain = ELMDChain(chat_model=chat, language="zh")
    system, human = chain.build_messages({"utterance": "我拿到工作了", "history": ["你好"]})
    demo = FixedRetriever().invoke("x")[0]
    assert chain.build_messages({"utterance": "我拿到工作了"}, demo)[2].text == "情感：开心\n回复：" + demo.page_content
    assert "开心、惊讶、伤心、厌恶、生气、害怕、中性" in system.text and "情感：<情感>" in system.text
    assert "历史对话：\n助手：你好" in human.text and "当前话语（用户）：我拿到工作了" in human.text


def test_invoke_returns_typed_result_with_demonstration(chain: ELMDChain) -> None:
    result = chain.invoke(INPUT)
    assert isinstance(result, ELMDResult)
    assert result.demonstration is not None and result.demonstration.page_content == "Congratulations, you earned it!"
    scores = result.emotion_scores or {}
    assert result.emotion == max(scores, key=scores.__getitem__)  # greedy: the most likely label
    messages, options = chain.prepare(INPUT)
    assert scores == chain.chat_model.invoke(messages, **options).response_metadata["emotion_scores"]
    assert chain.invoke(INPUT["utterance"]).response == chain.invoke({"utterance": INPUT["utterance"]}).response


def test_batch_equals_separate_invokes_with_greedy_decoding(chain: ELMDChain) -> None:
    inputs: list[Any] = [INPUT, {"utterance": "My cat is sick."}, "What a day.", {**INPUT, "history": []}]
    assert chain.batch(inputs) == [chain.invoke(x) for x in inputs]


def test_stream_adds_up_to_invoke_and_first_chunk_has_demonstration(chain: ELMDChain) -> None:
    chunks = list(chain.stream(INPUT))
    assert chunks[0].demonstration is not None
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total == chain.invoke(INPUT)


def test_async_matches_sync(chain: ELMDChain) -> None:
    async def run() -> tuple[ELMDResult, list[ELMDResult]]:
        return await chain.ainvoke(INPUT), [chunk async for chunk in chain.astream(INPUT)]

    result, chunks = asyncio.run(run())
    assert result == chain.invoke(INPUT)
    assert "".join(c.response for c in chunks) == result.response


def test_stopping_a_stream_early_stops_generation(chain: ELMDChain) -> None:
    reply = chain.invoke(INPUT)  # also caches the content-free label priors, so both streams below do the same work
    calls: list[int] = []
    handle = chain.chat_model.hf_model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        assert _added(list(chain.stream(INPUT))) == reply
        whole = len(calls)
        calls.clear()
        stream = chain.stream(INPUT)
        first = next(stream)
        before_close = len(calls)
        stream.close()  # type: ignore[attr-defined]
    finally:
        handle.remove()
    assert first.emotion == reply.emotion and first.response == ""  # the emotion comes before any reply token
    assert len(calls) == before_close  # closing ran no forward pass
    assert reply.usage is not None
    assert whole - before_close >= reply.usage["output_tokens"] - 1  # none of the reply's decoding steps ran


def _added(chunks: list[ELMDResult]) -> ELMDResult:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


def test_composes_with_other_runnables(chain: ELMDChain) -> None:
    pipeline = {"utterance": RunnablePassthrough()} | chain | RunnableLambda(lambda r: r.response.upper())
    assert pipeline.invoke("I finally got the job!") == chain.invoke("I finally got the job!").response.upper()


def test_as_tool(chain: ELMDChain) -> None:
    tool = chain.as_tool()
    assert tool.name == "emotional_reply"
    assert "happy, surprise, sad, disgust, anger, fear, neutral" in tool.description
    assert {"utterance", "history", "background", "emotion", "allowed_emotions"} <= set(tool.args)
    assert "video" not in tool.args  # the tiny chat model has no projector: a clip could not be used
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How are you?"}]
    answer = tool.invoke({"utterance": "I finally got the job!", "history": history, "emotion": "sad"})
    assert set(answer) == {"emotion", "emotion_scores", "response", "utterance_emotion"}
    assert answer["emotion"] == "sad" and set(answer["emotion_scores"]) == set(chain.labels)
    assert answer["response"] == chain.invoke({"utterance": "I finally got the job!", "history": history,
                                               "emotion": "sad"}).response  # fmt: skip
    assert answer["utterance_emotion"] == "happy"  # the one neighbour FixedRetriever returns is a happy utterance
    with pytest.raises(ValidationError, match="mood"):
        tool.invoke({"utterance": "Hi", "mood": "sad"})  # an unknown argument is refused, not dropped


def test_without_retrieval_ablation(chat: ELMDChatModel) -> None:
    retriever = FixedRetriever()
    chain = ELMDChain(chat_model=chat, retriever=retriever, use_retrieval=False)
    result = chain.invoke(INPUT)
    assert result.demonstration is None and retriever.calls == 0
    assert [m.type for m in chain.build_messages(INPUT)] == ["system", "human"]


def test_video_without_projector_runs_the_without_video_path(chain: ELMDChain, tmp_path: Any) -> None:
    assert not chain.video_enabled
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"never decoded: the chain has no projector")
    with pytest.warns(UserWarning, match="no trained video projector"):
        messages = chain.build_messages({**INPUT, "video": str(clip)})
    assert VIDEO_PLACEHOLDER not in messages[-1].text and isinstance(messages[-1].content, str)


def test_video_tokens_reach_the_model(chat: ELMDChatModel, tmp_path: Any) -> None:
    import numpy as np
    import torch
    from moviepy import ColorClip

    from elmd_sdk.video import ProjectorConfig, VideoProjector, VisualEncoder

    class MeanColour(VisualEncoder):
        o, q = 2, 3

        def _encode_batch(self, frames: np.ndarray) -> torch.Tensor:
            colour = torch.from_numpy(frames).float().mean(dim=(1, 2)) / 255  # (b, 3)
            return torch.stack([colour, 1 - colour], dim=1)  # (b, o, q)

        def fingerprint(self) -> dict[str, Any]:
            return {"backend": "test"}

    clip = tmp_path / "red.mp4"
    ColorClip((32, 24), color=(230, 20, 20), duration=1).with_fps(8).write_videofile(str(clip), logger=None)
    torch.manual_seed(1)
    projector = VideoProjector(ProjectorConfig(q=3, hidden_size=32))
    with torch.no_grad():
        projector.linear.weight.mul_(50.0)
    video_chat = chat.model_copy(update={"projector": projector, "visual_encoder": MeanColour()})
    chain = ELMDChain(chat_model=video_chat)
    assert chain.video_enabled
    messages = chain.build_messages({"utterance": "Look at this.", "video": str(clip)})
    assert VIDEO_PLACEHOLDER in messages[-1].text
    assert messages[-1].content[1] == {"type": "video", "path": str(clip), "start": None, "end": None}
    usage = _PromptLengths()
    video_input = {"utterance": "Look at this.", "video": {"path": str(clip), "start": 0.0, "end": 1.0}}
    chain.invoke(video_input, {"callbacks": [usage]})
    without = chain.invoke({"utterance": "Look at this."}, {"callbacks": [usage]})
    # The model saw E_v (m + o = 8 + 2 rows) where the placeholder was: the counts the chain fits with are exact.
    assert usage.lengths == [chain.count_tokens(messages, with_video=True), chain.count_tokens(chain.build_messages(
        {"utterance": "Look at this."}))]  # fmt: skip
    assert chain.count_tokens(messages, with_video=True) == chain.count_tokens(messages) + 8 + 2
    ablated = ELMDChain(chat_model=video_chat, use_video=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ablated.invoke({"utterance": "Look at this.", "video": str(clip)}) == without


class _PromptLengths(BaseCallbackHandler):
    """Records the prompt length (input tokens, video rows included) of every chat-model call."""

    def __init__(self) -> None:
        self.lengths: list[int] = []

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        generation = response.generations[0][0]
        assert isinstance(generation, ChatGeneration)
        usage = getattr(generation.message, "usage_metadata", None)
        assert usage is not None
        self.lengths.append(usage["input_tokens"])


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"utterance": "  "}, "utterance"),
        ({"history": ["x"]}, "utterance"),
        ({"utterance": "hi", "history": "not a list"}, "history"),
        ({"utterance": "hi", "history": ["ok", {"text": "no speaker"}]}, "history[1]"),
        ({"utterance": "hi", "history": [42]}, "history[0]"),
        ({"utterance": "hi", "background": 3}, "background"),
        ({"utterance": "hi", "video": 3}, "video"),
        ({"utterance": "hi", "video": {"path": "a.mp4", "start": "x"}}, "video.start"),
        ({"utterance": "hi", "mood": "sad"}, "mood"),
    ],
)
def test_bad_input_names_the_field(chain: ELMDChain, bad: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as caught:
        chain.invoke(bad)
    assert caught.value.field == field


def _history(n: int) -> list[dict[str, str]]:
    return [{"speaker": "User" if i % 2 == 0 else "Assistant", "text": f"turn {i}: " + "blah " * 5} for i in range(n)]


def test_history_is_cut_from_the_oldest_turn_to_fit(chat: ELMDChatModel) -> None:
    probe = ELMDChain(chat_model=chat, use_retrieval=False)
    bare = probe.count_tokens(probe.build_messages({"utterance": "Hello?"}))
    window = bare + chat.max_new_tokens + 60  # room for a few history turns
    chain = ELMDChain(chat_model=chat, context_window=window)
    history = _history(20)
    messages = chain.build_messages({"utterance": "Hello?", "history": history})
    text = messages[-1].text
    kept = [turn for turn in history if turn["text"] in text]
    assert 0 < len(kept) < len(history)
    assert kept == history[len(history) - len(kept) :]  # the newest turns, whole
    assert f"{kept[0]['speaker']}: {kept[0]['text']}" in text
    assert chain.count_tokens(messages) + chat.max_new_tokens <= window
    unlimited = ELMDChain(chat_model=chat, context_window=10**6)
    one_more = unlimited.build_messages({"utterance": "Hello?", "history": history[-len(kept) - 1 :]})
    assert unlimited.count_tokens(one_more) + chat.max_new_tokens > window  # one more turn would not have fitted


def test_the_copy_guard_covers_the_assistants_own_replies_in_the_prompt_only(chat: ELMDChatModel) -> None:
    probe = ELMDChain(chat_model=chat, retriever=FixedRetriever())
    bare = probe.count_tokens(probe.prepare({"utterance": "Hello?"})[0])
    chain = ELMDChain(chat_model=chat, retriever=FixedRetriever(), context_window=bare + chat.max_new_tokens + 60)
    history = _history(20)
    messages, options = chain.prepare({"utterance": "Hello?", "history": history})
    text = messages[-1].text
    kept = [turn["text"] for turn in history if turn["text"] in text]
    own = [turn["text"] for turn in history if turn["speaker"] == "Assistant"]
    assert options["avoid_copying"] == [
        "Congratulations, you earned it!",  # r'
        "Hello?",  # u
        *[reply for reply in own if reply in kept],  # the assistant's replies the prompt holds, oldest first
    ]
    assert 0 < len(options["avoid_copying"]) - 2 < len(own)
    alone = chain.model_copy(update={"copy_guard_own_replies": False})
    assert alone.prepare({"utterance": "Hello?", "history": history})[1]["avoid_copying"] == [
        "Congratulations, you earned it!",
        "Hello?",
    ]
    unguarded = chain.model_copy(update={"copy_guard": False})
    assert "avoid_copying" not in unguarded.prepare({"utterance": "Hello?", "history": history})[1]


def test_long_history_never_passes_the_models_limit(chat: ELMDChatModel) -> None:
    chain = ELMDChain(chat_model=chat)  # the tiny model has 2048 positions
    history = _history(300)
    messages = chain.build_messages({"utterance": "Hello?", "history": history})
    assert 2048 - 100 < chain.count_tokens(messages) + chat.max_new_tokens <= 2048
    assert isinstance(chain.invoke({"utterance": "Hello?", "history": history}), ELMDResult)


def test_over_long_utterance_is_a_clear_error(chain: ELMDChain) -> None:
    with pytest.raises(InputError, match="too long for the model") as caught:
        chain.invoke({"utterance": "word " * 2000})
    assert caught.value.field == "utterance"


def test_unknown_language_is_refused(chat: ELMDChatModel) -> None:
    with pytest.raises(ValueError, match="supported: en, zh"):
        ELMDChain(chat_model=chat, language="fr")


def test_the_demonstration_in_the_papers_form_is_r_prime_with_its_instruction_only(chat: Any) -> None:
    from elmd_sdk.chains import ELMDChain

    paper = ELMDChain(chat_model=chat, retriever=FixedRetriever(), demonstration_form="paper")
    messages = paper.build_messages({"utterance": "Guess what?"}, FixedRetriever().invoke("x")[0])
    demo = messages[1:-1]
    assert [m.type for m in demo] == ["human"]
    assert demo[0].text == "(A reply from a similar situation, for reference only, not to be copied)\n" + (
        "Congratulations, you earned it!"
    )
    exchange = ELMDChain(chat_model=chat, retriever=FixedRetriever()).build_messages(
        {"utterance": "Guess what?"}, FixedRetriever().invoke("x")[0]
    )
    assert [m.type for m in exchange[1:-1]] == ["human", "ai"]
    assert exchange[2].text == "Emotion: happy\nResponse: Congratulations, you earned it!"
    assert paper.invoke("Guess what?").emotion in paper.labels  # the chain runs with it


# -- input normalisation and the history budget at its exact boundary ----------------------------------------------


def test_inputs_are_normalised_the_same_way_whatever_their_form() -> None:
    from elmd_sdk.chains.input import ELMDInput, HistoryMessage, HistoryTurn, parse_input

    three = parse_input({"utterance": " Hi? ", "history": ["a", "b", "c"]})
    assert [(t.speaker, t.text) for t in three.history] == [("Assistant", "a"), ("User", "b"), ("Assistant", "c")]
    two = parse_input({"utterance": "Hi?", "history": ["a", "b"]})
    assert [t.speaker for t in two.history] == ["User", "Assistant"]  # the newest string is always the assistant's
    assert three.utterance.text == "Hi?" and three.utterance.speaker == "User"
    named = parse_input({"utterance": "Hi?", "speaker": "Ross", "history": ["a", "b"]})
    assert named.utterance.speaker == "Ross" and [t.speaker for t in named.history] == ["Ross", "Assistant"]
    messages = [{"role": "user", "content": "u"}, HistoryMessage(role="assistant", content="v"),
                HistoryTurn(speaker="Joey", text="w", emotion="sad"), {"speaker": "Rachel", "text": "x"}]  # fmt: skip
    mixed = parse_input({"utterance": "Hi?", "history": messages})
    assert [(t.speaker, t.text, t.emotion) for t in mixed.history] == [
        ("User", "u", None), ("Assistant", "v", None), ("Joey", "w", "sad"), ("Rachel", "x", None)]  # fmt: skip
    assert parse_input({"utterance": "Hi?", "background": "  "}).background is None
    assert parse_input({"utterance": "Hi?", "background": " A cafe. "}).background == "A cafe."
    assert parse_input(ELMDInput(utterance="Hi?", history=["a"])).history[0].speaker == "Assistant"
    with pytest.raises(InputError, match="role must be 'user' or 'assistant'") as error:
        parse_input({"utterance": "Hi?", "history": ["a", {"role": "system", "content": "x"}]})
    assert error.value.field == "history[1]"


def test_a_video_range_must_go_forward(tmp_path: Any) -> None:
    from elmd_sdk.chains.input import parse_input

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"only the path and the range are checked")
    with pytest.raises(InputError, match="must come after start") as error:
        parse_input({"utterance": "Hi", "video": {"path": str(clip), "start": 1.5, "end": 1.5}})
    assert error.value.field == "video.end"
    video = parse_input({"utterance": "Hi", "video": {"path": str(clip), "start": 0, "end": 1.5}}).video
    assert video is not None and (video.start, video.end) == (0, 1.5)


def test_the_history_budget_keeps_every_turn_that_fits_exactly(chat: ELMDChatModel) -> None:
    unlimited = ELMDChain(chat_model=chat, context_window=10**6)
    history = _history(6)

    def needs(turns: int) -> int:
        """The prompt tokens plus the reply's room with the newest ``turns`` turns."""
        messages = unlimited.build_messages({"utterance": "Hello?", "history": history[len(history) - turns :]})
        return unlimited.count_tokens(messages) + chat.max_new_tokens

    def kept(window: int) -> int:
        chain = ELMDChain(chat_model=chat, context_window=window)
        text = chain.build_messages({"utterance": "Hello?", "history": history})[-1].text
        return sum(turn["text"] in text for turn in history)

    for turns in (6, 3):  # the whole history (the first check) and part of it (the search)
        assert kept(needs(turns)) == turns
        assert kept(needs(turns) - 1) == turns - 1
    assert kept(needs(0)) == 0  # only the utterance fits: no error
    with pytest.raises(InputError, match=f"needs {needs(0) - chat.max_new_tokens} tokens, but only") as error:
        kept(needs(0) - 1)
    assert error.value.field == "utterance"
