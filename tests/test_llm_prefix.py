"""p-tuning v2 prefixes on a tiny random Llama: layout, equivalence with past keys/values, generate, training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from llm_fakes import tiny_llama
from tolerances import SAME_MATH
from transformers import LlamaForCausalLM
from transformers.generation.streamers import BaseStreamer

from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.models.llm import llm_fingerprint
from elmd_sdk.models.prefix import PrefixConfig, PrefixEncoder, attach_prefix, detach_prefix, prefix_encoder_of

LAYERS, KV_HEADS, HEAD_DIM = 2, 2, 8


def _tiny_llama(seed: int = 0, layers: int = LAYERS) -> LlamaForCausalLM:
    return tiny_llama(
        seed=seed,
        vocab_size=64,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


@pytest.fixture
def model() -> LlamaForCausalLM:
    return _tiny_llama()


def _prefix_from_kv(model: LlamaForCausalLM, tokens: torch.Tensor) -> PrefixEncoder:
    """A prefix whose keys/values are exactly the model's own cache for ``tokens`` (positions 0..p-1)."""
    with torch.no_grad():
        cache = model(input_ids=tokens, use_cache=True).cache
    pre_len = tokens.shape[1]
    encoder = PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=pre_len))
    rows = torch.zeros(pre_len, LAYERS * 2, KV_HEADS, HEAD_DIM)  # layout (p, layers * 2, kv, d)
    for i in range(LAYERS):
        rows[:, 2 * i] = cache.layers[i].keys[0].transpose(0, 1)  # (kv, p, d) -> (p, kv, d)
        rows[:, 2 * i + 1] = cache.layers[i].values[0].transpose(0, 1)
    with torch.no_grad():
        encoder.embedding.weight.copy_(rows.reshape(pre_len, -1))
    return encoder.eval()


def test_encoder_shapes_and_layout() -> None:
    config = PrefixConfig(pre_seq_len=3, num_layers=2, num_kv_heads=2, head_dim=4, dropout=0.0)
    encoder = PrefixEncoder(config)
    with torch.no_grad():
        encoder.embedding.weight.copy_(torch.arange(3 * config.kv_size, dtype=torch.float).view(3, -1))
    kv = encoder(batch_size=5)
    assert len(kv) == 2 and all(t.shape == (5, 2, 3, 4) for pair in kv for t in pair)
    # row r, layer i, key (0) or value (1), head h, channel c sits at r * kv_size + ((2 i + kv) * heads + h) * d + c
    layer, is_value, head, pos, chan = 1, 1, 0, 2, 3
    expected = pos * config.kv_size + ((2 * layer + is_value) * 2 + head) * 4 + chan
    assert kv[layer][is_value][4, head, pos, chan].item() == expected


def test_prefix_equals_past_keys_values_with_positions_from_zero(model: LlamaForCausalLM) -> None:
    prompt, suffix = torch.tensor([[5, 9, 3]]), torch.tensor([[7, 11, 4, 8]])
    attach_prefix(model, _prefix_from_kv(model, prompt))
    with torch.no_grad():
        prefixed = model(input_ids=suffix).logits
        detach_prefix(model)
        both = torch.cat([prompt, suffix], dim=1)
        positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3]])  # ChatGLM2: tokens after the prefix start at position 0
        plain = model(input_ids=both, position_ids=positions).logits[:, 3:]
    torch.testing.assert_close(prefixed, plain, atol=SAME_MATH, rtol=SAME_MATH)


def test_generate_with_prefix_equals_plain_generate_over_past(model: LlamaForCausalLM) -> None:
    prompt, suffix = torch.tensor([[5, 9, 3]]), torch.tensor([[7, 11, 4, 8]])
    encoder = _prefix_from_kv(model, prompt)
    both = torch.cat([prompt, suffix], dim=1)
    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3]])
    plain = model.generate(input_ids=both, position_ids=positions, max_new_tokens=8, do_sample=False, eos_token_id=None)
    attach_prefix(model, encoder)
    by_ids = model.generate(input_ids=suffix, max_new_tokens=8, do_sample=False, eos_token_id=None)
    embeds = model.get_input_embeddings()(suffix)
    by_embeds = model.generate(inputs_embeds=embeds, max_new_tokens=8, do_sample=False, eos_token_id=None)
    assert by_ids[:, 4:].tolist() == plain[:, 7:].tolist()
    assert by_embeds.tolist() == plain[:, 7:].tolist()


def test_prefix_changes_logits_and_detach_restores(model: LlamaForCausalLM) -> None:
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        attach_prefix(model, PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=4)).eval())
        with_prefix = model(input_ids=ids).logits
        assert prefix_encoder_of(model) is not None
        detach_prefix(model)
        after = model(input_ids=ids).logits
    assert (with_prefix - before).abs().max() > 1e-3
    torch.testing.assert_close(after, before)
    assert prefix_encoder_of(model) is None and model.config._attn_implementation == "sdpa"


def test_left_padded_batch_generate_matches_single(model: LlamaForCausalLM) -> None:
    attach_prefix(model, PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=3)).eval())
    a, b = [5, 6, 7, 8, 9], [10, 11]
    batch = torch.tensor([a, [0, 0, 0, *b]])
    mask = torch.tensor([[1] * 5, [0, 0, 0, 1, 1]])
    out = model.generate(input_ids=batch, attention_mask=mask, max_new_tokens=5, do_sample=False, eos_token_id=None)
    single_a = model.generate(input_ids=torch.tensor([a]), max_new_tokens=5, do_sample=False, eos_token_id=None)
    single_b = model.generate(input_ids=torch.tensor([b]), max_new_tokens=5, do_sample=False, eos_token_id=None)
    assert out[0, 5:].tolist() == single_a[0, 5:].tolist()
    assert out[1, 5:].tolist() == single_b[0, 2:].tolist()


def test_kv_cache_with_prefix_matches_full_recompute(model: LlamaForCausalLM) -> None:
    attach_prefix(model, PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=3)).eval())
    ids = torch.tensor([[3, 9, 4, 12, 5, 7]])
    with torch.no_grad():
        full = model(input_ids=ids).logits
        first = model(input_ids=ids[:, :4], use_cache=True)
        rest = model(input_ids=ids[:, 4:], cache=first.cache, use_cache=True).logits
    torch.testing.assert_close(torch.cat([first.logits, rest], dim=1), full, atol=SAME_MATH, rtol=SAME_MATH)


class _Collect(BaseStreamer):
    def __init__(self) -> None:
        self.chunks: list[list[int]] = []

    def put(self, value: torch.Tensor) -> None:
        self.chunks.append(value.flatten().tolist())

    def end(self) -> None:
        self.chunks.append([])


def test_streamer_sees_generated_tokens(model: LlamaForCausalLM) -> None:
    attach_prefix(model, PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=2)).eval())
    streamer = _Collect()
    ids = torch.tensor([[3, 4]])
    out = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False, eos_token_id=None, streamer=streamer)
    assert [t for chunk in streamer.chunks[1:] for t in chunk] == out[0, 2:].tolist()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradients_reach_only_the_prefix(model: LlamaForCausalLM, checkpointing: bool) -> None:
    config = PrefixConfig.for_model(model, pre_seq_len=3)
    config.dropout = 0.0
    grad = _prefix_gradient(model, config, checkpointing)
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("prefix_encoder."))
    # Same gradient with and without checkpointing (computed again on a fresh model for the other setting).
    torch.testing.assert_close(_prefix_gradient(_tiny_llama(), config, not checkpointing), grad)


def _prefix_gradient(model: LlamaForCausalLM, config: PrefixConfig, checkpointing: bool) -> torch.Tensor | None:
    """The prefix embedding's gradient of a language-modelling loss, with only the prefix trainable."""
    torch.manual_seed(1)
    encoder = PrefixEncoder(config)
    attach_prefix(model, encoder)
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("prefix_encoder.")
    model.train()
    if checkpointing:
        model.activation_checkpointing_enable()
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    embeds = model.get_input_embeddings()(ids).detach()
    model(inputs_embeds=embeds, labels=ids).loss.backward()
    return encoder.embedding.weight.grad


def test_projection_prefix_shapes(model: LlamaForCausalLM) -> None:
    encoder = PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=4, prefix_projection=True))
    assert encoder.trans is not None and encoder.trans[0].out_features == 32
    attach_prefix(model, encoder.eval())
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 64)


def test_save_load_round_trip_and_mismatches(tmp_path: Path, model: LlamaForCausalLM) -> None:
    encoder = PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=6))
    encoder.save(tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["prefix.json", "prefix.safetensors"]
    loaded = PrefixEncoder.load(tmp_path / "p", model=model, pre_seq_len=6)
    torch.testing.assert_close(loaded.embedding.weight, encoder.embedding.weight)
    assert loaded.config == encoder.config
    with pytest.raises(MismatchError, match="pre_seq_len"):
        PrefixEncoder.load(tmp_path / "p", model=model, pre_seq_len=128)
    with pytest.raises(MismatchError, match="num_layers"):
        PrefixEncoder.load(tmp_path / "p", model=_tiny_llama(layers=3))
    retrained = _tiny_llama()
    retrained.config.rms_norm_eps = 1e-3  # same shapes, different base config
    with pytest.raises(MismatchError, match="base_config_sha256"):
        PrefixEncoder.load(tmp_path / "p", model=retrained)


def test_bad_prefix_folders_are_clear_errors(tmp_path: Path, model: LlamaForCausalLM) -> None:
    with pytest.raises(InputError, match="not found"):
        PrefixEncoder.load(tmp_path / "missing", model=model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"prefix\.json"):
        PrefixEncoder.load(tmp_path / "empty", model=model)
    PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=2)).save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "prefix.json").read_text())
    (tmp_path / "p" / "prefix.json").write_text(json.dumps({**meta, "pre_seq_len": 0}))
    with pytest.raises(InputError, match=r"prefix\.json: field 'pre_seq_len'"):
        PrefixEncoder.load(tmp_path / "p", model=model)


def test_fingerprint_ignores_the_attached_prefix(model: LlamaForCausalLM) -> None:
    before = llm_fingerprint(model)
    attach_prefix(model, PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=2)))
    assert llm_fingerprint(model) == before
