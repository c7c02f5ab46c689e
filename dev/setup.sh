#!/usr/bin/env bash
# What the build needs (dev/setup.sh build) or the tests need (dev/setup.sh test), installed
# when it is missing: with apt-get on Debian and Ubuntu (as root, or through sudo), with Homebrew
# on macOS. Elsewhere, or with NO_INSTALL=1, it names what is missing and fails. `make
# train_vlv` runs the build step, `make test` the test step, and .ci/run the test step.
#   build: a C compiler with OpenMP, stb_image / stb_image_write (Debian's libstb-dev, a
#          compiled library) and zlib (gzipped IDX files)
#   mpi:   the build's, plus Open MPI (mpicc, mpirun: libopenmpi-dev, openmpi-bin) for
#          make train_vlv USE_MPI=1
#   test:  the build's and mpi's, plus a C++ compiler (the CUDA emulator), Python with PyTorch (the twin
#          dev/vlv.py), Fashion-MNIST (its reader is tested on the real files) and clang with
#          libFuzzer and the sanitizer runtimes (the fuzz targets of dev/fuzz/; FUZZ_CC=clang)
set -euo pipefail
what=${1:-build}
case "$what" in build|mpi|test) ;; *) echo "usage: dev/setup.sh build|mpi|test" >&2; exit 2 ;; esac
CC=${CC:-cc}
FUZZ_CC=${FUZZ_CC:-clang}
PYTHON=${PYTHON:-/usr/bin/python3}
FASHION_MNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT

# each need: a check, and the package that meets it (Debian; Homebrew)
missing_deb=(); missing_brew=(); missing_what=()
need() { # need WHAT DEBIAN_PACKAGE BREW_FORMULA CHECK...
  local what=$1 deb=$2 brew=$3; shift 3
  if ! "$@" >/dev/null 2>&1; then missing_what+=("$what"); missing_deb+=("$deb"); [ -n "$brew" ] && missing_brew+=("$brew"); fi
  return 0
}
compiles() { # compiles HEADER LIB: a program including HEADER links with LIB
  printf '#include <%s>\nint main(void) { return 0; }\n' "$1" > "$probe/t.c"
  "$CC" "$probe/t.c" -o "$probe/t" "$2"
}
fuzzer_links() { # FUZZ_CC links a libFuzzer target under the sanitizers (Debian: libclang-rt-dev)
  printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) { (void)d; (void)n; return 0; }\n' > "$probe/f.c"
  "$FUZZ_CC" -fsanitize=fuzzer,address,undefined "$probe/f.c" -o "$probe/f"
}
need "a C compiler ($CC)" build-essential "" command -v "$CC"
need "stb_image and stb_image_write (stb/stb_image.h, -lstb)" libstb-dev "" compiles stb/stb_image.h -lstb
need "zlib (zlib.h, -lz)" zlib1g-dev zlib compiles zlib.h -lz
if [ "$what" != build ]; then
  need "Open MPI's compiler wrapper (${MPICC:-mpicc}, mpi.h)" libopenmpi-dev open-mpi command -v "${MPICC:-mpicc}"
  need "Open MPI's launcher (mpirun)" openmpi-bin open-mpi command -v mpirun
fi
if [ "$what" = test ]; then
  need "a C++20 compiler (${CXX:-g++}: the CUDA code's checks run through the emulator dev/cuda/emu)" build-essential "" command -v "${CXX:-g++}"
  need "Python with PyTorch ($PYTHON -c 'import torch')" python3-torch "" "$PYTHON" -c 'import torch'
  need "Fashion-MNIST ($FASHION_MNIST)" dataset-fashion-mnist "" test -e "$FASHION_MNIST"
  need "clang ($FUZZ_CC: the fuzz targets of dev/fuzz/)" clang "" command -v "$FUZZ_CC"
  need "libFuzzer and the sanitizer runtimes for clang ($FUZZ_CC -fsanitize=fuzzer)" libclang-rt-dev "" fuzzer_links
fi
[ ${#missing_what[@]} -eq 0 ] && exit 0

echo "dev/setup.sh $what: missing:"
printf '  - %s\n' "${missing_what[@]}"
sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo=sudo; fi
if [ "${NO_INSTALL:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
  echo "installing with apt-get: ${missing_deb[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing_deb[@]}"
  exec env NO_INSTALL=1 "$0" "$what" # check again: say so if an install did not give what was needed
elif [ "${NO_INSTALL:-0}" != 1 ] && [ "$(uname -s)" = Darwin ] && command -v brew >/dev/null 2>&1 && [ ${#missing_brew[@]} -gt 0 ]; then
  echo "installing with Homebrew: ${missing_brew[*]}"
  brew install "${missing_brew[@]}"
  exec env NO_INSTALL=1 "$0" "$what"
fi
echo "install them, then run make again:"
if [ "$(uname -s)" = Darwin ]; then
  echo "  brew install libomp zlib; stb is not in Homebrew: build stb_image and stb_image_write as a"
  echo "  library named libstb; PyTorch: pip install torch, then PYTHON=\$(which python3) make test"
else
  echo "  Debian/Ubuntu: sudo apt-get install ${missing_deb[*]}"
fi
exit 1
