/*
Image datasets (doc/images.md): Fashion-MNIST's IDX files (gzip-compressed or not) and image
folders with an optional tab-separated caption file, each read into S×S RGB floats in [-1, 1]
through images.h (link with -lz, zlib1g-dev). Every malformed file is refused with a message naming it. Valid C and C++.
*/
#ifndef VLVC_DATASETS_H
#define VLVC_DATASETS_H

#include <dirent.h>
#include <strings.h>
#include <zlib.h>
#include "images.h"

// ----------------------------------------------------------------------------
// IDX files (Fashion-MNIST)

#define IDX_IMAGES_MAGIC 0x00000803 // unsigned bytes, 3 dimensions: count, rows, cols
#define IDX_LABELS_MAGIC 0x00000801 // unsigned bytes, 1 dimension: count

typedef struct {
    int n, rows, cols;
    uint8_t* images; // [n, rows, cols], 0 = black
    uint8_t* labels; // [n]
} IdxDataset;

static uint32_t idx_be32(const uint8_t* p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#define IDX_MAX_BYTES (1u << 30) // Fashion-MNIST's largest file is 47 MB; a header claiming more is refused
#define CAPTIONS_MAX_BYTES (1ull << 30) // captions.tsv: a caption per image of a folder that fits in memory

// n bytes (or fewer at the end of the file) into buf; fails on a zlib error
static size_t idx_gzread(gzFile gz, const char* path, uint8_t* buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        int got = gzread(gz, buf + done, (unsigned)(n - done < (1u << 30) ? n - done : 1u << 30));
        if (got < 0) {
            int zerr;
            fail("'%s' is corrupt or truncated: %s (gzip/zlib)", path, gzerror(gz, &zerr));
        }
        if (got == 0) { break; }
        done += (size_t)got;
    }
    return done;
}

// Reads an IDX file; zlib reads gzip-compressed and plain files alike. Checks the magic and the
// dimensions in the header first, and allocates what they claim (bounded) only then, so a
// small gzip file cannot claim gigabytes; the (decompressed) size must be exactly header +
// product of the dimensions. Returns the data after the header, dims[ndim] filled in.
static uint8_t* idx_read(const char* path, uint32_t magic, int ndim, uint32_t* dims) {
    // gzip adds at most 0.02% and a few bytes to data it cannot compress: twice the data's bound is ample
    FILE* fp = readOpenCheck(path, 2ull * IDX_MAX_BYTES);
    int fd = dup(fileno(fp));
    fclose(fp);
    errno = 0; // gzdopen sets it only when the open itself failed
    gzFile gz = fd < 0 ? NULL : gzdopen(fd, "rb");
    if (gz == NULL) { fail("could not open '%s': %s", path, errno ? strerror(errno) : "out of memory"); }
    const char* what = gzdirect(gz) ? "" : " (decompressed)";
    uint8_t head[4 + 4 * 3];
    size_t header = 4 + 4 * (size_t)ndim, got = idx_gzread(gz, path, head, header);
    uint32_t got_magic = got >= 4 ? idx_be32(head) : 0;
    if (got >= 4 && got_magic != magic) {
        fail("'%s' has magic 0x%08x, expected 0x%08x (IDX of unsigned bytes, %d dimension%s)\n"
             "  is it an IDX %s file?", path, got_magic, magic, ndim, ndim > 1 ? "s" : "", ndim > 1 ? "images" : "labels");
    }
    if (got < header) { fail("'%s' is truncated: %zu bytes%s, shorter than its IDX header", path, got, what); }
    size_t expected = 1;
    char shape[64] = "";
    for (int i = 0; i < ndim; i++) {
        dims[i] = idx_be32(head + 4 + 4 * i);
        if (dims[i] == 0 || dims[i] > (i == 0 ? 0x7FFFFFFFu : 0xFFFFu)) { fail("'%s': implausible dimension %d: %u", path, i, dims[i]); }
        expected *= dims[i]; // at most 2^31 · 2^16 · 2^16: fits in 64 bits
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%u", i ? "x" : "", dims[i]);
    }
    if (expected > IDX_MAX_BYTES) {
        fail("'%s': its header (%s) claims %zu bytes of data, more than the %u this reader accepts", path, shape, expected, IDX_MAX_BYTES);
    }
    uint8_t* buf = (uint8_t*)mallocCheck(expected + 1);
    size_t size = idx_gzread(gz, path, buf, expected + 1); // one byte more: trailing data shows
    int zerr;
    const char* zmsg = gzerror(gz, &zerr); // at the end: a gzip trailer cut off shows here
    if (size <= expected && zerr != Z_OK) { fail("'%s' is corrupt or truncated: %s (gzip/zlib)", path, zmsg); }
    gzclose(gz);
    if (size < expected) { fail("'%s' is truncated: %zu bytes%s, but its header (%s) needs %zu", path, size + header, what, shape, expected + header); }
    if (size > expected) { fail("'%s' has trailing data%s after the %zu bytes its header (%s) needs", path, what, expected + header, shape); }
    return buf;
}

// Loads an images file and its labels file (same count, checked).
static inline void idx_load(IdxDataset* d, const char* images_path, const char* labels_path) {
    uint32_t di[3], dl[1];
    d->images = idx_read(images_path, IDX_IMAGES_MAGIC, 3, di);
    d->labels = idx_read(labels_path, IDX_LABELS_MAGIC, 1, dl);
    if (di[0] != dl[0]) {
        fail("'%s' holds %u images but '%s' holds %u labels: they must belong together",
             images_path, di[0], labels_path, dl[0]);
    }
    d->n = (int)di[0];
    d->rows = (int)di[1];
    d->cols = (int)di[2];
}

static inline void idx_free(IdxDataset* d) { free(d->images); free(d->labels); }

// Image i as S×S RGB in [-1, 1]: centred on black padding when it fits (offset
// floor((S-size)/2)), else centre-cropped and resized like any image.
static inline void idx_image(const IdxDataset* d, int i, int S, float* out) {
    const uint8_t* src = d->images + (size_t)i * d->rows * d->cols;
    if (S < d->rows || S < d->cols) { crop_resize(src, d->cols, d->rows, 1, S, out); return; }
    for (size_t j = 0; j < (size_t)S * S * 3; j++) { out[j] = -1.0f; }
    int top = (S - d->rows) / 2, left = (S - d->cols) / 2;
    for (int y = 0; y < d->rows; y++) {
        for (int x = 0; x < d->cols; x++) {
            float v = src[y * d->cols + x] / 127.5f - 1.0f;
            for (int c = 0; c < 3; c++) { out[((size_t)(top + y) * S + left + x) * 3 + c] = v; }
        }
    }
}

#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist" // Debian's dataset-fashion-mnist

// Fashion-MNIST's classes in words a caption can use ("t-shirt/top" -> "t-shirt")
static const char* const FASHION_MNIST_CLASSES[10] = {
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"};
static const char* const FASHION_MNIST_CAPTIONS[10] = {
    "a photo of a t-shirt", "a photo of a trouser", "a photo of a pullover", "a photo of a dress",
    "a photo of a coat", "a photo of a sandal", "a photo of a shirt", "a photo of a sneaker",
    "a photo of a bag", "a photo of an ankle boot"};

// the class a caption names exactly, or -1: caption accuracy = class accuracy
static inline int fashion_mnist_class_of(const char* caption) {
    for (int c = 0; c < 10; c++) {
        if (strcmp(caption, FASHION_MNIST_CAPTIONS[c]) == 0) { return c; }
    }
    return -1;
}

// Loads split "train" (60000) or "t10k" (10000) from dir: NAME-images-idx3-ubyte and
// NAME-labels-idx1-ubyte, each .gz (as Debian ships them) or plain. Checks 28×28 and labels 0..9.
static inline void fashion_mnist_load(IdxDataset* d, const char* dir, const char* split) {
    char paths[2][4096];
    const char* kinds[2] = {"images-idx3-ubyte", "labels-idx1-ubyte"};
    for (int f = 0; f < 2; f++) {
        snprintf(paths[f], sizeof paths[f], "%s/%s-%s.gz", dir, split, kinds[f]);
        if (access(paths[f], F_OK) != 0) {
            paths[f][strlen(paths[f]) - 3] = '\0';
            if (access(paths[f], F_OK) != 0) {
                fail("Fashion-MNIST: neither '%s.gz' nor '%s' exists\n"
                     "  on Debian: apt-get install dataset-fashion-mnist", paths[f], paths[f]);
            }
        }
    }
    idx_load(d, paths[0], paths[1]);
    if (d->rows != 28 || d->cols != 28) { fail("'%s': Fashion-MNIST images are 28×28, not %d×%d", paths[0], d->rows, d->cols); }
    for (int i = 0; i < d->n; i++) {
        if (d->labels[i] > 9) { fail("'%s': label %d of item %d is not a class 0..9", paths[1], d->labels[i], i); }
    }
}

// ----------------------------------------------------------------------------
// image folders

typedef struct {
    int count;
    char** names;    // file names (no directory), sorted bytewise: the same order everywhere
    char** paths;    // dir/name
    char** captions; // per image, NULL where it has none; NULL itself without a caption file
    int num_captioned;
} ImageFolder;

static char* image_strdup(const char* s) {
    size_t n = strlen(s) + 1;
    return (char*)memcpy(mallocCheck(n), s, n);
}

static int image_name_ok(const char* name) {
    const char* dot = strrchr(name, '.');
    return dot != NULL && (strcasecmp(dot, ".png") == 0 || strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0);
}

static int image_name_cmp(const void* a, const void* b) { return strcmp(*(char* const*)a, *(char* const*)b); }

// Reads captions_path, lines "filename<TAB>caption" (CRLF or LF, a UTF-8 BOM and blank lines
// allowed; spaces around the caption trimmed). Rejects, with file and line: no TAB, a second
// TAB, an empty caption, a file not in the folder, a file listed twice.
static void image_folder_read_captions(ImageFolder* f, const char* captions_path) {
    FILE* fp = readOpenCheck(captions_path, CAPTIONS_MAX_BYTES);
    int* line_of = (int*)callocCheck((size_t)f->count, sizeof(int)); // where each was captioned
    f->captions = (char**)callocCheck((size_t)f->count, sizeof(char*));
    char* line = NULL;
    size_t line_cap = 0;
    for (int lineno = 1; getline(&line, &line_cap, fp) >= 0; lineno++) {
        char* s = line;
        if (lineno == 1 && strncmp(s, "\xEF\xBB\xBF", 3) == 0) { s += 3; }
        size_t len = strlen(s);
        if (len > 0 && s[len - 1] == '\n') { s[--len] = '\0'; }
        if (len > 0 && s[len - 1] == '\r') { s[--len] = '\0'; }
        if (s[0] == '\0') { continue; }
        char* tab = strchr(s, '\t');
        if (tab == NULL) { fail("%s:%d: no TAB; each line must be filename<TAB>caption", captions_path, lineno); }
        *tab = '\0';
        char* caption = tab + 1;
        if (strchr(caption, '\t') != NULL) { fail("%s:%d: a second TAB; captions cannot contain TABs", captions_path, lineno); }
        while (*caption == ' ') { caption++; }
        size_t n = strlen(caption);
        while (n > 0 && caption[n - 1] == ' ') { caption[--n] = '\0'; }
        if (n == 0) { fail("%s:%d: empty caption for '%s'", captions_path, lineno, s); }
        char** hit = (char**)bsearch(&s, f->names, (size_t)f->count, sizeof(char*), image_name_cmp);
        if (hit == NULL) { fail("%s:%d: '%s' is not a PNG/JPEG file of the image folder", captions_path, lineno, s); }
        int i = (int)(hit - f->names);
        if (line_of[i]) { fail("%s:%d: '%s' was already captioned on line %d", captions_path, lineno, s, line_of[i]); }
        line_of[i] = lineno;
        f->captions[i] = image_strdup(caption);
        f->num_captioned++;
    }
    if (ferror(fp)) { fail("reading '%s' failed: %s", captions_path, strerror(errno)); }
    free(line);
    free(line_of);
    fclose(fp);
}

// Lists the .png/.jpg/.jpeg files (any case; not hidden ones, not subfolders) of dir, sorted;
// captions_path (or NULL) gives captions for some or all of them.
static inline void image_folder_open(ImageFolder* f, const char* dir, const char* captions_path) {
    DIR* dp = opendir(dir);
    if (dp == NULL) { fail("could not open image folder '%s': %s", dir, strerror(errno)); }
    int capacity = 64;
    f->count = 0;
    f->num_captioned = 0;
    f->captions = NULL;
    f->names = (char**)mallocCheck(capacity * sizeof(char*));
    struct dirent* e;
    while ((e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.' || !image_name_ok(e->d_name)) { continue; } // "._x.png": macOS metadata
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) { continue; }
        if (f->count == capacity) {
            capacity *= 2;
            f->names = (char**)realloc(f->names, capacity * sizeof(char*));
            if (f->names == NULL) { fail("out of memory listing '%s'", dir); }
        }
        f->names[f->count++] = image_strdup(e->d_name);
    }
    closedir(dp);
    if (f->count == 0) { fail("image folder '%s' has no .png/.jpg/.jpeg files", dir); }
    qsort(f->names, (size_t)f->count, sizeof(char*), image_name_cmp);
    f->paths = (char**)mallocCheck(f->count * sizeof(char*));
    for (int i = 0; i < f->count; i++) {
        size_t n = strlen(dir) + strlen(f->names[i]) + 2;
        f->paths[i] = (char*)mallocCheck(n);
        snprintf(f->paths[i], n, "%s/%s", dir, f->names[i]);
    }
    if (captions_path != NULL) { image_folder_read_captions(f, captions_path); }
}

static inline void image_folder_free(ImageFolder* f) {
    for (int i = 0; i < f->count; i++) {
        free(f->names[i]);
        free(f->paths[i]);
        if (f->captions) { free(f->captions[i]); }
    }
    free(f->names);
    free(f->paths);
    free(f->captions);
}

#endif
