/*
Fuzz target: the shapes dataset reader, shapes_dataset_load (vlvc/shapes_export.h), what
reads back the files ./train_vlv --export writes. An accepted dataset is freed.
  make fuzz    or, longer:    make fuzz-shapes_export FUZZ_SECONDS=600
*/
#include "vlvc/config.h"
#include "vlvc/shapes_export.h"
#include "dev/fuzz/fuzz.h"

static char path[512];

static void target_init(void) { fuzz_path(path, sizeof path, "train.bin"); }

static void load_dataset(void* arg) {
    (void)arg;
    ShapesDataset d;
    shapes_dataset_load(&d, path);
    shapes_dataset_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz_write(path, data, size);
    fuzz_read(load_dataset, NULL);
    return 0;
}
