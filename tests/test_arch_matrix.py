"""The architecture matrix (README "Architectures"): tiny random models of 17 architectures through every path.

Per architecture: loading (logits equal raw transformers), chat (stream equals invoke equals raw greedy generate),
the p-tuning prefix (logits equal transformers alone given the prefix as a filled cache), the closed-set chain
(label scores equal an independent sum of token log-probabilities), batched decoding with a prefix (equal to solo
calls), the PEFT export (PEFT's logits equal elmd-sdk's, or the bundle records why the format cannot express the
model's positions) and one EERG step that writes a bundle.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from arch_fakes import ARCHS, NAMES, SAVERS, SLIDING, SMALL_NAMES, Arch
from chain_fakes import FixedRetriever
from llm_fakes import save_llm, tiny_tokenizer
from tolerances import SAME_MATH
from train_fakes import text_samples
from transformers import DynamicCache

from elmd_sdk.answer.wording import render_answer
from elmd_sdk.errors import ElmdError, InputError
from elmd_sdk.models.chat_model import ELMDChatModel
from elmd_sdk.models.decoding import prefill, score_continuations
from elmd_sdk.models.llm import load_llm
from elmd_sdk.models.peft_adapter import PEFT_EXPORT_RECORD, export_peft_adapter
from elmd_sdk.models.prefix import PrefixConfig, PrefixEncoder, attach_prefix, detach_prefix, prefix_encoder_of

TEXT = "hello world how are you today"
PROMPTS = ["hello there", "The dog passed away this morning. I am so sad", "I got the job!"]
PRE_LEN = 3


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():  # PEFT's prefix goes through transformers' deprecated `past_key_values`
        warnings.simplefilter("ignore", FutureWarning)
        yield


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Each architecture's checkpoint folder and its raw transformers model, written once per run."""
    root = tmp_path_factory.mktemp("archs")
    return {name: SAVERS[name](root / name) for name in NAMES}


def _loaded(folders: dict[str, tuple[Path, Any]], name: str) -> tuple[Any, Any]:
    return load_llm(folders[name][0])


def _prefix(model: Any, seed: int = 1) -> PrefixEncoder:
    """A prefix as large as trained keys get (N(0, 1) rows), in eval mode (no dropout)."""
    torch.manual_seed(seed)
    encoder = PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=PRE_LEN))
    with torch.no_grad():
        encoder.embedding.weight.normal_()
    return encoder.eval()


def _ids(tokenizer: Any, text: str = TEXT) -> torch.Tensor:
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # (1, T)


@pytest.mark.parametrize("name", NAMES)
def test_load_equals_raw_transformers(folders: dict[str, tuple[Path, Any]], name: str) -> None:
    model, tokenizer = _loaded(folders, name)
    raw = folders[name][1]
    ids = _ids(tokenizer)
    with torch.no_grad():
        ours, theirs = model(input_ids=ids).logits, raw(input_ids=ids).logits
    assert type(model) is type(raw) and ours.abs().max() > 1.0
    torch.testing.assert_close(ours, theirs, atol=SAME_MATH, rtol=SAME_MATH)


@pytest.mark.parametrize("name", NAMES)
def test_chat_stream_invoke_and_generate_agree(folders: dict[str, tuple[Path, Any]], name: str) -> None:
    model, tokenizer = _loaded(folders, name)
    chat = ELMDChatModel(hf_model=model, tokenizer=tokenizer, do_sample=False, max_new_tokens=8)
    turns = [{"role": "user", "content": TEXT}]
    ids = tokenizer.apply_chat_template(turns, add_generation_prompt=True, return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert expected.strip()
    assert chat.invoke(TEXT).content == expected
    assert "".join(str(chunk.content) for chunk in chat.stream(TEXT)) == expected


def _filled_cache_logits(model: Any, encoder: PrefixEncoder, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """transformers alone: the prefix's keys/values as a filled DynamicCache before ``ids`` (b, T), real tokens at
    positions 0, 1, ... after it (left padding skipped), the mask open over the prefix."""
    with torch.no_grad():
        layers = [(k.expand(ids.shape[0], -1, -1, -1), v.expand(ids.shape[0], -1, -1, -1)) for k, v in encoder(1)]
        cache = DynamicCache(ddp_cache_data=layers)  # (b, kv, p, d) per layer
        full_mask = torch.cat([torch.ones(ids.shape[0], PRE_LEN, dtype=mask.dtype), mask], dim=1)  # (b, p + T)
        cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        return model(
            input_ids=ids, attention_mask=full_mask, position_ids=_positions(mask), **{cache_arg: cache}
        ).logits


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Each row's real tokens at 0, 1, ... after its left padding (padding at 0)."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)  # (b, T)


@pytest.mark.parametrize("name", NAMES)
def test_prefix_equals_the_prefix_as_a_filled_cache(folders: dict[str, tuple[Path, Any]], name: str) -> None:
    model, tokenizer = _loaded(folders, name)
    encoder = _prefix(model)
    a, b = _ids(tokenizer)[0].tolist(), _ids(tokenizer, "you are")[0].tolist()
    ids = torch.tensor([a, [0] * (len(a) - len(b)) + b])  # (2, T): the second row left-padded
    mask = (torch.arange(len(a)) >= len(a) - torch.tensor([[len(a)], [len(b)]])).long()  # (2, T)
    reference = _filled_cache_logits(model, encoder, ids, mask)
    attach_prefix(model, encoder)
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask)).logits
    detach_prefix(model)
    with torch.no_grad():
        plain = model(input_ids=ids[:1]).logits
    assert (ours[0] - plain[0]).abs().max() > 0.1  # the prefix changes the logits
    torch.testing.assert_close(ours[0], reference[0], atol=SAME_MATH, rtol=SAME_MATH)
    real = len(a) - len(b)
    torch.testing.assert_close(ours[1, real:], reference[1, real:], atol=SAME_MATH, rtol=SAME_MATH)


@pytest.mark.parametrize("name", NAMES)
def test_closed_set_chain(folders: dict[str, tuple[Path, Any]], name: str) -> None:
    from elmd_sdk.chains import ELMDChain

    model, tokenizer = _loaded(folders, name)
    prompt = _ids(tokenizer)[0].tolist()
    candidates = [tokenizer(render_answer(e), add_special_tokens=False)["input_ids"] for e in ("happy", "sad")]
    ids = torch.tensor([prompt])
    scores = score_continuations(model, prefill(model, torch.ones_like(ids), input_ids=ids), candidates)
    for candidate, got in zip(candidates, scores, strict=True):
        with torch.no_grad():
            log_probs = model(input_ids=torch.tensor([prompt + candidate])).logits[0].log_softmax(-1)  # (T, vocab)
        expected = sum(float(log_probs[len(prompt) - 1 + t, token]) for t, token in enumerate(candidate))
        assert float(got) == pytest.approx(expected, abs=1e-4)
    chat = ELMDChatModel(hf_model=model, tokenizer=tokenizer, do_sample=False, max_new_tokens=8)
    result = ELMDChain(chat_model=chat, retriever=FixedRetriever()).invoke("I finally got the job!")
    assert result.emotion in result.emotion_scores and result.emotion == max(
        result.emotion_scores, key=result.emotion_scores.__getitem__
    )
    assert sum(result.emotion_scores.values()) == pytest.approx(1.0, abs=1e-5)


def _batch_sizes(model: Any) -> tuple[list[int], Any]:
    sizes: list[int] = []

    def hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        sizes.append(int(kwargs.get("input_ids", kwargs.get("inputs_embeds")).shape[0]))

    return sizes, model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("name", NAMES)
def test_batched_decoding_with_a_prefix_equals_solo_calls(folders: dict[str, tuple[Path, Any]], name: str) -> None:
    model, tokenizer = _loaded(folders, name)
    attach_prefix(model, _prefix(model))
    chat = ELMDChatModel(hf_model=model, tokenizer=tokenizer, do_sample=False, max_new_tokens=8)
    solo = [str(chat.invoke(p).content) for p in PROMPTS]
    sizes, handle = _batch_sizes(model)
    with chat.batched(max_batch=4), ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda p: str(chat.invoke(p).content), PROMPTS))
    handle.remove()
    assert together == solo
    assert max(sizes) > 1  # decode steps ran together


@pytest.mark.parametrize("name", NAMES)
def test_peft_export(folders: dict[str, tuple[Path, Any]], name: str, tmp_path: Path) -> None:
    from peft import PeftModel

    model, tokenizer = _loaded(folders, name)
    encoder = _prefix(model)
    ids = _ids(tokenizer)
    attach_prefix(model, encoder)
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    detach_prefix(model)
    reason = export_peft_adapter(encoder, model, tmp_path, "base")
    if name == "gpt2":  # learned absolute positions: PEFT's shift of every token cannot be undone
        assert reason is not None and "no rotary position embedding" in reason
        assert sorted(p.name for p in tmp_path.iterdir()) == [PEFT_EXPORT_RECORD]
        return
    assert reason is None and not (tmp_path / PEFT_EXPORT_RECORD).exists()
    with torch.no_grad():
        theirs = PeftModel.from_pretrained(model, tmp_path)(input_ids=ids).logits
    torch.testing.assert_close(theirs, ours, atol=SAME_MATH, rtol=SAME_MATH)


@pytest.mark.parametrize("name", NAMES)
def test_one_eerg_step_writes_a_bundle(folders: dict[str, tuple[Path, Any]], name: str, tmp_path: Path) -> None:
    from elmd_sdk.bundle import load_bundle
    from elmd_sdk.trainers.eerg import EergConfig, train_eerg
    from elmd_sdk.trainers.stage import TrainConfig

    labels = ("happy", "sad", "anger")
    config = EergConfig(
        llm=str(folders[name][0]), labels=labels, use_retrieval=False, use_video=False, pre_seq_len=PRE_LEN,
        lr=0.05, train=TrainConfig(epochs=1, batch_size=3, progress=False),
    )  # fmt: skip
    result = train_eerg(config, text_samples(3, labels), text_samples(3, labels), tmp_path / "bundle")
    assert result.completed and result.total_steps == 1
    manifest, paths = load_bundle(tmp_path / "bundle")
    assert paths.prefix is not None and manifest.pre_seq_len == PRE_LEN
    exported = (paths.prefix / "adapter_config.json").is_file()
    assert exported != (paths.prefix / PEFT_EXPORT_RECORD).is_file()  # the adapter, or why there is none
    assert exported == (name != "gpt2")
    model, _ = load_llm(paths.base_llm, prefix=paths.prefix)
    assert prefix_encoder_of(model) is not None


# -- refusals, rollback, text-started prefixes and sliding windows -----------------------------------------------

ALIBI_FALCON = Arch("falcon-alibi", "FalconConfig", "FalconForCausalLM", {"alibi": True}, ("intermediate_size",))
REFUSED = {  # models that truly cannot take a prefix, and the reason the refusal names
    "falcon-alibi": (ALIBI_FALCON, "uses ALiBi position biases"),
    "bloom": (
        Arch("bloom", "BloomConfig", "BloomForCausalLM", {"n_layer": 2, "n_head": 4}, tuple(SMALL_NAMES)),
        "uses ALiBi position biases",
    ),
    "xglm": (
        Arch(
            "xglm",
            "XGLMConfig",
            "XGLMForCausalLM",
            {"d_model": 32, "num_layers": 2, "attention_heads": 4, "ffn_dim": 64},
            tuple(SMALL_NAMES),
        ),
        "computes attention itself",
    ),
    "mamba": (
        Arch("mamba", "MambaConfig", "MambaForCausalLM", {}, tuple(SMALL_NAMES - {"hidden_size", "num_hidden_layers"})),
        "no per-layer key/value cache",
    ),
}


def _hooks(model: Any) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_attach_says_why_and_leaves_the_model_as_it_was(name: str) -> None:
    arch, reason = REFUSED[name]
    tokenizer = tiny_tokenizer()
    model = arch.make(tokenizer)
    ids = _ids(tokenizer)
    with torch.no_grad():
        before = model(input_ids=ids).logits
    hooks = _hooks(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attention = model.config._attn_implementation
    with pytest.raises(InputError, match=reason):  # Mamba: already when the prefix is shaped for it
        attach_prefix(model, PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=PRE_LEN)))
    assert prefix_encoder_of(model) is None and not hasattr(model, "_elmd_prefix")
    assert _hooks(model) == hooks
    assert model.config._attn_implementation == attention
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)


class _FailingPrefix(PrefixEncoder):
    """A prefix that fits the model's shape but fails once the model runs it (after the attach changed the model)."""

    def forward(self, batch_size: int = 1) -> Any:
        raise RuntimeError("cannot compute")


def test_a_failed_attach_keeps_the_previous_prefix() -> None:
    tokenizer = tiny_tokenizer()
    model = ARCHS[0].make(tokenizer)
    first = _prefix(model)
    attach_prefix(model, first)
    ids = _ids(tokenizer)
    with torch.no_grad():
        before = model(input_ids=ids).logits
    hooks, attention = _hooks(model), model.config._attn_implementation
    other_shape = PrefixEncoder(PrefixConfig(pre_seq_len=2, num_layers=3, num_kv_heads=2, head_dim=8))
    failing = _FailingPrefix(PrefixConfig.for_model(model, pre_seq_len=2))
    for encoder, reason in ((other_shape, "num_layers"), (failing, r"fails with a prefix .*cannot compute")):
        with pytest.raises(ElmdError, match=reason):
            attach_prefix(model, encoder)
        assert prefix_encoder_of(model) is first
        assert (_hooks(model), model.config._attn_implementation) == (hooks, attention)
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=ids).logits, before, atol=0, rtol=0)


def test_a_model_that_cannot_take_a_prefix_is_refused_before_training(tmp_path: Path) -> None:
    from elmd_sdk.trainers.eerg import EergConfig, train_eerg
    from elmd_sdk.trainers.stage import TrainConfig

    tokenizer = tiny_tokenizer()
    folder = save_llm(tmp_path / "falcon", ALIBI_FALCON.make(tokenizer), tokenizer)
    config = EergConfig(
        llm=str(folder), labels=("happy", "sad", "anger"), use_retrieval=False, use_video=False, pre_seq_len=2,
        train=TrainConfig(epochs=1, batch_size=3, progress=False),
    )  # fmt: skip
    with pytest.raises(InputError, match="ALiBi position biases"):
        train_eerg(config, text_samples(3), text_samples(3), tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()  # refused before anything was prepared or trained


@pytest.mark.parametrize("name", NAMES)
def test_the_text_started_prefix_holds_the_models_own_keys_and_values(
    folders: dict[str, tuple[Path, Any]], name: str
) -> None:
    """Fused q/k/v, q/k norms, multi-query heads: a prefix from one token acts exactly as that token at position 0
    with the input's positions from 0 (prefix keys carry no position); from the text [t, u, t], layer 0's key and
    value of t are the same at both places once turned back to no position (not with learned absolute positions)."""
    from elmd_sdk.models.prefix_init import prefix_from_tokens

    model, tokenizer = _loaded(folders, name)
    (t, u), inputs = _ids(tokenizer, "you are")[0].tolist()[:2], _ids(tokenizer)[0].tolist()
    attach_prefix(model, prefix_from_tokens(model, [t], PrefixConfig.for_model(model, pre_seq_len=1)).eval())
    with torch.no_grad():
        prefixed = model(input_ids=torch.tensor([inputs])).logits
    detach_prefix(model)
    positions = torch.tensor([[0, *range(len(inputs))]])
    with torch.no_grad():
        plain = model(input_ids=torch.tensor([[t, *inputs]]), position_ids=positions).logits[:, 1:]
    torch.testing.assert_close(prefixed, plain, atol=SAME_MATH, rtol=SAME_MATH)
    config = PrefixConfig.for_model(model, pre_seq_len=3)
    rows = prefix_from_tokens(model, [t, u, t], config).embedding.weight.detach()  # (3, layers * 2 * kv * d)
    layer0 = rows[:, : 2 * config.num_kv_heads * config.head_dim]  # layer 0's key and value of each position
    same = torch.allclose(layer0[0], layer0[2], atol=SAME_MATH, rtol=SAME_MATH)
    assert same == (name != "gpt2") and not torch.allclose(layer0[0], layer0[1])


@pytest.mark.parametrize("name", sorted(SLIDING))
def test_sliding_window_models_batch_while_no_sequence_exceeds_the_window(name: str) -> None:
    tokenizer = tiny_tokenizer()
    arch = next(a for a in ARCHS if a.name == name)
    window = 64
    model = Arch(name, arch.config_class, arch.model_class, {**arch.settings, "sliding_window": window}).make(tokenizer)
    chat = ELMDChatModel(hf_model=model, tokenizer=tokenizer, do_sample=False, max_new_tokens=8)
    lengths = {p: len(tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                   tokenize=True)["input_ids"]) for p in PROMPTS}  # fmt: skip
    assert max(lengths.values()) + 8 < window  # every short prompt with its reply fits the window
    long = " ".join(["The dog passed away this morning."] * 12)
    assert len(tokenizer(long)["input_ids"]) > window  # its prompt alone exceeds the window
    for prompts, batched in ((PROMPTS, True), ([PROMPTS[0], long], False)):
        solo = [str(chat.invoke(p).content) for p in prompts]
        sizes, handle = _batch_sizes(model)
        with chat.batched(max_batch=4), ThreadPoolExecutor(len(prompts)) as pool:
            together = list(pool.map(lambda p: str(chat.invoke(p).content), prompts))
        handle.remove()
        assert together == solo
        assert (max(sizes) > 1) == batched
