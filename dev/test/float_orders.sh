#!/usr/bin/env bash
# Every check against the twin under many float-sum orders: test_vlv built with other vector
# widths (SSE2, AVX2, the two AVX-512 kinds this project runs on: AMD Zen 4 and Intel
# Sapphire Rapids), with and without FMA contraction and fast-math, run on both test configs
# at 1 and 2 threads. No compiled-in order may decide a check (doc/testing.md). Prints, per
# build, config and thread count, the checks' verdict, the 60-step fit's error
# (greedy.losses) and the smallest greedy margin. A build this CPU cannot run (SIGILL) is
# reported as such and is not a failure; any failing check is.
#   dev/test/float_orders.sh            (after make check has written data/test/*.ckpt, *.state)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
CC=${CC:-gcc}
refs=data/test
for c in small awkward; do
  [ -f "$refs/$c.ckpt" ] && [ -f "$refs/$c.state" ] || { echo "missing $refs/$c.ckpt or .state: run make check first"; exit 1; }
done
# gcc 12 (Debian bookworm's) predates -march=znver4; its -march=native on a Zen 4 is znver3's
# tuning plus the AVX-512 extensions the CPU reports, which is what ZEN4_GCC12 spells out
ZEN4_GCC12="-march=znver3 -mavx512f -mavx512cd -mavx512bw -mavx512dq -mavx512vl -mavx512ifma -mavx512vbmi
  -mavx512vbmi2 -mavx512vnni -mavx512bitalg -mavx512vpopcntdq -mavx512bf16 -mgfni -mvaes -mvpclmulqdq"
builds=(
  "-O3 -march=x86-64"
  "-O3 -march=haswell"
  "-O3 -march=znver4"
  "-O3 $ZEN4_GCC12"
  "-O3 -march=sapphirerapids"
  "-O3 -march=native"
  "-O3 -march=native -fno-tree-vectorize"
  "-O1 -ffp-contract=off"
  "-Ofast -march=x86-64"
  "-Ofast -march=haswell"
  "-Ofast -march=znver4"
  "-Ofast $ZEN4_GCC12"
  "-Ofast -march=sapphirerapids"
  "-Ofast -march=native"
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
model=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')
echo "CPU: ${model:-unknown}, $(nproc) cores; $($CC --version | head -n 1)"
printf '%-40s %-8s %-3s %-22s %-10s %s\n' build config thr verdict fit_err min_margin
failed=0
for flags in "${builds[@]}"; do
  bin="$work/test_vlv"
  flags=$(echo $flags)
  name=${flags/$(echo $ZEN4_GCC12)/zen4 as gcc 12 builds it}
  if ! $CC $flags -fopenmp -Wall -std=gnu11 -fno-math-errno -o "$bin" test_vlv.c -lstb -lz -lm 2> "$work/cc.log"; then
    if grep -q "bad value .* for .-march=. switch" "$work/cc.log"; then
      printf '%-40s %s\n' "$name" "not built: $($CC --version | head -n 1) does not know this -march"; continue
    fi
    echo "FAIL $name: does not compile"; sed -n 1,5p "$work/cc.log"; failed=1; continue
  fi
  for c in small awkward; do
    for t in 1 2; do
      OMP_NUM_THREADS=$t "$bin" "$refs/$c.ckpt" "$refs/$c.state" > "$work/out.log" 2>&1
      rc=$?
      if [ $rc -ge 128 ] && [ $((rc - 128)) -eq 4 ]; then verdict="SIGILL: not run here"
      elif [ $rc -ne 0 ]; then verdict="FAIL ($(grep -c '^FAIL' "$work/out.log") checks)"; failed=1
      else verdict="$(tail -n 1 "$work/out.log" | awk '{print $1}') passed"; fi
      fit=$(awk '$2 == "greedy.losses" { for (i = 1; i <= NF; i++) if ($i == "rel") print $(i + 2) }' "$work/out.log")
      margin=$(sed -n 's/.*greedy.tokens.*smallest \([0-9.e+-]*\)).*/\1/p' "$work/out.log")
      printf '%-40s %-8s %-3s %-22s %-10s %s\n' "$name" "$c" "$t" "$verdict" "${fit:--}" "${margin:--}"
      if [ $rc -ne 0 ] && [ "$verdict" != "SIGILL: not run here" ]; then grep '^FAIL' "$work/out.log" | head -n 3; fi
    done
  done
done
[ $failed -eq 0 ] && echo "float orders: every build that runs here passes" || echo "float orders: FAILURES above"
exit $failed
