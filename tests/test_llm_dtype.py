"""Weight precision at load (``elmd_sdk.models.precision`` / ``quantize``): the dtype names, weight-only int8/int4 on
the CPU with torch's kernels, and the same through ``load_llm``, the chat model and a bundle's manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from arch_fakes import save_chatglm2
from llm_fakes import save_tiny_llm
from tolerances import BFLOAT16_LOGITS, INT4_LOGITS, INT8_LOGITS
from torch import nn

from elmd_sdk.errors import InputError
from elmd_sdk.models import quantize as quantize_module
from elmd_sdk.models.llm import load_llm
from elmd_sdk.models.precision import INT4_GROUP_SIZE, Precision, check_precision
from elmd_sdk.models.quantize import Int4Linear, Int8Linear, bitsandbytes_config, load_dtype, quantize_linears


def _linear(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _int4_dequantized(weight: torch.Tensor) -> torch.Tensor:
    """What int4 makes of ``weight`` (out, in): per group of 32 inputs, 16 levels from the group's min to its max,
    their step and the value of level 8 rounded to bfloat16 as the kernel keeps them."""
    groups = weight.reshape(weight.shape[0], -1, INT4_GROUP_SIZE)  # (out, in / g, g)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    step = ((high - low) / 15).to(torch.bfloat16).float()
    middle = (low + 8 * step).to(torch.bfloat16).float()
    levels = torch.round((groups - middle) / step + 8).clamp(0, 15)
    return ((levels - 8) * step + middle).reshape_as(weight)


def test_precision_names_are_checked_and_name_the_field() -> None:
    assert check_precision() == Precision("auto", "none")
    assert check_precision("bfloat16", "int4") == Precision("bfloat16", "int4")
    with pytest.raises(InputError, match="field 'dtype': must be one of auto, float32, bfloat16, float16, got 'fp8'"):
        check_precision("fp8")
    with pytest.raises(InputError, match=r"b\.json: field 'quantize': must be one of none, int8, int4, got 'int2'"):
        check_precision("auto", "int2", file="b.json")


def test_load_dtype_rules() -> None:
    assert load_dtype(Precision("auto", "none")) is None  # the checkpoint's own
    assert load_dtype(Precision("float16", "none")) == torch.float16
    assert load_dtype(Precision("auto", "int8")) == torch.bfloat16  # the kernels' fast path
    assert load_dtype(Precision("bfloat16", "int4")) == torch.bfloat16
    for slow in ("float32", "float16"):
        with pytest.raises(InputError, match=f"computes in bfloat16 .* slower with {slow} activations") as error:
            load_dtype(Precision(slow, "int8"))
        assert error.value.field == "dtype"


def test_int8_linear_codes_and_output_by_hand() -> None:
    # Row 0's largest magnitude is 1.27, so its scale is 0.01 (in bfloat16: 0.0100098); row 1 is 2x row 0.
    row = torch.tensor([1.27, -0.64, 0.5, 0.0] + [0.01] * 12)  # (16,)
    layer = Int8Linear(_linear(torch.stack([row, 2 * row]), bias=torch.tensor([1.0, -1.0])))
    assert layer.codes[0, :5].tolist() == [127, -64, 50, 0, 1] and torch.equal(layer.codes[1], layer.codes[0])
    torch.testing.assert_close(layer.scale, torch.tensor([0.01, 0.02], dtype=torch.bfloat16))
    x = torch.ones(2, 1, 16, dtype=torch.bfloat16)  # (batch, time, in)
    out = layer(x)  # (2, 1, 2): sum of the row + bias
    expected = torch.tensor([row.sum() + 1.0, 2 * row.sum() - 1.0])  # 1.25 + 1, 2.5 - 1
    assert out.shape == (2, 1, 2) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out[0, 0].float(), expected, atol=0.01, rtol=0.01)  # bfloat16 output


def test_int4_linear_equals_its_dequantized_weight() -> None:
    torch.manual_seed(1)
    weight, bias = torch.randn(16, 64), torch.randn(16)
    layer = Int4Linear(_linear(weight, bias))
    x = torch.randn(3, 64).to(torch.bfloat16)
    expected = x.float() @ _int4_dequantized(weight).t() + bias
    torch.testing.assert_close(layer(x).float(), expected, atol=0.05, rtol=0.02)  # bfloat16 products and sums
    # a group holding exactly 16 evenly spaced values is stored without loss
    exact = torch.arange(16.0).repeat(2).repeat(16, 2) / 8  # (16, 64): each group of 32 is 0, 1/8, ..., 15/8 twice
    assert torch.equal(_int4_dequantized(exact), exact)
    torch.testing.assert_close(
        Int4Linear(_linear(exact))(torch.eye(64, dtype=torch.bfloat16)).float().t(), exact, atol=0, rtol=0
    )


def test_quantizing_in_row_blocks_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    linear = _linear(torch.randn(64, 64))
    int8, int4 = Int8Linear(linear), Int4Linear(linear)
    monkeypatch.setattr(quantize_module, "ROWS_PER_STEP", 16)  # 4 blocks instead of 1
    blocked8, blocked4 = Int8Linear(linear), Int4Linear(linear)
    assert torch.equal(blocked8.codes, int8.codes) and torch.equal(blocked8.scale, int8.scale)
    assert torch.equal(blocked4.packed, int4.packed) and torch.equal(blocked4.scale_zero, int4.scale_zero)


def test_quantize_linears_replaces_only_what_the_kernels_take() -> None:
    model = nn.Sequential(nn.Linear(32, 16), nn.Sequential(nn.Linear(24, 16), nn.Linear(32, 8)))
    assert quantize_linears(model, "none") == 0
    assert quantize_linears(model, "int8") == 2  # input 24 is not a multiple of 16
    assert [type(m).__name__ for m in (model[0], model[1][0], model[1][1])] == ["Int8Linear", "Linear", "Int8Linear"]
    model = nn.Sequential(nn.Linear(32, 16), nn.Linear(48, 16), nn.Linear(32, 8))
    assert quantize_linears(model, "int4") == 1  # input 48: not whole groups; output 8: not a multiple of 16
    assert isinstance(model[0], Int4Linear) and type(model[1]) is nn.Linear and type(model[2]) is nn.Linear


@pytest.fixture(scope="module")
def chatglm2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """A tiny ChatGLM2 folder, token ids and its float32 logits."""
    folder, _ = save_chatglm2(tmp_path_factory.mktemp("chatglm2") / "model")
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(0))  # (2, 9)
    model, _ = load_llm(folder)
    with torch.no_grad():
        logits = model(input_ids=ids).logits  # (2, 9, vocab)
    return folder, ids, logits


@pytest.mark.parametrize(
    ("dtype", "quantize", "tolerance", "quantized"),
    [("bfloat16", "none", BFLOAT16_LOGITS, 0), ("auto", "int8", INT8_LOGITS, 12), ("auto", "int4", INT4_LOGITS, 12)],
)
def test_chatglm2_at_each_precision_stays_within_its_tolerance(
    chatglm2: tuple[Path, torch.Tensor, torch.Tensor], dtype: str, quantize: str, tolerance: float, quantized: int
) -> None:
    folder, ids, reference = chatglm2
    model, _ = load_llm(folder, dtype=dtype, quantize=quantize)
    assert model.dtype == torch.bfloat16
    # 2 layers x (q, k, v, o, gate_up, down); the output layer stays in bfloat16
    assert sum(isinstance(m, Int8Linear | Int4Linear) for m in model.modules()) == quantized
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight.dtype == torch.bfloat16
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    assert (logits - reference).abs().max() <= tolerance * reference.abs().max()


def test_quantized_chatglm2_is_the_float_model_with_dequantized_weights(
    chatglm2: tuple[Path, torch.Tensor, torch.Tensor],
) -> None:
    """int4 changes the weights and nothing else: the float32 model given the de-quantized weights agrees up to
    bfloat16 rounding."""
    folder, ids, _ = chatglm2
    quantized, _ = load_llm(folder, quantize="int4")
    plain, _ = load_llm(folder)
    for name, module in list(plain.named_modules()):
        if isinstance(quantized.get_submodule(name), Int4Linear):
            with torch.no_grad():
                module.weight.copy_(_int4_dequantized(module.weight.to(torch.bfloat16).float()))
    with torch.no_grad():
        expected = plain(input_ids=ids).logits
        logits = quantized(input_ids=ids).logits.float()
    assert (logits - expected).abs().max() <= BFLOAT16_LOGITS * expected.abs().max()


def test_load_llm_dtype_names_and_torch_dtypes(tmp_path: Path) -> None:
    folder = save_tiny_llm(tmp_path / "llm")
    assert load_llm(folder)[0].dtype == torch.float32  # auto: the checkpoint's own
    assert load_llm(folder, dtype="float16")[0].dtype == torch.float16
    assert load_llm(folder, dtype=torch.bfloat16)[0].dtype == torch.bfloat16
    with pytest.raises(InputError, match="field 'dtype': must be one of"):
        load_llm(folder, dtype="half")
    with pytest.raises(InputError, match="computes in bfloat16"):
        load_llm(folder, dtype="float32", quantize="int8")


def test_quantize_on_cuda_without_bitsandbytes_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name))
    with pytest.raises(InputError, match=r"quantize int4 on CUDA needs bitsandbytes: pip install 'elmd-sdk\[gpu\]'"):
        bitsandbytes_config(Precision("auto", "int4"), torch.float16)


def test_chat_model_and_bundle_manifest_take_the_precision(tmp_path: Path) -> None:
    from elmd_sdk.bundle import BundleManifest
    from elmd_sdk.models.chat_model import ELMDChatModel

    folder = save_tiny_llm(tmp_path / "llm")
    chat = ELMDChatModel.load(folder, quantize="int8", do_sample=False, max_new_tokens=3)
    assert chat.dtype == "auto" and chat.quantize == "int8"
    assert isinstance(chat.hf_model.model.layers[0].mlp.down_proj, Int8Linear)
    assert chat.invoke("hello").usage_metadata["output_tokens"] == 3
    with pytest.raises(InputError, match="quantize"):
        ELMDChatModel.load(folder, quantize="int3")
    data = {"format": "elmd-bundle", "format_version": 1, "name": "b", "base_llm_config_sha256": "x", "labels": ["a"]}
    assert (BundleManifest.from_dict(data).dtype, BundleManifest.from_dict(data).quantize) == ("auto", "none")
    with pytest.raises(InputError, match=r"bundle\.json: field 'dtype': must be one of .* got 'float64'"):
        BundleManifest.from_dict({**data, "dtype": "float64"}, tmp_path / "bundle.json")
