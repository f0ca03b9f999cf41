"""ELMDChatModel on a tiny random Llama: splicing E_v at the placeholder, decoding settings, streaming, interruption,
and langchain-tests' standard chat-model unit tests."""

from __future__ import annotations

import _thread
import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_tests.unit_tests import ChatModelUnitTests
from llm_fakes import HIDDEN, save_llm, tiny_llm
from torch import nn
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from elmd_sdk.errors import ElmdError, InputError
from elmd_sdk.models.call import cut_at_stop, stable_length
from elmd_sdk.models.chat_model import VIDEO_PLACEHOLDER, ELMDChatModel
from elmd_sdk.models.rendering import tokenize_pieces
from elmd_sdk.models.splice import splice_video_embeds

Q = 4  # feature size of the stand-in visual encoder


def _tiny_llm() -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """The tests' tiny LLM (weights drawn with std 0.2), its EOS logit pinned to 0 below large random logits so that
    replies run to the limit (what EOS does is tested on a scripted model in test_decoding_scripted.py)."""
    model, tokenizer = tiny_llm(context=512, initializer_range=0.2)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
    return model, tokenizer


class _MeanEncoder:
    """Stand-in visual encoder: X (m, o=2, q=4) from each frame's RGB means."""

    def encode(self, frames: np.ndarray) -> torch.Tensor:
        rgb = torch.as_tensor(frames, dtype=torch.float32).mean(dim=(1, 2)) / 255  # (m, 3)
        feats = torch.cat([rgb, rgb.sum(-1, keepdim=True)], dim=-1)  # (m, 4)
        return torch.stack([feats, 2 * feats], dim=1)  # (m, 2, 4)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model and tokenizer saved as a checkpoint folder."""
    return save_llm(tmp_path_factory.mktemp("tiny_llama"), *_tiny_llm())


@pytest.fixture(scope="module")
def parts() -> dict[str, Any]:
    model, tokenizer = _tiny_llm()
    torch.manual_seed(1)
    return {
        "hf_model": model,
        "tokenizer": tokenizer,
        "projector": nn.Linear(Q, HIDDEN),
        "visual_encoder": _MeanEncoder(),
    }


def _chat(parts: dict[str, Any], **settings: Any) -> ELMDChatModel:
    return ELMDChatModel(**parts, **{"do_sample": False, "max_new_tokens": 12, **settings})


def _video_message(pooled: torch.Tensor, text: str = f"Look: {VIDEO_PLACEHOLDER} How do I feel?") -> HumanMessage:
    return HumanMessage(content=[{"type": "text", "text": text}, {"type": "video", "pooled": pooled}])


def _capture_embeds(model: LlamaForCausalLM) -> tuple[list[torch.Tensor], Any]:
    """Record the input embeddings the decoder stack receives (the prefill call comes first)."""
    seen: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            embeds = module.embed_tokens(kwargs["input_ids"])
        seen.append(embeds.detach().clone())

    return seen, model.model.register_forward_pre_hook(hook, with_kwargs=True)


# --- splicing ----------------------------------------------------------------------------------------------------


def test_tokenize_pieces_without_placeholder_equals_chat_template(parts: dict[str, Any]) -> None:
    tokenizer = parts["tokenizer"]
    turns = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello world"}]
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    expected = tokenizer.apply_chat_template(turns, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert tokenize_pieces(tokenizer, text) == [expected]


def test_tokenize_pieces_splits_at_each_placeholder(parts: dict[str, Any]) -> None:
    tokenizer = parts["tokenizer"]
    pieces = tokenize_pieces(tokenizer, f"{VIDEO_PLACEHOLDER}ab{VIDEO_PLACEHOLDER}cd")
    assert pieces == [
        [],
        tokenizer("ab", add_special_tokens=False)["input_ids"],
        tokenizer("cd", add_special_tokens=False)["input_ids"],
    ]


def test_splice_puts_video_rows_between_text_rows() -> None:
    embed = nn.Embedding(10, 4)
    v0, v1 = torch.full((2, 4), 7.0), torch.full((1, 4), 9.0)
    out = splice_video_embeds(embed, [[1, 2], [3], []], [v0, v1])
    w = embed.weight.detach()
    expected = torch.cat([w[[1, 2]], v0, w[[3]], v1]).unsqueeze(0)  # (1, 6, 4)
    torch.testing.assert_close(out.inputs_embeds.detach(), expected)
    assert out.video_spans == ((2, 4), (5, 6))
    assert out.attention_mask.tolist() == [[1] * 6]


def test_splice_rejects_bad_shapes_and_counts() -> None:
    embed = nn.Embedding(10, 4)
    with pytest.raises(ElmdError, match=r"shape \(n, 4\)"):
        splice_video_embeds(embed, [[1], [2]], [torch.zeros(3, 5)])
    with pytest.raises(ElmdError, match="need 2 text pieces"):
        splice_video_embeds(embed, [[1]], [torch.zeros(3, 4)])


def test_video_tokens_land_where_the_placeholder_was(parts: dict[str, Any]) -> None:
    chat = _chat(parts, max_new_tokens=1)
    pooled = torch.randn(10, Q)  # (m + o, q)
    seen, handle = _capture_embeds(parts["hf_model"])
    try:
        chat.invoke([SystemMessage("be kind"), _video_message(pooled)])
    finally:
        handle.remove()
    turns = [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": f"Look: {VIDEO_PLACEHOLDER} How do I feel?"},
    ]
    text = parts["tokenizer"].apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    before, after = tokenize_pieces(parts["tokenizer"], text)
    embeds = seen[0][0]  # (T, hidden)
    assert embeds.shape[0] == len(before) + 10 + len(after)
    with torch.no_grad():
        table = parts["hf_model"].get_input_embeddings().weight
        torch.testing.assert_close(embeds[len(before) : len(before) + 10], parts["projector"](pooled))
        torch.testing.assert_close(embeds[: len(before)], table[before])
        torch.testing.assert_close(embeds[len(before) + 10 :], table[after])


def test_frames_block_goes_through_encoder_pooling_and_projector(parts: dict[str, Any]) -> None:
    from elmd_sdk.video import sample_frames, spatio_temporal_pool

    frames = np.random.default_rng(0).integers(0, 255, (5, 6, 6, 3), dtype=np.uint8)
    chat = _chat(parts, max_new_tokens=1, frames=3)
    seen, handle = _capture_embeds(parts["hf_model"])
    try:
        chat.invoke([HumanMessage(content=[{"type": "text", "text": "hi"}, {"type": "video", "frames": frames}])])
    finally:
        handle.remove()
    with torch.no_grad():
        pooled = spatio_temporal_pool(parts["visual_encoder"].encode(sample_frames(frames, m=3)))  # (2 + 3, q)
        expected = parts["projector"](pooled)
    start = len(tokenize_pieces(parts["tokenizer"], "<|im_start|>user\n")[0])
    torch.testing.assert_close(seen[0][0, start : start + 5], expected)


def test_video_changes_the_model_output(parts: dict[str, Any]) -> None:
    chat = _chat(parts, max_new_tokens=1)
    first_logits: list[torch.Tensor] = []
    handle = parts["hf_model"].register_forward_hook(lambda m, a, out: first_logits.append(out.logits[0, -1]))
    try:
        for pooled in (torch.zeros(10, Q), torch.ones(10, Q)):
            first_logits.clear()
            chat.invoke([_video_message(pooled)])
            if pooled.sum() == 0:
                zero = first_logits[0]
            else:
                one = first_logits[0]
        first_logits.clear()
        chat.invoke([HumanMessage(f"Look: {VIDEO_PLACEHOLDER} How do I feel?")])
        none = first_logits[0]
    finally:
        handle.remove()
    assert not torch.allclose(zero, one)
    assert not torch.allclose(zero, none)


def test_no_video_equals_plain_generate(parts: dict[str, Any]) -> None:
    model, tokenizer = parts["hf_model"], parts["tokenizer"]
    turns = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello"}]
    ids = tokenizer.apply_chat_template(turns, add_generation_prompt=True, return_tensors="pt")["input_ids"]
    plain = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    expected = tokenizer.decode(plain[0, ids.shape[1] :], skip_special_tokens=True)
    reply = _chat(parts).invoke([SystemMessage("be kind"), HumanMessage("hello")])
    assert reply.content == expected
    assert reply.usage_metadata == {
        "input_tokens": ids.shape[1],
        "output_tokens": 12,
        "total_tokens": ids.shape[1] + 12,
    }


def test_placeholder_without_video_is_dropped(parts: dict[str, Any]) -> None:
    chat = _chat(parts)
    with_placeholder = chat.invoke([HumanMessage(f"hello{VIDEO_PLACEHOLDER} world")])
    assert with_placeholder.content == chat.invoke([HumanMessage("hello world")]).content


def test_video_without_placeholder_goes_first_in_its_message(parts: dict[str, Any]) -> None:
    chat = _chat(parts)
    pooled = torch.randn(10, Q)
    implicit = chat.invoke([_video_message(pooled, text="hello")])
    explicit = chat.invoke([_video_message(pooled, text=f"{VIDEO_PLACEHOLDER}\nhello")])
    assert implicit.content == explicit.content


def test_placeholder_count_must_match_videos(parts: dict[str, Any]) -> None:
    text = f"{VIDEO_PLACEHOLDER} and {VIDEO_PLACEHOLDER}"
    with pytest.raises(InputError, match=r"2 '<video>' placeholder\(s\) in the text but 1 video"):
        _chat(parts).invoke([_video_message(torch.zeros(10, Q), text=text)])


def test_video_needs_a_projector(parts: dict[str, Any]) -> None:
    chat = _chat({**parts, "projector": None})
    with pytest.raises(ElmdError, match="no video projector"):
        chat.invoke([_video_message(torch.zeros(10, Q))])


def test_unsupported_blocks_and_options_are_errors(parts: dict[str, Any]) -> None:
    chat = _chat(parts)
    with pytest.raises(InputError, match="unsupported content block type 'image'"):
        chat.invoke([HumanMessage(content=[{"type": "image", "url": "x"}])])
    with pytest.raises(ElmdError, match="unknown generation option"):
        chat.invoke("hello", top_q=0.1)


# --- decoding settings ------------------------------------------------------------------------------------------


def test_stop_sequence_cuts_text_and_stops_generating(parts: dict[str, Any]) -> None:
    chat = _chat(parts, max_new_tokens=30)
    full = chat.invoke("hello")
    assert full.usage_metadata["output_tokens"] == 30
    stop = full.content[10:13]
    cut = chat.invoke("hello", stop=[stop])
    assert cut.content == full.content[: full.content.index(stop)]
    assert cut.usage_metadata["output_tokens"] < 30
    assert cut.response_metadata["finish_reason"] == "stop"
    assert _chat(parts, max_new_tokens=30, stop=[stop]).invoke("hello").content == cut.content


def test_max_new_tokens_bounds_the_reply(parts: dict[str, Any]) -> None:
    reply = _chat(parts).invoke("hello", max_new_tokens=5)
    assert reply.usage_metadata["output_tokens"] == 5
    assert reply.response_metadata["finish_reason"] == "length"
    aliased = ELMDChatModel(**parts, do_sample=False, max_tokens=3)  # LangChain's name for the same setting
    assert aliased.invoke("hello").usage_metadata["output_tokens"] == 3
    with pytest.raises(ElmdError, match="pass only one of max_new_tokens / max_tokens"):
        ELMDChatModel(**parts, max_new_tokens=2, max_tokens=3)


@pytest.mark.parametrize("video", [False, True])
@pytest.mark.parametrize("stop", [None, "cut"])
def test_streaming_equals_invoke_with_greedy(parts: dict[str, Any], video: bool, stop: str | None) -> None:
    chat = _chat(parts, max_new_tokens=25)
    messages = [_video_message(torch.randn(10, Q))] if video else [HumanMessage("hello")]
    reference = chat.invoke(messages)
    stops = [reference.content[8:11]] if stop else None
    expected = chat.invoke(messages, stop=stops)
    chunks = list(chat.stream(messages, stop=stops))
    assert len([c for c in chunks if c.content]) > 1
    assert "".join(str(c.content) for c in chunks) == expected.content
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.usage_metadata == expected.usage_metadata
    assert total.response_metadata["finish_reason"] == expected.response_metadata["finish_reason"]


def test_async_paths_equal_sync_ones(parts: dict[str, Any]) -> None:
    chat = _chat(parts)

    async def run() -> tuple[str, str]:
        reply = await chat.ainvoke("hello")
        pieces = [str(chunk.content) async for chunk in chat.astream("hello")]
        return str(reply.content), "".join(pieces)

    expected = chat.invoke("hello").content
    assert asyncio.run(run()) == (expected, expected)


def test_streaming_flag_routes_invoke_through_stream(parts: dict[str, Any]) -> None:
    assert _chat(parts, streaming=True).invoke("hello").content == _chat(parts).invoke("hello").content


def test_batch_equals_separate_invokes_with_greedy(parts: dict[str, Any]) -> None:
    chat = _chat(parts)
    inputs = [[HumanMessage("hello")], [HumanMessage("how are you")], [_video_message(torch.randn(10, Q))]]
    assert [m.content for m in chat.batch(inputs)] == [chat.invoke(m).content for m in inputs]


def test_seed_makes_sampling_reproducible_without_touching_global_rng(parts: dict[str, Any]) -> None:
    chat = _chat(parts, do_sample=True, max_new_tokens=20)
    state = torch.get_rng_state()
    first = chat.invoke("hello", seed=3).content
    assert torch.equal(torch.get_rng_state(), state)
    assert chat.invoke("hello", seed=3).content == first
    assert chat.invoke("hello", seed=4).content != first
    assert chat.invoke("hello", do_sample=False).content != first


def test_default_settings_follow_the_paper() -> None:
    chat = ELMDChatModel()
    assert (chat.do_sample, chat.top_p, chat.temperature, chat.top_k, chat.frames) == (True, 0.7, 0.95, 0, 8)


# --- streaming details and interruption ---------------------------------------------------------------------------


def test_stable_length_holds_back_partial_stop_and_broken_characters() -> None:
    assert stable_length("abc de", ["dex"], hold_whitespace=False) == 4
    assert stable_length("abc \ufffd", [], hold_whitespace=False) == 4
    assert stable_length("abc ", [], hold_whitespace=True) == 3
    assert stable_length("abc", ["zz"], hold_whitespace=False) == 3
    assert cut_at_stop("one two three", ["three", "two"]) == ("one ", True)
    assert cut_at_stop("one", ["x"]) == ("one", False)


def _count_forwards(model: LlamaForCausalLM) -> tuple[list[str], Any]:
    """Record the name of the thread that runs each forward pass."""
    calls: list[str] = []
    return calls, model.register_forward_pre_hook(lambda module, args: calls.append(threading.current_thread().name))


def test_decoding_runs_in_the_consumers_thread(parts: dict[str, Any]) -> None:
    calls, handle = _count_forwards(parts["hf_model"])
    try:
        _chat(parts, max_new_tokens=4).invoke("hello")
        list(_chat(parts, max_new_tokens=4).stream("hello"))
    finally:
        handle.remove()
    assert calls == [threading.current_thread().name] * 8


def test_closing_a_stream_stops_decoding(parts: dict[str, Any]) -> None:
    calls, handle = _count_forwards(parts["hf_model"])
    try:
        stream = _chat(parts, max_new_tokens=400).stream("hello")
        while not next(stream).content:
            pass
        stream.close()
        done = len(calls)
        time.sleep(0.1)
    finally:
        handle.remove()
    assert 0 < done < 400
    assert len(calls) == done


def test_keyboard_interrupt_while_streaming_stops_decoding(parts: dict[str, Any]) -> None:
    model = parts["hf_model"]
    slow = model.register_forward_pre_hook(lambda module, args: time.sleep(0.05))
    calls, handle = _count_forwards(model)
    try:
        stream = _chat(parts, max_new_tokens=400).stream("hello")
        threading.Timer(0.3, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt):
            for _ in stream:
                pass
        done = len(calls)
        time.sleep(0.2)
        assert len(calls) == done < 400
    finally:
        slow.remove()
        handle.remove()
    assert _chat(parts, max_new_tokens=3).invoke("hello").usage_metadata["output_tokens"] == 3


def test_error_in_generation_reaches_the_stream_consumer(parts: dict[str, Any]) -> None:
    def fail(module: nn.Module, args: Any) -> None:
        raise RuntimeError("device lost")

    handle = parts["hf_model"].register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="device lost"):
            list(_chat(parts).stream("hello"))
    finally:
        handle.remove()


def test_ai_turns_are_rendered_as_assistant(parts: dict[str, Any]) -> None:
    chat = _chat(parts, max_new_tokens=1)
    seen, handle = _capture_embeds(parts["hf_model"])
    try:
        chat.invoke([HumanMessage("hi"), AIMessage("hello"), HumanMessage("bye")])
    finally:
        handle.remove()
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    ids = parts["tokenizer"].apply_chat_template(turns, add_generation_prompt=True)["input_ids"]
    torch.testing.assert_close(seen[0][0], parts["hf_model"].get_input_embeddings().weight[ids])


# --- loading -----------------------------------------------------------------------------------------------------


def test_lazy_model_from_a_path_matches_the_loaded_one(tiny_dir: Path, parts: dict[str, Any]) -> None:
    lazy = ELMDChatModel(model=str(tiny_dir), do_sample=False, max_new_tokens=12)  # LangChain's "model" alias
    assert lazy.hf_model is None
    assert lazy.invoke("hello").content == _chat(parts).invoke("hello").content
    assert lazy._get_ls_params()["ls_model_name"] == str(tiny_dir)


def test_load_builds_llm_encoder_and_projector_and_reads_video_folders(tmp_path: Path, tiny_dir: Path) -> None:
    from PIL import Image
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    from elmd_sdk.models.llm import llm_fingerprint, load_llm
    from elmd_sdk.video import ProjectorConfig, VideoProjector, load_visual_encoder, sample_frames, spatio_temporal_pool

    vit_dir, projector_dir, frames_dir = tmp_path / "vit", tmp_path / "projector", tmp_path / "clip"
    config = ViTConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, image_size=16, patch_size=8
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(vit_dir)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(vit_dir)
    encoder = load_visual_encoder(str(vit_dir))
    llm, _ = load_llm(tiny_dir)
    projector = VideoProjector(
        ProjectorConfig(q=encoder.q, hidden_size=HIDDEN, encoder=encoder.fingerprint(), llm=llm_fingerprint(llm))
    )
    projector.save(projector_dir)
    frames_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(frames_dir / f"{i}.png")

    chat = ELMDChatModel.load(
        tiny_dir, projector=projector_dir, visual_encoder=str(vit_dir), do_sample=False, max_new_tokens=1, frames=4
    )
    seen, handle = _capture_embeds(chat.hf_model)
    try:
        chat.invoke(
            [HumanMessage(content=[{"type": "text", "text": "hi"}, {"type": "video", "path": str(frames_dir)}])]
        )
    finally:
        handle.remove()
    with torch.no_grad():
        expected = projector(spatio_temporal_pool(encoder.encode(sample_frames(frames_dir, m=4))))  # (o + 4, hidden)
    start = len(tokenize_pieces(chat.tokenizer, "<|im_start|>user\n")[0])
    torch.testing.assert_close(seen[0][0, start : start + expected.shape[0]], expected)
    with pytest.raises(InputError, match="file not found"):
        chat.invoke([HumanMessage(content=[{"type": "video", "path": str(tmp_path / "missing.mp4")}])])


def test_prefix_and_video_generate_together(tmp_path: Path, tiny_dir: Path) -> None:
    from elmd_sdk.models.llm import load_llm
    from elmd_sdk.models.prefix import PrefixConfig, PrefixEncoder

    base, _ = load_llm(tiny_dir)
    torch.manual_seed(2)
    PrefixEncoder(PrefixConfig.for_model(base, pre_seq_len=4)).save(tmp_path / "prefix")
    projector = nn.Linear(Q, HIDDEN)
    settings = {"do_sample": False, "max_new_tokens": 10, "projector": projector}
    tuned = ELMDChatModel(model_name=str(tiny_dir), prefix_path=str(tmp_path / "prefix"), **settings)
    plain = ELMDChatModel(model_name=str(tiny_dir), **settings)
    messages = [_video_message(torch.randn(10, Q))]
    reply = tuned.invoke(messages)
    assert reply.content != plain.invoke(messages).content
    assert "".join(str(c.content) for c in tuned.stream(messages)) == reply.content


# --- langchain-tests standard unit tests ---------------------------------------------------------------------------


class TestELMDChatModelStandard(ChatModelUnitTests):
    """The standard chat-model unit tests, on a model named by a tiny checkpoint folder (loaded on first use)."""

    checkpoint = ""

    @pytest.fixture(autouse=True)
    def _checkpoint(self, tiny_dir: Path) -> None:
        type(self).checkpoint = str(tiny_dir)

    @property
    def chat_model_class(self) -> type[ELMDChatModel]:
        return ELMDChatModel

    @property
    def has_tool_calling(self) -> bool:
        return False  # bind_tools refuses: the model answers with an emotion and a response, it calls no tools

    @property
    def has_structured_output(self) -> bool:
        return False  # only the {emotion, response} schema (tested in test_chain_closed_set.py), not the generic ones

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": self.checkpoint}
