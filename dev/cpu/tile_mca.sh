#!/usr/bin/env bash
# The matmul register tile on CPUs this machine does not have: train_vlv.c's matmul_units is
# compiled for each -march below, at gcc's own preferred vector width and at 512 bits, and the
# tile's inner loop (the loop of matmul_units with the most FMAs: one k of the full 12-row tile)
# goes through llvm-mca's model of that CPU. A model, not a timing: it counts ports and
# latencies of one core with everything in L1, which is where the tile runs (dev/cpu/README.md).
#
#   dev/cpu/tile_mca.sh [--cc gcc]          needs llvm-mca (Debian's llvm)
#
# Per row: the vector registers of the loop, its FMAs, llvm-mca's cycles per iteration, the
# FLOP per cycle that gives, and that as a share of the core's fp32 peak (FMA ports x lanes x 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
cc=gcc
[ "${1:-}" = --cc ] && cc=$2
command -v llvm-mca > /dev/null || { echo "dev/cpu/tile_mca.sh: needs llvm-mca (apt-get install llvm)" >&2; exit 1; }
work=$(mktemp -d /tmp/vlv_mca.XXXXXX)
trap 'rm -rf "$work"' EXIT

# -march, llvm-mca -mcpu, the core's peak in FLOP per cycle (2 FMA ports x lanes x 2)
targets=(
  "haswell haswell 32"                 # AVX2, 2 x 256-bit FMA
  "znver3 znver3 32"                   # AMD Zen 3: AVX2, 2 x 256-bit FMA
  "skylake-avx512 skylake-avx512 64"   # Intel Xeon: 2 x 512-bit FMA
  "icelake-server icelake-server 64"
  "sapphirerapids sapphirerapids 64"
)
echo "| -march | vector width | registers | FMAs per k | cycles per k (llvm-mca) | FLOP per cycle | of the core's peak |"
echo "|---|---|---|---|---|---|---|"
for target in "${targets[@]}"; do
    read -r march mcpu peak <<< "$target"
    for width in default 512; do
        flags=(-O3 -march="$march" -fopenmp -fno-math-errno -std=gnu11 -DVLV_NO_MAIN -S)
        [ "$width" = 512 ] && flags+=(-mprefer-vector-width=512)
        if [ "$width" = 512 ] && [ "$("$cc" -march="$march" -dM -E -x c /dev/null | grep -c "__AVX512F__ ")" = 0 ]; then continue; fi
        "$cc" "${flags[@]}" train_vlv.c -o "$work/tile.s"
        # the loop (a label and the jump back to it, one basic block) of matmul_units with the most FMAs
        python3 - "$work/tile.s" > "$work/loop.s" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
body = text[text.index("\nmatmul_units:"):]
lines = body[:body.index(".size\tmatmul_units")].split("\n")
best = []
for i, line in enumerate(lines):
    if not re.match(r"^\.L\d+:$", line):
        continue
    for j in range(i + 1, len(lines)):
        if re.match(r"^\.L\d+:$", lines[j]):
            break
        if re.match(r"\s+j\w+\s+" + re.escape(line[:-1]) + "$", lines[j]):
            loop = lines[i + 1:j + 1]
            if sum("vfmadd" in x for x in loop) > sum("vfmadd" in x for x in best):
                best = loop
            break
print("\n".join(best))
PY
        fmas=$(grep -c vfmadd "$work/loop.s")
        reg=$(grep -q zmm "$work/loop.s" && echo zmm || echo ymm)
        lanes=$([ "$reg" = zmm ] && echo 16 || echo 8)
        cycles=$(llvm-mca -mcpu="$mcpu" -iterations=1000 "$work/loop.s" 2> /dev/null | sed -n 's/^Total Cycles: *//p')
        awk -v m="$march" -v w="$width" -v r="$reg" -v f="$fmas" -v c="$cycles" -v l="$lanes" -v p="$peak" 'BEGIN {
            per_k = c / 1000; flop = f * l * 2 / per_k
            printf "| %s | %s | %s | %d | %.2f | %.1f | %.0f%% |\n", m, (w == "default" ? "gcc'"'"'s default" : "512 (the Makefile'"'"'s)"), r, f, per_k, flop, 100 * flop / p }'
    done
done
