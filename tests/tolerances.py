"""The float tolerances of the suite's equalities, in one place (README: "Tolerances").

A float32 result computed two ways differs in its last bits with the batch shape and padding, the thread count and
the CPU's kernels (AVX2 or AVX-512, oneDNN or MKL), so no such equality is exact and none is tighter than these.
"""

SAME_MATH = 1e-5
"""atol and rtol of logits and probabilities of one float32 model computed two ways: batched vs solo decoding, the
prefix through the attention function vs as a pre-filled cache, PEFT's forward vs elmd-sdk's, KV cache vs a full
recompute, the text-started prefix vs the model's own keys and values."""

REFERENCE = 1e-4
"""atol and rtol of elmd-sdk's ChatGLM2 against the independent plain-torch reference of its math (other operation
order throughout: fused vs split projections, another rotary layout)."""

BFLOAT16_LOGITS = 0.03
"""Largest logit difference, as a share of the largest float32 logit, of a tiny random model loaded in bfloat16 (or
quantized, against the float32 model holding the de-quantized weights): bfloat16's 8-bit mantissa through 2 layers."""

INT8_LOGITS = 0.06
"""The same for int8 weight-only (one scale per output channel) against float32: bfloat16 plus the weights' rounding
to 255 levels per row."""

INT4_LOGITS = 0.6
"""The same for int4 weight-only (16 levels per group of 32 weights) against float32. Random Gaussian weights are
int4's worst case (no structure, wide groups), and a random 2-layer model amplifies the error: measured 0.37 on the
tiny ChatGLM2; what int4 keeps of a real model is measured in ``benchmarks/llm_generation.py``."""
