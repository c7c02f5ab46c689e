# Fuzzing the readers of input files (dev/fuzz/README.md): one libFuzzer target per reader,
# built with clang under AddressSanitizer and UndefinedBehaviorSanitizer; included by the Makefile.
#   make fuzz                     every target for FUZZ_SECONDS each (7: about a minute in all);
#                                 one line per target, then "fuzz: N passed, M failed"
#   make fuzz FUZZ_SECONDS=600    longer
#   make fuzz-vocab               one target (fuzz-checkpoint, fuzz-train_state, ...)
#   make fuzz-corpus              write the seed corpus dev/fuzz/corpus/ again (make_corpus.c)
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 7
FUZZ_TARGETS = checkpoint train_state pretrained vocab idx captions shapes_export image image_stb
FUZZ_BINS = $(addprefix build/fuzz/fuzz_,$(FUZZ_TARGETS))
FUZZ_SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=all -g -O1
FUZZ_CFLAGS = -std=gnu11 -I. -Wall -Wextra -Wno-unused-function -Wno-unknown-pragmas -Wno-string-concatenation
# a reader's fail() -> exit(1) returns into the target, and the target closes the streams a
# refused input left open (dev/fuzz/fuzz.h)
FUZZ_WRAP = -Wl,--wrap=exit,--wrap=fopen,--wrap=fdopen,--wrap=fclose,--wrap=gzopen,--wrap=gzclose
FUZZ_DEPS = dev/fuzz/fuzz.h dev/fuzz/fuzz_run.h train_vlv.c $(HEADERS)

# clang with libFuzzer, or a clear failure (dev/setup.sh test installs clang and libclang-rt-dev)
fuzz-toolchain:
	@mkdir -p build/fuzz
	@printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) { (void)d; (void)n; return 0; }\n' > build/fuzz/probe.c
	@$(FUZZ_CC) -fsanitize=fuzzer,address,undefined build/fuzz/probe.c -o build/fuzz/probe >/dev/null 2>&1 || { \
	  echo "fuzz: '$(FUZZ_CC)' cannot build libFuzzer targets (-fsanitize=fuzzer): install clang and its libFuzzer runtime"; \
	  echo "  Debian/Ubuntu: apt-get install clang libclang-rt-dev (dev/setup.sh test does), or set FUZZ_CC"; \
	  echo "fuzz: 0 passed, $(words $(FUZZ_TARGETS)) failed"; exit 1; }

build/fuzz/fuzz_%: dev/fuzz/fuzz_%.c $(FUZZ_DEPS) | fuzz-toolchain setup-build
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_SANITIZE) -o $@ $< $(FUZZ_WRAP) -lstb -lz -lm

fuzz: $(FUZZ_BINS)
	@pass=0; failed=0; for t in $(FUZZ_TARGETS); do \
	  if dev/fuzz/run_target.sh $$t $(FUZZ_SECONDS); then pass=$$((pass + 1)); else failed=$$((failed + 1)); fi; \
	done; echo "fuzz: $$pass passed, $$failed failed"; [ $$failed -eq 0 ]

$(addprefix fuzz-,$(FUZZ_TARGETS)): fuzz-%: build/fuzz/fuzz_%
	@dev/fuzz/run_target.sh $* $(FUZZ_SECONDS)

# image_stb: the image target with stb_image compiled from Debian's header under AddressSanitizer
# and array-bounds checks, so that they, and the coverage, see inside the decoder (it found the
# two JPEG defects that image_load now refuses before decoding: dev/fuzz/README.md). The rest of
# UBSan stays off in stb_image: its shifts by 32 and more and its offsets of NULL pointers,
# harmless where it runs, would drown them.
build/fuzz/stb_image.o: dev/fuzz/stb_image.c | fuzz-toolchain setup-build
	$(FUZZ_CC) -std=gnu11 -g -O1 -fsanitize=fuzzer-no-link,address,bounds -fno-sanitize-recover=all -c -o $@ $<
build/fuzz/fuzz_image_stb: dev/fuzz/fuzz_image.c build/fuzz/stb_image.o $(FUZZ_DEPS) | fuzz-toolchain setup-build
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_SANITIZE) -o $@ $< build/fuzz/stb_image.o $(FUZZ_WRAP) -lstb -lz -lm

build/fuzz/make_corpus: dev/fuzz/make_corpus.c $(FUZZ_DEPS) | fuzz-toolchain setup-build
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SANITIZE) -o $@ $< -lstb -lz -lm

fuzz-corpus: build/fuzz/make_corpus
	rm -rf dev/fuzz/corpus
	build/fuzz/make_corpus dev/fuzz/corpus

.PHONY: fuzz fuzz-toolchain fuzz-corpus fuzz-image_stb $(addprefix fuzz-,$(FUZZ_TARGETS))
