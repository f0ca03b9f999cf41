"""ChatGLM2's config.json read field by field into GlmConfig: every setting that changes the computation is carried
over (a field silently left at its default gives a model that loads and runs, only wrongly)."""

from __future__ import annotations

from typing import Any

import pytest

from elmd_sdk.models.chatglm2 import glm_config_from_chatglm2

RAW: dict[str, Any] = {  # the settings of a ChatGLM2-6B-32K-like checkpoint, shrunk and with unusual values
    "hidden_size": 48,
    "num_attention_heads": 4,
    "kv_channels": 16,  # head width; not hidden_size / heads (12)
    "multi_query_attention": True,
    "multi_query_group_num": 2,
    "ffn_hidden_size": 96,
    "num_layers": 3,
    "padded_vocab_size": 320,
    "seq_length": 777,
    "layernorm_epsilon": 3e-6,
    "rope_ratio": 50,  # ChatGLM2-6B-32K: rotary base 10000 * 50
    "attention_dropout": 0.0,
    "add_qkv_bias": True,
    "eos_token_id": 5,
    "pad_token_id": 7,
}


def test_every_computing_setting_is_carried_over() -> None:
    config = glm_config_from_chatglm2(RAW)
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (48, 96, 3)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 2, 16)
    assert (config.vocab_size, config.max_position_embeddings) == (320, 777)
    assert config.rms_norm_eps == 3e-6
    assert config.rope_parameters["rope_theta"] == 500_000.0  # 10000 * rope_ratio
    assert config.rope_parameters["partial_rotary_factor"] == 0.5  # rotary on the first half of each head
    assert config.attention_bias is True and config.tie_word_embeddings is False
    assert (config.eos_token_id, config.pad_token_id) == (5, 7)


@pytest.mark.parametrize(("ratio", "theta"), [(None, 10_000.0), (1, 10_000.0), (2.5, 25_000.0)])
def test_the_rotary_base_is_ten_thousand_times_rope_ratio(ratio: float | None, theta: float) -> None:
    raw = {k: v for k, v in RAW.items() if k != "rope_ratio"}
    if ratio is not None:
        raw["rope_ratio"] = ratio
    assert glm_config_from_chatglm2(raw).rope_parameters["rope_theta"] == theta


def test_without_multi_query_every_head_has_its_own_keys_and_values() -> None:
    config = glm_config_from_chatglm2({**RAW, "multi_query_attention": False})
    assert config.num_key_value_heads == 4
