#!/usr/bin/env bash
# The CPU speed benchmark: train_vlv.c against the PyTorch twin on the same machine, threads,
# config, batch and weights, in one invocation (doc/speed.md has the results).
#
#   dev/bench/bench_cpu.sh [--threads T] [--repeats N] [--rounds R] [--peak GFLOPS] [train_vlv flags, e.g. --preset full]
#
# 1. ./train_vlv --bench N: the median of N timed training steps of each stage (after 2
#    untimed), and of N one-image inferences (a greedy caption; a round trip: context, then
#    guided DDIM); it writes the weights to bench.bin.
# 2. dev/bench/bench_torch.py --ckpt bench.bin: the same in PyTorch eager mode, with
#    torch.set_num_threads(T) and OMP/OpenBLAS/MKL held to T threads as well (OpenBLAS's own
#    pthreads otherwise oversubscribe the cores and slow PyTorch several-fold).
# The two alternate for R rounds (default 3), and each side's figure per item is the best of
# its R medians: a shared or virtual machine's speed drifts by tens of percent over minutes,
# and alternating keeps that drift from favouring one side. Prints a table, then last one line: RATIO stage0=... stage0b=... stage1=... stage2=...
# caption=... roundtrip=..., each C time / PyTorch time (below 1: train_vlv.c is faster).
#
# PyTorch: $PYTHON if set, else the first of python3 and /usr/bin/python3 that imports torch.
# For speed figures use the official PyPI wheel (pip install torch) or at least OpenBLAS; the
# script prints which torch and BLAS it ran. Run it on a quiet machine: it takes T cores.
set -euo pipefail
cd "$(dirname "$0")/../.."

threads=$(nproc)
repeats=20
rounds=3
peak=0
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --repeats) repeats="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --peak) peak="$2"; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) if [ $# -lt 2 ]; then echo "dev/bench/bench_cpu.sh: flag $1 needs a value" >&2; exit 2; fi
           extra+=("$1" "$2"); shift 2 ;;
    esac
done

if [ -z "${PYTHON:-}" ]; then
    for p in python3 /usr/bin/python3; do
        if command -v "$p" > /dev/null && "$p" -c 'import torch' 2> /dev/null; then PYTHON="$p"; break; fi
    done
fi
if [ -z "${PYTHON:-}" ]; then
    echo "dev/bench/bench_cpu.sh: no python with torch: pip install torch (or set PYTHON=...)" >&2
    exit 1
fi

make -s train_vlv
work=$(mktemp -d /tmp/vlv_bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
for round in $(seq "$rounds"); do
    echo "== round $round of $rounds: train_vlv.c, $threads threads ($cpu)"
    OMP_NUM_THREADS=$threads ./train_vlv --bench "$repeats" --threads "$threads" --peak "$peak" --out "$work" \
        ${extra[@]+"${extra[@]}"} | tee "$work/c.log" | grep -v '^wrote'
    cat "$work/c.log" >> "$work/c_all.log"
    batch=$(sed -n 's/.*steps of each stage (after 2 untimed), batch \([0-9]*\).*/\1/p' "$work/c.log")
    ddim=$(sed -n 's/.*DDIM \([0-9]*\) steps, guidance \([0-9.e+-]*\).*/\1 \2/p' "$work/c.log")
    peak_used=$(sed -n 's/.*fp32 peak \([0-9.]*\) GFLOP\/s.*/\1/p' "$work/c.log")
    echo "== round $round of $rounds: PyTorch ($PYTHON), $threads threads"
    OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
        "$PYTHON" dev/bench/bench_torch.py --ckpt "$work/bench.bin" --device cpu --no_compile --threads "$threads" \
        --batch "$batch" --steps "$repeats" --sample_steps "${ddim% *}" --guidance "${ddim#* }" > "$work/torch.log"
    grep -E '^(torch|  BLAS|RESULT|SKIP)' "$work/torch.log"
    cat "$work/torch.log" >> "$work/torch_all.log"
done

echo
echo "best of $rounds medians of $repeats per item: training steps of batch $batch, inference of one image; fp32 peak $peak_used GFLOP/s"
awk -v peak="$peak_used" '
    FNR == NR && $1 == "BENCH" { if (!($2 in c) || $3 < c[$2]) { c[$2] = $3; gf[$2] = $7 }; next }
    $1 == "RESULT" && $2 == "eager" { if (!($3 in t) || $4 < t[$3]) t[$3] = $4 }
    END {
        n = split("stage0 stage0b stage1 stage2 caption roundtrip", items, " ")
        printf "| %-9s | %10s | %9s | %7s | %12s | %9s |\n", "item", "C ms", "C GFLOP/s", "of peak", "PyTorch ms", "C/PyTorch"
        printf "|%s|%s|%s|%s|%s|%s|\n", "-----------", "------------", "----------", "---------", "--------------", "-----------"
        line = "RATIO"
        for (i = 1; i <= n; i++) {
            k = items[i]
            r = (k in c && k in t && t[k] > 0) ? sprintf("%.3f", c[k] / t[k]) : "nan"
            printf "| %-9s | %10.3f | %9.1f | %6.0f%% | %12.3f | %9s |\n", k, c[k], gf[k], (peak > 0 ? 100 * gf[k] / peak : 0), t[k], r
            line = line " " k "=" r
        }
        print ""
        print line
    }' "$work/c_all.log" "$work/torch_all.log"
