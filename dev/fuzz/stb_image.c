/*
stb_image's decoder compiled from Debian's header (libstb-dev: the source libstb.so is built
from), for the image_stb fuzz target: linked before -lstb, its stbi_* functions replace the
library's, so that AddressSanitizer, the array-bounds checks and libFuzzer's coverage see
inside the decoder (dev/fuzz/fuzz.mk, dev/fuzz/README.md).
*/
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
