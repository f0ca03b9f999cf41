"""A prefix started from the model's own keys/values of real tokens (Li & Liang 2021) instead of random numbers."""

from __future__ import annotations

import pytest
import torch
from llm_fakes import tiny_llm
from tolerances import SAME_MATH

from elmd_sdk.errors import InputError
from elmd_sdk.models.prefix import PrefixConfig, attach_prefix, detach_prefix
from elmd_sdk.models.prefix_init import prefix_from_tokens


@torch.no_grad()
def test_a_one_token_prefix_acts_as_that_token_at_position_zero() -> None:
    """Prefix keys carry no rotary position, so a prefix made from token t equals t placed at position 0 with the
    input's positions also counted from 0: the layout (layers, key/value, heads) is then checked exactly."""
    model, _ = tiny_llm(layers=3)
    model.eval()
    token, inputs = 7, [11, 12, 13, 14]
    prefix = prefix_from_tokens(model, [token], PrefixConfig.for_model(model, pre_seq_len=1))
    prefix.eval()
    attach_prefix(model, prefix)
    prefixed = model(input_ids=torch.tensor([inputs])).logits  # (1, 4, vocab)
    detach_prefix(model)
    positions = torch.tensor([[0, 0, 1, 2, 3]])  # t at 0; the input from 0 as after a prefix
    plain = model(input_ids=torch.tensor([[token, *inputs]]), position_ids=positions).logits[:, 1:]
    torch.testing.assert_close(prefixed, plain, rtol=SAME_MATH, atol=SAME_MATH)


def test_tokens_are_cycled_to_the_prefix_length_and_rows_differ_from_random() -> None:
    model, _ = tiny_llm()
    config = PrefixConfig.for_model(model, pre_seq_len=5)
    prefix = prefix_from_tokens(model, [3, 4], config)
    assert prefix.embedding.weight.shape == (5, config.kv_size)
    # positions 0 and 2 hold the same token, but position 2 saw more context: equal in layer 0's value only
    rows = prefix.embedding.weight.view(5, config.num_layers * 2, -1)  # (p, layers * 2, kv * d)
    torch.testing.assert_close(rows[0, 1], rows[2, 1])  # layer 0's value projection of token 3 needs no context
    assert not torch.allclose(rows[0, 2], rows[2, 2])  # layer 1's key depends on what came before


def test_refuses_a_projected_prefix_an_empty_text_and_a_model_with_a_prefix() -> None:
    model, _ = tiny_llm()
    with pytest.raises(InputError, match="prefix_projection"):
        prefix_from_tokens(model, [1], PrefixConfig.for_model(model, 2, prefix_projection=True))
    with pytest.raises(InputError, match="at least one token"):
        prefix_from_tokens(model, [], PrefixConfig.for_model(model, 2))
    attach_prefix(model, prefix_from_tokens(model, [1], PrefixConfig.for_model(model, 2)))
    with pytest.raises(InputError, match="detach"):
        prefix_from_tokens(model, [1], PrefixConfig.for_model(model, 2))
