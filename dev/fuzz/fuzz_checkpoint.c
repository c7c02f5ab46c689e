/*
Fuzz target: the checkpoint reader, model_load (train_vlv.c) with checkpoint_open and
header_read (vlvc/model.h, vlvc/config.h), what ./caption -m, --eval_model and every stage
that starts from the one before load. The input's last 4 bytes are set to its CRC32
(fuzz_with_crc). An accepted checkpoint is read again into the model it built
(model_load_weights, the other way in), then freed.
  make fuzz    or, longer:    make fuzz-checkpoint FUZZ_SECONDS=600
*/
#define VLV_NO_MAIN
#include "train_vlv.c"
#include "dev/fuzz/fuzz.h"

static char path[512];

static void target_init(void) { fuzz_path(path, sizeof path, "model.bin"); }

static void load_checkpoint(void* arg) {
    (void)arg;
    Model m;
    model_load(&m, path, 1);
    model_load_weights(&m, path);
    model_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    uint8_t* input = fuzz_with_crc(data, size);
    fuzz_write(path, input, size);
    free(input);
    fuzz_read(load_checkpoint, NULL);
    return 0;
}
