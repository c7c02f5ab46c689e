/*
Fuzz target: the caption file reader of image folders (image_folder_open with
image_folder_read_captions, vlvc/datasets.h), what --data folder:DIR reads from
DIR/captions.tsv. The folder is made once and holds empty files with the names the seeds
caption (image_folder_open lists names; it decodes no image), a hidden one and a text file.
  make fuzz    or, longer:    make fuzz-captions FUZZ_SECONDS=600
*/
#include <sys/stat.h>
#include "vlvc/datasets.h"
#include "dev/fuzz/fuzz.h"

static char dir[512], path[512];

static void target_init(void) {
    static const char* const names[] = { "a.png", "b.jpg", "c d.jpeg", "E.PNG", "f.Jpg", ".hidden.png", "notes.txt" };
    fuzz_path(dir, sizeof dir, "folder");
    if (mkdir(dir, 0755) != 0) { perror(dir); fuzz_abort("cannot make the image folder"); }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char file[600];
        snprintf(file, sizeof file, "%s/%s", dir, names[i]);
        fuzz_write(file, NULL, 0);
    }
    fuzz_path(path, sizeof path, "captions.tsv");
}

static void open_folder(void* arg) {
    (void)arg;
    ImageFolder f;
    image_folder_open(&f, dir, path);
    image_folder_free(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz_write(path, data, size);
    fuzz_read(open_folder, NULL);
    return 0;
}
