/*
The shapes world's vocabulary (every word its grammar can produce) and its dataset files
(doc/data.md "Dataset file"): the exact splits a run trains on, exported for the PyTorch twin
(./train_vlv --export) and read back with every field validated.
*/
#ifndef VLVC_SHAPES_EXPORT_H
#define VLVC_SHAPES_EXPORT_H

#include "shapes.h"

// every word the grammar can produce, in byte order after the specials
static inline void shapes_vocab(Vocab* v) {
    const char* texts[2 + NUM_SIZES + NUM_COLORS + NUM_SHAPES + NUM_CELLS];
    int n = 0;
    texts[n++] = "a";
    texts[n++] = "and";
    for (int i = 0; i < NUM_SIZES; i++) texts[n++] = size_names[i];
    for (int i = 0; i < NUM_COLORS; i++) texts[n++] = color_names[i];
    for (int i = 0; i < NUM_SHAPES; i++) texts[n++] = shape_names[i];
    for (int i = 0; i < NUM_CELLS; i++) texts[n++] = cell_phrases[i];
    vocab_build(v, texts, n);
}

static inline uint8_t shapes_to_u8(float x) { // [-1, 1] -> 0..255; the palette's levels map exactly
    if (!(x > -1.0f)) return 0; // NaN too
    if (x >= 1.0f) return 255;
    return (uint8_t)((x + 1.0f) * 127.5f + 0.5f);
}

typedef struct {
    int split, n, img_size, max_objects, caption_bytes;
    uint64_t world_seed;
    uint8_t* images;   // [n, img_size, img_size, 3] RGB: x = (2v - 255) / 255
    Scene* scenes;     // [n]
    char* captions;    // [n, caption_bytes], NUL-padded
} ShapesDataset;

// items 0..n-1 of a split: header, images, scenes, captions (doc/data.md "Dataset file")
static inline void shapes_export(const char* path, int split, int n, int img_size, int max_objects, uint64_t world_seed) {
    if (n < 1) fail("shapes_export: n = %d items", n);
    shapes_seed(split, (uint64_t)n - 1); // reject a bad split, range, canvas or count up front,
    shapes_geometry(img_size);             // before the file is opened
    if (max_objects < 1 || max_objects > SHAPES_MAX_OBJECTS) fail("max_objects = %d; the world has 1..%d", max_objects, SHAPES_MAX_OBJECTS);
    FILE* fp = atomic_open(path); // never a partial dataset under its final name
    int header[HEADER_INTS] = {0};
    header[0] = SHAPES_DATASET_MAGIC;
    header[1] = SHAPES_DATASET_VERSION;
    header[2] = split;
    header[3] = n;
    header[4] = img_size;
    header[5] = max_objects;
    header[6] = SHAPES_CAPTION_MAX;
    header[7] = (int)(uint32_t)world_seed;
    header[8] = (int)(uint32_t)(world_seed >> 32);
    fwriteCheck(header, sizeof(int), HEADER_INTS, fp, path);
    size_t pix = (size_t)img_size * img_size * 3;
    float* img = (float*)mallocCheck(pix * sizeof(float));
    uint8_t* px = (uint8_t*)mallocCheck(pix);
    Scene* scenes = (Scene*)mallocCheck((size_t)n * sizeof(Scene));
    for (int i = 0; i < n; i++) {
        shapes_sample(&scenes[i], img, img_size, split, (uint64_t)i, max_objects, world_seed);
        for (size_t k = 0; k < pix; k++) px[k] = shapes_to_u8(img[k]);
        fwriteCheck(px, 1, pix, fp, path);
    }
    for (int i = 0; i < n; i++) {
        int rec[SHAPES_SCENE_INTS];
        rec[0] = scenes[i].n;
        for (int k = 0; k < SHAPES_MAX_OBJECTS; k++) {
            const ShapeObject* o = &scenes[i].obj[k];
            int used = k < scenes[i].n;
            rec[1 + 4 * k] = used ? o->shape : -1;
            rec[2 + 4 * k] = used ? o->color : -1;
            rec[3 + 4 * k] = used ? o->size : -1;
            rec[4 + 4 * k] = used ? o->cell : -1;
        }
        fwriteCheck(rec, sizeof(int), SHAPES_SCENE_INTS, fp, path);
    }
    for (int i = 0; i < n; i++) {
        char cap[SHAPES_CAPTION_MAX] = {0};
        scene_caption(cap, sizeof cap, &scenes[i]);
        fwriteCheck(cap, 1, sizeof cap, fp, path);
    }
    atomic_commit(fp, path);
    free(img); free(px); free(scenes);
}

static inline void shapes_dataset_free(ShapesDataset* d) {
    free(d->images); free(d->scenes); free(d->captions);
    d->images = NULL; d->scenes = NULL; d->captions = NULL;
}

// the largest dataset file its header allows: n < 2^31 items of the largest image, scene and caption
#define SHAPES_DATASET_MAX_BYTES \
    (HEADER_INTS * 4ull + (uint64_t)INT32_MAX * (3ull * SHAPES_MAX_IMG * SHAPES_MAX_IMG + SHAPES_SCENE_INTS * 4 + (1 << 16)))

// reads and validates a dataset file: header, exact size, every scene valid, every caption
// the scene's caption, every pixel background or a palette colour
static inline void shapes_dataset_load(ShapesDataset* d, const char* path) {
    FILE* fp = readOpenCheck(path, SHAPES_DATASET_MAX_BYTES);
    long size = file_size(fp, path);
    int h[HEADER_INTS];
    freadCheck(h, sizeof(int), HEADER_INTS, fp, path);
    if (h[0] != SHAPES_DATASET_MAGIC) {
        fail("'%s' is not a vlv.c shapes dataset: magic number %d, expected %d", path, h[0], SHAPES_DATASET_MAGIC);
    }
    if (h[1] != SHAPES_DATASET_VERSION) {
        fail("'%s' is a shapes dataset of version %d; this program reads version %d", path, h[1], SHAPES_DATASET_VERSION);
    }
    d->split = h[2]; d->n = h[3]; d->img_size = h[4]; d->max_objects = h[5]; d->caption_bytes = h[6];
    d->world_seed = (uint64_t)(uint32_t)h[7] | (uint64_t)(uint32_t)h[8] << 32;
    if (d->split < 0 || d->split >= NUM_SPLITS || d->n < 1 || d->img_size < SHAPES_MIN_IMG || d->img_size > SHAPES_MAX_IMG ||
        d->max_objects < 1 || d->max_objects > SHAPES_MAX_OBJECTS || d->caption_bytes < 1 || d->caption_bytes > (1 << 16)) {
        fail("'%s' has a bad header: split %d, n %d, img_size %d, max_objects %d, caption_bytes %d",
             path, d->split, d->n, d->img_size, d->max_objects, d->caption_bytes);
    }
    size_t pix = (size_t)d->img_size * d->img_size * 3;
    long long expect = HEADER_INTS * 4 + (long long)d->n * ((long long)pix + SHAPES_SCENE_INTS * 4 + d->caption_bytes);
    if (size < expect) fail("'%s' is truncated: %ld bytes, its header promises %lld", path, size, expect);
    if (size > expect) fail("'%s' has %lld bytes of trailing data after the %d items its header promises", path, size - expect, d->n);
    d->images = (uint8_t*)mallocCheck((size_t)d->n * pix);
    d->scenes = (Scene*)callocCheck((size_t)d->n, sizeof(Scene));
    d->captions = (char*)mallocCheck((size_t)d->n * d->caption_bytes);
    int* recs = (int*)mallocCheck((size_t)d->n * SHAPES_SCENE_INTS * sizeof(int));
    freadCheck(d->images, pix, (size_t)d->n, fp, path);
    freadCheck(recs, sizeof(int) * SHAPES_SCENE_INTS, (size_t)d->n, fp, path);
    freadCheck(d->captions, (size_t)d->caption_bytes, (size_t)d->n, fp, path);
    fclose(fp);
    for (int i = 0; i < d->n; i++) {
        const int* r = recs + (size_t)i * SHAPES_SCENE_INTS;
        Scene* s = &d->scenes[i];
        s->n = r[0] >= 0 && r[0] <= SHAPES_MAX_OBJECTS ? r[0] : 0;
        int unused_ok = 1;
        for (int k = 0; k < SHAPES_MAX_OBJECTS; k++) {
            if (k < s->n) {
                ShapeObject* o = &s->obj[k];
                o->shape = r[1 + 4 * k]; o->color = r[2 + 4 * k]; o->size = r[3 + 4 * k]; o->cell = r[4 + 4 * k];
            } else {
                for (int a = 0; a < 4; a++) unused_ok &= r[1 + 4 * k + a] == -1;
            }
        }
        if (!scene_valid(s, d->max_objects) || !unused_ok) fail("'%s' is corrupt: item %d has an invalid scene", path, i);
        char want[SHAPES_CAPTION_MAX];
        scene_caption(want, sizeof want, s);
        const char* got = d->captions + (size_t)i * d->caption_bytes;
        size_t wl = strlen(want);
        int match = wl < (size_t)d->caption_bytes && memcmp(got, want, wl) == 0;
        for (size_t k = wl; match && k < (size_t)d->caption_bytes; k++) match = got[k] == '\0';
        if (!match) fail("'%s' is corrupt: the caption of item %d is not its scene's ('%s')", path, i, want);
        const uint8_t* im = d->images + (size_t)i * pix;
        for (size_t k = 0; k < pix; k += 3) {
            int ok = im[k] == 0 && im[k + 1] == 0 && im[k + 2] == 0;
            for (int c = 0; c < NUM_COLORS && !ok; c++) ok = memcmp(im + k, shapes_palette[c], 3) == 0;
            if (!ok) fail("'%s' is corrupt: item %d has a pixel that is neither background nor a palette colour", path, i);
        }
    }
    free(recs);
}

#endif
