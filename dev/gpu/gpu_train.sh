#!/usr/bin/env bash
# dev/gpu/gpu_train.sh OUTDIR LIMIT_S [train_vlv flags...] — a training run of the CUDA build on the
# device machine, brought back in pieces the device tool can return (at most 8 files of 16 MiB):
# builds train_vlvcu_cublas (the pipeline needs stb_image and zlib: .devdeps/, dev/gpu/gpu_deps.sh),
# runs it for at most LIMIT_S seconds into runs/gpu, then copies to OUTDIR the log, the PNG
# grids and captions, the pretrained parts with their provenance, and the newest checkpoint (with
# stage0b.bin when stage 1 has begun) cut into 15 MiB parts. Here, put the parts back together (`cat model.bin.part* > model.bin`) and go on
# with `./train_vlv --from ...` on the CPU.
set -u
OUTDIR=${1:?usage: dev/gpu/gpu_train.sh OUTDIR LIMIT_S [flags]}; LIMIT=${2:?LIMIT_S}; shift 2
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd) || exit 2
cd "$(dirname "$0")/../.." || exit 2
export PATH="$PATH:/usr/local/cuda/bin" LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64"
[ -d .devdeps ] && export CPATH="$PWD/.devdeps/include${CPATH:+:$CPATH}" LIBRARY_PATH="$PWD/.devdeps/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
make -j16 NVCC_ARCH=-arch=sm_90 train_vlvcu_cublas > "$OUTDIR/build.log" 2>&1 || { tail -n 20 "$OUTDIR/build.log"; exit 1; }
RUN=runs/gpu
timeout --kill-after=5 "$LIMIT" ./train_vlvcu_cublas --out $RUN "$@" > "$OUTDIR/stdout.log" 2>&1
echo "train_vlvcu_cublas exit status $? (124: stopped at ${LIMIT}s)" >> "$OUTDIR/stdout.log"
tail -n 25 "$OUTDIR/stdout.log"
# the newest checkpoint, and stage0b.bin beside a later one: the decoder and the language model
# as stage 1 found them, so that another stage-1 recipe can start here (--from 1) without
# training stage 0 again
bring=""
for f in model.bin stage1.bin stage0b.bin stage0.bin; do [ -f $RUN/$f ] && { bring=$f; break; }; done
case $bring in model.bin|stage1.bin) [ -f $RUN/stage0b.bin ] && bring="$bring stage0b.bin" ;; esac
for f in $bring; do
    split -b 15M -d $RUN/$f "$OUTDIR/$f.part" && echo "brought back $f in parts"
done
# the pretrained parts with their provenance (written before stage 1), the curves and the metrics
[ -f $RUN/pretrained.bin ] && split -b 15M -d $RUN/pretrained.bin "$OUTDIR/pretrained.bin.part" && echo "brought back pretrained.bin in parts"
# (one tar file: the device tool brings back at most 8 files)
small=$(cd $RUN && ls roundtrip.png t2i.png captions.tsv pretrained.txt metrics.jsonl log.txt loss_*.png 2> /dev/null)
[ -n "$small" ] && tar -C $RUN -cf "$OUTDIR/run_files.tar" $small && echo "brought back in run_files.tar:" $small
ls "$OUTDIR"
