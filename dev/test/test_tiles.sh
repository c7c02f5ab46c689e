#!/usr/bin/env bash
# The matmul's register tile and vector width do not change a single bit: train_vlv built with
# each tile (-DMM_MR / -DMM_NR: Intel's 6 x 64, Zen's 12 x 16, others) and with AVX2 instead of
# AVX-512 runs every stage of a tiny model, and every checkpoint it writes equals the native
# build's byte for byte. The sums' order is set by MM_KC alone (train_vlv.c, "Matmul").
# Usage: dev/test/test_tiles.sh   (make test-tiles)
set -uo pipefail
cd "$(dirname "$0")/../.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
source dev/test/lib.sh # check
# the Makefile's flags without the commit define (its quotes would not survive word splitting)
CFLAGS=$(make --no-print-directory print-cflags | tail -n 1 | sed "s/-DVLV_COMMIT=[^ ]*//")
tiny=(--batch 5 --steps0 6 --steps0b 4 --steps1 4 --steps2 4 --K 8 --d_v 32 --d_t 32 --d_d 32 --d_g 32
      --L_v 1 --L_a 1 --L_t 1 --L_d 1 --L_g 1 --nh_v 2 --nh_a 2 --nh_t 2 --nh_d 2 --nh_g 2 --d_freq 16
      --eval_n 8 --sample_steps 2 --log_every 2 --eval_every 6 --ckpt_every 2 --baseline 1 --steps_base 2
      --pretrained none)
# name and extra flags of each build; the last flag wins over -march=native's
builds=("native:" "12x16:-DMM_MR=12 -DMM_NR=16" "6x64:-DMM_MR=6 -DMM_NR=64" "8x32:-DMM_MR=8 -DMM_NR=32"
        "1x16:-DMM_MR=1 -DMM_NR=16" "avx2:-march=haswell")
for b in "${builds[@]}"; do
  name=${b%%:*} extra=${b#*:}
  # shellcheck disable=SC2086
  if ! gcc $CFLAGS $extra -o "$dir/train_vlv_$name" train_vlv.c -lstb -lz -lm 2> "$dir/$name.cc"; then
    check "tiles: the $name build compiles ($extra)" 1; cat "$dir/$name.cc"; continue
  fi
  "$dir/train_vlv_$name" "${tiny[@]}" --threads 2 --out "$dir/$name" > "$dir/$name.log" 2>&1
  check "tiles: the $name build trains every stage ($extra)" $?
  [ "$name" = native ] && continue
  for f in stage0.bin stage0b.bin stage1.bin model.bin baseline.bin; do
    cmp -s "$dir/native/$f" "$dir/$name/$f"
    check "tiles: $name's $f is the native build's, byte for byte" $?
  done
done
echo "tiles: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
