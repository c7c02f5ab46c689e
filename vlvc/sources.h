/*
Where the pipeline's examples come from (--data): the embedded shapes world (the default),
Fashion-MNIST from Debian's dataset-fashion-mnist, or a folder of PNG/JPEG images with a
captions file. Each source serves the pipeline's four splits (vlvc/shapes.h's SPLIT_*):

  split            shapes world         Fashion-MNIST                an image folder
  SPLIT_T2I        its own seed range   train items 0..24999         captioned, not test
  SPLIT_UNPAIRED   its own seed range   train items 25000..54999     every image not in test
  SPLIT_CAPTIONED  its own seed range   train items 55000..59999     captioned, not test
  SPLIT_TEST       its own seed range   the 10000 t10k items         every 10th captioned image

Stage 0 (text-to-image) and 0b learn from SPLIT_T2I, stage 1 from SPLIT_UNPAIRED (images
only: a folder's uncaptioned images count), stage 2 from the first K items of
SPLIT_CAPTIONED, and the evaluation from SPLIT_TEST. Only the shapes world can be scored
scene by scene (the oracle reads images, the caption parser reads captions); elsewhere a
caption counts as right when it equals the true one, and images are compared by pixel MSE.
Host-side code shared by train_vlv.c and train_vlv.cu.
*/
#ifndef VLVC_SOURCES_H
#define VLVC_SOURCES_H

#include "shapes.h"
#include "shapes_oracle.h"
#include "shapes_export.h"
#include "tokenizer.h"
#include "datasets.h"

enum { SOURCE_SHAPES, SOURCE_FASHION_MNIST, SOURCE_FOLDER };

typedef struct {
    int kind;
    int S;                        // image size
    int max_objects;              // shapes world
    uint64_t seed;                // shapes world
    IdxDataset fashion[2];        // Fashion-MNIST: train, t10k
    ImageFolder folder;
    float* folder_images;         // [count, S, S, 3], decoded once
    int* pool[NUM_SPLITS];        // Fashion-MNIST and folders: the items of each split
    int pool_size[NUM_SPLITS];
} DataSource;

static int* source_range(int first, int n) {
    int* items = (int*)mallocCheck((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) { items[i] = first + i; }
    return items;
}

// Opens the source named by spec: "shapes", "fashion-mnist" (Debian's folder),
// "fashion-mnist:DIR" or "folder:DIR" (captions in DIR/captions.tsv). A bad spec, missing
// or corrupt files, or a folder without enough captioned images exit with a message.
static void source_open(DataSource* src, const char* spec, int S, int max_objects, uint64_t seed) {
    memset(src, 0, sizeof *src);
    src->S = S;
    src->max_objects = max_objects;
    src->seed = seed;
    if (strcmp(spec, "shapes") == 0) {
        src->kind = SOURCE_SHAPES;
    } else if (strcmp(spec, "fashion-mnist") == 0 || strncmp(spec, "fashion-mnist:", 14) == 0) {
        src->kind = SOURCE_FASHION_MNIST;
        const char* dir = spec[13] == ':' ? spec + 14 : FASHION_MNIST_DIR;
        fashion_mnist_load(&src->fashion[0], dir, "train");
        fashion_mnist_load(&src->fashion[1], dir, "t10k");
        if (src->fashion[0].n != 60000) fail("Fashion-MNIST in '%s': the train split has %d items, not 60000", dir, src->fashion[0].n);
        int first[NUM_SPLITS] = { 0, 25000, 55000, 0 }, count[NUM_SPLITS] = { 25000, 30000, 5000, src->fashion[1].n };
        for (int k = 0; k < NUM_SPLITS; k++) {
            src->pool[k] = source_range(first[k], count[k]);
            src->pool_size[k] = count[k];
        }
    } else if (strncmp(spec, "folder:", 7) == 0) {
        src->kind = SOURCE_FOLDER;
        const char* dir = spec + 7;
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) fail("--data %s: '%s' is not a folder", spec, dir);
        char captions[4096];
        if (snprintf(captions, sizeof captions, "%s/captions.tsv", dir) >= (int)sizeof captions) fail("the path %s is too long", dir);
        if (access(captions, F_OK) != 0) fail("image folder '%s' has no captions.tsv (lines: filename<TAB>caption)", dir);
        image_folder_open(&src->folder, dir, captions);
        ImageFolder* f = &src->folder;
        src->folder_images = (float*)mallocCheck((size_t)f->count * S * S * 3 * sizeof(float));
        for (int k = 0; k < NUM_SPLITS; k++) { src->pool[k] = (int*)mallocCheck((size_t)f->count * sizeof(int)); }
        int captioned = 0;
        for (int i = 0; i < f->count; i++) {
            char err[512];
            if (!image_load(f->paths[i], S, src->folder_images + (size_t)i * S * S * 3, err, sizeof err)) fail("%s", err);
            int test = f->captions[i] != NULL && captioned++ % 10 == 0;
            if (test) { src->pool[SPLIT_TEST][src->pool_size[SPLIT_TEST]++] = i; continue; }
            src->pool[SPLIT_UNPAIRED][src->pool_size[SPLIT_UNPAIRED]++] = i;
            if (f->captions[i] != NULL) {
                src->pool[SPLIT_T2I][src->pool_size[SPLIT_T2I]++] = i;
                src->pool[SPLIT_CAPTIONED][src->pool_size[SPLIT_CAPTIONED]++] = i;
            }
        }
        if (src->pool_size[SPLIT_T2I] < 1) {
            fail("image folder '%s': %d captioned images; it needs at least 2 (every 10th one is held out for the evaluation)", dir, captioned);
        }
    } else {
        fail("--data '%s': choose shapes, fashion-mnist, fashion-mnist:DIR or folder:DIR", spec);
    }
}

static void source_free(DataSource* src) {
    if (src->kind == SOURCE_FASHION_MNIST) { idx_free(&src->fashion[0]); idx_free(&src->fashion[1]); }
    if (src->kind == SOURCE_FOLDER) { image_folder_free(&src->folder); free(src->folder_images); }
    for (int k = 0; k < NUM_SPLITS; k++) { free(src->pool[k]); }
}

// items of a split (0: endless, the shapes world)
static int source_split_size(const DataSource* src, int split) {
    return src->kind == SOURCE_SHAPES ? 0 : src->pool_size[split];
}

// example `index` of a split (modulo the split's size): image [S,S,3] in [-1, 1] (none drawn
// when image is NULL), caption (cap bytes), and for the shapes world the true scene
static void source_example(const DataSource* src, int split, uint64_t index, float* image, char* caption, size_t cap,
                           Scene* scene) {
    if (src->kind == SOURCE_SHAPES) {
        shapes_sample(scene, image, src->S, split, index, src->max_objects, src->seed);
        scene_caption(caption, cap, scene);
        return;
    }
    int item = src->pool[split][index % (uint64_t)src->pool_size[split]];
    if (src->kind == SOURCE_FASHION_MNIST) {
        const IdxDataset* d = &src->fashion[split == SPLIT_TEST];
        if (image) { idx_image(d, item, src->S, image); }
        snprintf(caption, cap, "%s", FASHION_MNIST_CAPTIONS[d->labels[item]]);
    } else {
        if (image) { memcpy(image, src->folder_images + (size_t)item * src->S * src->S * 3, (size_t)src->S * src->S * 3 * sizeof(float)); }
        const char* text = src->folder.captions[item];
        snprintf(caption, cap, "%s", text ? text : ""); // stage 1 reads no caption
    }
}

// a number naming the item behind example `index` of a split: two examples show the same item
// exactly when their numbers are equal (the shapes world: its split and index, the seed the
// item is drawn from; Fashion-MNIST: the file and the item; a folder: the image)
static uint64_t source_item_id(const DataSource* src, int split, uint64_t index) {
    if (src->kind == SOURCE_SHAPES) { return shapes_seed(split, index); }
    uint64_t item = (uint64_t)src->pool[split][index % (uint64_t)src->pool_size[split]];
    return src->kind == SOURCE_FASHION_MNIST && split == SPLIT_TEST ? 1ull << 32 | item : item;
}

// the vocabulary of the source's captions (the shapes grammar's words for the shapes world)
static void source_vocab(const DataSource* src, Vocab* v) {
    if (src->kind == SOURCE_SHAPES) { shapes_vocab(v); return; }
    if (src->kind == SOURCE_FASHION_MNIST) { vocab_build(v, FASHION_MNIST_CAPTIONS, 10); return; }
    const char** texts = (const char**)mallocCheck((size_t)src->folder.count * sizeof(char*));
    int n = 0;
    for (int i = 0; i < src->folder.count; i++) {
        if (src->folder.captions[i]) { texts[n++] = src->folder.captions[i]; }
    }
    vocab_build(v, texts, n);
    free(texts);
}

#endif
