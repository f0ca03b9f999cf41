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
