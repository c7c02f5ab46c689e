/*
Fuzz target: the IDX reader, idx_read (vlvc/datasets.h), what --data fashion-mnist reads
(Debian ships the files gzipped; plain ones are read too). Each input is read as an images
file (3 dimensions) and as a labels file (1 dimension): one of the two refuses it by its
magic, the other reads it. The first and last image of an accepted images file are then
turned into model input at two sizes, centred on padding (40) and cropped and resized (8).
  make fuzz    or, longer:    make fuzz-idx FUZZ_SECONDS=600
*/
#include "vlvc/datasets.h"
#include "dev/fuzz/fuzz.h"

static char path[512];
static float image[40 * 40 * 3];

static void target_init(void) { fuzz_path(path, sizeof path, "train-images-idx3-ubyte.gz"); }

static void read_images(void* arg) {
    (void)arg;
    uint32_t dims[3];
    IdxDataset d = { 0 };
    d.images = idx_read(path, IDX_IMAGES_MAGIC, 3, dims);
    d.n = (int)dims[0];
    d.rows = (int)dims[1];
    d.cols = (int)dims[2];
    for (int S = 8; S <= 40; S += 32) {
        idx_image(&d, 0, S, image);
        idx_image(&d, d.n - 1, S, image);
    }
    idx_free(&d);
}

static void read_labels(void* arg) {
    (void)arg;
    uint32_t dims[1];
    free(idx_read(path, IDX_LABELS_MAGIC, 1, dims));
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz_write(path, data, size);
    fuzz_read(read_images, NULL);
    fuzz_read(read_labels, NULL);
    return 0;
}
