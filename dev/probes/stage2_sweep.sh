#!/usr/bin/env bash
# Issue "The paper's experiments in miniature": stage 2 (and the no-stage-1 baseline) run again
# on finished default runs, several ways, over seeds. Each seed's stage0b.bin and stage1.bin are
# copied into a folder per case, so the run folders are left alone.
#
#   dev/probes/stage2_sweep.sh EXPERIMENT OUT SEED:RUN_FOLDER...
#     e.g. dev/probes/stage2_sweep.sh unfreeze ~/vlv-runs/unfreeze 1:$HOME/vlv-runs/seed1 2:...
#
# EXPERIMENT
#   unfreeze   progressive unfreezing, 2,000 steps each, scored with the regeneration score.
#              The paper's Table 4 rows are the first three:
#     prefix_only   the prefix MLP alone
#     prefix_llm    the prefix MLP alone (500), then + the caption LLM (1,500)
#     progressive   the prefix MLP alone (500), + the caption LLM (1,000), + the vision encoder
#                   and adapter (500, lr 1e-4)
#     one_phase     the default: the prefix MLP and the caption LLM together
#     all_at_once   the prefix MLP, LLM, encoder and adapter from the start (--unfreeze 1)
#   k_curve    VLV's stage 2 and the baseline (its own lr 3e-4 and 1,000 steps, the default) at
#              K = 100, 500 and 2,000 captioned pairs: K100, K500, K2000
#   baseline   the baseline's own sweep: lr 1e-4, 3e-4 and 1e-3, each for 1,000 and 2,000 steps
#              (lr1e-4_s1000 ... lr1e-3_s2000), trained again alone (--from baseline) beside the run
#              folder's stage-2 model; K from VLV_FLAGS (e.g. VLV_FLAGS="--K 100"), else 500: give
#              the folders' own K, as their stage-2 model is scored again, not trained
#
# The folders are finished default runs of the given seeds (stage0b.bin, stage1.bin, and for
# baseline model.bin are copied). Each case runs with 1 thread, two at a time. OUT/EXPERIMENT.md
# gets a table of the mean and standard deviation over the seeds and the RESULT line of every run; it covers every case's log in OUT, so cases run in several
# invocations add up. VLV_RECIPES: run only these cases (e.g. "prefix_only prefix_llm").
# VLV_FLAGS: flags added to every run (the run folders' model flags, if not the default preset's).
set -euo pipefail
cd "$(dirname "$0")/../.."
. dev/probes/lib.sh
[ $# -ge 3 ] || { echo "usage: $0 unfreeze|k_curve|baseline OUT SEED:RUN_FOLDER..." >&2; exit 2; }
experiment=$1 out=$2; shift 2
[ -x train_vlv ] || { echo "build first: make train_vlv" >&2; exit 1; }
declare -A recipe title
from=2 copied="stage0b.bin stage1.bin"
case "$experiment" in
  unfreeze)
    common="--baseline 0 --regen 1"
    order="prefix_only prefix_llm progressive one_phase all_at_once"
    recipe=([prefix_only]="--steps2_prefix 2000" [prefix_llm]="--steps2_prefix 500 --steps2_llm 1500"
            [progressive]="--steps2_prefix 500 --steps2_llm 1000 --steps2_encoder 500 --lr2_encoder 1e-4"
            [one_phase]="" [all_at_once]="--unfreeze 1")
    title=([prefix_only]="prefix only" [prefix_llm]="prefix, + LLM" [progressive]="prefix, + LLM, + encoder"
           [one_phase]="one phase (prefix and LLM)" [all_at_once]="all at once (--unfreeze 1)") ;;
  k_curve)
    common="--baseline 1"
    order="K100 K500 K2000"
    recipe=([K100]="--K 100" [K500]="--K 500" [K2000]="--K 2000")
    title=([K100]="K = 100" [K500]="K = 500" [K2000]="K = 2,000") ;;
  baseline)
    common="--baseline 1"
    from=baseline copied+=" model.bin"
    order=""
    for lr in 1e-4 3e-4 1e-3; do
      for steps in 1000 2000; do
        name=lr${lr}_s$steps
        order+=" $name"
        recipe[$name]="--lr_base $lr --steps_base $steps"
        title[$name]="baseline lr $lr, $steps steps"
      done
    done ;;
  *) echo "no experiment $experiment: unfreeze, k_curve or baseline" >&2; exit 2 ;;
esac
mkdir -p "$out"
jobs=()
for pair in "$@"; do
  seed=${pair%%:*} src=${pair#*:}
  for f in $copied; do [ -s "$src/$f" ] || { echo "$src has no $f: give a finished run folder" >&2; exit 1; }; done
  for name in ${VLV_RECIPES:-$order}; do
    [ -n "${recipe[$name]+set}" ] || { echo "no case $name in $experiment: $order" >&2; exit 2; }
    dir="$out/$name-$seed"
    mkdir -p "$dir"
    for f in $copied; do cp "$src/$f" "$dir/"; done
    jobs+=("./train_vlv --seed $seed --from $from $common --threads 1 ${VLV_FLAGS:-} ${recipe[$name]} --out $dir")
  done
done
cases=$(for name in $order; do printf '%s=%s\n' "$name" "${title[$name]}"; done)
run_and_tabulate "$out" "$experiment" "$cases" "${jobs[@]}"
