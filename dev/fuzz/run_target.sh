#!/usr/bin/env bash
# Runs one fuzz target of dev/fuzz/ for SECONDS and prints one line: its executions, its
# coverage (libFuzzer's cov: edges, ft: features) and its findings. Exits non-zero on a finding
# (a crash, a sanitizer report, a leak, a hang over 10 s, more than 2.5 GB of memory).
#   dev/fuzz/run_target.sh NAME SECONDS        (make fuzz builds the targets and runs them all)
# It starts from the committed seeds dev/fuzz/corpus/NAME and from what earlier runs found,
# build/fuzz/corpus/NAME, where it adds what it finds; a finding's input goes to
# build/fuzz/crashes/, libFuzzer's output to build/fuzz/NAME.log. The readers' messages and
# the targets' stdout are discarded (-close_fd_mask=3): the refusals would flood the log.
set -uo pipefail
name=$1 seconds=$2
bin=build/fuzz/fuzz_$name log=build/fuzz/$name.log
seeds=dev/fuzz/corpus/${name%_stb} # image_stb reads what image reads
mkdir -p "build/fuzz/corpus/$name" build/fuzz/crashes build/fuzz/tmp
export TMPDIR=$PWD/build/fuzz/tmp # the input files; what a crash leaves stays in build/
# 2.5 GB: the IDX reader may allocate the 1 GiB a header claims, and stb_image reallocates up to
# 2 GiB for a PNG's IDAT chunks from the lengths they claim (only touched as far as data follows)
"$bin" "build/fuzz/corpus/$name" "$seeds" -max_total_time="$seconds" -timeout=10 \
  -rss_limit_mb=2560 -close_fd_mask=3 -print_final_stats=1 -artifact_prefix="build/fuzz/crashes/$name-" > "$log" 2>&1
status=$?
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
# the last status line: "#RUNS DONE cov: 412 ft: 1033 corp: 40/9113b ..." (or the last before a finding)
cov=$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -n 1 | sed -E 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/cov \1 ft \2 corpus \3/')
if [ $status -eq 0 ]; then
  printf 'ok   fuzz %-14s %8s runs in %s s, %s, 0 crashes\n' "$name" "${runs:-?}" "$seconds" "${cov:-no coverage line}"
  exit 0
fi
artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
what=$(grep -m 1 -E '^SUMMARY: |ERROR: libFuzzer: |fuzz harness: ' "$log")
printf 'FAIL fuzz %-14s %s after %s runs: %s (input %s, log %s)\n' "$name" "${cov:-}" "${runs:-?}" "${what:-exit status $status}" "${artifact:-none}" "$log"
exit 1
