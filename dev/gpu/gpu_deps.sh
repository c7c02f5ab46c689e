#!/usr/bin/env bash
# dev/gpu/gpu_deps.sh — fills .devdeps/ with Debian's stb_image / stb_image_write headers and
# libstb.a, and zlib's headers and libz.a, for a GPU machine that has the CUDA toolkit but
# not libstb-dev (and no package registry): dev/gpu/gpu_check.sh and dev/gpu/gpu_train.sh build the
# pipeline into train_vlvcu from there. .devdeps/ is in .gitignore; send it along
# with the run (the device tool: carry [".devdeps"]). Needs: apt-get install libstb-dev zlib1g-dev
set -eu
cd "$(dirname "$0")/../.."
lib=$(dirname "$(gcc -print-file-name=libstb.a)")
for f in /usr/include/stb/stb_image.h /usr/include/stb/stb_image_write.h /usr/include/zlib.h /usr/include/zconf.h "$lib/libstb.a"; do
    [ -f "$f" ] || { echo "dev/gpu/gpu_deps.sh: $f is missing: apt-get install libstb-dev zlib1g-dev" >&2; exit 1; }
done
mkdir -p .devdeps/include/stb .devdeps/lib
cp /usr/include/stb/stb_image.h /usr/include/stb/stb_image_write.h .devdeps/include/stb/
cp /usr/include/zlib.h /usr/include/zconf.h .devdeps/include/
cp "$lib/libstb.a" "$(gcc -print-file-name=libz.a)" .devdeps/lib/
echo "filled .devdeps/ ($(du -sh .devdeps | cut -f1))"
