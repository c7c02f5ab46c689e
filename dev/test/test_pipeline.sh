#!/usr/bin/env bash
# End-to-end test of ./train_vlv and ./caption on a tiny model: every stage runs, a run
# interrupted twice resumes to the very same weights and scores as an uninterrupted one,
# a finished run reruns only its evaluation, a run from pretrained parts trains what the run that
# made them trained, the run folder shows what it did (pictures, curves, metrics), bad flags and a NaN loss stop with a message
# (and the NaN keeps the last good checkpoint), and caption captions and reconstructs.
# Usage: dev/test/test_pipeline.sh   (after make train_vlv caption)
set -uo pipefail
cd "$(dirname "$0")/../.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
source dev/test/lib.sh # check, result, same_state
# a copy of SRC at DST with edits OFFSET:FORMAT:VALUE (VALUE packed at byte OFFSET with struct's
# FORMAT, little-endian; FORMAT x: the byte XORed with VALUE), then its CRC32 trailer made right
# again (crc: the edit meets the checks behind the CRC32) or left as it was (keep)
edited() { # SRC DST crc|keep EDIT...
  "${PYTHON:-/usr/bin/python3}" - "$@" <<'PY'
import struct, sys, zlib
src, dst, crc, *edits = sys.argv[1:]
data = bytearray(open(src, 'rb').read())
for edit in edits:
    at, fmt, value = edit.split(':')
    if fmt == 'x':
        data[int(at)] ^= int(value)
    else:
        struct.pack_into('<' + fmt, data, int(at), float(value) if fmt in 'fd' else int(value))
if crc == 'crc':
    data[-4:] = struct.pack('<I', zlib.crc32(bytes(data[:-4])))
open(dst, 'wb').write(data)
PY
}
tiny=(--batch 8 --steps0 30 --steps0b 20 --steps1 20 --steps2 20 --K 16
      --d_v 32 --d_t 32 --d_d 32 --d_g 32 --L_v 1 --L_a 1 --L_t 1 --L_d 1 --L_g 1
      --nh_v 2 --nh_a 2 --nh_t 2 --nh_d 2 --nh_g 2 --d_freq 16
      --eval_n 16 --sample_steps 4 --log_every 5 --eval_every 15 --ckpt_every 10 --baseline 1 --steps_base 0 --lr_base 0 --pretrained none)

./train_vlv "${tiny[@]}" --out "$dir/a" > "$dir/a.log" 2>&1
check "a tiny run completes" $?
test -n "$(result "$dir/a.log")"; status=$?
check "it ends with a RESULT line: $(result "$dir/a.log")" $status
# the table breaks captions, baseline, round trip and T2I down by attribute; the caption
# attributes' mean is the mean of its four parts (one object per scene; each figure is printed
# to 0.1, so the two sides may differ by 0.05 + 0.05)
[ "$(grep -cE '^\| (caption attributes|baseline caption attributes|round trip exact \(oracle\)|text-to-image exact \(oracle\)) \| [0-9.]+% \(shape [0-9.]+%, colour [0-9.]+%, size [0-9.]+%, place [0-9.]+%\) \|$' "$dir/a.log")" = 4 ] &&
  grep '^| caption attributes |' "$dir/a.log" | grep -oE '[0-9.]+%' | tr -d % | tr '\n' ' ' |
  awk '{ d = $1 - ($2 + $3 + $4 + $5) / 4; exit !(NF == 5 && d < 0.1001 && d > -0.1001) }'; status=$?
check "the evaluation table gives each attribute: $(grep '^| caption attributes |' "$dir/a.log" | cut -c 24-)" $status
missing=0
for f in log.txt vocab.txt stage0.bin stage0b.bin stage1.bin model.bin baseline.bin train_state.bin \
         t2i.png t2i.png.txt t2i.tsv roundtrip.png captions.tsv captions_baseline.tsv t2i_step000015.png; do
  [ -s "$dir/a/$f" ] || { echo "     missing: $f"; missing=1; }
done
check "the run folder holds the log, vocabulary, checkpoints, PNG grids and captions" $missing
# stage 1 and the baseline start the vision encoder from the DiT (--vit_from_dit 1, the default);
# the stage-1 checkpoint's ViT patch embedding is then the DiT's before training moved it
[ "$(grep -c "the vision encoder starts from the frozen DiT" "$dir/a.log")" = 2 ]
check "stage 1 and the baseline say that the vision encoder starts from the DiT" $?
./train_vlv "${tiny[@]}" --d_v 16 --out "$dir/vd" > "$dir/vd.log" 2>&1
[ $? = 1 ] && grep -q "vit_from_dit 1 starts the vision encoder from the DiT, and it needs d_v = d_d" "$dir/vd.log" && [ ! -e "$dir/vd/train_state.bin" ]
check "--vit_from_dit 1 with d_v != d_d is refused before training" $?
./train_vlv "${tiny[@]}" --d_v 16 --vit_from_dit 0 --steps0 2 --steps0b 2 --steps1 2 --steps2 2 --baseline 0 --eval_n 8 --out "$dir/vd0" > "$dir/vd0.log" 2>&1
[ $? = 0 ] && ! grep -q "starts from the frozen DiT" "$dir/vd0.log"; check "--vit_from_dit 0 trains such a config from random weights" $?
# the cross-entropy stages must fall even in 20 steps; the diffusion losses of such a short run
# are too noisy to promise that (the default run's log shows them falling), so only finite
for s in stage0 stage0b stage1 stage2 baseline; do
  first=$(grep "^$s \+step" "$dir/a.log" | head -n 1 | sed 's/.*loss \([0-9.]*\).*/\1/')
  last=$(grep "^$s \+step" "$dir/a.log" | tail -n 1 | sed 's/.*loss \([0-9.]*\).*/\1/')
  case $s in
    stage0|stage1) awk -v a="$first" -v b="$last" 'BEGIN { exit !(a > 0 && b > 0 && b < 10) }'; check "$s: loss $first -> $last (finite)" $? ;;
    *) awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }'; check "$s: loss $first -> $last (falling)" $? ;;
  esac
done
grep -qE "conditioning gap -?[0-9.]+% \| T2I exact [0-9.]+% \(shape [0-9.]+%, colour [0-9.]+%, size [0-9.]+%, place [0-9.]+%\)" "$dir/a.log"; check "stage 0 reports the conditioning gap and T2I per attribute" $?
grep -qE "^stage1 .*\| norm [0-9.]+ \| +[0-9.]+ ms/step \| +[0-9]+ img/s \| ETA [0-9]+m[0-9]+s, run [0-9]+m[0-9]+s$" "$dir/a.log"
check "progress lines show the loss, gradient norm, ms/step, images/s and the ETA of the stage and of the run" $?
grep -qE "\| lr [0-9.e+-]+ \| norm [0-9.]+ \(max [0-9.]+\) \| +[0-9.]+ ms/step .* images/s .* GFLOP/s .* ETA" "$dir/a/log.txt"
check "the log's progress lines add the lr, the largest norm and GFLOP/s" $?
awk '!/^RESULT / && length($0) > 120 { bad = 1; print "     too long: " $0 } END { exit bad }' "$dir/a.log"
check "every line the run prints fits in 120 columns (the RESULT line is for scripts)" $?
grep -qE "stage1  health 20: z recovers ([-0-9.]+% of the caption's gain|n/a \(the decoder gains nothing from the caption yet\))$" "$dir/a.log"
check "stage 1's health line gives the share of the caption's gain z recovers, or n/a" $?
head -n 3 "$dir/a/log.txt" | grep -q "^==== .*: ./train_vlv --batch 8 " && grep -qE "^  --steps1 +20$" "$dir/a/log.txt" && grep -qE "^  --pretrained +none$" "$dir/a/log.txt"
check "the log begins with the command line and every resolved setting" $?
missing=0
for f in metrics.jsonl loss_stage0.png loss_stage0b.png loss_stage1.png loss_stage2.png loss_baseline.png \
         pretrained.bin pretrained.txt test_images/captions.tsv test_images/0000.png test_images/0015.png; do
  [ -s "$dir/a/$f" ] || { echo "     missing: $f"; missing=1; }
done
[ $missing = 0 ] && [ "$(wc -l < "$dir/a/test_images/captions.tsv")" = 16 ] && [ ! -e "$dir/a/test_images/0016.png" ]
check "the run folder holds a loss curve per stage, metrics.jsonl, the pretrained parts and the 16 test images" $?
[ "$(grep -c '^{"kind":"train","stage":"stage1","step":[0-9]*,"loss":[0-9.e+-]*,"lr":' "$dir/a/metrics.jsonl")" = 4 ] &&
  [ "$(grep -c '^{"kind":"health","stage":"stage0","step":[0-9]*,"loss_caption":' "$dir/a/metrics.jsonl")" = 2 ] &&
  "${PYTHON:-/usr/bin/python3}" -c 'import json, sys; [json.loads(l) for l in open(sys.argv[1])]' "$dir/a/metrics.jsonl"
check "metrics.jsonl: a JSON record per progress window (4 in stage 1) and per health check" $?
# caption dropout as the stage-0 batches had it: within 4 standard deviations of --dropout's
# binomial count (a pipeline that never empties a caption, or empties them all, fails)
dropout_ok() { # LOG P
  sed -n 's/^stage0  caption dropout: \([0-9]*\) of \([0-9]*\) captions .*/\1 \2/p' "$1" | tail -n 1 |
    awk -v p="$2" 'NF == 2 && $2 > 0 { m = $2 * p; d = $1 - m; exit !($1 > 0 && d * d <= 16 * m * (1 - p)) } END { if (NR == 0) exit 1 }'
}
dropout_ok "$dir/a.log" 0.1; status=$?
check "stage 0 reports the caption dropout its batches had: $(grep -o 'caption dropout: [0-9]* of [0-9]*' "$dir/a.log")" $status
# the same checks fail on a pipeline that never drops a caption or trains stage 2 on test
# scenes (mutants of vlvc/run.h, built at -O1 in a copy of the tree)
pipeline_mutant() { # NAME TEXT REPLACEMENT: builds $dir/m_NAME/train_vlv with the mutant, runs the tiny run
  local m="$dir/m_$1"
  mkdir -p "$m" && cp -r train_vlv.c vlvc "$m/" || return 1
  TEXT="$2" REPL="$3" "${PYTHON:-/usr/bin/python3}" -c 'import os, sys; p = sys.argv[1]; s = open(p).read(); t = os.environ["TEXT"]
assert s.count(t) == 1, "mutant text not found once"; open(p, "w").write(s.replace(t, os.environ["REPL"]))' "$m/vlvc/run.h" || return 1
  ${CC:-cc} -O1 -std=gnu11 -fopenmp -o "$m/train_vlv" "$m/train_vlv.c" -lstb -lz -lm || return 1
  "$m/train_vlv" "${tiny[@]}" --threads 1 --out "$m/run" > "$m/run.log" 2>&1
}
pipeline_mutant no_dropout "r->batch_dropped = caption_dropout(r->text_tokens, r->B, model_config(r->model)->n_q, r->s.caption_dropout, &rng);" \
  "r->batch_dropped = 0;"
! dropout_ok "$dir/m_no_dropout/run.log" 0.1 && grep -q "caption dropout: 0 of 240" "$dir/m_no_dropout/run.log"
check "a pipeline that never drops a caption fails the dropout check" $?
pipeline_mutant test_pairs "default: make_examples(r, SPLIT_CAPTIONED," "default: make_examples(r, SPLIT_TEST,"
[ $? = 1 ] && grep -q "stage2 step 0 drew item .*, which the evaluation uses: the training and test splits overlap" "$dir/m_test_pairs/run.log"
check "a pipeline that draws the K pairs from the test split stops: the splits overlap" $?

# the provenance of the pretrained parts names what made them, and its SHA-256 is the file's
prov="$dir/a/pretrained.txt"
[ "$(head -n 1 "$prov")" = "vlv.c pretrained parts, provenance version 1" ] &&
  [ "$(grep '^sha256: ' "$prov" | cut -d' ' -f2)" = "$(sha256sum < "$dir/a/pretrained.bin" | cut -d' ' -f1)" ] &&
  grep -q "^command: ./train_vlv --batch 8 " "$prov" && grep -qE "^commit: [0-9a-f]{12}" "$prov" && grep -qE "^hardware: .*CPU thread" "$prov" &&
  grep -qE "^wall time: stage 0 [0-9.]+ s, stage 0b [0-9.]+ s, over 1 invocation$" "$prov" &&
  grep -qE "^t2i: 16 held-out prompts, DDIM 4 steps, guidance 1: exact [0-9.]+% \(shape [0-9.]+%, colour [0-9.]+%, size [0-9.]+%, place [0-9.]+%\)$" "$prov"
check "pretrained.txt: command, commit, hardware, wall time, T2I per attribute, and the file's SHA-256" $?

# --pretrained: stages 1 and 2 (and the baseline) from run a's parts, with the encoder initialized
# from the same seed, train the very weights run a trained after its own stages 0 and 0b
./train_vlv "${tiny[@]}" --out "$dir/p" --pretrained "$dir/a/pretrained.bin" > "$dir/p.log" 2>&1
[ $? = 0 ] && grep -q "^pretrained parts .*: $dir/a/pretrained.bin, sha256" "$dir/p.log" && grep -q "^    command   ./train_vlv --batch 8" "$dir/p.log" &&
  ! grep -q "^stage0 .*step" "$dir/p.log" && grep -q "^stage1 .*step" "$dir/p.log" && [ ! -e "$dir/p/stage0.bin" ] && [ ! -e "$dir/p/pretrained.bin" ]
check "--pretrained starts at stage 1 and says where the parts came from" $?
cmp -s "$dir/a/stage1.bin" "$dir/p/stage1.bin" && cmp -s "$dir/a/model.bin" "$dir/p/model.bin" && cmp -s "$dir/a/baseline.bin" "$dir/p/baseline.bin" &&
  [ "$(result "$dir/a.log")" = "$(result "$dir/p.log")" ]
check "and trains the same stage-1, stage-2 and baseline weights and scores as the run that pretrained them" $?
# --n_z: fewer learned queries than text-encoder positions, from the same parts (they hold no
# queries); the model file records n_z, and its rerun, resume or caption reads it back
./train_vlv "${tiny[@]}" --out "$dir/nz" --pretrained "$dir/a/pretrained.bin" --n_z 2 > "$dir/nz.log" 2>&1
nz_status=$?
nz_slot=$(od -An -t d4 -j 100 -N 4 "$dir/nz/model.bin" 2> /dev/null | tr -d ' ')
[ $nz_status = 0 ] && grep -q "^RESULT " "$dir/nz.log" && grep -q " n_z=2$" "$dir/nz/log.txt" && [ "$nz_slot" = 2 ] &&
  ./caption -m "$dir/nz/model.bin" "$dir/nz/test_images/0000.png" > /dev/null 2>&1
check "--n_z 2 trains from the parts of an n_z = n_q run; model.bin holds n_z = ${nz_slot:-?} in header slot 25; caption reads it" $?
./train_vlv "${tiny[@]}" --out "$dir/nz" --pretrained "$dir/a/pretrained.bin" --n_z 3 > /dev/null 2> "$dir/nz3.err"
[ $? = 1 ] && grep -q "n_z 2, where this run's model has --n_z 3" "$dir/nz3.err"
check "rerunning it with another --n_z is refused, naming both" $?
./train_vlv "${tiny[@]}" --out "$dir/p" > "$dir/p2.log" 2>&1
[ $? = 1 ] && grep -q "started from the pretrained parts of SHA-256 [0-9a-f]\{64\}; this command gives none" "$dir/p2.log"
check "resuming it without --pretrained is refused" $?
mkdir -p "$dir/pc" && cp "$dir/a/pretrained.bin" "$dir/a/pretrained.txt" "$dir/pc/"
printf '\x01' | dd of="$dir/pc/pretrained.bin" bs=1 seek=4096 conv=notrunc 2> /dev/null
./train_vlv "${tiny[@]}" --out "$dir/pc/run" --pretrained "$dir/pc/pretrained.bin" > "$dir/pc.log" 2>&1
[ $? = 1 ] && grep -q "is not the file its provenance describes: its SHA-256 is" "$dir/pc.log"; check "a changed byte in pretrained.bin is refused" $?
rm "$dir/pc/pretrained.txt"
./train_vlv "${tiny[@]}" --out "$dir/pc/run" --pretrained "$dir/pc/pretrained.bin" > "$dir/pc.log" 2>&1
[ $? = 1 ] && grep -q "provenance cannot be read: could not open '$dir/pc/pretrained.txt'" "$dir/pc.log"; check "pretrained.bin without its provenance is refused" $?
# pretrained.bin changed after it was written, its provenance's SHA-256 made to match: a changed
# byte is refused by the CRC32; with the CRC32 made right again, the header's checks behind it
pretrained_cases=(
  "a header byte changed (nh_v 2 -> 3)|keep|36:x:1|is corrupt: its CRC32 is"
  "a weight's byte changed|keep|300:x:1|is corrupt: its CRC32 is"
  "version 1|keep|4:i:1|pretrained parts file of version 1; this program reads version 2"
  "a reserved header slot set|crc|200:i:1|reserved slot 50 is 1, not 0"
)
for entry in "${pretrained_cases[@]}"; do
  IFS='|' read -r name crc edits reason <<< "$entry"
  edited "$dir/a/pretrained.bin" "$dir/pc/pretrained.bin" "$crc" $edits
  sed "s/^sha256: .*/sha256: $(sha256sum < "$dir/pc/pretrained.bin" | cut -d' ' -f1)/" "$dir/a/pretrained.txt" > "$dir/pc/pretrained.txt"
  ./train_vlv "${tiny[@]}" --out "$dir/pc/run" --pretrained "$dir/pc/pretrained.bin" > "$dir/pc.log" 2>&1
  [ $? = 1 ] && grep -q "'$dir/pc/pretrained.bin' " "$dir/pc.log" && grep -qF -- "$reason" "$dir/pc.log"
  check "pretrained.bin with $name is refused ($reason)" $?
done
./train_vlv "${tiny[@]}" --d_t 48 --out "$dir/pd" --pretrained "$dir/a/pretrained.bin" > "$dir/pd.log" 2>&1
[ $? = 1 ] && grep -q "holds a model with --d_t 32, where this run's model has --d_t 48" "$dir/pd.log"; check "pretrained parts of another model config are refused" $?
./train_vlv "${tiny[@]}" --out "$dir/pe" --baseline 0 --pretrained "$dir/a/pretrained.bin" > /dev/null 2>&1 &&
  ./train_vlv "${tiny[@]}" --out "$dir/pe" --baseline 0 --pretrained "$dir/a/pretrained.bin" > "$dir/pe.log" 2>&1
[ $? = 0 ] && grep -q "holds a trained run: evaluating it again" "$dir/pe.log" && ! grep -qE "^(resuming|baseline).*baseline" "$dir/pe.log"
check "rerunning a finished run without a baseline evaluates it again and says nothing of a baseline" $?

# interrupted twice, then finished: the same weights and scores as the uninterrupted run
./train_vlv "${tiny[@]}" --out "$dir/b" --stop_after 25 > "$dir/b1.log" 2>&1
[ $? = 0 ] && grep -q "stopped after 25 steps" "$dir/b1.log" && ! grep -q '^RESULT' "$dir/b1.log"
check "--stop_after 25 stops in stage 0" $?
./train_vlv "${tiny[@]}" --out "$dir/b" --stop_after 30 > "$dir/b2.log" 2>&1
[ $? = 0 ] && grep -q "resuming .*train_state.bin at stage0, step 25 (invocation 2)" "$dir/b2.log"
check "a rerun resumes stage 0 where it stopped (step 25)" $?
./train_vlv "${tiny[@]}" --out "$dir/b" > "$dir/b3.log" 2>&1
check "the third run finishes" $?
cmp -s "$dir/a/model.bin" "$dir/b/model.bin"; check "interrupted and uninterrupted runs end with identical weights" $?
[ "$(result "$dir/a.log")" = "$(result "$dir/b3.log")" ]; check "and identical scores" $?

# the kernels, the gradient norm and AdamW are bitwise deterministic at any thread count
./train_vlv "${tiny[@]}" --out "$dir/t1" --threads 1 > "$dir/t1.log" 2>&1 && ./train_vlv "${tiny[@]}" --out "$dir/t2" --threads 2 > "$dir/t2.log" 2>&1
[ $? = 0 ] && cmp -s "$dir/t1/model.bin" "$dir/t2/model.bin" && [ "$(result "$dir/t1.log")" = "$(result "$dir/t2.log")" ]
check "1 and 2 threads train the very same weights and scores" $?

# a finished run: a rerun only evaluates
./train_vlv "${tiny[@]}" --out "$dir/a" > "$dir/a2.log" 2>&1
[ $? = 0 ] && grep -q "holds a trained run: evaluating it again" "$dir/a2.log" && ! grep -q "step .*/30" "$dir/a2.log"
check "rerunning a finished run skips every stage" $?
[ "$(result "$dir/a.log")" = "$(result "$dir/a2.log")" ]; check "and gives the same scores" $?

# --from: stages 1 and 2 again from the stage-0b checkpoint (another stage-1 recipe on the same
# frozen decoder); training is deterministic, so the same flags give the same weights again
cp -r "$dir/a" "$dir/f"
./train_vlv "${tiny[@]}" --out "$dir/f" --from 1 > "$dir/f.log" 2>&1
[ $? = 0 ] && grep -q "starting again at stage1" "$dir/f.log" && ! grep -q "^stage0 .*step" "$dir/f.log" && grep -q "^stage1 .*step" "$dir/f.log"
check "--from 1 trains stages 1 and 2 again, not stage 0" $?
cmp -s "$dir/a/model.bin" "$dir/f/model.bin"; check "and ends with the same weights as the first run" $?
# --clip_z 1 scales every stage-1 image whose gradient at z is above the batch's median: about
# half of them, so the progress lines count clipped images and the weights differ
cp -r "$dir/a" "$dir/fz"
./train_vlv "${tiny[@]}" --out "$dir/fz" --from 1 --clip_z 1 > "$dir/fz.log" 2>&1
[ $? = 0 ] && [ "$(grep -E '^stage1 .*, [1-9][0-9]* clipped at z\)' "$dir/fz/log.txt" | wc -l)" = 4 ] && ! grep -q "^stage2 .*clipped" "$dir/fz/log.txt" &&
  ! cmp -s "$dir/a/model.bin" "$dir/fz/model.bin"
check "--clip_z 1 clips stage-1 images at z (counted in each progress line) and changes the weights" $?
# a progressive stage 2 (--steps2_prefix/_llm/_encoder, the paper's unfreezing): each phase trains
# its parts alone (counted as the tensors that moved from stage1.bin: the prefix MLP's 4, then the
# caption LLM's, then the encoder's too), a run stopped inside phase 2 resumes to the same bits,
# and --steps2 beside the phases is refused
unphased=(); skip=0
for f in "${tiny[@]}"; do
  if [ $skip = 1 ]; then skip=0; continue; fi
  if [ "$f" = --steps2 ]; then skip=1; continue; fi
  unphased+=("$f")
done
trained_tensors() { ./test_vlv --close "$1/model.bin" "$1/model.bin" "$1/stage1.bin" 0 | sed -n 's/.*agree *\([0-9]*\) tensors trained.*/\1/p'; }
for p in 1 2 3; do
  phases=(--steps2_prefix 6 --steps2_llm $(( p >= 2 ? 6 : 0 )) --steps2_encoder $(( p == 3 ? 8 : 0 )) --lr2_encoder 1e-4)
  cp -r "$dir/a" "$dir/ph$p"
  ./train_vlv "${unphased[@]}" --out "$dir/ph$p" --from 2 "${phases[@]}" > "$dir/ph$p.log" 2>&1 || echo "     phase run $p failed: $(tail -n 2 "$dir/ph$p.log")"
done
n1=$(trained_tensors "$dir/ph1"); n2=$(trained_tensors "$dir/ph2"); n3=$(trained_tensors "$dir/ph3")
[ "$n1" = 4 ] && [ "${n2:-0}" -gt 4 ] && [ "${n3:-0}" -gt "${n2:-0}" ] && [ "$(grep -c '^stage2  phase [123] at step' "$dir/ph3.log")" = 3 ] &&
  cmp -s "$dir/ph3/stage1.bin" "$dir/a/stage1.bin"
check "progressive stage 2: the tensors trained by phases 1, 1-2, 1-3: ${n1:-?}, ${n2:-?}, ${n3:-?}; three phase lines" $?
cp -r "$dir/a" "$dir/phr"
./train_vlv "${unphased[@]}" --out "$dir/phr" --from 2 "${phases[@]}" --stop_after 9 > "$dir/phr1.log" 2>&1
s1=$?
./train_vlv "${unphased[@]}" --out "$dir/phr" "${phases[@]}" > "$dir/phr2.log" 2>&1
s2=$?
[ $s1 = 0 ] && [ $s2 = 0 ] && grep -q "resuming .* at stage2, step 9" "$dir/phr2.log" && cmp -s "$dir/ph3/model.bin" "$dir/phr/model.bin"
check "a progressive stage 2 stopped in phase 2 resumes to the uninterrupted run's weights" $?
./train_vlv "${tiny[@]}" --out "$dir/phx" --steps2_prefix 5 > /dev/null 2> "$dir/phx.err"
[ $? = 1 ] && grep -q "stage 2's steps are its phases' sum" "$dir/phx.err" && [ ! -e "$dir/phx" ]
check "--steps2 beside the phases' steps is refused before the run folder exists" $?
# --t_draws 1: stage 1's timesteps uniform instead of the largest of 2 draws: stage 1's weights change
cp -r "$dir/a" "$dir/ft"
./train_vlv "${tiny[@]}" --out "$dir/ft" --from 1 --t_draws 1 > "$dir/ft.log" 2>&1
[ $? = 0 ] && grep -A1 "^stage 1: " "$dir/ft.log" | grep -q ", clip_z 10$" && ! cmp -s "$dir/a/stage1.bin" "$dir/ft/stage1.bin"
check "--t_draws 1 draws stage 1's timesteps uniformly (the header says so) and changes its weights" $?
# --clip and --beta2 take one value per stage (0, 0b, 1, 2): another stage-2 value leaves stage 1's
# weights bit-identical and changes stage 2's
cp -r "$dir/a" "$dir/fb"
./train_vlv "${tiny[@]}" --out "$dir/fb" --from 1 --clip 1,1,0.05,0.5 --beta2 0.999,0.999,0.95,0.9 > "$dir/fb.log" 2>&1
[ $? = 0 ] && grep -A1 "^stage 1: " "$dir/fb.log" | grep -q ", clip 0.05, beta2 0.95, clip_z 10, t: the largest of 2 uniform draws$" && grep -A1 "^stage 2: " "$dir/fb.log" | grep -q ", clip 0.5, beta2 0.9$" &&
  cmp -s "$dir/a/stage1.bin" "$dir/fb/stage1.bin" && ! cmp -s "$dir/a/model.bin" "$dir/fb/model.bin"
check "--clip and --beta2 per stage: a stage-2 change leaves stage 1's weights and changes stage 2's" $?
# the baseline's own steps and lr leave stage 2 as it was
cp -r "$dir/a" "$dir/fl"
./train_vlv "${tiny[@]}" --out "$dir/fl" --from 2 --steps_base 10 --lr_base 3e-4 > "$dir/fl.log" 2>&1
[ $? = 0 ] && grep -A2 "^baseline: " "$dir/fl.log" | grep -q "^  10 steps of 8 images, lr 0.0003," && grep -q "^baseline .*step  *10/10 " "$dir/fl.log" &&
  cmp -s "$dir/a/model.bin" "$dir/fl/model.bin" && ! cmp -s "$dir/a/baseline.bin" "$dir/fl/baseline.bin"
check "--steps_base 10 --lr_base 3e-4: the baseline's own schedule, stage 2 unchanged" $?
# --from baseline: only the baseline trains again (from stage0b.bin), to the same weights and scores
cp -r "$dir/a" "$dir/fbase"
./train_vlv "${tiny[@]}" --out "$dir/fbase" --from baseline > "$dir/fbase.log" 2>&1
[ $? = 0 ] && grep -q "starting again at baseline from .*model.bin" "$dir/fbase.log" && ! grep -q "^stage2 .*step" "$dir/fbase.log" &&
  grep -q "^baseline .*step" "$dir/fbase.log" && cmp -s "$dir/a/baseline.bin" "$dir/fbase/baseline.bin" &&
  cmp -s "$dir/a/model.bin" "$dir/fbase/model.bin" && [ "$(result "$dir/a.log")" = "$(result "$dir/fbase.log")" ]
check "--from baseline trains the baseline alone again, to the same weights and scores" $?
./train_vlv "${tiny[@]}" --out "$dir/fbase" --from baseline --baseline 0 > /dev/null 2> "$dir/fbase0.err"
[ $? = 1 ] && grep -q "not with --baseline 0" "$dir/fbase0.err"; check "--from baseline with --baseline 0 is refused" $?
./train_vlv "${tiny[@]}" --out "$dir/f" --from 3 > "$dir/f3.log" 2>&1; [ $? = 1 ] && grep -q "not 0b, 1, 2 or baseline" "$dir/f3.log"
check "--from 3 is refused" $?
./train_vlv "${tiny[@]}" --out "$dir/f_empty" --from 2 > "$dir/f4.log" 2>&1; [ $? = 1 ] && grep -q "stage1.bin" "$dir/f4.log"
check "--from 2 without a stage-1 checkpoint names the missing file" $?

# --bench: the speed of each stage's step and of inference, and the weights for PyTorch
./train_vlv "${tiny[@]}" --out "$dir/g" --bench 2 > "$dir/g.log" 2>&1
[ $? = 0 ] && [ -s "$dir/g/bench.bin" ] && [ "$(grep '^BENCH' "$dir/g.log" | awk '$3 > 0 && $5 > 0 && $12 >= 0 && $14 == "inputs"' | wc -l)" = 6 ]
check "--bench times the 4 stages and 2 inferences (their inputs apart) and writes bench.bin" $?
"${PYTHON:-/usr/bin/python3}" dev/bench/bench_torch.py --ckpt "$dir/g/bench.bin" --device cpu --no_compile --threads 1 \
    --batch 8 --steps 1 --warmup 0 --sample_steps 4 > "$dir/g_torch.log" 2>&1
[ $? = 0 ] && [ "$(grep -c '^RESULT eager' "$dir/g_torch.log")" = 6 ]; check "dev/bench/bench_torch.py times the same items on bench.bin" $?

# one program per run folder: a second one is refused while the first holds the lock
mkdir -p "$dir/lk"
flock "$dir/lk/lock" sleep 4 &
sleep 1
./train_vlv "${tiny[@]}" --out "$dir/lk" > "$dir/lock.log" 2>&1
[ $? = 1 ] && grep -q "another program is using the run folder $dir/lk" "$dir/lock.log"; check "a second program on a run folder in use is refused" $?

# another model in the same folder is refused, with a way out
./train_vlv "${tiny[@]}" --d_t 48 --out "$dir/a" > "$dir/c.log" 2>&1
[ $? = 1 ] && grep -q -- "--fresh" "$dir/c.log"; check "a different model config in the same run folder is refused" $?

# bad flags
./train_vlv --batch abc > "$dir/d.log" 2>&1; [ $? = 1 ] && grep -q "not a whole number" "$dir/d.log"; check "--batch abc is refused" $?
./train_vlv --no_such_flag 1 > "$dir/d.log" 2>&1; [ $? = 1 ] && grep -q "unknown flag" "$dir/d.log"; check "an unknown flag is refused" $?
./train_vlv --lr0 nan > "$dir/d.log" 2>&1; [ $? = 1 ]; check "--lr0 nan is refused" $?
./train_vlv --beta2 1 > "$dir/d.log" 2>&1; [ $? = 1 ] && grep -q -- "--beta2 must be in" "$dir/d.log"; check "--beta2 1 is refused" $?
./train_vlv --clip 1,2 > "$dir/d.log" 2>&1; [ $? = 1 ] && grep -q "nor 4 of them" "$dir/d.log"; check "--clip with 2 values (not 1 or 4) is refused" $?
./train_vlv --clip_z 0.5 > "$dir/d.log" 2>&1; [ $? = 1 ] && grep -q -- "--clip_z must be" "$dir/d.log"; check "--clip_z 0.5 is refused" $?
./train_vlv --preset nope > "$dir/d.log" 2>&1; [ $? = 1 ] && grep -q "unknown preset" "$dir/d.log"; check "an unknown preset is refused" $?

# a NaN loss stops the stage and keeps the last good checkpoint: the state at step 10 gets
# weights of 1e30 (finite, so it loads; the next forward overflows on any CPU)
./train_vlv "${tiny[@]}" --out "$dir/e" --stop_after 10 > /dev/null 2>&1
cp "$dir/e/train_state.bin" "$dir/e10_state.bin" # step 10 of the tiny run, for the checks below
"${PYTHON:-/usr/bin/python3}" - "$dir/e/train_state.bin" <<'PY'
import struct, sys, zlib
state = bytearray(open(sys.argv[1], 'rb').read())
n = struct.unpack_from('<i', state, 24 * 4)[0]   # header slot 24: the parameter count
start = len(state) - 4 - 4 * 4 * n                # the four buffers, then the CRC32; the weights first
state[start:start + 4 * n] = struct.pack('<f', 1e30) * n
state[-4:] = struct.pack('<I', zlib.crc32(bytes(state[:-4])))
open(sys.argv[1], 'wb').write(state)
PY
before=$(md5sum < "$dir/e/train_state.bin")
./train_vlv "${tiny[@]}" --out "$dir/e" > "$dir/e.log" 2>&1
[ $? = 1 ] && grep -q "the loss is .*the last good checkpoint" "$dir/e.log"; check "a NaN loss stops with a message" $?
[ "$before" = "$(md5sum < "$dir/e/train_state.bin")" ]; check "and leaves the last good checkpoint untouched" $?

# weights that go non-finite while the loss stays finite (a weight decay that flips the sign of
# every weight: lr x wd = 100) are never checkpointed, and the run can go on from what was kept
cp -r "$dir/a" "$dir/w"
./train_vlv "${tiny[@]}" --out "$dir/w" --from 2 --wd 1e5 --ckpt_every 1 > "$dir/w.log" 2>&1
[ $? = 1 ] && grep -q "weights are no longer finite.*the last good checkpoint in" "$dir/w.log" && ! grep -q "the loss is" "$dir/w.log"
check "non-finite weights with a finite loss stop the run with a message" $?
./train_vlv "${tiny[@]}" --out "$dir/w" --wd 1e5 --ckpt_every 1 > "$dir/w2.log" 2>&1
grep -q "resuming .* at stage2" "$dir/w2.log" && ! grep -q "NaN or infinity" "$dir/w2.log"
check "and the kept training state loads (every number in it finite)" $?
# a rerun with other training settings would go on with another run's state: refused, naming them
./train_vlv "${tiny[@]}" --out "$dir/w" > "$dir/w3.log" 2>&1
[ $? = 1 ] && grep -q "trained with --wd 100000; this command gives --wd 0\." "$dir/w3.log"
check "a rerun with another --wd is refused, with the stored and the given value" $?
./train_vlv "${tiny[@]}" --out "$dir/a" --seed 7 > "$dir/w4.log" 2>&1
[ $? = 1 ] && grep -q "trained with --seed 1337; this command gives --seed 7\." "$dir/w4.log"
check "so is a rerun of a finished run with another --seed" $?

# nonsense on the command line is refused before anything is written
bad_flags=("--seed| -1|not a whole number" "--fresh|1e8|neither 0 nor 1" "--baseline|2|neither 0 nor 1"
           "--eval_n|0|--eval_n must be" "--t_draws|0|--t_draws must be in" "--guidance|1e30|guidance above 20" "--lr1|1e8|learning rate above 1"
           "--img|65536|out of range" "--batch|100000|would hold")
for entry in "${bad_flags[@]}"; do
  IFS='|' read -r flag value reason <<< "$entry"
  ./train_vlv --out "$dir/nonsense" "$flag" "$value" > "$dir/d.log" 2>&1
  [ $? = 1 ] && grep -q -- "$reason" "$dir/d.log" && [ ! -e "$dir/nonsense" ]; check "$flag '$value' is refused ($reason)" $?
done
./train_vlv --out "$dir/nonsense" --img 4096 --patch 1 > "$dir/d.log" 2>&1
[ $? = 1 ] && grep -q "more than 16384 patches" "$dir/d.log"; check "--img 4096 --patch 1 is refused (16.8M patches)" $?

# crafted files: a checkpoint changed after it was written, one whose header claims img_size 65536
# with patch 1 (its CRC32 made right), training states out of range, an image with a side of 0, a
# FIFO named like an image
edited "$dir/a/model.bin" "$dir/changed.bin" keep 1000:x:1
./caption -m "$dir/changed.bin" "$dir/a/t2i.png" > "$dir/d.log" 2>&1
[ $? = 1 ] && grep -q "changed.bin' is corrupt: its CRC32 is [0-9a-f]\{8\} but its contents give [0-9a-f]\{8\}; the file was changed" "$dir/d.log"
check "caption refuses a checkpoint with a changed byte: its CRC32" $?
edited "$dir/a/model.bin" "$dir/crafted.bin" crc 8:i:65536 12:i:1  # header slots 2, 3: img_size, patch
./train_vlv --eval_model "$dir/crafted.bin" --out "$dir/crafted_eval" > "$dir/d.log" 2>&1
[ $? = 1 ] && grep -q "crafted.bin.*img_size = 65536 is out of range" "$dir/d.log"; check "a checkpoint claiming img_size 65536, patch 1 is refused" $?
./caption -m "$dir/crafted.bin" "$dir/a/t2i.png" > "$dir/d.log" 2>&1
[ $? = 1 ] && grep -q "img_size = 65536 is out of range" "$dir/d.log"; check "caption refuses it too" $?
# The training state of step 10 of stage 0 (doc/formats.md: the header; at byte 256 the stage, the
# step, AdamW's step count and the batch; at 576 the SHA-256 of the pretrained parts; at 640 the
# stage times; at 680 the invocations and a zero; at 688 the weights, AdamW's first and second
# moments, the EMA), changed: a changed byte is refused by the CRC32; with the CRC32 made right
# again, each field out of range is refused by name.
n=$(od -An -t d4 -j 96 -N 4 "$dir/e10_state.bin" | tr -d ' ')
second=$((688 + 8 * n)) # the first of AdamW's second moments
state_cases=(
  "a header byte changed (nh_v 2 -> 3)|keep|36:x:1|is corrupt: its CRC32 is"
  "an EMA weight's byte changed|keep|$((688 + 12 * n + 1)):x:1|is corrupt: its CRC32 is"
  "version 5|keep|4:i:5|training state of version 5; this program reads version 6"
  "a reserved header slot set|crc|120:i:1|reserved slot 30 is 1, not 0"
  "stage 6|crc|256:i:6|its next stage is 6"
  "step 30 of stage 0's 30|crc|260:i:30 264:i:30|its next step, stage0 step 30, is outside the stage's 30 steps"
  "step -1|crc|260:i:-1|its next step, stage0 step -1, is outside"
  "AdamW's step 0 at step 10|crc|264:i:0|its AdamW step count is 0 at stage0 step 10"
  "AdamW's step at INT_MAX|crc|264:i:2147483647|its AdamW step count is 2147483647 at stage0 step 10"
  "AdamW's step 10 at stage 0's start|crc|260:i:0|its AdamW step count is 10 at stage0 step 0"
  "AdamW's moments before its first step|crc|260:i:0 264:i:0|its AdamW first moments are not zero"
  "batch 7|crc|268:i:7|its batch size is 7, its --batch 8"
  "a SHA-256 of no hex digits|crc|576:B:120|SHA-256 is neither 64 hex digits nor zeros"
  "a negative stage time|crc|640:d:-1|stage0 took -1 s"
  "0 invocations|crc|680:i:0|0 invocations"
  "the int32 after the invocations set|crc|684:i:1|the int32 after its invocation count is 1"
  "a negative second moment|crc|$second:f:-0.5|its AdamW second moments hold a negative number (entry 0 is -0.5)"
  "a NaN second moment|crc|$second:I:2143289344|NaN or infinity in its AdamW second moments"
)
cp -r "$dir/e" "$dir/e2"
for entry in "${state_cases[@]}"; do
  IFS='|' read -r name crc edits reason <<< "$entry"
  edited "$dir/e10_state.bin" "$dir/e2/train_state.bin" "$crc" $edits
  ./train_vlv "${tiny[@]}" --out "$dir/e2" > "$dir/d.log" 2>&1
  [ $? = 1 ] && grep -q "'$dir/e2/train_state.bin' " "$dir/d.log" && grep -qF -- "$reason" "$dir/d.log"
  check "a training state with $name is refused ($reason)" $?
done
printf 'P6\n4 0\n255\n' > "$dir/x.png"; mkfifo "$dir/fifo.png"
timeout 20 ./caption -m "$dir/a/model.bin" "$dir/x.png" "$dir/fifo.png" "$dir/a/t2i.png" > "$dir/cap_bad.out" 2> "$dir/cap_bad.err"
[ $? = 1 ] && [ "$(wc -l < "$dir/cap_bad.out")" = 1 ] && grep -q "x.png': not a PNG or JPEG" "$dir/cap_bad.err" &&
  grep -q "fifo.png' is a FIFO, not a regular file" "$dir/cap_bad.err"
check "caption: a 4x0 PNM named .png and a FIFO are refused at once, the good image captioned" $?

# Every file the programs read or append to is refused unless it is a regular file: a FIFO or a
# device in the place of a training state, the pretrained parts or their provenance, a checkpoint,
# a vocabulary or the log is refused at once, naming the file (timeout 10: a hang fails the check
# instead of blocking the suite)
refused_at_once() { # NAME PATTERN COMMAND...: exit status 1 within 10 s, PATTERN on stderr, nothing on stdout
  local name=$1 pattern=$2; shift 2
  timeout 10 "$@" > "$dir/h.out" 2> "$dir/h.err"
  [ $? = 1 ] && grep -qF -- "$pattern" "$dir/h.err" && [ ! -s "$dir/h.out" ]; check "$name" $?
}
mkdir -p "$dir/hf" "$dir/pf" "$dir/pt" "$dir/pz"; mkfifo "$dir/hf/train_state.bin"
refused_at_once "a FIFO as the run folder's train_state.bin is refused at once" "hf/train_state.bin' is a FIFO, not a regular file" \
  ./train_vlv "${tiny[@]}" --out "$dir/hf"
cp data/pretrained.txt "$dir/pf/P.txt"; mkfifo "$dir/pf/P.bin"
refused_at_once "a FIFO as --pretrained P.bin is refused at once" "pf/P.bin' is a FIFO, not a regular file" \
  ./train_vlv --pretrained "$dir/pf/P.bin" --out "$dir/pf/run"
cp data/pretrained.bin "$dir/pt/P.bin"; mkfifo "$dir/pt/P.txt"
refused_at_once "a FIFO as its provenance P.txt is refused at once" "pt/P.txt' is a FIFO, not a regular file" \
  ./train_vlv --pretrained "$dir/pt/P.bin" --out "$dir/pt/run"
cp data/pretrained.txt "$dir/pz/P.txt"; ln -s /dev/zero "$dir/pz/P.bin"
refused_at_once "--pretrained P.bin a symlink to /dev/zero is refused at once (not hashed forever)" \
  "pz/P.bin' is a character device, not a regular file" ./train_vlv --pretrained "$dir/pz/P.bin" --out "$dir/pz/run"
[ ! -e "$dir/pf/run" ] && [ ! -e "$dir/pt/run" ] && [ ! -e "$dir/pz/run" ]; check "and none of the three created its run folder" $?
mkfifo "$dir/model.fifo" "$dir/vocab.fifo"
refused_at_once "caption -m FIFO is refused at once" "model.fifo' is a FIFO, not a regular file" ./caption -m "$dir/model.fifo" "$dir/a/t2i.png"
refused_at_once "caption --vocab FIFO is refused at once" "vocab.fifo' is a FIFO, not a regular file" \
  ./caption -m "$dir/a/model.bin" --vocab "$dir/vocab.fifo" "$dir/a/t2i.png"
cp -r "$dir/a" "$dir/hl"; rm "$dir/hl/log.txt"; mkfifo "$dir/hl/log.txt"
refused_at_once "a FIFO as the run folder's log.txt is refused at once" "hl/log.txt' is a FIFO, not a regular file" \
  ./train_vlv "${tiny[@]}" --out "$dir/hl"

# A refused command changes nothing: every refusal is checked before the run folder is taken over
# (the lock's pid, the log, metrics.jsonl, vocab.txt), so a refused rerun leaves every file of the
# folder byte-identical (the SHA-256 of each), says why on stderr and prints nothing on stdout; the
# refusal names the setting, with the stored and the given value
folder_sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
cp -r "$dir/a" "$dir/rr"
refused_rerun() { # NAME PATTERN FLAGS...
  local name=$1 pattern=$2 before; shift 2
  before=$(folder_sums "$dir/rr")
  timeout 60 ./train_vlv "${tiny[@]}" --out "$dir/rr" "$@" > "$dir/rr.out" 2> "$dir/rr.err"
  [ $? = 1 ] && grep -qF -- "$pattern" "$dir/rr.err" && [ ! -s "$dir/rr.out" ] && [ "$before" = "$(folder_sums "$dir/rr")" ]
  check "a rerun with $name is refused ($pattern), and the folder's files are byte-identical" $?
}
refused_rerun "another training flag" "trained with --lr1 0.0003; this command gives --lr1 0.001." --lr1 1e-3
refused_rerun "another model width" "holds a run of a model with --d_g 32, where this run's model has --d_g 48." --d_g 48
refused_rerun "another prediction" "holds a run of a model with --prediction eps, where this run's model has --prediction v." --prediction v
refused_rerun "other pretrained parts" "pretrained.bin' holds a model with --d_v 96, where this run's model has --d_v 32" \
  --pretrained data/pretrained.bin
refused_rerun "--from 3" "--from: '3' is not 0b, 1, 2 or baseline" --from 3
refused_rerun "--threads 100000000" "--threads 100000000: at most 1024" --threads 100000000
timeout 60 ./train_vlv "${tiny[@]}" --out "$dir/new3" --from 3 > /dev/null 2>&1
[ $? = 1 ] && [ ! -e "$dir/new3" ]; check "--from 3 into a new folder is refused without creating it" $?
timeout 60 ./train_vlv "${tiny[@]}" --out "$dir/new2" --from 2 > /dev/null 2> "$dir/new2.err"
[ $? = 1 ] && grep -qF "new2/stage1.bin'" "$dir/new2.err" && [ ! -e "$dir/new2" ]
check "--from 2 into a new folder (no stage-1 checkpoint) is refused without creating it" $?
# one number parser for both programs: digits only, within the flag's range
refused_at_once "caption --beams ' 3' is refused (digits only)" "--beams: ' 3' is not a whole number in [1, 64]" \
  ./caption -m "$dir/a/model.bin" --beams " 3" "$dir/a/t2i.png"
refused_at_once "caption --threads 2000 is refused" "--threads: '2000' is not a whole number in [1, 1024]" \
  ./caption -m "$dir/a/model.bin" --threads 2000 "$dir/a/t2i.png"

# a full disk: a 2 MB tmpfs holds one training state (1.5 MB) but not a second beside it, so
# the step-20 checkpoint fails; the run stops with a message, no partial file stays, and the
# step-10 state is intact (the same bits as the tiny run's at step 10). Needs root for mount.
if [ "$(id -u)" = 0 ] && mkdir -p "$dir/full" && mount -t tmpfs -o size=2m tmpfs "$dir/full" 2> /dev/null; then
  ./train_vlv "${tiny[@]}" --out "$dir/full/run" > "$dir/full.log" 2>&1
  [ $? = 1 ] && grep -q "No space left on device" "$dir/full.log" && ! ls "$dir/full/run" | grep -q '\.tmp$' &&
    same_state "$dir/full/run/train_state.bin" "$dir/e10_state.bin"
  check "a full disk stops the run with a message, leaves no .tmp and keeps the last training state" $?
  umount "$dir/full"
else
  echo "skip the full-disk check: mounting a tmpfs needs root"
fi

# other data sources (--data): Fashion-MNIST (Debian's dataset-fashion-mnist), an image folder
if [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  ./train_vlv "${tiny[@]}" --data fashion-mnist --out "$dir/fm" > "$dir/fm.log" 2>&1
  [ $? = 0 ] && grep -q '^RESULT caption_exact=[0-9.]* roundtrip_mse=[0-9.]* baseline_exact=' "$dir/fm.log" \
    && [ "$(cut -f2 "$dir/fm/captions.tsv" | tail -n +2 | grep -c '^a photo of an\? ')" = 16 ] && [ -s "$dir/fm/t2i.png" ]
  check "--data fashion-mnist trains every stage and captions held-out Fashion-MNIST images" $?
  grep -qx 't2i: not scored (no oracle for this data)' "$dir/fm/pretrained.txt"
  check "--data fashion-mnist: pretrained.txt says its text-to-image samples are not scored (no oracle), not 0%" $?
else
  ./train_vlv "${tiny[@]}" --data fashion-mnist --out "$dir/fm" > "$dir/fm.log" 2>&1
  [ $? = 1 ] && grep -q "apt-get install dataset-fashion-mnist" "$dir/fm.log"
  check "--data fashion-mnist without the dataset says how to install it" $?
fi
mkdir -p "$dir/folder"
for i in $(seq 10 25); do cp "$dir/a/$([ $((i % 2)) = 0 ] && echo t2i.png || echo roundtrip.png)" "$dir/folder/im$i.png"; done
for i in $(seq 10 22); do printf 'im%d.png\t%s\n' $i "$([ $((i % 2)) = 0 ] && echo 'a grid of samples' || echo 'pairs side by side')"; done > "$dir/folder/captions.tsv"
./train_vlv "${tiny[@]}" --data "folder:$dir/folder" --out "$dir/fo" > "$dir/fo.log" 2>&1
[ $? = 0 ] && grep -q "11 captioned training items: K = 11" "$dir/fo.log" && grep -q "2 test items" "$dir/fo.log" && grep -q '^RESULT caption_exact=' "$dir/fo.log"
check "--data folder:DIR trains on 16 images (13 captioned: 2 held out, K capped at 11)" $?
rm "$dir/folder/captions.tsv"
./train_vlv "${tiny[@]}" --data "folder:$dir/folder" --out "$dir/fo2" > "$dir/fo2.log" 2>&1; [ $? = 1 ] && grep -q "no captions.tsv" "$dir/fo2.log"
check "an image folder without captions.tsv is refused" $?
./train_vlv --data nope > "$dir/d.log" 2>&1; [ $? = 1 ] && grep -q "choose shapes" "$dir/d.log"; check "--data nope is refused" $?

# the shipped pretrained parts (data/pretrained.bin, what the default preset starts from): the
# provenance names the command, a commit of this repository, the hardware, the wall time and the
# T2I score per attribute, its SHA-256 is the file's, and the default preset loads the file and
# draws with it: T2I at least 50% exact on 32 held-out prompts (the provenance records its score
# on 512; a decoder that reads the captions scores about 80%, 50% is 4 binomial sd below that)
prov=data/pretrained.txt
commit=$(sed -n 's/^commit: //p' "$prov")
[ "$(head -n 1 "$prov")" = "vlv.c pretrained parts, provenance version 1" ] &&
  [ "$(sed -n 's/^sha256: //p' "$prov")" = "$(sha256sum < data/pretrained.bin | cut -d' ' -f1)" ] &&
  grep -q "^command: ./train_vlv .*--steps0 " "$prov" && grep -qE "^hardware: .*CPU thread" "$prov" &&
  grep -qE "^wall time: stage 0 [0-9.]+ s, stage 0b [0-9.]+ s" "$prov" &&
  grep -qE "^t2i: 512 held-out prompts, .*exact [0-9.]+% \(shape [0-9.]+%, colour [0-9.]+%, size [0-9.]+%, place [0-9.]+%\)" "$prov" &&
  { [ ! -d .git ] || git cat-file -e "$commit^{commit}" 2> /dev/null; }
check "data/pretrained.txt: command, commit ($commit, in this repository's history), hardware, wall time, T2I per attribute, SHA-256" $?
./train_vlv --out "$dir/ship" --steps1 2 --steps2 2 --baseline 0 --eval_n 32 > "$dir/ship.log" 2>&1
t2i=$(sed -n 's/^RESULT .*t2i_exact=\([0-9.]*\).*/\1/p' "$dir/ship.log")
[ -n "$t2i" ] && grep -q "^pretrained parts .*: data/pretrained.bin, sha256" "$dir/ship.log" &&
  grep -q -- "--preset scratch" "$dir/ship.log" && awk -v x="$t2i" 'BEGIN { exit !(x >= 0.5) }'
check "the default preset starts from data/pretrained.bin, names --preset scratch, and its decoder draws (T2I $t2i on 32)" $?

# the shipped trained model (data/vlv.bin, the default run's): its SHA-256 is its provenance's, and
# ./caption reads it with the vocabulary beside it and captions the 16 example scenes; the
# provenance records 14 of 16 exact, and at least 12 must be: the slack covers a greedy decision
# of a small margin that another CPU's order of float sums could flip
[ "$(sed -n 's/^sha256: //p' data/vlv.txt)" = "$(sha256sum < data/vlv.bin | cut -d' ' -f1)" ] && grep -q "^result: RESULT " data/vlv.txt &&
  grep -qE "^commit: [0-9a-f]{12}$" data/vlv.txt; status=$?
check "data/vlv.txt: SHA-256 of data/vlv.bin, commit, RESULT line" $status
./caption -m data/vlv.bin data/examples/*.png > "$dir/ex.out" 2> "$dir/ex.err"; status=$?
exact=$(tail -n +2 data/examples/captions.tsv | sed 's|^|data/examples/|' | sort | join -t "$(printf '\t')" - <(sort "$dir/ex.out") |
  awk -F'\t' '$2 == $3' | wc -l)
[ $status = 0 ] && [ "$(wc -l < "$dir/ex.out")" = 16 ] && [ "$exact" -ge 12 ]
check "./caption -m data/vlv.bin captions the 16 examples ($exact exact, at least 12)" $?
# the regeneration score (--regen 1) of the shipped model on 32 held-out scenes: each caption
# drawn with the text-to-image score's noise, so that a scene captioned exactly is drawn as its
# true caption was (the same oracle reading in t2i.tsv), and only the scenes captioned wrong can
# differ; its RESULT field and table rows
./train_vlv --eval_model data/vlv.bin --regen 1 --eval_n 32 --out "$dir/regen" > "$dir/regen.log" 2>&1
status=$?
"${PYTHON:-/usr/bin/python3}" - "$dir/regen" > "$dir/regen.check" <<'PY'
import sys
d = sys.argv[1]
rows = lambda f: [l.rstrip("\n").split("\t") for l in open(f"{d}/{f}")][1:]
t2i, regen = rows("t2i.tsv"), rows("regen_captions.tsv")
exact = [r for r in regen if r[1] == r[2]]
same = sum(r[3] == t[2] for r, t in zip(regen, t2i) if r[1] == r[2])
print(f"{len(exact)} of {len(regen)} captioned exactly, {same} of them read as in t2i.tsv")
sys.exit(0 if len(regen) == len(t2i) == 32 and len(exact) >= 24 and same == len(exact) else 1)
PY
py=$?
[ $status = 0 ] && [ $py = 0 ] && grep -qE '^RESULT .* regen_exact=[0-9.]+ ' "$dir/regen.log" &&
  grep -q '^| regeneration exact (caption -> decoder -> oracle) | ' "$dir/regen.log" && grep -q '^| regeneration ceiling' "$dir/regen.log"
check "--regen 1: $(cat "$dir/regen.check"); RESULT regen_exact=$(grep -oE 'regen_exact=[0-9.]+' "$dir/regen.log" | cut -d= -f2)" $?

# the splits as dataset files for the PyTorch twin
./train_vlv "${tiny[@]}" --out "$dir/x" --export 24 > "$dir/x.log" 2>&1
ok=$?; for f in shapes_t2i.bin shapes_unpaired.bin shapes_captioned.bin shapes_test.bin vocab.txt; do [ -s "$dir/x/$f" ] || ok=1; done
[ $ok = 0 ] && [ ! -e "$dir/x/stage0.bin" ]; check "--export writes the four splits and the vocabulary, and trains nothing" $?

# the PyTorch twin trains on that data (with the full preset's per-stage clip and beta2); the C
# program scores its checkpoint
tiny_twin=(--steps0 10 --steps0b 5 --steps1 5 --steps2 5 --batch 8 --clip_z 2 --grad_clip 1,1,0.05,0.05
           --beta2 0.999,0.999,0.95,0.95 --d_v 32 --d_t 32 --d_d 32 --d_g 32
           --L_v 1 --L_a 1 --L_t 1 --L_d 1 --L_g 1 --nh_v 2 --nh_a 2 --nh_t 2 --nh_d 2 --nh_g 2 --d_freq 16)
"${PYTHON:-/usr/bin/python3}" dev/vlv.py train --data "$dir/x" --out "$dir/x" "${tiny_twin[@]}" > "$dir/x_twin.log" 2>&1
check "dev/vlv.py train trains on the exported splits" $?
./train_vlv --eval_model "$dir/x/model.bin" --out "$dir/x" --batch 8 --eval_n 8 --sample_steps 2 > "$dir/x_eval.log" 2>&1
[ $? = 0 ] && grep -q '^RESULT' "$dir/x_eval.log" && ! grep -q "step " "$dir/x_eval.log"
check "./train_vlv --eval_model scores the twin's checkpoint without training" $?

# caption: images of any size, a missing one reported, the others captioned; round trips as PNG
./caption -m "$dir/a/model.bin" "$dir/a/t2i.png" "$dir/nope.png" "$dir/a/roundtrip.png" --recon "$dir/rt.png" \
  > "$dir/cap.out" 2> "$dir/cap.err"
[ $? = 1 ] && [ "$(wc -l < "$dir/cap.out")" = 2 ] && grep -q "nope.png" "$dir/cap.err"
check "caption: 2 images captioned, the missing one reported, exit status 1" $?
[ -s "$dir/rt.png" ]; check "caption --recon writes the round trips" $?
./caption -m "$dir/a/model.bin" --beams 3 "$dir/a/t2i.png" > "$dir/cap3.out" 2>&1
[ $? = 0 ] && [ "$(wc -l < "$dir/cap3.out")" = 1 ]; check "caption --beams 3" $?
./caption -m "$dir/nope.bin" "$dir/a/t2i.png" > /dev/null 2>&1; [ $? = 1 ]; check "caption: a missing model is refused" $?
mkdir -p "$dir/recon_dir"
./caption -m "$dir/a/model.bin" "$dir/a/t2i.png" --recon "$dir/recon_dir" > /dev/null 2> "$dir/cap_dir.err"
[ $? = 1 ] && grep -q "Is a directory" "$dir/cap_dir.err" && [ ! -e "$dir/recon_dir.tmp" ]; check "caption --recon onto a folder fails and leaves no .tmp" $?

echo "pipeline: $passed passed, $failed failed"
[ "$failed" = 0 ]
