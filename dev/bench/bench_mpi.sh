#!/usr/bin/env bash
# Data-parallel scaling on one machine (doc/distributed.md): images/s of the default preset's
# training steps as one process with T threads, as 1 MPI rank with 1 thread, and as T ranks of 1
# thread each, the preset's global batch (32) in every case.
#
#   dev/bench/bench_mpi.sh [--threads T] [--steps S] [--rounds R]   (after make train_vlv build/train_vlv_mpi)
#
# Each case trains S steps (default 150) of stage 0 (--preset scratch) and of stage 1 (the
# default preset, from data/pretrained.bin) in a fresh run folder and stops (--stop_after); its
# figure is the ms/step of the progress window of the last 50 steps (the first windows hold the
# start-up). The cases alternate for R rounds (default 2) and each keeps its best: a shared
# machine's speed drifts over minutes. Prints a table, then one line:
# SCALING stage0=<ranks/threads speed-up> stage1=... (T ranks of 1 thread against 1 process of T threads).
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=$(nproc)
steps=150
rounds=2
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        *) echo "usage: $0 [--threads T] [--steps S] [--rounds R]" >&2; exit 2 ;;
    esac
done
[ -x train_vlv ] && [ -x build/train_vlv_mpi ] || { echo "build first: make train_vlv build/train_vlv_mpi" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage_args() { # STAGE: the flags that train it first
    if [ "$1" = stage0 ]; then echo "--preset scratch --log_every 50 --eval_every 100000 --stop_after $steps"
    else echo "--log_every 50 --eval_every 100000 --stop_after $steps"; fi
}
ms_per_step() { # LOG STAGE: the last progress window's ms/step
    awk -v s="$2" '$1 == s && $2 == "step" { for (i = 1; i <= NF; i++) if ($(i) == "ms/step") ms = $(i - 1) } END { print ms }' "$1"
}
cases=("process:$threads" "ranks:1" "ranks:$threads")
declare -A best
for round in $(seq "$rounds"); do
    for stage in stage0 stage1; do
        for c in "${cases[@]}"; do
            kind=${c%%:*} n=${c#*:}
            out="$work/$stage-$kind-$n-$round"
            if [ "$kind" = process ]; then
                ./train_vlv $(stage_args $stage) --threads "$n" --out "$out" > "$out.log" 2>&1
            else
                mpirun --oversubscribe --bind-to none -np "$n" build/train_vlv_mpi $(stage_args $stage) --threads 1 --out "$out" > "$out.log" 2>&1
            fi
            ms=$(ms_per_step "$out.log" $stage)
            [ -n "$ms" ] || { echo "no progress line in $out.log:" >&2; tail -n 5 "$out.log" >&2; exit 1; }
            key="$stage,$c"
            if [ -z "${best[$key]:-}" ] || awk -v a="$ms" -v b="${best[$key]}" 'BEGIN { exit !(a < b) }'; then best[$key]=$ms; fi
            echo "round $round $stage $kind $n: $ms ms/step" >&2
        done
    done
done
batch=32
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; Open MPI $(mpirun --version | head -n 1 | awk '{ print $NF }')"
echo "| stage | 1 process x $threads threads | 1 rank x 1 thread | $threads ranks x 1 thread | ranks / process |"
echo "|---|---|---|---|---|"
line="SCALING"
for stage in stage0 stage1; do
    p=${best[$stage,process:$threads]} r1=${best[$stage,ranks:1]} rn=${best[$stage,ranks:$threads]}
    awk -v s=$stage -v p=$p -v r1=$r1 -v rn=$rn -v b=$batch 'BEGIN {
        printf "| %s | %.1f ms, %.0f img/s | %.1f ms, %.0f img/s | %.1f ms, %.0f img/s | %.2f |\n", s, p, b * 1e3 / p, r1, b * 1e3 / r1, rn, b * 1e3 / rn, p / rn }'
    line="$line $stage=$(awk -v p=$p -v rn=$rn 'BEGIN { printf "%.3f", p / rn }')"
done
echo "$line"
