# vlv.c — build, test, sanitize.
#   make train_vlv && ./train_vlv      the main job
#   make test                          everything below
#   make check-headers                 every header in vlvc/ compiles on its own
#   make check                         every check against the PyTorch twin (regenerated when it changes)
#   make test-data                     the shapes world, tokenizer and image readers
#   make test-pipeline                 ./train_vlv and ./caption end to end on a tiny model
#   make test-tiles                    every matmul tile and vector width gives the native build's checkpoints, bit for bit
#   make test-mpi                      data-parallel training under mpirun against one process (Open MPI)
#   make test-asan                     the same checks under AddressSanitizer + UBSanitizer
#   make test-ofast                    the same checks built with -Ofast (fast-math)
#   make test-cuemu                    the CUDA code's checks on the CPU, through the emulator dev/cuda/emu
#   make check-anchors                 the twin's formulas against definitions it did not write (PyTorch, closed forms)
#   make test-mutants                  deliberately broken code (C, or C and twin alike) must make the checks fail
#   make fuzz                          a libFuzzer target per file reader, about a minute in all (dev/fuzz/)
#   make cpu-labs                      build the CPU kernel labs dev/cpu/*.c (they include train_vlv.c), warnings as errors
#   make cuda                          build every CUDA target with nvcc, warnings as errors (no GPU needed)
#   make checkcu                       on a GPU machine: test_vlvcu against the references
# Switches: NO_OMP=1 (no OpenMP), NO_NATIVE=1 (no -march=native), PYTHON=... (a python with torch),
#   USE_MPI=1 (train_vlv for mpirun -np N: data parallel with Open MPI, doc/distributed.md),
#   NO_INSTALL=1 (name what the build or the tests miss instead of installing it: dev/setup.sh).

SHELL := /bin/bash
CC ?= gcc
PYTHON ?= /usr/bin/python3
CFLAGS ?= -O3
CFLAGS += -Wall -Wextra -std=gnu11
# sqrtf never sets errno then: AdamW's loop vectorizes (no result changes; sqrt is exact either way)
CFLAGS += -fno-math-errno
# the commit a build comes from, for the provenance of the pretrained parts it writes (vlvc/pretrained.h)
VLV_COMMIT := $(shell c=$$(git rev-parse --short=12 HEAD 2>/dev/null) && { git diff --quiet HEAD -- || c=$$c+changes; } && echo $$c)
ifneq ($(VLV_COMMIT),)
  CFLAGS += -DVLV_COMMIT='"$(VLV_COMMIT)"'
endif
# stb_image / stb_image_write from Debian's libstb-dev (a compiled library), zlib for gzipped IDX files
LDLIBS = -lstb -lz -lm

# -march=native only when the compiler accepts it (some cross/ARM compilers do not)
ifneq ($(NO_NATIVE),1)
  ifeq ($(shell $(CC) -march=native -E -x c /dev/null >/dev/null 2>&1 && echo ok),ok)
    CFLAGS += -march=native
    # 512-bit vectors wherever the target has AVX-512. gcc's Intel tunings prefer 256 bits (to
    # spare old Xeons the 512-bit clock drop), which halves the matmul tile's FLOPs per FMA on
    # chips with two 512-bit FMA ports: llvm-mca puts the 12 x 16 tile at 12 cycles per k with
    # ymm and 7.0 with zmm on Sapphire Rapids (dev/cpu/tile_mca.sh). Zen 4 gets zmm either way.
    ifneq ($(shell $(CC) -march=native -dM -E -x c /dev/null 2>/dev/null | grep -c '__AVX512F__ '),0)
      CFLAGS += -mprefer-vector-width=512
    endif
  endif
endif

# OpenMP: use it when a test program with -fopenmp compiles and links; else build serial,
# and say so. macOS: Homebrew's libomp with Apple clang.
OMP_TEST = printf '\#include <omp.h>\nint main(void){return omp_get_max_threads();}\n' > /tmp/vlv_omp_test.c &&
ifneq ($(NO_OMP),1)
  ifeq ($(shell $(OMP_TEST) $(CC) -fopenmp /tmp/vlv_omp_test.c -o /tmp/vlv_omp_test >/dev/null 2>&1 && echo ok),ok)
    CFLAGS += -fopenmp
    OMP_STATUS = OpenMP on
  else ifeq ($(shell $(OMP_TEST) $(CC) -Xpreprocessor -fopenmp -I$$(brew --prefix libomp 2>/dev/null)/include /tmp/vlv_omp_test.c -L$$(brew --prefix libomp 2>/dev/null)/lib -lomp -o /tmp/vlv_omp_test >/dev/null 2>&1 && echo ok),ok)
    BREW_OMP := $(shell brew --prefix libomp)
    CFLAGS += -Xpreprocessor -fopenmp -I$(BREW_OMP)/include
    LDLIBS += -L$(BREW_OMP)/lib -lomp
    OMP_STATUS = OpenMP on (Homebrew libomp)
  else
    OMP_STATUS = OpenMP not found: building single-threaded (install libgomp or libomp)
  endif
else
  OMP_STATUS = OpenMP off (NO_OMP=1)
endif
ifneq ($(findstring OpenMP on,$(OMP_STATUS)),OpenMP on)
  CFLAGS += -Wno-unknown-pragmas
endif
$(info $(OMP_STATUS))

HEADERS = $(wildcard vlvc/*.h)
TEST_HEADERS = $(wildcard dev/test/*.h) # the test harness (dev/test/)

# what the build and the tests need, installed when missing (apt-get or Homebrew; as root or
# through sudo) or named with the command that installs it: never a compiler error about a
# missing header. NO_INSTALL=1 only names it.
setup-build:
	@CC="$(CC)" dev/setup.sh build
setup-test:
	@CC="$(CC)" CXX="$(CXX)" PYTHON="$(PYTHON)" dev/setup.sh test

# USE_MPI=1: data parallel over MPI ranks (vlvc/dist.h), compiled with Open MPI's mpicc. The
# build's switch is kept in build/train_vlv.flags, so that changing it rebuilds train_vlv.
MPICC ?= mpicc
MPI_FLAGS = -DUSE_MPI
ifeq ($(USE_MPI),1)
  TRAIN_CC = OMPI_CC=$(CC) $(MPICC)
  TRAIN_FLAGS = $(MPI_FLAGS)
else
  TRAIN_CC = $(CC)
  TRAIN_FLAGS =
endif
build/train_vlv.flags: FORCE
	@mkdir -p build; echo "USE_MPI=$(USE_MPI)" | cmp -s - $@ || echo "USE_MPI=$(USE_MPI)" > $@
FORCE:
setup-mpi:
	@CC="$(CC)" dev/setup.sh mpi

train_vlv: train_vlv.c $(HEADERS) build/train_vlv.flags | setup-build $(if $(filter 1,$(USE_MPI)),setup-mpi)
	$(TRAIN_CC) $(CFLAGS) $(TRAIN_FLAGS) -o $@ $< $(LDLIBS)

# the MPI build the tests run, beside the default build
build/train_vlv_mpi: train_vlv.c $(HEADERS) | setup-build setup-mpi
	@mkdir -p build
	OMPI_CC=$(CC) $(MPICC) $(CFLAGS) $(MPI_FLAGS) -o $@ $< $(LDLIBS)

caption: caption.c train_vlv.c $(HEADERS) | setup-build
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# the data and image readers' own tests (dev/test/)
build/test/%: dev/test/%.c $(HEADERS) $(TEST_HEADERS) | setup-build
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

test_vlv: test_vlv.c train_vlv.c $(HEADERS) $(TEST_HEADERS) | setup-build
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# -Ofast (fast-math: no infinities or NaNs assumed) must not break GELU, softmax or the
# NaN checks: the same checks, built that way
test_vlv_ofast: test_vlv.c train_vlv.c $(HEADERS) $(TEST_HEADERS) | setup-build
	$(CC) $(filter-out -O3,$(CFLAGS)) -Ofast -o $@ $< $(LDLIBS)

# sanitizers: every error is fatal (no recovery), leaks included
SANITIZE = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
test_vlv_asan: test_vlv.c train_vlv.c $(HEADERS) $(TEST_HEADERS) | setup-build
	$(CC) $(filter-out -O3,$(CFLAGS)) $(SANITIZE) -o $@ $< $(LDLIBS)

# ---------------------------------------------------------------------------
# the reference: dev/vlv.py writes a checkpoint and a debug state per config. The configs
# differ on purpose: an odd batch, head counts other than 2, N_q != number of patches, fewer
# learned queries than text-encoder positions (n_z < n_q), unequal widths for the parts,
# single-block parts, and v-prediction.
TESTDIR = data/test
TEST_CONFIGS = small awkward
CFG_small = --batch 3 --seed 1
CFG_awkward = --batch 5 --seed 2 --img_size 12 --patch 4 --n_q 6 --n_z 4 --vocab 13 --cap_len 7 \
  --d_v 24 --nh_v 3 --L_v 1 --L_a 2 --nh_a 4 --d_t 16 --nh_t 4 --L_t 1 \
  --d_d 20 --nh_d 5 --L_d 2 --d_freq 8 --d_g 12 --nh_g 3 --L_g 1 --prediction v

$(TESTDIR)/%.ckpt $(TESTDIR)/%.state: dev/vlv.py Makefile
	@mkdir -p $(TESTDIR)
	$(PYTHON) dev/vlv.py dump $(CFG_$*) --out_ckpt $(TESTDIR)/$*.ckpt --out_state $(TESTDIR)/$*.state

REFERENCES = $(foreach c,$(TEST_CONFIGS),$(TESTDIR)/$(c).ckpt $(TESTDIR)/$(c).state)

# For each config: every tensor (test_vlv), the C -> PyTorch -> C checkpoint round trip, and
# the readers' handling of broken files. Logs go to $(TESTDIR)/*.log; the last line sums up.
define run_checks
	@set -e; rm -f $(TESTDIR)/summary.log; for c in $(TEST_CONFIGS); do \
	  echo "=== $$c: model vs PyTorch"; \
	  $(1) $(TESTDIR)/$$c.ckpt $(TESTDIR)/$$c.state --save-trained $(TESTDIR)/$$c.trained.ckpt > $(TESTDIR)/$$c.log 2>&1 \
	    || { cat $(TESTDIR)/$$c.log; echo "test_vlv failed on $$c (log: $(TESTDIR)/$$c.log)"; exit 1; }; \
	  cat $(TESTDIR)/$$c.log; \
	  echo "=== $$c: checkpoint round trip C -> PyTorch -> C"; \
	  $(PYTHON) dev/vlv.py roundtrip $(TESTDIR)/$$c.trained.ckpt $(TESTDIR)/$$c.roundtrip.ckpt; \
	  $(1) --compare $(TESTDIR)/$$c.trained.ckpt $(TESTDIR)/$$c.roundtrip.ckpt | tee -a $(TESTDIR)/summary.log; \
	  echo "=== $$c: broken files"; \
	  $(1) --readers $(TESTDIR)/$$c.ckpt $(TESTDIR)/$$c.state | tee -a $(TESTDIR)/summary.log; \
	  tail -n 1 $(TESTDIR)/$$c.log >> $(TESTDIR)/summary.log; \
	done; \
	awk '/ passed, .* failed$$/ { p += $$1; f += $$3 } END { printf "$(2): %d passed, %d failed\n", p, f; exit f > 0 }' $(TESTDIR)/summary.log
endef

check: test_vlv $(REFERENCES)
	$(call run_checks,./test_vlv,check)

test-asan: test_vlv_asan $(REFERENCES)
	$(call run_checks,ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ./test_vlv_asan,asan)

test-ofast: test_vlv_ofast $(REFERENCES)
	$(call run_checks,./test_vlv_ofast,ofast)

test-data: build/test/test_data build/test/test_images
	@mkdir -p $(TESTDIR)
	@build/test/test_data | tee $(TESTDIR)/data.log; test $${PIPESTATUS[0]} -eq 0
	@build/test/test_images | tee $(TESTDIR)/images.log; test $${PIPESTATUS[0]} -eq 0
	@cat $(TESTDIR)/data.log $(TESTDIR)/images.log | awk '/^[0-9]+ passed, [0-9]+ failed$$/ { p += $$1; f += $$3 } END { printf "data: %d passed, %d failed\n", p, f; exit f > 0 }' 

# the whole pipeline on a tiny model: stages, resume, evaluation, caption
test-pipeline: train_vlv caption
	PYTHON=$(PYTHON) dev/test/test_pipeline.sh

# train_vlv built with other register tiles and with AVX2: the same checkpoints, byte for byte
test-tiles:
	dev/test/test_tiles.sh

# 2 ranks against 1 process: losses, weights, resume, evaluation, a rank that fails
test-mpi: train_vlv build/train_vlv_mpi test_vlv
	dev/test/test_mpi.sh

test-mutants: $(REFERENCES)
	CC="$(CC)" CFLAGS="$(CFLAGS)" LDLIBS="$(LDLIBS)" dev/test/mutants.sh $(TESTDIR)/small

# the twin's formulas against definitions it did not write (PyTorch built-ins, closed forms, the DiT
# reference; diffusers when importable): the mistakes the C code and the twin could share
check-anchors:
	@$(PYTHON) dev/vlv.py anchors

# the CPU kernel labs take their kernels from train_vlv.c: built here so that they never rot
CPU_LABS = $(patsubst dev/cpu/%.c,build/cpu/%,$(wildcard dev/cpu/*.c))
build/cpu/%: dev/cpu/%.c train_vlv.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Werror -o $@ $< -lz -lm
cpu-labs: $(CPU_LABS)

# the compiler flags of every C build here, for scripts that build their own drivers (dev/cpu/step_flops.py)
print-cflags:
	@echo $(CFLAGS)

# every header in vlvc/ is a leaf: it compiles on its own (a file that includes only it,
# warnings as errors) and so uses no name of the file that includes it
check-headers:
	@set -e; n=0; for h in $(HEADERS); do \
	  printf '#include "%s"\n' $$h | $(CC) $(CFLAGS) -Werror -fsyntax-only -x c -I. - \
	    || { echo "FAIL $$h does not compile on its own"; exit 1; }; echo "ok   $$h compiles on its own"; n=$$((n + 1)); \
	done; echo "headers: $$n passed, 0 failed"

# all of them, stopping at the first that fails; the last line sums them up
TEST_PARTS = check-headers check check-anchors test-data test-pipeline test-tiles test-mpi test-asan test-ofast test-cuemu test-mutants fuzz cpu-labs
test: setup-test
	@mkdir -p $(TESTDIR); rm -f $(TESTDIR)/all.log; \
	for t in $(TEST_PARTS); do \
	  $(MAKE) --no-print-directory $$t 2>&1 | tee -a $(TESTDIR)/all.log; \
	  [ $${PIPESTATUS[0]} -eq 0 ] || { echo "make $$t failed"; exit 1; }; \
	done; \
	awk '/^[a-z]+: [0-9]+ passed, [0-9]+ failed$$/ { p += $$2; f += $$4 } END { printf "total: %d passed, %d failed\n", p, f; exit f > 0 }' $(TESTDIR)/all.log

# ---------------------------------------------------------------------------
# CUDA (doc/cuda.md): train_vlvcu (the pipeline, as train_vlv), test_vlvcu, their cuBLAS
# variants (the matmul yardstick) and the labs dev/cuda/*.cu, all with warnings as errors.
# Linking needs no GPU driver. Without nvcc these targets say so and succeed.
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
NVCC_ARCH ?= -arch=sm_90
NVCCFLAGS ?= -O3
NVCCFLAGS += -std=c++20 $(NVCC_ARCH) -lineinfo -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -Xptxas -Werror
ifneq ($(VLV_COMMIT),)
  NVCCFLAGS += -DVLV_COMMIT='"$(VLV_COMMIT)"'
endif
CUDA_LABS = $(patsubst %.cu,%,$(wildcard dev/cuda/*.cu))
CUDA_BINS = train_vlvcu test_vlvcu train_vlvcu_cublas test_vlvcu_cublas train_vlvcu_nccl

ifneq ($(NVCC),)
# NCCL data parallel, one process per GPU (vlvc/dist.h): the toolkit's NCCL, and Open MPI to
# start the ranks and pass NCCL's id (or the shared-file bootstrap: doc/distributed.md).
# train_vlvcu_nccl always; USE_NCCL=1 makes train_vlvcu itself this build.
NCCL_FLAGS = -DUSE_NCCL -DUSE_MPI $(shell $(MPICC) --showme:compile 2>/dev/null)
NCCL_LIBS = -lnccl $(shell $(MPICC) --showme:link 2>/dev/null)
build/train_vlvcu.flags: FORCE
	@mkdir -p build; echo "USE_NCCL=$(USE_NCCL)" | cmp -s - $@ || echo "USE_NCCL=$(USE_NCCL)" > $@
train_vlvcu: train_vlv.cu $(HEADERS) build/train_vlvcu.flags $(if $(filter 1,$(USE_NCCL)),| setup-mpi)
	$(NVCC) $(NVCCFLAGS) $(if $(filter 1,$(USE_NCCL)),$(NCCL_FLAGS)) -o $@ $< -lstb -lz $(if $(filter 1,$(USE_NCCL)),$(NCCL_LIBS))
train_vlvcu_nccl: train_vlv.cu $(HEADERS) | setup-mpi
	$(NVCC) $(NVCCFLAGS) $(NCCL_FLAGS) -o $@ $< -lstb -lz $(NCCL_LIBS)
test_vlvcu: test_vlv.cu train_vlv.cu $(HEADERS) $(TEST_HEADERS)
	$(NVCC) $(NVCCFLAGS) -o $@ $< -lz
train_vlvcu_cublas: train_vlv.cu $(HEADERS)
	$(NVCC) $(NVCCFLAGS) -DUSE_CUBLAS -o $@ $< -lstb -lz -lcublas
test_vlvcu_cublas: test_vlv.cu train_vlv.cu $(HEADERS) $(TEST_HEADERS)
	$(NVCC) $(NVCCFLAGS) -DUSE_CUBLAS -o $@ $< -lz -lcublas
$(CUDA_LABS): dev/cuda/%: dev/cuda/%.cu dev/cuda/common.h
	$(NVCC) $(NVCCFLAGS) -DUSE_CUBLAS -o $@ $< -lcublas
cuda-labs: $(CUDA_LABS)
cuda: $(CUDA_BINS) cuda-labs
# on a machine with a GPU: test_vlvcu against the references, as `make check`
checkcu: test_vlvcu $(REFERENCES)
	$(call run_checks,./test_vlvcu,checkcu)
else
cuda cuda-labs checkcu $(CUDA_BINS) $(CUDA_LABS):
	@echo "nvcc not found: skipping $@ (install the CUDA toolkit or set NVCC=/path/to/nvcc)"
endif

# The CUDA code on the CPU, through the emulator dev/cuda/emu: no GPU and no nvcc, any g++
# with C++20. Every kernel runs; test_vlvcu's checks and the labs' correctness must pass.
EMU_DIR = build/emu
EMU_CXXFLAGS = -std=c++20 -O2 -g -Wall -Wextra -Wno-unknown-pragmas -Idev/cuda/emu -I. -Idev/cuda
EMU_DEPS = dev/cuda/emu/cuda_emu.h dev/cuda/emu/cuda_runtime.h dev/cuda/emu/translate.py
.PRECIOUS: $(EMU_DIR)/%.cu build/test/%
$(EMU_DIR)/%.cu: %.cu $(EMU_DEPS)
	@mkdir -p $(dir $@)
	$(PYTHON) dev/cuda/emu/translate.py $< $@
test_vlvcu_emu: $(EMU_DIR)/test_vlv.cu $(EMU_DIR)/train_vlv.cu $(HEADERS) $(TEST_HEADERS)
	$(CXX) $(EMU_CXXFLAGS) -x c++ -o $@ $< -lz
$(EMU_DIR)/dev/cuda/%: $(EMU_DIR)/dev/cuda/%.cu dev/cuda/common.h
	$(CXX) $(EMU_CXXFLAGS) -x c++ -o $@ $<
test-cuemu: test_vlvcu_emu $(REFERENCES) $(addprefix $(EMU_DIR)/,$(CUDA_LABS))
	@set -e; for lab in $(addprefix $(EMU_DIR)/,$(CUDA_LABS)); do $$lab --check | tail -n 1; done
	$(call run_checks,./test_vlvcu_emu,cuemu)

include dev/fuzz/fuzz.mk

clean:
	rm -f train_vlv caption test_vlv test_vlv_asan test_vlv_ofast
	rm -rf build/test
	rm -f $(CUDA_BINS) $(CUDA_LABS) test_vlvcu_emu
	rm -rf $(EMU_DIR)
	rm -rf $(TESTDIR)

.PHONY: setup-build setup-test check-headers test check check-anchors test-data test-pipeline test-tiles test-asan test-ofast test-mutants test-cuemu fuzz fuzz-toolchain cpu-labs print-cflags cuda cuda-labs checkcu clean
