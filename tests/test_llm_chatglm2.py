"""ChatGLM2 original-layout checkpoints: mapping onto GlmForCausalLM checked against an independent reference.

The reference below re-implements ChatGLM2's forward pass from its published semantics in plain torch, reading
the ORIGINAL parameter names (``transformer.encoder.layers.N.self_attention.query_key_value.weight`` ...): fused
q/k/v (multi-query groups), RoPE on the first half of each head over interleaved pairs, RMSNorm, SwiGLU with
[gate | up], untied output layer, and the p-tuning prefix as un-rotated past keys/values that every token sees.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tolerances import REFERENCE, SAME_MATH

from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.models.chatglm2 import ChatGLM2Tokenizer
from elmd_sdk.models.llm import llm_fingerprint, load_llm
from elmd_sdk.models.prefix import PrefixEncoder, prefix_encoder_of

SENTENCES = [
    "你好，今天过得怎么样？",
    "我很高兴见到你。",
    "问：你为什么生气？答：因为他迟到了。",
    "Round one of the dialogue starts here.",
    "I am so happy to see you again today!",
    "Why are you sad? Because the weather is bad.",
    "他说：我不知道该怎么办。",
    "The quick brown fox jumps over the lazy dog.",
] * 4

LAYERS, HEADS, HEAD_DIM, GROUPS, HIDDEN, FFN = 2, 4, 16, 2, 64, 96
ROT = HEAD_DIM // 2  # ChatGLM2 applies RoPE to the first half of each head


def _train_sentencepiece(path: Path) -> None:
    """A tiny byte-fallback SentencePiece model (no normalisation, like ChatGLM2's)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES),
        model_writer=model,
        vocab_size=400,
        minloglevel=2,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        hard_vocab_limit=False,
    )
    path.write_bytes(model.getvalue())


def _raw_config(vocab: int, multi_query: bool = True, **extra: object) -> dict[str, object]:
    """config.json in ChatGLM2's own field names."""
    return {
        "model_type": "chatglm",
        "architectures": ["ChatGLMModel"],
        "add_bias_linear": False,
        "add_qkv_bias": True,
        "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False,
        "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True,
        "bias_dropout_fusion": True,
        "ffn_hidden_size": FFN,
        "fp32_residual_connection": False,
        "hidden_dropout": 0.0,
        "hidden_size": HIDDEN,
        "kv_channels": HEAD_DIM,
        "layernorm_epsilon": 1e-05,
        "multi_query_attention": multi_query,
        "multi_query_group_num": GROUPS,
        "num_attention_heads": HEADS,
        "num_layers": LAYERS,
        "original_rope": True,
        "padded_vocab_size": vocab,
        "post_layer_norm": True,
        "rmsnorm": True,
        "seq_length": 256,
        "use_cache": True,
        "torch_dtype": "float32",
        "transformers_version": "4.27.1",
        "tie_word_embeddings": False,
        "eos_token_id": 2,
        "pad_token_id": 0,
        **extra,
    }


def _random_state(raw: dict[str, object], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under ChatGLM2's original parameter names."""
    gen = torch.Generator().manual_seed(seed)
    kv = GROUPS if raw["multi_query_attention"] else HEADS
    vocab = int(raw["padded_vocab_size"])  # type: ignore[call-overload]
    qkv_out = HEADS * HEAD_DIM + 2 * kv * HEAD_DIM

    def rnd(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    state = {
        "transformer.embedding.word_embeddings.weight": rnd(vocab, HIDDEN, scale=1.0),
        "transformer.rotary_pos_emb.inv_freq": 1.0 / (10000 ** (torch.arange(0, ROT, 2).float() / ROT)),
        "transformer.encoder.final_layernorm.weight": 1 + rnd(HIDDEN, scale=0.1),
        "transformer.output_layer.weight": rnd(vocab, HIDDEN),
    }
    for i in range(LAYERS):
        p = f"transformer.encoder.layers.{i}."
        state |= {
            p + "input_layernorm.weight": 1 + rnd(HIDDEN, scale=0.1),
            p + "self_attention.query_key_value.weight": rnd(qkv_out, HIDDEN),
            p + "self_attention.query_key_value.bias": rnd(qkv_out),
            p + "self_attention.dense.weight": rnd(HIDDEN, HEADS * HEAD_DIM),
            p + "post_attention_layernorm.weight": 1 + rnd(HIDDEN, scale=0.1),
            p + "mlp.dense_h_to_4h.weight": rnd(2 * FFN, HIDDEN),
            p + "mlp.dense_4h_to_h.weight": rnd(HIDDEN, FFN),
        }
    return state


def _reference_logits(
    state: dict[str, torch.Tensor],
    raw: dict[str, object],
    input_ids: torch.Tensor,
    prefix_embedding: torch.Tensor | None = None,
) -> torch.Tensor:
    """ChatGLM2's forward, written independently from its semantics on the ORIGINAL names. (b, s) -> (b, s, vocab)."""
    eps = float(raw["layernorm_epsilon"])  # type: ignore[arg-type]
    mq = bool(raw["multi_query_attention"])
    kv = GROUPS if mq else HEADS
    x = state["transformer.embedding.word_embeddings.weight"][input_ids]  # (b, s, h)
    b, s, _ = x.shape
    rot = ROT
    theta = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))  # (rot / 2,)
    angles = torch.outer(torch.arange(s).float(), theta)  # positions start at 0 even after a prefix
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]  # (1, s, 1, rot / 2)

    def rope(t: torch.Tensor) -> torch.Tensor:  # (b, s, n, d): rotate interleaved pairs (x0, x1) of the first half
        pairs, rest = t[..., :rot].reshape(*t.shape[:-1], rot // 2, 2), t[..., rot:]
        x0, x1 = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1).flatten(-2)
        return torch.cat([rotated, rest], dim=-1)

    def rms(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w * (t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps))

    pre_len = 0
    if prefix_embedding is not None:  # (p, layers * 2 * groups * d) -> (p, layers * 2, groups, d)
        pre_len = prefix_embedding.shape[0]
        prefix = prefix_embedding.view(pre_len, LAYERS * 2, GROUPS, HEAD_DIM)
    causal = torch.ones(s, s).tril().bool()
    mask = torch.cat([torch.ones(s, pre_len, dtype=torch.bool), causal], dim=1)  # (s, p + s)
    for i in range(LAYERS):
        p = f"transformer.encoder.layers.{i}."
        h = rms(x, state[p + "input_layernorm.weight"])
        qkv = (
            h @ state[p + "self_attention.query_key_value.weight"].T + state[p + "self_attention.query_key_value.bias"]
        )
        if mq:
            q, k, v = qkv.split([HEADS * HEAD_DIM, kv * HEAD_DIM, kv * HEAD_DIM], dim=-1)
            q, k, v = q.view(b, s, HEADS, HEAD_DIM), k.view(b, s, kv, HEAD_DIM), v.view(b, s, kv, HEAD_DIM)
        else:
            q, k, v = qkv.view(b, s, HEADS, 3 * HEAD_DIM).split(HEAD_DIM, dim=-1)
        q, k = rope(q), rope(k)
        if prefix_embedding is not None:
            k = torch.cat([prefix[:, 2 * i].expand(b, -1, -1, -1), k], dim=1)
            v = torch.cat([prefix[:, 2 * i + 1].expand(b, -1, -1, -1), v], dim=1)
        k = k.repeat_interleave(HEADS // kv, dim=2)  # head j reads group j // (heads / groups)
        v = v.repeat_interleave(HEADS // kv, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(HEAD_DIM)
        probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        ctx = torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, s, HEADS * HEAD_DIM)
        x = x + ctx @ state[p + "self_attention.dense.weight"].T
        h = rms(x, state[p + "post_attention_layernorm.weight"])
        gate, up = (h @ state[p + "mlp.dense_h_to_4h.weight"].T).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ state[p + "mlp.dense_4h_to_h.weight"].T
    x = rms(x, state["transformer.encoder.final_layernorm.weight"])
    return x @ state["transformer.output_layer.weight"].T


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sp") / "tokenizer.model"
    _train_sentencepiece(path)
    return path


def _make_checkpoint(folder: Path, sp_model: Path, multi_query: bool = True, shards: int = 2) -> tuple[dict, dict]:
    """Write a ChatGLM2-layout folder: config.json, safetensors shards + index, tokenizer.model."""
    folder.mkdir(parents=True, exist_ok=True)
    n = spm.SentencePieceProcessor(model_file=str(sp_model)).get_piece_size()
    raw = _raw_config(vocab=n + 16, multi_query=multi_query)
    state = _random_state(raw)
    (folder / "config.json").write_text(json.dumps(raw), encoding="utf-8")
    (folder / "tokenizer.model").write_bytes(sp_model.read_bytes())
    names = sorted(state)
    weight_map = {}
    for s in range(shards):
        shard = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in names[s::shards]}
        save_file(part, str(folder / shard))
        weight_map |= {k: shard for k in part}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}), encoding="utf-8")
    return raw, state


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, sp_model: Path) -> tuple[Path, dict, dict]:
    folder = tmp_path_factory.mktemp("chatglm2")
    raw, state = _make_checkpoint(folder, sp_model)
    return folder, raw, state


def test_loads_as_glm_and_matches_reference(checkpoint: tuple[Path, dict, dict]) -> None:
    folder, raw, state = checkpoint
    model, _ = load_llm(folder)
    assert type(model).__name__ == "GlmForCausalLM"
    assert model.config.num_key_value_heads == GROUPS
    assert model.config.rope_parameters["partial_rotary_factor"] == 0.5
    ids = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    reference = _reference_logits(state, raw, ids)
    assert ours.shape == (2, 11, raw["padded_vocab_size"])
    torch.testing.assert_close(ours, reference, atol=REFERENCE, rtol=REFERENCE)
    assert llm_fingerprint(model)["model_type"] == "glm"


def test_non_multi_query_layout_matches_reference(tmp_path: Path, sp_model: Path) -> None:
    raw, state = _make_checkpoint(tmp_path, sp_model, multi_query=False, shards=1)
    model, _ = load_llm(tmp_path)
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids).logits, _reference_logits(state, raw, ids), atol=REFERENCE, rtol=REFERENCE
        )


def test_bin_shards_load_weights_only(tmp_path: Path, sp_model: Path) -> None:
    raw, state = _make_checkpoint(tmp_path, sp_model, shards=1)
    for f in tmp_path.glob("*.safetensors*"):
        f.unlink()
    (tmp_path / "model.safetensors.index.json").unlink(missing_ok=True)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"pickle-format weight file.*allow_pickle_weights=True"):
        load_llm(tmp_path)  # nothing a user loads is a pickle unless they opt in
    model, _ = load_llm(tmp_path, allow_pickle_weights=True)
    ids = torch.randint(0, 300, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids).logits, _reference_logits(state, raw, ids), atol=REFERENCE, rtol=REFERENCE
        )


def test_kv_cache_matches_full_recompute(checkpoint: tuple[Path, dict, dict]) -> None:
    model, _ = load_llm(checkpoint[0])
    ids = torch.randint(0, 300, (1, 10))
    with torch.no_grad():
        full = model(input_ids=ids).logits
        first = model(input_ids=ids[:, :6], use_cache=True)
        step = model(input_ids=ids[:, 6:], cache=first.cache, use_cache=True).logits
    torch.testing.assert_close(torch.cat([first.logits, step], dim=1), full, atol=SAME_MATH, rtol=SAME_MATH)


def test_greedy_generate_matches_argmax_loop(checkpoint: tuple[Path, dict, dict]) -> None:
    folder, raw, state = checkpoint
    model, tokenizer = load_llm(folder)
    ids = tokenizer("你好", return_tensors="pt").input_ids
    out = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, eos_token_id=None)
    seq = ids
    for _ in range(6):  # the original model's math, one full recompute per token
        nxt = _reference_logits(state, raw, seq)[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    assert out.tolist() == seq.tolist()


def test_tokenizer_prefix_tokens_and_chat_template(sp_model: Path) -> None:
    tokenizer = ChatGLM2Tokenizer(vocab_file=str(sp_model))
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    n = sp.get_piece_size()
    assert tokenizer.get_command("[gMASK]") == n + 1 and tokenizer.get_command("sop") == n + 3
    assert tokenizer.eos_token_id == sp.eos_id() and tokenizer.pad_token_id == sp.unk_id()
    assert tokenizer.padding_side == "left"
    text = "你好，今天过得怎么样？"
    assert tokenizer(text).input_ids == [n + 1, n + 3, *sp.encode(text)]  # [gMASK] sop + SentencePiece
    messages = [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "我很高兴见到你。"},
        {"role": "user", "content": "你为什么生气？"},
    ]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # what ChatGLM2's own build_prompt writes for this query after this history
    expected_prompt = "[Round 1]\n\n问：你好\n\n答：我很高兴见到你。\n\n[Round 2]\n\n问：你为什么生气？\n\n答："
    assert rendered == "[gMASK]<sop>" + expected_prompt
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    ids = encoded["input_ids"]
    assert ids == [n + 1, n + 3, *sp.encode(expected_prompt)]  # exactly what ChatGLM2's tokenizer([prompt]) gives
    assert tokenizer.decode(ids, skip_special_tokens=True) == expected_prompt
    batch = tokenizer(["你好", "The quick brown fox"], padding=True, return_tensors="pt")
    assert batch.attention_mask[0, 0] == 0 and batch.input_ids[0, 0] == sp.unk_id()  # left padding with unk


def test_tokenizer_save_round_trip(tmp_path: Path, sp_model: Path) -> None:
    tokenizer = ChatGLM2Tokenizer(vocab_file=str(sp_model))
    tokenizer.save_pretrained(tmp_path)
    again = ChatGLM2Tokenizer(vocab_file=str(tmp_path / "tokenizer.model"))
    assert again("I am so happy").input_ids == tokenizer("I am so happy").input_ids


def _official_prefix(folder: Path, pre_seq_len: int, seed: int = 1) -> torch.Tensor:
    """A checkpoint as ChatGLM2's ptuning recipe writes it: only transformer.prefix_encoder.* in pytorch_model.bin."""
    folder.mkdir(parents=True, exist_ok=True)
    emb = torch.randn(pre_seq_len, LAYERS * 2 * HEAD_DIM * GROUPS, generator=torch.Generator().manual_seed(seed))
    torch.save({"transformer.prefix_encoder.embedding.weight": emb}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"model_type": "chatglm", "pre_seq_len": pre_seq_len}), "utf-8")
    return emb


def test_official_ptuning_checkpoint_matches_reference(tmp_path: Path, checkpoint: tuple[Path, dict, dict]) -> None:
    folder, raw, state = checkpoint
    emb = _official_prefix(tmp_path / "ptuning", pre_seq_len=5)
    model, _ = load_llm(folder, prefix=tmp_path / "ptuning", allow_pickle_weights=True)
    assert prefix_encoder_of(model) is not None and prefix_encoder_of(model).config.pre_seq_len == 5
    ids = torch.randint(0, 300, (2, 7))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        plain = _reference_logits(state, raw, ids)
    torch.testing.assert_close(ours, _reference_logits(state, raw, ids, emb), atol=REFERENCE, rtol=REFERENCE)
    assert (ours - plain).abs().max() > 1e-2  # the prefix changes the output


def test_prefix_generate_with_inputs_embeds(tmp_path: Path, checkpoint: tuple[Path, dict, dict]) -> None:
    folder, raw, state = checkpoint
    emb = _official_prefix(tmp_path / "ptuning", pre_seq_len=4)
    model, tokenizer = load_llm(folder, prefix=tmp_path / "ptuning", allow_pickle_weights=True)
    ids = tokenizer("你好", return_tensors="pt").input_ids
    embeds = model.get_input_embeddings()(ids)
    with torch.no_grad():
        by_ids = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, eos_token_id=None)
        by_embeds = model.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=5,
            do_sample=False,
            eos_token_id=None,
        )
    seq = ids
    for _ in range(5):  # reference: ChatGLM2 with the prefix, full recompute per step
        seq = torch.cat([seq, _reference_logits(state, raw, seq, emb)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert by_ids.tolist() == seq.tolist()
    assert by_embeds.tolist() == seq[:, ids.shape[1] :].tolist()  # generate(inputs_embeds) returns new tokens only


def test_official_projection_prefix_matches_reference(tmp_path: Path, checkpoint: tuple[Path, dict, dict]) -> None:
    folder, raw, state = checkpoint
    gen = torch.Generator().manual_seed(3)
    kv_size = LAYERS * 2 * HEAD_DIM * GROUPS
    weights = {  # prefix_projection=True: Embedding -> Linear(kv, hidden) -> Tanh -> Linear(hidden, kv)
        "embedding.weight": torch.randn(3, kv_size, generator=gen),
        "trans.0.weight": torch.randn(HIDDEN, kv_size, generator=gen) * 0.1,
        "trans.0.bias": torch.randn(HIDDEN, generator=gen) * 0.1,
        "trans.2.weight": torch.randn(kv_size, HIDDEN, generator=gen),
        "trans.2.bias": torch.randn(kv_size, generator=gen),
    }
    (tmp_path / "pt").mkdir()
    save_file(
        {"transformer.prefix_encoder." + k: v for k, v in weights.items()}, str(tmp_path / "pt" / "model.safetensors")
    )
    model, _ = load_llm(folder, prefix=tmp_path / "pt")
    hidden = torch.tanh(weights["embedding.weight"] @ weights["trans.0.weight"].T + weights["trans.0.bias"])
    rows = hidden @ weights["trans.2.weight"].T + weights["trans.2.bias"]  # (p, layers * 2 * groups * d)
    ids = torch.randint(0, 300, (1, 6))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    torch.testing.assert_close(ours, _reference_logits(state, raw, ids, rows), atol=REFERENCE, rtol=REFERENCE)


def test_prefix_merged_into_base_checkpoint_is_applied(tmp_path: Path, sp_model: Path) -> None:
    raw, state = _make_checkpoint(tmp_path, sp_model, shards=1)
    emb = torch.randn(4, LAYERS * 2 * HEAD_DIM * GROUPS)
    for f in tmp_path.glob("*.safetensors*"):
        f.unlink()
    (tmp_path / "model.safetensors.index.json").unlink(missing_ok=True)
    save_file({**state, "transformer.prefix_encoder.embedding.weight": emb}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({**raw, "pre_seq_len": 4}), encoding="utf-8")
    model, _ = load_llm(tmp_path)
    ids = torch.randint(0, 300, (1, 5))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    torch.testing.assert_close(ours, _reference_logits(state, raw, ids, emb), atol=REFERENCE, rtol=REFERENCE)


def test_official_prefix_for_other_model_is_refused(tmp_path: Path, checkpoint: tuple[Path, dict, dict]) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    torch.save({"transformer.prefix_encoder.embedding.weight": torch.zeros(4, 100)}, folder / "pytorch_model.bin")
    with pytest.raises(MismatchError, match="values"):
        load_llm(checkpoint[0], prefix=folder, allow_pickle_weights=True)
    model, _ = load_llm(checkpoint[0])
    _official_prefix(tmp_path / "ok", pre_seq_len=4)
    with pytest.raises(MismatchError, match="pre_seq_len"):
        PrefixEncoder.load(tmp_path / "ok", model=model, pre_seq_len=128, allow_pickle_weights=True)


def test_bad_config_is_a_clear_error(tmp_path: Path, sp_model: Path) -> None:
    raw, _ = _make_checkpoint(tmp_path, sp_model, shards=1)
    (tmp_path / "config.json").write_text(json.dumps({**raw, "quantization_bit": 4}), encoding="utf-8")
    with pytest.raises(InputError, match="quantization_bit"):
        load_llm(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in raw.items() if k != "padded_vocab_size"}))
    with pytest.raises(InputError, match="padded_vocab_size"):
        load_llm(tmp_path)


def test_bfloat16_load_with_prefix_stays_close(tmp_path: Path, checkpoint: tuple[Path, dict, dict]) -> None:
    folder, raw, state = checkpoint
    emb = _official_prefix(tmp_path / "ptuning", pre_seq_len=3)
    model, _ = load_llm(folder, prefix=tmp_path / "ptuning", dtype=torch.bfloat16, allow_pickle_weights=True)
    assert model.dtype == torch.bfloat16 and prefix_encoder_of(model).embedding.weight.dtype == torch.float32
    ids = torch.randint(0, 300, (1, 6))
    with torch.no_grad():
        ours = model(input_ids=ids).logits.float()
    reference = _reference_logits(state, raw, ids, emb)
    assert (ours - reference).abs().max() < 0.05 * reference.abs().max()
