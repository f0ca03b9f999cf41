#!/usr/bin/env bash
# The GPU check of issue #23.4, as one script for a lent CUDA machine (about 10 minutes on one H100):
#   1. the card's name and memory (nvidia-smi), torch's view of it;
#   2. tests/test_gpu.py (marked gpu): bfloat16/float16 loading, bitsandbytes int8/int4 loading, batched decoding,
#      50 EERG steps on MELD train (needs $ELMD_MELD_DIR or ../shared/data/meld);
#   3. benchmarks/llm_generation.py on CUDA: chat.stream/invoke against raw generate, and the precision rows
#      (float32, bfloat16, float16, bitsandbytes int8/int4) over $PROMPTS MELD dev samples (default 100).
# Needs an environment with torch for CUDA and `pip install -e '.[dev,eval,gpu]'` (the machine may have no network:
# install from wheels carried along). PY picks the interpreter (default .venv/bin/python); the output goes to OUT
# (default gpu_check/) as text files to copy into the README's GPU section.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-gpu_check}
PROMPTS=${PROMPTS:-100}
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" | tee -a "$OUT/card.txt"

status=0
timeout 300 "$PY" -m pytest tests/test_gpu.py -m gpu -q -rs 2>&1 | tee "$OUT/tests.txt" || status=$?
timeout 420 "$PY" benchmarks/llm_generation.py --sections wrapper,precision --device cuda --prompts "$PROMPTS" \
    2>&1 | tee "$OUT/llm_generation.txt" || status=$?
exit "$status"
