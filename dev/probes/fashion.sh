#!/usr/bin/env bash
# Issue "The paper's experiments in miniature", real images: VLV on Fashion-MNIST (Debian's
# dataset-fashion-mnist) against the no-stage-1 baseline and a plain supervised classifier, at
# K = 100, 500 and 2,000 labelled images, over seeds. One command:
#
#   dev/probes/fashion.sh OUT SEED...      e.g. dev/probes/fashion.sh ~/vlv-runs/fashion 1337 1 2
#
# 1. OUT/decoder: `./train_vlv --preset scratch --data fashion-mnist` with the first seed: a
#    decoder and caption LM pretrained on Fashion-MNIST's first 25,000 train images (stages 0
#    and 0b), stage 1 on the next 30,000 (images only), stage 2 and the baseline at K = 500.
#    Both threads; a finished folder is evaluated again, an interrupted one resumes.
# 2. OUT/k_curve: stage 2 and the baseline again from that stage 1 at each K and seed
#    (dev/probes/stage2_sweep.sh k_curve, 1 thread per run, two at a time).
# 3. OUT/classifier.md: dev/probes/probe_classifier.py on the decoder folder, at each K ($PYTHON,
#    else /usr/bin/python3: Debian's python3-torch; the PyPI wheel ran a classifier in 50 s
#    where Debian's had not finished one after 3 minutes).
# Every evaluation scores the first VLV_EVAL_N (default 2,000) of the 10,000 t10k images; caption
# exact is class accuracy. OUT/fashion.md gets the two tables. VLV_FLAGS: flags added to every
# train_vlv run (e.g. a smaller model to try the script out); VLV_CLASSIFIER_FLAGS: to the classifier.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: $0 OUT SEED..." >&2; exit 2; }
out=$1; shift
[ -x train_vlv ] || { echo "build first: make train_vlv" >&2; exit 1; }
eval_n=${VLV_EVAL_N:-2000}
mkdir -p "$out"
t0=$SECONDS
./train_vlv --preset scratch --data fashion-mnist --seed "$1" --eval_n "$eval_n" ${VLV_FLAGS:-} --out "$out/decoder" > "$out/decoder.log" 2>&1 ||
  { tail -5 "$out/decoder.log" >&2; echo "the decoder run failed: $out/decoder.log" >&2; exit 1; }
grep '^RESULT' "$out/decoder.log"
pairs=()
for seed in "$@"; do pairs+=("$seed:$out/decoder"); done
VLV_FLAGS="--preset scratch --data fashion-mnist --eval_n $eval_n ${VLV_FLAGS:-}" dev/probes/stage2_sweep.sh k_curve "$out/k_curve" "${pairs[@]}"
"${PYTHON:-/usr/bin/python3}" dev/probes/probe_classifier.py "$out/decoder" --K 100,500,2000 --seeds "$(IFS=,; echo "$*")" --eval "$eval_n" \
  ${VLV_CLASSIFIER_FLAGS:-} > "$out/classifier.md"
{
  echo "# Fashion-MNIST: VLV, its baseline and a supervised classifier ($(lscpu | sed -n 's/^Model name: *//p'), $(( (SECONDS - t0 + 30) / 60 )) min)"
  echo
  echo "## VLV and the baseline (caption exact = class accuracy)"
  echo
  cat "$out/k_curve/k_curve.md"
  echo
  echo "## Classifiers on the same K labelled images"
  echo
  cat "$out/classifier.md"
} > "$out/fashion.md"
cat "$out/fashion.md"
