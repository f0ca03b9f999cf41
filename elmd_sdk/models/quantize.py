"""How a causal LM gets the precision it loads with (:mod:`elmd_sdk.models.precision`): the dtype the weights load
in, and weight-only int8/int4 quantization: the weights of the linear layers are stored in 8 or 4 bits, the
activations stay in the dtype.

- CPU: torch's own weight-only kernels. int8: one symmetric scale per output channel, ``torch._weight_int8pack_mm``;
  int4: a scale and zero point per group of :data:`INT4_GROUP_SIZE` input weights,
  ``torch._weight_int4pack_mm_for_cpu``. Both are fast only with bfloat16 activations (4 to 20 times slower with
  float32 or float16 ones on this project's CPU), so they need ``dtype`` auto or bfloat16. They were chosen against
  torchao and torch's dynamic quantization by measurement: the table is in ``benchmarks/llm_generation.py``, which
  also measures each setting end to end (speed, memory, token and emotion agreement).
- CUDA: bitsandbytes through transformers' ``BitsAndBytesConfig`` (int8: LLM.int8(); int4: NF4 with double
  quantization), the layers quantized while the weights load; install it with ``pip install 'elmd-sdk[gpu]'``.

The output layer stays in the dtype on both (see :func:`quantize_linears`). On the CPU a layer the kernel cannot take
stays in the dtype too (int8 needs an input size that is a multiple of 16, int4 one that is a multiple of the group
and an output size that is a multiple of 16), and so do projections that are not ``nn.Linear`` (GPT-2's fused
``Conv1D``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PreTrainedModel

from elmd_sdk.errors import InputError
from elmd_sdk.models.precision import INT4_GROUP_SIZE, INT8_MULTIPLE, Precision, Quantization

if TYPE_CHECKING:
    from transformers import BitsAndBytesConfig

_SMALLEST = torch.finfo(torch.bfloat16).tiny  # the least scale: an all-zero row or group stays zero


def on_cuda(device: str | None) -> bool:
    """Whether ``device`` names a CUDA device (``None`` is where transformers loads: the CPU)."""
    return device is not None and torch.device(device).type == "cuda"


def load_dtype(precision: Precision, device: str | None = None) -> torch.dtype | None:
    """The dtype the weights load in (``None``: the checkpoint's own): ``auto`` with quantization is bfloat16 (on CUDA
    float16 where the card has no bfloat16); on CPU quantization refuses float32 and float16 (see the module)."""
    quantized = precision.quantize != "none"
    if precision.dtype == "auto":
        if not quantized:
            return None
        if on_cuda(device) and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    if quantized and not on_cuda(device) and precision.dtype != "bfloat16":
        raise InputError(
            f"quantize {precision.quantize} on the CPU computes in bfloat16 (torch's weight-only kernels are 4 to 20 "
            f"times slower with {precision.dtype} activations); use dtype auto or bfloat16",
            field="dtype",
        )
    dtype = getattr(torch, precision.dtype)
    assert isinstance(dtype, torch.dtype)
    return dtype


def bitsandbytes_config(precision: Precision, dtype: torch.dtype) -> BitsAndBytesConfig:
    """transformers' ``BitsAndBytesConfig`` for CUDA (int8: LLM.int8(); int4: NF4, double quantization), computing
    in ``dtype``; an :class:`InputError` when bitsandbytes is not installed."""
    import importlib.util

    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise InputError(
            f"quantize {precision.quantize} on CUDA needs bitsandbytes: pip install 'elmd-sdk[gpu]'", field="quantize"
        )
    if precision.quantize == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
    )


ROWS_PER_STEP = 4096
"""Output rows quantized at a time: bounds the float32 working copies (ChatGLM2-6B's output layer: 65,024 rows)."""


def _row_blocks(weight: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
    """``weight`` (out, in) in blocks of :data:`ROWS_PER_STEP` rows, each as float32."""
    for start in range(0, weight.shape[0], ROWS_PER_STEP):
        rows = slice(start, start + ROWS_PER_STEP)
        yield rows, weight[rows].detach().float()


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights, one symmetric scale per output channel (CPU, ``torch._weight_int8pack_mm``).
    The scale is rounded to bfloat16 first (the kernel takes it in the activations' dtype) and the codes fit it."""

    codes: torch.Tensor  # (out, in) int8 buffer
    scale: torch.Tensor  # (out,) bfloat16 buffer

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        codes = torch.empty(self.out_features, self.in_features, dtype=torch.int8)  # (out, in)
        scale = torch.empty(self.out_features, dtype=torch.bfloat16)  # (out,)
        for rows, weight in _row_blocks(linear.weight):  # weight: (r, in)
            step = (weight.abs().amax(dim=1) / 127).clamp(min=_SMALLEST).to(torch.bfloat16)  # (r,)
            codes[rows] = torch.round(weight / step.float()[:, None]).clamp(-127, 127).to(torch.int8)
            scale[rows] = step
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        flat = x.reshape(-1, self.in_features)  # (N, in)
        out = torch._weight_int8pack_mm(flat, self.codes, self.scale.to(x.dtype))  # (N, out)
        out = out.reshape(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias.to(x.dtype)


class Int4Linear(nn.Module):
    """``nn.Linear`` with int4 weights, a scale and zero point per group of ``group_size`` inputs (CPU,
    ``torch._weight_int4pack_mm_for_cpu``; its convention: weight = (code - 8) * scale + zero, codes 0..15). The
    group's 16 levels span its minimum to its maximum; scale and zero are rounded to bfloat16 first and the codes
    fit them."""

    packed: torch.Tensor  # (out, in / 2) uint8 buffer: the kernel's packing of the codes
    scale_zero: torch.Tensor  # (in / group, out, 2) bfloat16 buffer

    def __init__(self, linear: nn.Linear, group_size: int = INT4_GROUP_SIZE) -> None:
        super().__init__()
        self.in_features, self.out_features, self.group_size = linear.in_features, linear.out_features, group_size
        codes = torch.empty(self.out_features, self.in_features, dtype=torch.int32)  # (out, in): the packer's input
        scale_zero = torch.empty(self.in_features // group_size, self.out_features, 2, dtype=torch.bfloat16)
        for rows, weight in _row_blocks(linear.weight):
            groups = weight.reshape(weight.shape[0], -1, group_size)  # (r, in / g, g)
            low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # (r, in / g)
            scale = ((high - low) / 15).clamp(min=_SMALLEST).to(torch.bfloat16)  # (r, in / g)
            zero = (low + 8 * scale.float()).to(torch.bfloat16)  # (r, in / g): the value of code 8
            level = (groups - zero.float()[..., None]) / scale.float()[..., None] + 8  # (r, in / g, g)
            codes[rows] = torch.round(level).clamp(0, 15).reshape_as(weight).to(torch.int32)
            scale_zero[:, rows] = torch.stack([scale.t(), zero.t()], dim=-1)  # (in / g, r, 2): the kernel's layout
        self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(codes, 1))
        self.register_buffer("scale_zero", scale_zero)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        flat = x.reshape(-1, self.in_features)  # (N, in)
        out = torch._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size, self.scale_zero.to(x.dtype))
        out = out.reshape(*x.shape[:-1], self.out_features)  # (..., out)
        return out if self.bias is None else out + self.bias.to(x.dtype)


def quantize_linears(model: nn.Module, quantize: Quantization) -> int:
    """Replace, in place, every ``nn.Linear`` of ``model`` that the CPU kernel can take by its ``quantize`` form (see
    the module), except the output layer; returns how many were replaced. The original float weights are released.

    The output layer stays in the dtype, as bitsandbytes keeps it: it scores every token, the closed-set emotion's
    labels among them. On the embedded SmolLM2 (40 MELD dev samples, one thread) int4 with a quantized output layer
    decoded 2.02x float32's speed but kept the emotion of 92.5% of the samples and 27% of the reply tokens; with it
    kept, 1.58x, 100% and 63% (``benchmarks/llm_generation.py``)."""
    if quantize == "none":
        return 0
    output_layer = model.get_output_embeddings() if isinstance(model, PreTrainedModel) else None
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear) or child is output_layer:
                continue
            if quantize == "int8" and child.in_features % INT8_MULTIPLE == 0:
                setattr(parent, name, Int8Linear(child))
            elif quantize == "int4" and child.in_features % INT4_GROUP_SIZE == 0 and child.out_features % 16 == 0:
                setattr(parent, name, Int4Linear(child))
            else:
                continue
            replaced += 1
    return replaced
