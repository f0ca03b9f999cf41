#!/usr/bin/env bash
# Does training help? EERG on MELD train against the untuned base model on held-out MELD dev, with paired bootstrap
# 95% intervals (README "Does training help?").
#
#   bash benchmarks/training_evidence.sh OUT_DIR
#
# Reads MELD train and dev from ${DATA_ROOT:-../shared/data}/meld (never the test split). Steps (each the project's
# own CLI; a step whose output is already complete is skipped on a re-run, and a killed training resumes):
#   1. MELD train and dev -> native JSONL; dev split by dialogue into valid (VALID_N samples used) and test.
#   2. The ERM of the README recipe (all MELD train, 1 epoch; ERM=DIR reuses a trained one) and its index of MELD train.
#   3. EERG (no video in our MELD copy, so REP has nothing to train and is skipped) on the first TRAIN_N MELD train
#      samples (TRAIN_N / 16 optimizer steps of batch 16, one epoch), validated on the valid part every EVAL_EVERY
#      steps, keeping the best weights by validation emotion macro-F1 (calibrated choice); metrics.jsonl and
#      curves.png in the bundle.
#   4. One `elmd-sdk eval --ablations` on the first TEST_N test samples, rows: the trained bundle with retrieval
#      (ours) and without (w/o ERM), the untuned base LLM with the same prompt and retrieval, and without retrieval;
#      closed-set emotion, greedy, paired bootstrap intervals and each row's difference from ours.
#      Each row calibrates its emotion choice as shipped: a bundle trained by this version with the prior its
#      validation prompts showed (bundle.json), an untuned row (or an older bundle) on content-free inputs.
#   5. The same four rows with every row's prior fitted on the valid part (--calibrate-on: batch calibration, the
#      same for trained and untuned rows) -> table_bc.json; and ours and w/o ERM with --no-emotion-calibration
#      (the raw closed-set choice) -> table_raw.json.
# Settings: LR (default 2e-2, the paper's), PRE_SEQ_LEN (128), EVAL_BATCH (8: samples decoded together),
# MAX_NEW_TOKENS (48: MELD replies are short; the same limit for every row).
set -euo pipefail

OUT=${1:?usage: training_evidence.sh OUT_DIR}
DATA_ROOT=${DATA_ROOT:-../shared/data}
TRAIN_N=${TRAIN_N:-4800}
VALID_N=${VALID_N:-120}
TEST_N=${TEST_N:-300}
EVAL_EVERY=${EVAL_EVERY:-50}
LR=${LR:-2e-2}
PRE_SEQ_LEN=${PRE_SEQ_LEN:-128}
EVAL_BATCH=${EVAL_BATCH:-8}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-48}
BOOTSTRAP=${BOOTSTRAP:-1000}
ELMD=${ELMD:-elmd-sdk}
mkdir -p "$OUT"
stamp() { echo "== $* ($(date -u +%H:%M:%S))"; }

stamp "data"
[[ -f $OUT/meld_train.jsonl ]] ||
    $ELMD data prepare --format meld "$DATA_ROOT/meld/train_sent_emo.csv" --out "$OUT/meld_train.jsonl"
[[ -f $OUT/meld_dev.jsonl ]] ||
    $ELMD data prepare --format meld "$DATA_ROOT/meld/dev_sent_emo.csv" --out "$OUT/meld_dev.jsonl"
[[ -f $OUT/dev/test.jsonl ]] || $ELMD data split "$OUT/meld_dev.jsonl" --out "$OUT/dev" --ratios 0:1:3
head -n "$VALID_N" "$OUT/dev/valid.jsonl" > "$OUT/valid.jsonl"
head -n "$TRAIN_N" "$OUT/meld_train.jsonl" > "$OUT/train.jsonl"

ERM_DIR=${ERM:-$OUT/erm}
if [[ ! -f $ERM_DIR/training.json ]]; then
    stamp "ERM (README recipe)"
    $ELMD train erm --data "$OUT/meld_train.jsonl" --out "$ERM_DIR"
fi
if [[ ! -f $OUT/index/index.json ]]; then
    stamp "index"
    $ELMD index build --data "$OUT/meld_train.jsonl" --erm "$ERM_DIR" --out "$OUT/index"
fi

if [[ ! -f $OUT/bundle/bundle.json ]]; then
    stamp "EERG"
    resume=()
    [[ -d $OUT/bundle/checkpoint ]] && resume=(--resume)
    start=$(date +%s)
    $ELMD train eerg --index "$OUT/index" --no-video --data "$OUT/train.jsonl" --valid "$OUT/valid.jsonl" \
        --out "$OUT/bundle" --lr "$LR" --pre-seq-len "$PRE_SEQ_LEN" --eval-every "$EVAL_EVERY" --keep best \
        "${resume[@]}"
    echo "EERG wall-clock: $(( $(date +%s) - start )) s (this invocation)"
fi

stamp "eval"
$ELMD eval --ablations --rows full,wo_erm,base,base_wo_erm --bundle "$OUT/bundle" --data "$OUT/dev/test.jsonl" \
    --limit "$TEST_N" --greedy --max-new-tokens "$MAX_NEW_TOKENS" --batch-size "$EVAL_BATCH" \
    --bootstrap "$BOOTSTRAP" --out "$OUT/table.json"
$ELMD eval --ablations --rows full,wo_erm,base,base_wo_erm --bundle "$OUT/bundle" --data "$OUT/dev/test.jsonl" \
    --limit "$TEST_N" --greedy --max-new-tokens "$MAX_NEW_TOKENS" --batch-size "$EVAL_BATCH" \
    --calibrate-on "$OUT/valid.jsonl" --bootstrap "$BOOTSTRAP" --out "$OUT/table_bc.json"
$ELMD eval --ablations --rows full,wo_erm --bundle "$OUT/bundle" --data "$OUT/dev/test.jsonl" \
    --limit "$TEST_N" --greedy --max-new-tokens "$MAX_NEW_TOKENS" --batch-size "$EVAL_BATCH" \
    --bootstrap "$BOOTSTRAP" --no-emotion-calibration --out "$OUT/table_raw.json"
stamp "done"
