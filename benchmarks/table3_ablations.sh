#!/usr/bin/env bash
# Train every part the paper's Table 3 needs, then print the table with ONE `elmd-sdk eval --ablations` call.
#
#   bash benchmarks/table3_ablations.sh DATA_DIR OUT_DIR [options passed to both `train rep` and `train eerg`]
#
# DATA_DIR holds train.jsonl, valid.jsonl and test.jsonl (`elmd-sdk data prepare` + `elmd-sdk data split`);
# for the paper's setting: M3ED with videos, `--llm <ChatGLM2-6B folder> --language zh` as extra options; for data
# without videos (MELD here) pass `--no-video` (then the w/o V row equals the full one, and the report says so).
# Steps (each command is the project's own CLI; a step whose output is already complete is skipped on a re-run):
#   1. ERMs (Eq. 4): full, w/o ERT (--no-ert: Eq. 3 only), w/o SSC (--no-ssc: Eq. 2 only).
#   2. One index of the train (u', r') pairs per ERM.
#   3. The full bundle: REP (Eq. 10) with the full index, then EERG (Eq. 11) from it; and the w/o REP bundle:
#      EERG alone with the full index, its projector freshly initialised (`train eerg` without --from). With
#      --no-video REP has nothing to train, so every bundle is EERG alone (w/o REP then equals full).
#   4. With FAITHFUL=1, bundles trained end to end with each ablated part (the paper's setting: the ERM variant
#      also feeds the demonstrations seen in REP/EERG training; w/o ERM and w/o V retrained without retrieval /
#      video). Without it, w/o ERT / w/o SSC swap their index into the full bundle at inference time, and
#      w/o ERM / w/o V are inference-time switches of the full bundle (the eval report says which source).
#   5. `elmd-sdk eval --ablations` on test.jsonl -> OUT_DIR/table3.json and the printed table.
# WO_REP_BUNDLE=DIR uses that bundle for the w/o REP row instead of training one.
# EVAL_OPTS (e.g. "--limit 200 --max-new-tokens 64") go to the eval call.
set -euo pipefail

DATA=${1:?usage: table3_ablations.sh DATA_DIR OUT_DIR [train rep/eerg options]}
OUT=${2:?usage: table3_ablations.sh DATA_DIR OUT_DIR [train rep/eerg options]}
shift 2
ELMD=${ELMD:-elmd-sdk}
mkdir -p "$OUT"

for variant in full wo_ert wo_ssc; do
    case $variant in
        full) flags=() ;;
        wo_ert) flags=(--no-ert) ;;
        wo_ssc) flags=(--no-ssc) ;;
    esac
    if [[ ! -f $OUT/erm_$variant/training.json ]]; then
        $ELMD train erm --data "$DATA/train.jsonl" --valid "$DATA/valid.jsonl" --out "$OUT/erm_$variant" "${flags[@]}"
    fi
    if [[ ! -f $OUT/index_$variant/index.json ]]; then
        $ELMD index build --data "$DATA/train.jsonl" --erm "$OUT/erm_$variant" --out "$OUT/index_$variant"
    fi
done

# train_pair NAME REP_FLAGS... -- EERG_FLAGS...: REP then EERG into OUT/rep_NAME and OUT/bundle_NAME.
train_pair() {
    local name=$1
    shift
    local rep=() eerg=()
    while [[ $# -gt 0 && $1 != -- ]]; do rep+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift
    eerg=("$@")
    if [[ " ${rep[*]} ${EXTRA[*]} " == *" --no-video "* ]]; then
        # Without clips REP has nothing to train (it refuses): EERG alone, from a fresh projector, as for w/o REP.
        [[ " ${rep[*]} " == *" --index "* ]] || rep+=(--no-retrieval)
        if [[ ! -f $OUT/bundle_$name/bundle.json ]]; then
            $ELMD train eerg --data "$DATA/train.jsonl" --valid "$DATA/valid.jsonl" --out "$OUT/bundle_$name" \
                "${rep[@]}" "${eerg[@]}" "${EXTRA[@]}"
        fi
        return
    fi
    if [[ ! -f $OUT/rep_$name/bundle.json ]]; then
        $ELMD train rep --data "$DATA/train.jsonl" --valid "$DATA/valid.jsonl" --out "$OUT/rep_$name" \
            "${rep[@]}" "${EXTRA[@]}"
    fi
    if [[ ! -f $OUT/bundle_$name/bundle.json ]]; then
        $ELMD train eerg --from "$OUT/rep_$name" --data "$DATA/train.jsonl" --valid "$DATA/valid.jsonl" \
            --out "$OUT/bundle_$name" "${eerg[@]}" "${EXTRA[@]}"
    fi
}
EXTRA=("$@")

train_pair full --index "$OUT/index_full" --
wo_rep=${WO_REP_BUNDLE:-$OUT/bundle_wo_rep}
if [[ ! -f $wo_rep/bundle.json ]]; then
    $ELMD train eerg --index "$OUT/index_full" --data "$DATA/train.jsonl" --valid "$DATA/valid.jsonl" \
        --out "$wo_rep" "${EXTRA[@]}"
fi
variants=()
if [[ ${FAITHFUL:-0} == 1 ]]; then
    train_pair wo_ert --index "$OUT/index_wo_ert" --
    train_pair wo_ssc --index "$OUT/index_wo_ssc" --
    train_pair wo_erm --
    train_pair wo_v --index "$OUT/index_full" --no-video -- --no-video
    for row in wo_ert wo_ssc wo_erm wo_v; do variants+=(--variant "$row=$OUT/bundle_$row"); done
else
    variants+=(--variant "wo_ert=$OUT/index_wo_ert" --variant "wo_ssc=$OUT/index_wo_ssc")
fi
variants+=(--variant "wo_rep=$wo_rep")

# shellcheck disable=SC2086  # EVAL_OPTS is a list of options
$ELMD eval --ablations --bundle "$OUT/bundle_full" --data "$DATA/test.jsonl" --out "$OUT/table3.json" \
    "${variants[@]}" ${EVAL_OPTS:-}
