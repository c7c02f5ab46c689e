/*
Fuzz target: the training-state reader, train_state_load (vlvc/train_state.h), what a rerun
of ./train_vlv resumes from: RUN/train_state.bin, read into the tiny run of dev/fuzz/fuzz_run.h
(the seeds were written by that run, so that the fuzzer starts past the config and settings
checks), with the input's last 4 bytes set to its CRC32 (fuzz_with_crc).
  make fuzz    or, longer:    make fuzz-train_state FUZZ_SECONDS=600
*/
#define VLV_NO_MAIN
#include "train_vlv.c"
#include "vlvc/train_state.h"
#include "dev/fuzz/fuzz.h"
#include "dev/fuzz/fuzz_run.h"

static Run run; // built once: the reader fills in its model and where it stands
static char path[512];

static void target_init(void) {
    fuzz_run_init(&run, fuzz_dir);
    fuzz_path(path, sizeof path, "train_state.bin");
}

static void load_state(void* arg) {
    (void)arg;
    if (!train_state_load(&run)) { fuzz_abort("train_state_load found no file"); }
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    uint8_t* input = fuzz_with_crc(data, size);
    fuzz_write(path, input, size);
    free(input);
    fuzz_read(load_state, NULL);
    return 0;
}
