#!/usr/bin/env bash
# Data-parallel training (make train_vlv USE_MPI=1, vlvc/dist.h) against one process, on a
# tiny model: 2 ranks with 4 rows each train as 1 process with batch 8 does, to float rounding;
# the same 2 ranks give the same bits twice and after an interruption; the evaluation split over
# ranks scores exactly as one process; ZeRO-1 gives the same bits; a rank that dies, fails to read its data or runs another
# command stops every rank with a message, and no checkpoint is lost.
# Usage: dev/test/test_mpi.sh   (after make train_vlv build/train_vlv_mpi test_vlv)
set -uo pipefail
cd "$(dirname "$0")/../.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
source dev/test/lib.sh # check, result, same_state
# Open MPI: root is allowed (CI runs as root), more ranks than cores, no binding to cores (the
# ranks share this machine's 2), and shared memory without cross-memory attach, which
# containers often forbid
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
mpi() { # RANKS ARGS...: ./train_vlv's MPI build on RANKS ranks of 1 thread each
  local n=$1; shift
  timeout 300 mpirun --oversubscribe --bind-to none -np "$n" build/train_vlv_mpi --threads 1 "$@"
}
tiny=(--batch 8 --steps0 30 --steps0b 20 --steps1 20 --steps2 20 --K 16
      --d_v 32 --d_t 32 --d_d 32 --d_g 32 --L_v 1 --L_a 1 --L_t 1 --L_d 1 --L_g 1
      --nh_v 2 --nh_a 2 --nh_t 2 --nh_d 2 --nh_g 2 --d_freq 16
      --eval_n 24 --sample_steps 4 --log_every 5 --eval_every 15 --ckpt_every 10 --baseline 1 --steps_base 10 --lr_base 1e-3
      --pretrained none)
stages=(stage0.bin stage0b.bin stage1.bin model.bin baseline.bin)
same_files() { # DIR_A DIR_B FILE...: every file the same bytes
  local a=$1 b=$2; shift 2
  for f in "$@"; do cmp -s "$a/$f" "$b/$f" || { echo "     $f differs"; return 1; }; done
}

# One rank is one process: the MPI build under mpirun -np 1 writes the default build's bits.
./train_vlv "${tiny[@]}" --threads 1 --out "$dir/one" > "$dir/one.log" 2>&1
check "one process: a tiny run completes: $(result "$dir/one.log")" $?
mpi 1 "${tiny[@]}" --out "$dir/rank1" > "$dir/rank1.log" 2>&1
same_files "$dir/one" "$dir/rank1" "${stages[@]}" captions.tsv t2i.tsv; check "mpirun -np 1 writes the same checkpoints and scores as the default build" $?

# 2 ranks x 4 rows against 1 process x 8. Each rank's gradient is its rows' share of the batch
# mean, summed over the ranks: the same sum as one process's, in another order (the rows'
# partial sums are split in two), so the weights differ by float rounding (~1e-7 relative per
# step), which AdamW's normalised step then carries. The tolerance bounds that: 1e-4 of what
# training moved a tensor, where the measured drift is at most 1.6e-5 (doc/distributed.md); a
# rank that trained on its own rows only (no sum), or a wrong scale, is off by O(1) of it.
mpi 2 "${tiny[@]}" --out "$dir/two" > "$dir/two.log" 2>&1
check "2 ranks: the tiny run completes: $(result "$dir/two.log")" $?
grep -q "batch 8 (2 ranks of 4 rows)" "$dir/two.log"; check "it says how the batch is split" $?
[ "$(grep -c . "$dir/two.log")" -gt 20 ] && ! grep -q "^error" "$dir/two.log"; check "rank 0 alone prints (no second copy of the lines, no error)" $?
# the stage-0 start: the same command with nothing learned (lr 0, EMA = weights) writes the init
./train_vlv "${tiny[@]}" --threads 1 --steps0 1 --lr0 0 --ema 0 --out "$dir/init" > "$dir/init.log" 2>&1
check "the initial weights, as a stage-0 checkpoint of lr 0" $?
./test_vlv --close "$dir/one/stage0.bin" "$dir/two/stage0.bin" "$dir/init/stage0.bin" 1e-4 > "$dir/close0.log"
check "stage 0 (30 steps): $(grep 'trained tensors agree' "$dir/close0.log" | sed 's/.*agree *//')" $?
# the losses and gradient norms of every logged window, as metrics.jsonl keeps them (6 digits):
# relative 1e-5, ten units of the last digit (their sums over the batch differ by rounding only;
# measured: equal to the digits kept)
"${PYTHON:-/usr/bin/python3}" - "$dir/one/metrics.jsonl" "$dir/two/metrics.jsonl" > "$dir/losses.log" <<'PY'
import json, sys
def train(path):
    return [r for r in map(json.loads, open(path)) if r["kind"] == "train"]
a, b = train(sys.argv[1]), train(sys.argv[2])
worst = max(abs(x[k] - y[k]) / max(abs(x[k]), 1e-12) for x, y in zip(a, b) for k in ("loss", "norm"))
same = len(a) == len(b) > 0 and all((x["stage"], x["step"]) == (y["stage"], y["step"]) for x, y in zip(a, b))
print(f"{len(a)} windows, worst relative difference {worst:.1e}")
sys.exit(0 if same and worst <= 1e-5 else 1)
PY
check "every stage's logged losses and norms agree to 1e-5: $(cat "$dir/losses.log")" $?
# the check can fail: the same run from a build whose ranks do not sum their gradients (each
# trains on its own rows) is far outside the tolerance
sed 's/^    else { sum_grads_over_ranks(m, groups); }$/    else { (void)sum_grads_over_ranks; }/' train_vlv.c > "$dir/mutant.c"
if ! grep -q '(void)sum_grads_over_ranks;' "$dir/mutant.c"; then
  check "the mutant without the gradient sum (train_vlv.c no longer has the line it changes)" 1
else
  cp -r vlvc "$dir/"
  OMPI_CC=${CC:-cc} ${MPICC:-mpicc} -O2 -std=gnu11 -fno-math-errno -fopenmp -DUSE_MPI -o "$dir/mutant_mpi" "$dir/mutant.c" -lstb -lz -lm
  timeout 300 mpirun --oversubscribe --bind-to none -np 2 "$dir/mutant_mpi" --threads 1 "${tiny[@]}" --baseline 0 --out "$dir/mutant" > "$dir/mutant.log" 2>&1
  ./test_vlv --close "$dir/one/stage0.bin" "$dir/mutant/stage0.bin" "$dir/init/stage0.bin" 1e-4 > "$dir/close_mutant.log"
  [ $? = 1 ] && [ -s "$dir/mutant/stage0.bin" ]
  check "a mutant whose ranks do not sum their gradients fails that check: $(grep 'trained tensors agree' "$dir/close_mutant.log" | grep -oE 'worst [^(]*')" $?
fi
# stages 1 and 2 and the baseline, each from the same start (the one-process run's checkpoints)
for n in 1 2; do
  mkdir -p "$dir/from1_$n" "$dir/from2_$n"
  cp "$dir/one/stage0b.bin" "$dir/from1_$n/"
  cp "$dir/one/stage0b.bin" "$dir/one/stage1.bin" "$dir/from2_$n/"
done
./train_vlv "${tiny[@]}" --threads 1 --from 1 --baseline 0 --steps2 1 --out "$dir/from1_1" > "$dir/from1_1.log" 2>&1
mpi 2 "${tiny[@]}" --from 1 --baseline 0 --steps2 1 --out "$dir/from1_2" > "$dir/from1_2.log" 2>&1
./test_vlv --close "$dir/from1_1/stage1.bin" "$dir/from1_2/stage1.bin" "$dir/one/stage0b.bin" 1e-4 > "$dir/close1.log"
check "stage 1 (20 steps, the clip at z over the global batch): $(grep 'trained tensors agree' "$dir/close1.log" | sed 's/.*agree *//')" $?
./train_vlv "${tiny[@]}" --threads 1 --from 2 --out "$dir/from2_1" > "$dir/from2_1.log" 2>&1
mpi 2 "${tiny[@]}" --from 2 --out "$dir/from2_2" > "$dir/from2_2.log" 2>&1
./test_vlv --close "$dir/from2_1/model.bin" "$dir/from2_2/model.bin" "$dir/one/stage1.bin" 1e-4 > "$dir/close2.log"
check "stage 2 (20 steps, the loss over the whole batch's tokens): $(grep 'trained tensors agree' "$dir/close2.log" | sed 's/.*agree *//')" $?
./test_vlv --close "$dir/from2_1/baseline.bin" "$dir/from2_2/baseline.bin" "$dir/one/stage0b.bin" 1e-4 > "$dir/close3.log"
check "the baseline (10 steps, through the encoder): $(grep 'trained tensors agree' "$dir/close3.log" | sed 's/.*agree *//')" $?

# The evaluation split over 2 ranks scores as one process does: each example's forward pass is
# the same arithmetic whatever batch holds it, and the noise is the global batch's.
./train_vlv "${tiny[@]}" --threads 1 --eval_model "$dir/one/model.bin" --out "$dir/eval1" > "$dir/eval1.log" 2>&1
mpi 2 "${tiny[@]}" --eval_model "$dir/one/model.bin" --out "$dir/eval2" > "$dir/eval2.log" 2>&1
[ -n "$(result "$dir/eval1.log")" ] && [ "$(result "$dir/eval1.log")" = "$(result "$dir/eval2.log")" ] &&
  same_files "$dir/eval1" "$dir/eval2" captions.tsv t2i.tsv t2i.png roundtrip.png; status=$?
check "the evaluation on 2 ranks: the same RESULT, captions, oracle readings and pictures as on 1" $status

# The same 2 ranks again: the same bits (the sums go in rank order, whatever MPI's algorithm).
mpi 2 "${tiny[@]}" --out "$dir/two_again" > "$dir/two_again.log" 2>&1
same_files "$dir/two" "$dir/two_again" "${stages[@]}" captions.tsv; check "2 ranks twice: the same checkpoints and captions, bit for bit" $?
# interrupted twice (--stop_after), then resumed: the uninterrupted run's bits
mpi 2 "${tiny[@]}" --stop_after 17 --out "$dir/resumed" > "$dir/resumed1.log" 2>&1
s1=$?
mpi 2 "${tiny[@]}" --stop_after 40 --out "$dir/resumed" > "$dir/resumed2.log" 2>&1
s2=$?
mpi 2 "${tiny[@]}" --out "$dir/resumed" > "$dir/resumed3.log" 2>&1
s3=$?
[ $s1 = 0 ] && [ $s2 = 0 ] && [ $s3 = 0 ] && grep -q "resuming" "$dir/resumed3.log" && same_files "$dir/two" "$dir/resumed" "${stages[@]}" captions.tsv
check "2 ranks stopped twice and resumed: the uninterrupted run's checkpoints, bit for bit" $?

# ZeRO-1 (--zero 1): each rank keeps the moments of half the weights. The gradients are the
# same rank-order sums, each chunk's weights get the same AdamW arithmetic, and the squared
# gradient norm is the same double sum in another grouping, which rounds to the same float norm
# unless it lies within ~1e-16 of a float's rounding boundary: the same bits as without, the
# training state (its moments gathered from both ranks) included.
mpi 2 "${tiny[@]}" --zero 1 --out "$dir/zero" > "$dir/zero.log" 2>&1
status=$?
[ $status = 0 ] && grep -q "ZeRO-1: each of the 2 ranks keeps AdamW's moments of" "$dir/zero.log" &&
  same_files "$dir/two" "$dir/zero" "${stages[@]}" captions.tsv && same_state "$dir/two/train_state.bin" "$dir/zero/train_state.bin"
check "ZeRO-1 on 2 ranks: the same checkpoints, captions and training state as without, bit for bit" $?
mpi 2 "${tiny[@]}" --zero 1 --stop_after 23 --out "$dir/zero_resumed" > /dev/null 2>&1
s1=$?
mpi 2 "${tiny[@]}" --out "$dir/zero_resumed" > "$dir/zero_resumed.log" 2>&1 # resumed without ZeRO: the state is the same file
s2=$?
[ $s1 = 0 ] && [ $s2 = 0 ] && grep -q "resuming" "$dir/zero_resumed.log" && same_files "$dir/two" "$dir/zero_resumed" "${stages[@]}"
check "a ZeRO-1 run stopped, then resumed without ZeRO: the uninterrupted run's bits" $?
# from pretrained parts (the tiny run's own pretrained.bin), as the default preset starts
parts=(--pretrained "$dir/one/pretrained.bin")
mpi 2 "${tiny[@]}" "${parts[@]}" --out "$dir/parts" > "$dir/parts.log" 2>&1
s1=$?
mpi 2 "${tiny[@]}" "${parts[@]}" --zero 1 --out "$dir/parts_zero" > "$dir/parts_zero.log" 2>&1
s2=$?
[ $s1 = 0 ] && [ $s2 = 0 ] && grep -q "pretrained parts" "$dir/parts.log" && same_files "$dir/parts" "$dir/parts_zero" stage1.bin model.bin baseline.bin captions.tsv
check "from pretrained parts, 2 ranks with and without ZeRO-1: the same bits ($(result "$dir/parts_zero.log"))" $?

# A rank killed mid-run: mpirun stops the other rank and fails; the last checkpoint is whole, and
# the run resumes from it to the uninterrupted run's bits.
long=("${tiny[@]}" --steps0 400 --ckpt_every 20)
mpi 2 "${long[@]}" --out "$dir/killed" > "$dir/killed.log" 2> "$dir/killed.err" &
launcher=$!
for _ in $(seq 600); do [ -s "$dir/killed/train_state.bin" ] && break; sleep 0.1; done
root_pid=$(cat "$dir/killed/lock" 2>/dev/null)
ranks_of() { # OUT: the pids of the ranks (not mpirun) training into OUT, read from /proc (no procps needed)
  local f
  for f in /proc/[0-9]*/cmdline; do
    tr '\0' ' ' < "$f" 2>/dev/null | grep -q "^build/train_vlv_mpi .*--out $1 " && basename "$(dirname "$f")"
  done
  return 0
}
victim=$(ranks_of "$dir/killed" | grep -vx "${root_pid:-none}" | head -n 1)
[ -n "$victim" ] && kill -9 "$victim"
wait "$launcher"; status=$?
sleep 0.5
[ -n "$victim" ] && [ $status != 0 ] && [ -z "$(ranks_of "$dir/killed")" ]; status=$?
check "rank 1 killed: mpirun fails and stops rank 0 ($(grep -m1 -oE 'exited on signal [0-9]+|killed|terminated' "$dir/killed.err"))" $status
mpi 2 "${long[@]}" --out "$dir/killed" > "$dir/killed2.log" 2>&1
status=$?
mpi 2 "${long[@]}" --out "$dir/unkilled" > "$dir/unkilled.log" 2>&1
[ $status = 0 ] && grep -q "resuming" "$dir/killed2.log" && same_files "$dir/unkilled" "$dir/killed" "${stages[@]}"
check "the killed run resumes from its last checkpoint to the uninterrupted run's bits" $?

# A rank that cannot read its data (another --data for rank 1 only): every rank stops with its
# message, and the run folder is left as it was.
cp -r "$dir/two" "$dir/kept"
before=$(cd "$dir/kept" && find . -type f | sort | xargs sha256sum)
timeout 120 mpirun --oversubscribe --bind-to none -np 1 build/train_vlv_mpi --threads 1 "${tiny[@]}" --out "$dir/kept" : \
  -np 1 build/train_vlv_mpi --threads 1 "${tiny[@]}" --data "folder:$dir/no_such_folder" --out "$dir/kept" > "$dir/nodata.log" 2> "$dir/nodata.err"
status=$?
[ $status != 0 ] && [ $status != 124 ] && grep -q "no_such_folder" "$dir/nodata.err" && [ "$(cd "$dir/kept" && find . -type f | sort | xargs sha256sum)" = "$before" ]
check "rank 1 cannot read its data: every rank stops, the message names it, the run folder is unchanged" $?
timeout 120 mpirun --oversubscribe --bind-to none -np 1 build/train_vlv_mpi --threads 1 "${tiny[@]}" --out "$dir/kept" : \
  -np 1 build/train_vlv_mpi --threads 1 "${tiny[@]}" --seed 2 --out "$dir/kept" > "$dir/other.log" 2> "$dir/other.err"
status=$?
[ $status != 0 ] && [ $status != 124 ] && grep -q "every rank must run the same command" "$dir/other.err" && [ "$(cd "$dir/kept" && find . -type f | sort | xargs sha256sum)" = "$before" ]
check "rank 1 runs another command: refused with a message, the run folder unchanged" $?
mpi 2 "${tiny[@]}" --batch 7 --out "$dir/odd" > /dev/null 2> "$dir/odd.err"
[ $? != 0 ] && grep -q "does not split over 2 ranks" "$dir/odd.err"; check "a batch that does not split over the ranks is refused" $?

echo "mpi: $passed passed, $failed failed"
[ "$failed" = 0 ]
