#!/usr/bin/env bash
# dev/gpu/gpu_check.sh LOGDIR — the whole GPU check of the CUDA build, in under 10 minutes on one
# H100 (the device machine of doc/cuda.md; run from anywhere, it works in the repository root):
#
#   1. environment: GPU, driver, nvcc, torch
#   2. build for sm_90: train_vlvcu, test_vlvcu and their cuBLAS variants, and the labs
#      dev/cuda/*.cu (make's targets; if make lacks them or fails, nvcc directly)
#   3. references: dev/vlv.py dump for the configs small and awkward (the Makefile's) and wide
#      (sizes past every kernel's first loop iteration: 81-token attention rows, 96-wide heads,
#      150 classes, split-K products, 170 tokens in the embedding gradient)
#   4. test_vlvcu on each (every tensor against PyTorch, determinism), the checkpoint round trip
#      C -> PyTorch -> C, the readers; test_vlvcu_cublas on small and awkward
#   5. each lab's correctness (dev/cuda/LAB --check)
#   6. speed: images/s of each objective's training step at batch 32, for the default preset
#      (train_vlvcu --bench; PyTorch on the bench.bin it wrote) and for the full preset's size
#      (train_vlvcu --model-check; PyTorch the same config), hand-written and cuBLAS builds,
#      PyTorch eager and torch.compile; then the tiny end-to-end run of dev/test/test_pipeline.sh on
#      the GPU and on the CPU (train_vlv), whose RESULT lines must agree
#   7. while time is left: the labs' timing tables, then compute-sanitizer memcheck on
#      test_vlvcu small
#
# Every part runs under a time limit; a part that fails is reported and the others still run.
# The last lines printed are the summary table. Exit status 0 when every check passed.
# LOGDIR gets env.log build.log test.log labs.log bench.log sanitizer.log summary.txt (seven
# files: the device tool brings back at most eight). Scratch files go to $TMPDIR.
set -u
LOGDIR=${1:?usage: dev/gpu/gpu_check.sh LOGDIR}
mkdir -p "$LOGDIR" && LOGDIR=$(cd "$LOGDIR" && pwd) || { echo "cannot create $LOGDIR"; exit 2; }
cd "$(dirname "$0")/../.." || exit 2
export PATH="$PATH:/usr/local/cuda/bin"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64" # libcublas of the _cublas builds
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
WORK=${TMPDIR:-/tmp}/vlv_gpu_check
rm -rf "$WORK" && mkdir -p "$WORK"
START=$SECONDS
DEADLINE=${DEADLINE:-570}   # seconds: stop starting optional work after this
for f in env build test labs bench sanitizer; do : > "$LOGDIR/$f.log"; done
SUMMARY="$LOGDIR/summary.txt"
: > "$SUMMARY"
FAILED=0

elapsed() { echo $((SECONDS - START)); }
left() { echo $((DEADLINE - (SECONDS - START))); }
# record NAME STATUS DETAIL: one row of the summary; STATUS other than ok/skipped counts as failed
record() {
    printf '%-34s %-8s %s\n' "$1" "$2" "$3" >> "$SUMMARY"
    case "$2" in ok|skipped) ;; *) FAILED=1 ;; esac
}
# why LOG: the first line of LOG that says what went wrong, shortened
why() { grep -m1 -E '^FAIL|[Ee]rror|TIMED OUT|Traceback|failed' "$1" 2>/dev/null | cut -c1-90; }
# run LOG LIMIT CMD...: runs CMD with a time limit, appending its output to LOG; returns its status
run() {
    local log=$1 limit=$2; shift 2
    echo "\$ $* (limit ${limit}s, at $(elapsed)s)" >> "$log"
    timeout --kill-after=5 "$limit" "$@" >> "$log" 2>&1
    local rc=$?
    [ $rc -eq 124 ] && echo "TIMED OUT after ${limit}s" >> "$log"
    return $rc
}

# ---------------------------------------------------------------------------------------------
# 1. environment
{
    echo "date: $(date -u)"; uname -a
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi failed"
    nvcc --version 2>&1 | tail -n 2
    gcc --version 2>&1 | head -n 1
    $PYTHON -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' 2>&1
    git log --oneline -n 1 2>/dev/null
} >> "$LOGDIR/env.log" 2>&1
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
record "environment" ok "${GPU:-no nvidia-smi}; $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'no nvcc')"

# ---------------------------------------------------------------------------------------------
# 2. build. The Makefile's targets when it has them (warnings are errors there, as in CI); else,
#    or if that fails (a newer host compiler may warn where CI's does not), nvcc directly with
#    warnings shown but not fatal, so that the checks still run. Either way: -arch=sm_90.
LABS=$(ls dev/cuda/*.cu 2>/dev/null | xargs -n1 basename 2>/dev/null | sed 's/\.cu$//')
NVCC_FLAGS="-O3 -std=c++20 -arch=sm_90 -lineinfo -Xcompiler -Wall,-Wextra"
# train_vlvcu holds the shared pipeline (vlvc/pipeline.h), which needs stb_image and zlib; test_vlvcu
# needs zlib (the CRC32 of the checkpoints, vlvc/config.h). The GPU
# machine has no libstb-dev and no registry to install it from, so the caller brings Debian's
# headers and static libraries in .devdeps/{include,lib} (an ignored folder that
# dev/gpu/gpu_deps.sh fills, sent along with the device tool's `carry`).
if [ -d .devdeps ]; then
    export CPATH="$PWD/.devdeps/include${CPATH:+:$CPATH}" LIBRARY_PATH="$PWD/.devdeps/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
fi
printf '#include <stb/stb_image.h>\n#include <zlib.h>\nint main(void) { return stbi_is_hdr("") + (int)zlibVersion()[0]; }\n' > "$WORK/deps.c"
if ! gcc "$WORK/deps.c" -o "$WORK/deps" -lstb -lz -lm >> "$LOGDIR/build.log" 2>&1; then
    record "build deps" FAILED "no stb_image or zlib here: run dev/gpu/gpu_deps.sh on the CPU machine and carry .devdeps"
fi
build_direct() {
    local pids=() rc=0
    nvcc $NVCC_FLAGS -o train_vlvcu train_vlv.cu -lstb -lz & pids+=($!)
    nvcc $NVCC_FLAGS -o test_vlvcu test_vlv.cu -lz & pids+=($!)
    nvcc $NVCC_FLAGS -DUSE_CUBLAS -o train_vlvcu_cublas train_vlv.cu -lstb -lz -lcublas & pids+=($!)
    nvcc $NVCC_FLAGS -DUSE_CUBLAS -o test_vlvcu_cublas test_vlv.cu -lz -lcublas & pids+=($!)
    for lab in $LABS; do nvcc $NVCC_FLAGS -DUSE_CUBLAS -o dev/cuda/$lab dev/cuda/$lab.cu -lcublas & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    return $rc
}
export -f build_direct; export NVCC_FLAGS LABS
t0=$SECONDS
rm -f train_vlvcu test_vlvcu train_vlvcu_cublas test_vlvcu_cublas
for lab in $LABS; do rm -f dev/cuda/$lab; done
how="make"
if make -n train_vlvcu test_vlvcu train_vlvcu_cublas test_vlvcu_cublas cuda-labs >/dev/null 2>&1; then
    run "$LOGDIR/build.log" 300 make -j16 NVCC_ARCH=-arch=sm_90 train_vlvcu test_vlvcu train_vlvcu_cublas test_vlvcu_cublas cuda-labs \
        || { how="nvcc (make failed)"; run "$LOGDIR/build.log" 300 bash -c build_direct; }
else
    how="nvcc (no make targets)"
    run "$LOGDIR/build.log" 300 bash -c build_direct
fi
missing=""
for b in train_vlvcu test_vlvcu train_vlvcu_cublas test_vlvcu_cublas; do [ -x $b ] || missing="$missing $b"; done
for lab in $LABS; do [ -x dev/cuda/$lab ] || missing="$missing dev/cuda/$lab"; done
if [ -z "$missing" ]; then record "build (sm_90)" ok "with $how in $((SECONDS - t0))s"
else record "build (sm_90)" FAILED "missing:$missing (build.log)"; fi

# ---------------------------------------------------------------------------------------------
# 3. references from the PyTorch twin (CPU, float64), the three configs in parallel
cfg_from_make() { # the Makefile's CFG_<name>, or the fallback given
    local v
    v=$(make -s --no-print-directory --eval="print-%: ; @echo \$(\$*)" "print-CFG_$1" 2>/dev/null | tail -n 1)
    case "$v" in --*) echo "$v" ;; *) echo "$2" ;; esac
}
CFG_small=$(cfg_from_make small "--batch 3 --seed 1")
CFG_awkward=$(cfg_from_make awkward "--batch 5 --seed 2 --img_size 12 --patch 4 --n_q 6 --vocab 13 --cap_len 7 --d_v 24 --nh_v 3 --L_v 1 --L_a 2 --nh_a 4 --d_t 16 --nh_t 4 --L_t 1 --d_d 20 --nh_d 5 --L_d 2 --d_freq 8 --d_g 12 --nh_g 3 --L_g 1 --prediction v")
CFG_wide="--batch 5 --seed 3 --img_size 36 --patch 4 --n_q 33 --vocab 150 --cap_len 34 --d_v 96 --nh_v 1 --L_v 1 --L_a 1 --nh_a 3 --d_t 40 --nh_t 1 --L_t 1 --d_d 136 --nh_d 2 --L_d 1 --d_freq 10 --d_g 72 --nh_g 2 --L_g 1"
CONFIGS="small awkward wide"
t0=$SECONDS
pids=()
for c in $CONFIGS; do
    cfgvar="CFG_$c"
    run "$WORK/dump_$c.log" 240 env OMP_NUM_THREADS=4 $PYTHON dev/vlv.py dump ${!cfgvar} --out_ckpt "$WORK/$c.ckpt" --out_state "$WORK/$c.state" &
    pids+=($!)
done
refs_ok=""
i=0
for c in $CONFIGS; do
    if wait "${pids[$i]}"; then refs_ok="$refs_ok $c"; fi
    i=$((i + 1))
    { echo "=== reference $c"; cat "$WORK/dump_$c.log"; } >> "$LOGDIR/test.log"
done
if [ "$refs_ok" = " small awkward wide" ]; then record "references (dev/vlv.py dump)" ok "small awkward wide in $((SECONDS - t0))s"
else record "references (dev/vlv.py dump)" FAILED "only:$refs_ok (test.log)"; fi

# ---------------------------------------------------------------------------------------------
# 4. test_vlvcu against the references
passed_of() { grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -n 1; }
test_one() { # test_one BINARY CONFIG LABEL
    local bin=$1 c=$2 label=$3 log="$WORK/$3.log"
    if [ ! -x "$bin" ] || [ ! -f "$WORK/$c.state" ]; then record "$label" skipped "no binary or no reference"; return; fi
    run "$log" 120 ./$bin "$WORK/$c.ckpt" "$WORK/$c.state" --save-trained "$WORK/$c.$bin.trained.ckpt"
    local rc=$?
    { echo "=== $label"; cat "$log"; } >> "$LOGDIR/test.log"
    local worst
    worst=$(grep -E '^(ok|FAIL) ' "$log" | grep -o 'rel err [0-9.e+-]*' | awk '{ if ($3 + 0 > w) w = $3 + 0 } END { printf "%.2e", w }')
    if [ $rc -eq 0 ]; then record "$label" ok "$(passed_of "$log"); worst rel err $worst"
    else
        record "$label" FAILED "rc=$rc $(passed_of "$log"): $(why "$log")"
    fi
}
for c in $CONFIGS; do test_one test_vlvcu $c "test_vlvcu $c"; done
for c in small awkward; do test_one test_vlvcu_cublas $c "test_vlvcu_cublas $c"; done
# the checkpoint test_vlvcu wrote after stage 2 through PyTorch and back, bit for bit; the readers
if [ -f "$WORK/small.test_vlvcu.trained.ckpt" ]; then
    run "$LOGDIR/test.log" 60 $PYTHON dev/vlv.py roundtrip "$WORK/small.test_vlvcu.trained.ckpt" "$WORK/small.roundtrip.ckpt" \
        && run "$WORK/compare.log" 30 ./test_vlvcu --compare "$WORK/small.test_vlvcu.trained.ckpt" "$WORK/small.roundtrip.ckpt"
    rc=$?; cat "$WORK/compare.log" >> "$LOGDIR/test.log" 2>/dev/null
    if [ $rc -eq 0 ]; then record "checkpoint round trip (small)" ok "$(passed_of "$WORK/compare.log")"
    else record "checkpoint round trip (small)" FAILED "rc=$rc: $(why "$WORK/compare.log")"; fi
else
    record "checkpoint round trip (small)" skipped "no trained checkpoint"
fi
if [ -x test_vlvcu ] && [ -f "$WORK/small.state" ]; then
    run "$WORK/readers.log" 60 ./test_vlvcu --readers "$WORK/small.ckpt" "$WORK/small.state"
    rc=$?; cat "$WORK/readers.log" >> "$LOGDIR/test.log"
    if [ $rc -eq 0 ]; then record "broken files rejected" ok "$(passed_of "$WORK/readers.log")"
    else record "broken files rejected" FAILED "rc=$rc: $(why "$WORK/readers.log")"; fi
fi

# ---------------------------------------------------------------------------------------------
# 5. the labs: correctness of every one, then the matmul timing table
for lab in $LABS; do
    if [ ! -x dev/cuda/$lab ]; then record "lab $lab: correctness" FAILED "not built"; continue; fi
    run "$WORK/lab_$lab.log" 90 dev/cuda/$lab --check
    rc=$?; { echo "=== lab $lab --check"; cat "$WORK/lab_$lab.log"; } >> "$LOGDIR/labs.log"
    if [ $rc -eq 0 ]; then record "lab $lab: correctness" ok "$(tail -n 1 "$WORK/lab_$lab.log" | cut -c1-60)"
    else record "lab $lab: correctness" FAILED "rc=$rc: $(why "$WORK/lab_$lab.log")"; fi
done

# ---------------------------------------------------------------------------------------------
# 6. speed, batch 32, two models: the default preset's (train_vlvcu --bench on the pipeline's
#    real batches; PyTorch times the very weights it wrote, bench.bin), and the full preset's
#    size (train_vlvcu --model-check; PyTorch the same config with fresh weights)
BATCH=32
STEPS=30
ips_model_check() { # ips_model_check LOG STAGE: images/s from a --model-check summary line
    awk -v s="$2" '$1 == "summary" && $2 == s { for (i = 1; i <= NF; i++) if ($(i+1) == "images/s") print $i }' "$1" 2>/dev/null | tail -n 1
}
ips_bench() { # ips_bench LOG STAGE: images/s from a --bench BENCH line
    awk -v s="$2" '$1 == "BENCH" && $2 == s { print $5 }' "$1" 2>/dev/null | tail -n 1
}
ips_torch() { # ips_torch LOG MODE STAGE
    awk -v m="$2" -v s="$3" '$1 == "RESULT" && $2 == m && $3 == s { print $5 }' "$1" 2>/dev/null | tail -n 1
}
# torch_bench NAME LOG BUDGET [bench_torch flags]: eager and torch.compile within BUDGET seconds.
# One compiled objective took 12-45 s on an H200 (compilation included), so 50 s are reserved
# for each (bench_torch.py's default, 75 s, skipped the default preset's stage 2 there).
torch_bench() {
    local name=$1 log=$2 budget=$3; shift 3
    if [ "$budget" -lt 60 ]; then record "speed: PyTorch, $name" skipped "no time left"; return; fi
    run "$log" $((budget + 30)) $PYTHON dev/bench/bench_torch.py --device cuda --no_inference --batch $BATCH --steps 20 \
        --budget_s $budget --compile_s 50 "$@"
    local rc=$?; cat "$log" >> "$LOGDIR/bench.log"
    if [ $rc -eq 0 ]; then record "speed: PyTorch, $name" ok "$(grep -c '^RESULT' "$log") results, $(grep -c '^SKIP' "$log") skipped"
    else record "speed: PyTorch, $name" FAILED "rc=$rc: $(why "$log")"; fi
}
# c_bench NAME LOG OK_DETAIL CMD...: one timed run of a train_vlvcu build, recorded
c_bench() {
    local name=$1 log=$2 detail=$3; shift 3
    run "$log" 120 "$@"
    local rc=$?; { echo "=== $*"; cat "$log"; } >> "$LOGDIR/bench.log"
    if [ $rc -eq 0 ]; then record "speed: $name" ok "$detail"; else record "speed: $name" FAILED "rc=$rc: $(why "$log")"; fi
}
for bin in train_vlvcu train_vlvcu_cublas; do
    if [ -x $bin ]; then
        c_bench "$bin, default preset" "$WORK/bench_default_$bin.log" "BENCH lines in bench.log" \
            ./$bin --bench 20 --batch $BATCH --out "$WORK/bench_default_$bin"
    else
        record "speed: $bin, default preset" skipped "not built"
    fi
    if [ -x $bin ]; then
        c_bench "$bin, full-size model" "$WORK/bench_full_$bin.log" "every loss falls" ./$bin --model-check -b $BATCH -n $STEPS
    else
        record "speed: $bin, full-size model" skipped "not built"
    fi
done
# the NCCL data-parallel path with one rank (the shared-file bootstrap: this machine has no MPI):
# its ncclAllReduce of the gradients runs each step, so its BENCH lines less train_vlvcu's are
# what the all-reduce costs; built here without MPI (the Makefile's target adds Open MPI)
if run "$LOGDIR/build.log" 120 nvcc $NVCC_FLAGS -DUSE_NCCL -o train_vlvcu_nccl train_vlv.cu -lstb -lz -lnccl; then
    rm -f "$WORK/nccl_id"
    c_bench "train_vlvcu_nccl, 1 rank, default preset" "$WORK/bench_nccl.log" "BENCH lines in bench.log (less train_vlvcu's: the all-reduce)" \
        env VLV_NCCL_ID_FILE="$WORK/nccl_id" VLV_RANK=0 VLV_RANKS=1 ./train_vlvcu_nccl --bench 20 --batch $BATCH --out "$WORK/bench_nccl"
else
    record "speed: train_vlvcu_nccl, 1 rank" FAILED "did not build: $(why "$LOGDIR/build.log")"
fi
# the time left, less 90 s for the labs' tables, the sanitizer and the summary, split in two
budget=$(( ($(left) - 90) / 2 ))
if [ -f "$WORK/bench_default_train_vlvcu/bench.bin" ]; then
    torch_bench "default preset" "$WORK/torch_default.log" $budget --ckpt "$WORK/bench_default_train_vlvcu/bench.bin"
else
    record "speed: PyTorch, default preset" skipped "no bench.bin from train_vlvcu --bench"
fi
torch_bench "full-size model" "$WORK/torch_full.log" $(( $(left) - 90 ))

# the shared pipeline end to end: dev/test/test_pipeline.sh's tiny run on the GPU and on the CPU
TINY="--batch 8 --steps0 30 --steps0b 20 --steps1 20 --steps2 20 --K 16 --d_v 32 --d_t 32 --d_d 32 --d_g 32
      --L_v 1 --L_a 1 --L_t 1 --L_d 1 --L_g 1 --nh_v 2 --nh_a 2 --nh_t 2 --nh_d 2 --nh_g 2 --d_freq 16
      --eval_n 16 --sample_steps 4 --log_every 5 --eval_every 15 --ckpt_every 10 --baseline 1 --steps_base 0 --lr_base 0 --threads 1 --pretrained none"
if [ ! -x train_vlvcu ]; then
    record "pipeline: tiny run, GPU vs CPU" skipped "train_vlvcu not built"
elif [ "$(left)" -lt 90 ]; then
    record "pipeline: tiny run, GPU vs CPU" skipped "no time left"
else
    run "$WORK/pipe_cpu_build.log" 60 make train_vlv; cat "$WORK/pipe_cpu_build.log" >> "$LOGDIR/build.log"
    run "$WORK/pipe_gpu.log" 60 ./train_vlvcu $TINY --out "$WORK/pipe_gpu"
    rc_gpu=$?
    run "$WORK/pipe_cpu.log" 60 ./train_vlv $TINY --out "$WORK/pipe_cpu"
    rc_cpu=$?
    { echo "=== pipeline, GPU"; cat "$WORK/pipe_gpu.log"; echo "=== pipeline, CPU"; cat "$WORK/pipe_cpu.log"; } >> "$LOGDIR/bench.log"
    # every logged loss within 1e-3 (relative) of the CPU's; the RESULT lines are shown (their
    # exact counts may legitimately differ where a caption decision is a near-tie)
    r_gpu=$(grep '^RESULT' "$WORK/pipe_gpu.log" | sed 's/ minutes=.*//'); r_cpu=$(grep '^RESULT' "$WORK/pipe_cpu.log" | sed 's/ minutes=.*//')
    worst=$(paste <(grep -o 'step .*loss [0-9.]*' "$WORK/pipe_gpu.log" | grep -o '[0-9.]*$') \
                  <(grep -o 'step .*loss [0-9.]*' "$WORK/pipe_cpu.log" | grep -o '[0-9.]*$') |
            awk 'NF == 2 { d = ($1 - $2) / ($2 > 0 ? $2 : 1); if (d < 0) d = -d; if (d > w) w = d; n++ } NF != 2 { bad = 1 }
                 END { if (bad || n == 0) print "mismatch"; else printf "%.1e", w }')
    same=$([ "$r_gpu" = "$r_cpu" ] && echo "same RESULT" || echo "RESULT differs: GPU ${r_gpu#RESULT } | CPU ${r_cpu#RESULT }")
    if [ $rc_gpu -ne 0 ] || [ -z "$r_gpu" ]; then record "pipeline: tiny run, GPU vs CPU" FAILED "rc=$rc_gpu: $(why "$WORK/pipe_gpu.log")"
    elif [ -z "$r_cpu" ]; then record "pipeline: tiny run, GPU vs CPU" ok "GPU ${r_gpu#RESULT }; no CPU run to compare (pipe_cpu: $(why "$WORK/pipe_cpu.log"))"
    elif [ "$worst" != "mismatch" ] && awk -v w="$worst" 'BEGIN { exit !(w <= 1e-3) }'; then
        record "pipeline: tiny run, GPU vs CPU" ok "logged losses within $worst; $same"
    else record "pipeline: tiny run, GPU vs CPU" FAILED "logged losses differ ($worst); $same"; fi
fi

# ---------------------------------------------------------------------------------------------
# the labs' timing tables (each lab run in full: its correctness sweep again, then its table),
# matmul first, while time is left
for lab in matmul $(echo "$LABS" | grep -vx matmul); do
    [ -x dev/cuda/$lab ] || continue
    if [ "$(left)" -lt 100 ]; then record "lab $lab: timing" skipped "no time left"; continue; fi
    run "$WORK/lab_${lab}_timing.log" 60 dev/cuda/$lab
    rc=$?; { echo "=== lab $lab (timing)"; cat "$WORK/lab_${lab}_timing.log"; } >> "$LOGDIR/labs.log"
    if [ $rc -eq 0 ]; then record "lab $lab: timing" ok "table in labs.log"; else record "lab $lab: timing" FAILED "rc=$rc: $(why "$WORK/lab_${lab}_timing.log")"; fi
done

# ---------------------------------------------------------------------------------------------
# 7. compute-sanitizer memcheck on the small config, with what time is left
if command -v compute-sanitizer >/dev/null && [ -x test_vlvcu ] && [ -f "$WORK/small.state" ] && [ "$(left)" -gt 40 ]; then
    run "$LOGDIR/sanitizer.log" $(( $(left) - 15 )) compute-sanitizer --tool memcheck --error-exitcode 99 ./test_vlvcu "$WORK/small.ckpt" "$WORK/small.state"
    rc=$?
    if [ $rc -eq 0 ]; then record "compute-sanitizer memcheck (small)" ok "$(grep -m1 'ERROR SUMMARY' "$LOGDIR/sanitizer.log")"
    elif [ $rc -eq 124 ]; then record "compute-sanitizer memcheck (small)" skipped "ran out of time"
    else record "compute-sanitizer memcheck (small)" FAILED "rc=$rc: $(grep -m1 'ERROR SUMMARY' "$LOGDIR/sanitizer.log")"; fi
else
    record "compute-sanitizer memcheck (small)" skipped "no tool, binary or time"
fi

# ---------------------------------------------------------------------------------------------
# the table
{
    echo
    echo "images/s per training step, batch $BATCH, ${GPU:-GPU}, fp32 (higher is better)"
    printf '%-22s %12s %14s %12s %14s %9s %9s\n' "model, stage" vlv.cu vlv.cu+cuBLAS "torch eager" torch.compile "x eager" "x compile"
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else printf "-" }'; }
    # rows MODEL PARSER: one row per stage from the logs of that model (default | full)
    rows() {
        local model=$1 parse=$2 s c e k
        for s in stage0 stage0b stage1 stage2; do
            c=$($parse "$WORK/bench_${model}_train_vlvcu.log" $s)
            e=$(ips_torch "$WORK/torch_$model.log" eager $s); k=$(ips_torch "$WORK/torch_$model.log" compile $s)
            printf '%-22s %12s %14s %12s %14s %9s %9s\n' "$model $s" "$c" "$($parse "$WORK/bench_${model}_train_vlvcu_cublas.log" $s)" \
                "$e" "$k" "$(ratio "$c" "$e")" "$(ratio "$c" "$k")"
        done
    }
    rows default ips_bench
    rows full ips_model_check
    echo
    echo "total $(elapsed)s; logs in $LOGDIR; $( [ $FAILED -eq 0 ] && echo 'ALL PASSED' || echo 'SOMETHING FAILED')"
} >> "$SUMMARY"
echo
echo "=============================== vlv.cu GPU check ==============================="
cat "$SUMMARY"
exit $FAILED
