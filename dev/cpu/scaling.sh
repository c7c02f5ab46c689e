#!/usr/bin/env bash
# Step time of train_vlv.c against batch, image size (number of patches), width and threads:
# the default preset with one setting changed at a time, each timed by ./train_vlv --bench.
# Prints a markdown table (doc/speed.md has the one measured on this project's machine).
#   dev/cpu/scaling.sh [--threads T] [--repeats N]     (run on a quiet machine)
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=$(nproc)
repeats=5
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --repeats) repeats="$2"; shift 2 ;;
        *) echo "usage: dev/cpu/scaling.sh [--threads T] [--repeats N]" >&2; exit 2 ;;
    esac
done
make -s train_vlv
work=$(mktemp -d /tmp/vlv_scaling.XXXXXX)
trap 'rm -rf "$work"' EXIT
# field of a BENCH line: 3 ms, 5 images/s, 7 GFLOP/s, 9 attention %
field() { awk -v k="$2" -v f="$3" '$1 == "BENCH" && $2 == k { print $f }' "$1"; }
echo "default preset (d 96, 32x32 images, patch 4: 64 patches, batch 32) with one change; $repeats timed steps, median"
echo
echo "| change | threads | stage 0 ms | stage 0 images/s | stage 0 GFLOP/s | stage 0 attention FLOPs | stage 1 ms | stage 1 GFLOP/s | stage 1 attention FLOPs |"
echo "|---|---|---|---|---|---|---|---|---|"
while read -r t label flags; do
    [ -n "$t" ] || continue
    [ "$t" = T ] && t=$threads
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=$t ./train_vlv --bench "$repeats" --threads "$t" --out "$work" $flags > "$work/log" 2>&1 ||
        { echo "| ${label//_/ } | $t | failed: $(tail -n 1 "$work/log") |"; continue; }
    printf '| %s | %s | %s | %s | %s | %s%% | %s | %s | %s%% |\n' "${label//_/ }" "$t" \
        "$(field "$work/log" stage0 3)" "$(field "$work/log" stage0 5)" "$(field "$work/log" stage0 7)" "$(field "$work/log" stage0 9)" \
        "$(field "$work/log" stage1 3)" "$(field "$work/log" stage1 7)" "$(field "$work/log" stage1 9)"
done <<'CONFIGS'
1 none
T none
T batch_8 --batch 8
T batch_16 --batch 16
T batch_64 --batch 64
T image_24_(36_patches) --img 24
T image_48_(144_patches) --img 48
T image_64_(256_patches) --img 64
T image_96_(576_patches) --img 96
T width_64 --d_v 64 --d_t 64 --d_d 64 --d_g 64 --nh_v 4 --nh_a 4 --nh_t 4 --nh_d 4 --nh_g 4
T width_128 --d_v 128 --d_t 128 --d_d 128 --d_g 128 --nh_v 4 --nh_a 4 --nh_t 4 --nh_d 4 --nh_g 4
T width_192 --d_v 192 --d_t 192 --d_d 192 --d_g 192 --nh_v 4 --nh_a 4 --nh_t 4 --nh_d 4 --nh_g 4
CONFIGS
