/*
Fuzz target: the image reader, image_load (vlvc/images.h): PNG and JPEG through stb_image,
what ./caption and --data folder:DIR read. It returns 0 with a message for a bad image instead
of exiting; a refusal through fail() would be a finding too, as image_load fails only on a
size below 1. The model's side S (1..24, from the input's length) varies, so that cropping and
resizing run both ways.
  make fuzz    or, longer:    make fuzz-image FUZZ_SECONDS=600
*/
#include "vlvc/images.h"
#include "dev/fuzz/fuzz.h"

#define MAX_SIDE 24
static char path[512];
static float image[MAX_SIDE * MAX_SIDE * 3];

static void target_init(void) { fuzz_path(path, sizeof path, "image.png"); }

static void load_image(void* arg) {
    char err[1024];
    image_load(path, *(const int*)arg, image, err, sizeof err);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    int S = 1 + (int)(size % MAX_SIDE);
    fuzz_write(path, data, size);
    if (!fuzz_read(load_image, &S)) { fuzz_abort("image_load called fail() on a file"); }
    return 0;
}
