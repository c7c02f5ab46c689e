#!/usr/bin/env bash
# Issue "The paper's experiments in miniature", query count: VLV with N_z learned queries (the
# paper's N_q; --n_z) in the text encoder's first N_z of its 16 positions, the PAD token in the
# rest, from the shipped pretrained parts: stages 1 and 2 of the default preset for each N_z and
# seed, scored on the default 512 held-out scenes (caption exact and per attribute, round trip
# exact and pixel MSE). The paper's Table 4 has reconstruction FID 5.72 / 5.60 / 5.30 with
# 16 / 32 / 77 queries.
#
#   dev/probes/query_count.sh OUT SEED...      e.g. dev/probes/query_count.sh ~/vlv-runs/queries 1337 1 2
#
# VLV_QUERIES: the N_z values (default "4 8 16"). Each run has 1 thread, two run at a time, with
# --baseline 0 (the baseline has no queries to count). OUT/query_count.md gets the table over the
# seeds and every run's RESULT line; it covers every run's log in OUT, so invocations add up. A
# run folder that holds a finished run is evaluated again, an interrupted one resumes.
set -euo pipefail
cd "$(dirname "$0")/../.."
. dev/probes/lib.sh
[ $# -ge 2 ] || { echo "usage: $0 OUT SEED..." >&2; exit 2; }
out=$1; shift
[ -x train_vlv ] || { echo "build first: make train_vlv" >&2; exit 1; }
queries=${VLV_QUERIES:-4 8 16}
mkdir -p "$out"
jobs=()
for seed in "$@"; do
  for n in $queries; do jobs+=("./train_vlv --seed $seed --n_z $n --baseline 0 --threads 1 --out $out/nz$n-$seed"); done
done
cases=$(for n in $queries; do printf 'nz%s=N_z = %s\n' "$n" "$n"; done)
run_and_tabulate "$out" query_count "$cases" "${jobs[@]}"
