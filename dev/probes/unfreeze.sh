#!/usr/bin/env bash
# Issue "The paper's experiments in miniature", progressive unfreezing: stage 2 on the same
# stage-1 checkpoints five ways, 2,000 steps each, each seed's run folder copied so the original
# is left alone. The paper's Table 4 rows are the first three:
#   prefix only      the prefix MLP alone
#   prefix, llm      the prefix MLP alone (500), then + the caption LLM (1,500)
#   progressive      the prefix MLP alone (500), + the caption LLM (1,000), + the vision encoder
#                    and adapter (500, lr 1e-4)
#   one phase        the default: the prefix MLP and the caption LLM together
#   all at once      the prefix MLP, LLM, encoder and adapter from the start (--unfreeze 1)
# each scored on 512 held-out scenes with the regeneration score (--regen 1).
#
#   dev/probes/unfreeze.sh OUT SEED:RUN_FOLDER...   e.g. OUT ~/vlv-runs/seed1 of ./train_vlv --seed 1
#
# The folders are finished default runs (their stage0b.bin and stage1.bin) of the given seeds.
# Each case runs with 1 thread, two at a time. It writes OUT/unfreeze.md, a table of the mean
# and standard deviation over the seeds, and the RESULT line of every run. VLV_FLAGS: flags
# added to every run (the run folders' model flags, if they are not the default preset's).
# VLV_RECIPES: run only these (e.g. "prefix_only prefix_llm"); the table covers every log in OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: $0 OUT SEED:RUN_FOLDER..." >&2; exit 2; }
out=$1; shift
mkdir -p "$out"
[ -x train_vlv ] || { echo "build first: make train_vlv" >&2; exit 1; }
declare -A recipe=(
  [prefix_only]="--steps2_prefix 2000"
  [prefix_llm]="--steps2_prefix 500 --steps2_llm 1500"
  [one_phase]=""
  [progressive]="--steps2_prefix 500 --steps2_llm 1000 --steps2_encoder 500 --lr2_encoder 1e-4"
  [all_at_once]="--unfreeze 1"
)
jobs=()
for pair in "$@"; do
  seed=${pair%%:*} src=${pair#*:}
  for f in stage0b.bin stage1.bin; do [ -s "$src/$f" ] || { echo "$src has no $f: give a finished run folder" >&2; exit 1; }; done
  for name in ${VLV_RECIPES:-prefix_only prefix_llm progressive one_phase all_at_once}; do
    [ -n "${recipe[$name]+set}" ] || { echo "no recipe $name: ${!recipe[*]}" >&2; exit 2; }
    dir="$out/$name-$seed"
    mkdir -p "$dir"
    cp "$src/stage0b.bin" "$src/stage1.bin" "$dir/"
    jobs+=("./train_vlv --seed $seed --from 2 --baseline 0 --regen 1 --threads 1 ${VLV_FLAGS:-} ${recipe[$name]} --out $dir")
  done
done
t0=$SECONDS
printf '%s\n' "${jobs[@]}" | xargs -P 2 -I{} bash -c '{} > "$(echo "{}" | sed "s/.*--out //").log" 2>&1 || echo "failed: {}" >&2'
minutes=$(( (SECONDS - t0 + 30) / 60 ))
python3 - "$out" "$minutes" "$(lscpu | sed -n 's/^Model name: *//p')" > "$out/unfreeze.md" <<'PY'
import glob, os, re, statistics, sys
out, minutes, cpu = sys.argv[1:4]
def figures(log):  # caption exact, shape, place, regeneration exact, round trip exact (fractions)
    text = open(log).read()
    result = re.search(r"^RESULT caption_exact=([0-9.]+) .*roundtrip_exact=([0-9.]+) .*regen_exact=([0-9.]+)", text, re.M)
    attrs = re.search(r"^\| caption attributes \| [0-9.]+% \(shape ([0-9.]+)%, colour [0-9.]+%, size [0-9.]+%, place ([0-9.]+)%\)", text, re.M)
    if not result or not attrs:
        return None
    return [float(result[1]), float(attrs[1]) / 100, float(attrs[2]) / 100, float(result[3]), float(result[2])]
def cell(xs):
    return f"{100 * statistics.mean(xs):.1f} ± {100 * statistics.stdev(xs):.1f}%" if len(xs) > 1 else f"{100 * xs[0]:.1f}%"
print("| stage 2 | seeds | caption exact | shape | place | regeneration exact | round trip exact |")
print("|---|---|---|---|---|---|---|")
lines = []
names = {"prefix_only": "prefix only", "prefix_llm": "prefix, + LLM", "progressive": "prefix, + LLM, + encoder",
         "one_phase": "one phase (prefix and LLM)", "all_at_once": "all at once (--unfreeze 1)"}
for name in names:
    runs = [f for f in (figures(log) for log in sorted(glob.glob(f"{out}/{name}-*.log"))) if f]
    if runs:
        print(f"| {names[name]} | {len(runs)} | " + " | ".join(cell([r[k] for r in runs]) for k in range(5)) + " |")
    else:
        print(f"| {names[name]} | 0 | no RESULT | | | | |")
print(f"\nTwo runs at a time at 1 thread each: {minutes} minutes for the last invocation, on {cpu}.\n")
for log in sorted(glob.glob(f"{out}/*.log")):
    found = re.search(r"^RESULT .*", open(log).read(), re.M)
    print(f"* {os.path.basename(log)[:-4]}: `{found[0] if found else 'no RESULT'}`")
PY
cat "$out/unfreeze.md"
