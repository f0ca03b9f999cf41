"""p-tuning v2 prefixes as PEFT prefix-tuning adapters: PEFT's logits equal elmd-sdk's, and EERG bundles carry one."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from llm_fakes import tiny_llama
from peft import PeftModel
from tolerances import SAME_MATH
from train_fakes import save_tiny_llm, text_samples
from transformers import GlmConfig, GlmForCausalLM

from elmd_sdk.bundle import load_bundle
from elmd_sdk.io import load_tensors, read_json
from elmd_sdk.models.llm import load_llm
from elmd_sdk.models.peft_adapter import PEFT_PREFIX_TENSOR, save_peft_adapter
from elmd_sdk.models.prefix import PrefixConfig, PrefixEncoder, attach_prefix, detach_prefix

PRE_LEN = 5
IDS = torch.tensor([[5, 9, 3, 7, 11, 4, 8, 1, 2, 3, 4, 6, 10, 12]])


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    with warnings.catch_warnings():  # PEFT's prefix goes through transformers' deprecated `past_key_values`
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _llama() -> Any:
    return tiny_llama(vocab_size=64, initializer_range=0.2)


def _glm() -> Any:
    """ChatGLM2's architecture: interleaved rotary on half of each head, rope_ratio 50 as in ChatGLM2-6B-32K."""
    torch.manual_seed(0)
    config = GlmConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=512, initializer_range=0.2, pad_token_id=0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0 * 50, "partial_rotary_factor": 0.5},
    )  # fmt: skip
    return GlmForCausalLM(config).eval()


def _prefix(model: Any, projection: bool) -> PrefixEncoder:
    torch.manual_seed(1)
    encoder = PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=PRE_LEN, prefix_projection=projection))
    with torch.no_grad():
        encoder.embedding.weight.normal_()  # a prefix as large as trained keys get, not the tiny initial one
    return encoder.eval()


def _logits(model: Any, **inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("make", [_llama, _glm], ids=["llama", "chatglm2-glm"])
def test_peft_loads_the_adapter_with_the_logits_of_elmd_sdk(make: Any, projection: bool, tmp_path: Path) -> None:
    model = make()
    encoder = _prefix(model, projection)
    padded = torch.tensor([[0, 0, 0, 5, 9, 3, 7], [7, 11, 4, 8, 6, 2, 13]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7])
    attach_prefix(model, encoder)
    ours, ours_padded = _logits(model, input_ids=IDS), _logits(model, input_ids=padded, attention_mask=mask)
    detach_prefix(model)
    save_peft_adapter(encoder, model, tmp_path, "base-name")
    config = read_json(tmp_path / "adapter_config.json")
    assert (config["peft_type"], config["task_type"], config["num_virtual_tokens"]) == ("PREFIX_TUNING", "CAUSAL_LM", 5)
    assert (config["num_layers"], config["num_attention_heads"], config["token_dim"]) == (2, 2, 16)  # kv heads x 8
    assert config["base_model_name_or_path"] == "base-name" and config["prefix_projection"] is False
    peft_model = PeftModel.from_pretrained(model, tmp_path)
    theirs, theirs_padded = (
        _logits(peft_model, input_ids=IDS),
        _logits(peft_model, input_ids=padded, attention_mask=mask),
    )
    assert ours.abs().max() > 2.0  # logits large enough for the tolerance below to mean something
    torch.testing.assert_close(theirs, ours, atol=SAME_MATH, rtol=SAME_MATH)
    torch.testing.assert_close(theirs_padded[0, 3:], ours_padded[0, 3:], atol=SAME_MATH, rtol=SAME_MATH)  # real tokens
    torch.testing.assert_close(theirs_padded[1], ours_padded[1], atol=SAME_MATH, rtol=SAME_MATH)


def test_keys_are_turned_to_position_pre_seq_len_and_values_kept(tmp_path: Path) -> None:
    # One layer, one key/value head of size 4: Llama rotates the pairs (0, 2) and (1, 3) by p * 10000^(-j/2).
    model = tiny_llama(vocab_size=16, hidden_size=8, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=1)
    encoder = PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len=2))
    rows = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 0.0, 0.0, 5.0, 6.0, 7.0, 8.0]])
    with torch.no_grad():
        encoder.embedding.weight.copy_(rows)  # (p, [key | value])
    save_peft_adapter(encoder, model, tmp_path)
    saved = load_tensors(tmp_path / "adapter_model.safetensors")[PEFT_PREFIX_TENSOR]
    c, s, c_slow, s_slow = math.cos(2), math.sin(2), 2 * math.cos(0.02), 2 * math.sin(0.02)  # p = 2
    expected = torch.tensor([[c, 0.0, s, 0.0, 1.0, 2.0, 3.0, 4.0], [0.0, c_slow, 0.0, s_slow, 5.0, 6.0, 7.0, 8.0]])
    torch.testing.assert_close(saved, expected, atol=1e-6, rtol=1e-6)


def test_peft_generation_is_why_elmd_sdk_keeps_its_own_attention_path(tmp_path: Path) -> None:
    """PEFT 0.21.2 on transformers 5.24: generate drops the prefix, and refuses inputs_embeds (the video tokens).

    If this fails after an upgrade, PEFT's generation may have been fixed: see elmd_sdk/models/peft_adapter.py."""
    model = _llama()
    plain = _logits(model, input_ids=IDS)[:, -1]
    encoder = _prefix(model, projection=False)
    save_peft_adapter(encoder, model, tmp_path)
    peft_model = PeftModel.from_pretrained(model, tmp_path)
    prefixed = _logits(peft_model, input_ids=IDS)[:, -1]
    with torch.no_grad():
        out = peft_model.generate(
            input_ids=IDS, max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
        assert (out.scores[0] - prefixed).abs().max() > 0.1  # not the prefixed model's next-token logits ...
        torch.testing.assert_close(out.scores[0], plain, atol=SAME_MATH, rtol=SAME_MATH)  # ... the base model's
        with pytest.raises(ValueError, match="doesn't have its forwarding implemented"):
            peft_model.generate(inputs_embeds=model.get_input_embeddings()(IDS), max_new_tokens=1)


def test_an_eerg_bundle_prefix_loads_in_peft_with_the_bundle_logits(tmp_path: Path) -> None:
    from elmd_sdk.trainers.eerg import EergConfig, train_eerg
    from elmd_sdk.trainers.train_config import TrainConfig

    labels = ("happy", "sad", "anger")
    llm_dir = save_tiny_llm(tmp_path / "llm")
    config = EergConfig(
        llm=str(llm_dir), labels=labels, use_retrieval=False, use_video=False, pre_seq_len=3, lr=0.05,
        train=TrainConfig(epochs=1, batch_size=3, progress=False),
    )  # fmt: skip
    train_eerg(config, text_samples(3, labels), text_samples(3, labels), tmp_path / "bundle")
    manifest, paths = load_bundle(tmp_path / "bundle")
    assert paths.prefix is not None and paths.base_llm is not None
    assert read_json(paths.prefix / "adapter_config.json")["base_model_name_or_path"] == manifest.base_llm
    ours = _logits(load_llm(paths.base_llm, prefix=paths.prefix)[0], input_ids=IDS)
    base = load_llm(paths.base_llm)[0]
    peft_model = PeftModel.from_pretrained(base, paths.prefix)
    assert (ours - _logits(base, input_ids=IDS)).abs().max() > 0.1  # the trained prefix changes the logits
    torch.testing.assert_close(_logits(peft_model, input_ids=IDS), ours, atol=SAME_MATH, rtol=SAME_MATH)


def test_the_adapter_is_written_for_inference_under_peft_s_file_names(tmp_path: Path) -> None:
    model = _llama()
    encoder = _prefix(model, projection=True)
    assert save_peft_adapter(encoder, model, tmp_path / "adapter") == tmp_path / "adapter"
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = read_json(tmp_path / "adapter" / "adapter_config.json")
    assert config["inference_mode"] is True and config["prefix_projection"] is False  # rows saved after the MLP
    assert config["base_model_name_or_path"] is None
    saved = load_tensors(tmp_path / "adapter" / "adapter_model.safetensors")
    assert list(saved) == [PEFT_PREFIX_TENSOR] and saved[PEFT_PREFIX_TENSOR].shape == (PRE_LEN, 2 * 2 * 2 * 8)
    values = encoder.rows().detach().view(PRE_LEN, 2, 2, 2, 8)[:, :, 1]  # (p, layers, [values], heads, d)
    torch.testing.assert_close(saved[PEFT_PREFIX_TENSOR].view(PRE_LEN, 2, 2, 2, 8)[:, :, 1], values)  # kept as is
