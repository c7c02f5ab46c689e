/*
The embedded "shapes" world (doc/data.md): scenes of 1 to 3 coloured shapes on a 3x3 grid,
drawn from a seed with integer arithmetic only, so that every machine renders the same bits,
and the caption grammar with its parser. The oracle that scores images is shapes_oracle.h,
the dataset export for the PyTorch twin shapes_export.h.
*/
#ifndef VLVC_SHAPES_H
#define VLVC_SHAPES_H

#include "utils.h"
#include "tokenizer.h"

#define SHAPES_MAX_OBJECTS 3
#define SHAPES_CAPTION_MAX 160  // bytes with the NUL; the longest caption has 135
#define SHAPES_INDEX_BITS 40    // each split owns 2^40 seeds
#define SHAPES_MIN_IMG 24       // below, large and small would both be 5 px, the least that keeps shapes apart
#define SHAPES_MAX_IMG 1024
#define SHAPES_DATASET_MAGIC 20261128
#define SHAPES_DATASET_VERSION 1
#define SHAPES_SCENE_INTS (1 + 4 * SHAPES_MAX_OBJECTS) // a scene on disk: n, then (shape, color, size, cell) x 3
#define ORACLE_MAX_COLOR_DIST 96 // a pixel farther than this (RGB, 0..255) from every colour is no colour

enum { SHAPE_CIRCLE, SHAPE_SQUARE, SHAPE_TRIANGLE, SHAPE_DIAMOND, NUM_SHAPES };
enum { COLOR_RED, COLOR_GREEN, COLOR_BLUE, COLOR_YELLOW, COLOR_MAGENTA, COLOR_CYAN, COLOR_WHITE, COLOR_ORANGE, NUM_COLORS };
enum { SIZE_SMALL, SIZE_LARGE, NUM_SIZES };
enum { NUM_CELLS = 9 }; // 3x3, row-major from the top left
enum { ATTR_SHAPE, ATTR_COLOR, ATTR_SIZE, ATTR_CELL, NUM_ATTRS };
enum { SPLIT_T2I, SPLIT_UNPAIRED, SPLIT_CAPTIONED, SPLIT_TEST, NUM_SPLITS };

typedef struct { int shape, color, size, cell; } ShapeObject;
typedef struct { int n; ShapeObject obj[SHAPES_MAX_OBJECTS]; } Scene; // objects in reading order (by cell)

static const char* const shape_names[NUM_SHAPES] = {"circle", "square", "triangle", "diamond"};
static const char* const color_names[NUM_COLORS] = {"red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange"};
static const char* const size_names[NUM_SIZES] = {"small", "large"};
static const char* const cell_phrases[NUM_CELLS] = {
    "at the top left", "at the top", "at the top right",
    "on the left", "in the center", "on the right",
    "at the bottom left", "at the bottom", "at the bottom right"};
static const char* const split_names[NUM_SPLITS] = {"t2i", "unpaired", "captioned", "test"};

// the corners of the RGB cube but black (the background), and orange: any two >= 127 apart
static const uint8_t shapes_palette[NUM_COLORS][3] = {
    {255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 255, 0}, {255, 0, 255}, {0, 255, 255}, {255, 255, 255}, {255, 128, 0}};
// the same in [-1, 1] (x = (2v - 255) / 255), written as literals so that no compiler flag
// (fast-math's reciprocals) can change a bit of a render
#define SHAPES_HALF 0.00392156863f // 1/255, the level of 128
static const float shapes_palette_float[NUM_COLORS][3] = {
    {1, -1, -1}, {-1, 1, -1}, {-1, -1, 1}, {1, 1, -1}, {1, -1, 1}, {-1, 1, 1}, {1, 1, 1}, {1, SHAPES_HALF, -1}};

// ----------------------------------------------------------------------------
// seeds: splitmix64, integers only

static inline uint64_t shapes_mix(uint64_t z) { // splitmix64's finaliser: a bijection
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline uint64_t shapes_rng(uint64_t* state) { return shapes_mix(*state += 0x9E3779B97F4A7C15ull); }
// uniform in 0..k-1 by a 32-bit multiply-shift (its bias, k / 2^32, is negligible for small k)
static inline int shapes_rng_int(uint64_t* state, int k) {
    return (int)(((shapes_rng(state) >> 32) * (uint64_t)k) >> 32);
}

// the seed of an item: split k owns [k * 2^40, (k + 1) * 2^40), so splits never share one
static inline uint64_t shapes_seed(int split, uint64_t index) {
    if (split < 0 || split >= NUM_SPLITS) fail("unknown split %d (0..%d)", split, NUM_SPLITS - 1);
    if (index >> SHAPES_INDEX_BITS) {
        fail("item %llu is past the end of split %s (2^%d items)", (unsigned long long)index, split_names[split], SHAPES_INDEX_BITS);
    }
    return ((uint64_t)split << SHAPES_INDEX_BITS) | index;
}
// the item's random stream; a bijection of the seed for a given world seed, so distinct items
// get distinct streams
static inline uint64_t shapes_item_state(int split, uint64_t index, uint64_t world_seed) {
    return shapes_mix(shapes_seed(split, index) + shapes_mix(world_seed));
}
static inline uint64_t shapes_jitter_seed(int split, uint64_t index, uint64_t world_seed) {
    return shapes_mix(shapes_item_state(split, index, world_seed) ^ 0x6A09E667F3BCC909ull);
}

// ----------------------------------------------------------------------------
// scenes

static inline int scene_valid(const Scene* s, int max_objects) {
    if (s->n < 1 || s->n > max_objects) return 0;
    for (int k = 0; k < s->n; k++) {
        const ShapeObject* o = &s->obj[k];
        if (o->shape < 0 || o->shape >= NUM_SHAPES || o->color < 0 || o->color >= NUM_COLORS ||
            o->size < 0 || o->size >= NUM_SIZES || o->cell < 0 || o->cell >= NUM_CELLS) return 0;
        if (k > 0 && o->cell <= s->obj[k - 1].cell) return 0; // reading order, distinct cells
    }
    return 1;
}

static inline int scene_equal(const Scene* a, const Scene* b) {
    if (a->n != b->n) return 0;
    for (int k = 0; k < a->n; k++) {
        const ShapeObject *x = &a->obj[k], *y = &b->obj[k];
        if (x->shape != y->shape || x->color != y->color || x->size != y->size || x->cell != y->cell) return 0;
    }
    return 1;
}

// 1..max_objects objects (uniform count), in distinct uniform cells, uniform attributes
static inline void shapes_scene(Scene* s, int split, uint64_t index, int max_objects, uint64_t world_seed) {
    if (max_objects < 1 || max_objects > SHAPES_MAX_OBJECTS) fail("max_objects = %d; the world has 1..%d", max_objects, SHAPES_MAX_OBJECTS);
    uint64_t st = shapes_item_state(split, index, world_seed);
    memset(s, 0, sizeof *s);
    s->n = 1 + shapes_rng_int(&st, max_objects);
    int cells[NUM_CELLS];
    for (int c = 0; c < NUM_CELLS; c++) cells[c] = c;
    for (int k = 0; k < s->n; k++) { // partial Fisher-Yates, then sort into reading order
        int j = k + shapes_rng_int(&st, NUM_CELLS - k);
        int t = cells[k]; cells[k] = cells[j]; cells[j] = t;
    }
    for (int k = 1; k < s->n; k++) {
        for (int j = k; j > 0 && cells[j - 1] > cells[j]; j--) { int t = cells[j]; cells[j] = cells[j - 1]; cells[j - 1] = t; }
    }
    for (int k = 0; k < s->n; k++) {
        ShapeObject* o = &s->obj[k];
        o->cell = cells[k];
        o->shape = shapes_rng_int(&st, NUM_SHAPES);
        o->color = shapes_rng_int(&st, NUM_COLORS);
        o->size = shapes_rng_int(&st, NUM_SIZES);
    }
}

// ----------------------------------------------------------------------------
// geometry and rendering

typedef struct {
    int img_size;
    int cell;          // cell side in px: img_size / 3
    int offset;        // the grid's top-left corner (x = y)
    int px[NUM_SIZES]; // object side: large = cell - 2, small ~60% of it, at least 5
    int jitter;        // the centre moves up to this many px (within what the cell allows)
} ShapesGeometry;

static inline ShapesGeometry shapes_geometry(int img_size) {
    if (img_size < SHAPES_MIN_IMG || img_size > SHAPES_MAX_IMG) {
        fail("the shapes world draws %d..%d px canvases, not %d", SHAPES_MIN_IMG, SHAPES_MAX_IMG, img_size);
    }
    ShapesGeometry g;
    g.img_size = img_size;
    g.cell = img_size / 3;
    g.offset = (img_size - 3 * g.cell + 1) / 2; // centres the used part (3 * cell - 1 px)
    g.px[SIZE_LARGE] = g.cell - 2;
    g.px[SIZE_SMALL] = (3 * g.px[SIZE_LARGE] + 2) / 5;
    if (g.px[SIZE_SMALL] < 5) g.px[SIZE_SMALL] = 5;
    g.jitter = g.cell / 8 > 1 ? g.cell / 8 : 1;
    return g;
}

// whether pixel (x, y) of an s x s box belongs to the shape: tests the pixel's centre, in half
// pixels from the box's centre (u, v), so every shape fills its box edge to edge and is
// symmetric left-right; the triangle points up
static inline int shape_covers(int shape, int s, int x, int y) {
    int u = 2 * x + 1 - s, v = 2 * y + 1 - s;
    switch (shape) {
    case SHAPE_CIRCLE: return u * u + v * v <= s * s;
    case SHAPE_SQUARE: return 1;
    case SHAPE_TRIANGLE: return 2 * abs(u) <= v + s + 1;
    default: return abs(u) + abs(v) <= s; // diamond
    }
}

// an object's top-left offset inside its cell, on one axis: the last row and column of a cell
// stay empty, so objects in neighbouring cells never touch, even of the same colour
static inline int shapes_place(const ShapesGeometry* g, int size, uint64_t* st) {
    int slack = g->cell - 1 - g->px[size]; // offsets 0..slack keep the object in its cell
    int mid = slack / 2;
    int lo = mid - g->jitter < 0 ? 0 : mid - g->jitter;
    int hi = mid + g->jitter > slack ? slack : mid + g->jitter;
    return lo + shapes_rng_int(st, hi - lo + 1);
}

// img: [img_size, img_size, 3] in [-1, 1], black (-1) background, hard edges, exact colours
static inline void shapes_render(float* img, const Scene* s, int img_size, uint64_t jitter_seed) {
    ShapesGeometry g = shapes_geometry(img_size);
    if (!scene_valid(s, SHAPES_MAX_OBJECTS)) fail("shapes_render: the scene is not a valid scene (n = %d)", s->n);
    for (size_t i = 0; i < (size_t)img_size * img_size * 3; i++) img[i] = -1.0f;
    uint64_t st = jitter_seed;
    for (int k = 0; k < s->n; k++) {
        const ShapeObject* o = &s->obj[k];
        int side = g.px[o->size];
        int x0 = g.offset + (o->cell % 3) * g.cell + shapes_place(&g, o->size, &st);
        int y0 = g.offset + (o->cell / 3) * g.cell + shapes_place(&g, o->size, &st);
        for (int y = 0; y < side; y++) {
            for (int x = 0; x < side; x++) {
                if (!shape_covers(o->shape, side, x, y)) continue;
                float* p = img + ((size_t)(y0 + y) * img_size + (x0 + x)) * 3;
                for (int c = 0; c < 3; c++) p[c] = shapes_palette_float[o->color][c];
            }
        }
    }
}

// item index of a split: its scene and its image (img NULL: the scene alone)
static inline void shapes_sample(Scene* s, float* img, int img_size, int split, uint64_t index, int max_objects, uint64_t world_seed) {
    shapes_scene(s, split, index, max_objects, world_seed);
    if (img) { shapes_render(img, s, img_size, shapes_jitter_seed(split, index, world_seed)); }
}

// ----------------------------------------------------------------------------
// captions: "a SIZE COLOR SHAPE POSITION", objects joined by " and " in reading order

static inline void scene_caption(char* out, size_t cap, const Scene* s) {
    size_t len = 0;
    if (cap == 0) fail("scene_caption: no room");
    out[0] = '\0';
    for (int k = 0; k < s->n; k++) {
        const ShapeObject* o = &s->obj[k];
        int w = snprintf(out + len, cap - len, "%sa %s %s %s %s", k > 0 ? " and " : "", size_names[o->size],
                         color_names[o->color], shape_names[o->shape], cell_phrases[o->cell]);
        if (w < 0 || (size_t)w >= cap - len) fail("scene_caption: the caption needs more than %zu bytes", cap);
        len += (size_t)w;
    }
}

// the most tokens (with BOS and EOS) a caption of up to max_objects objects needs
static inline int shapes_max_tokens(int max_objects) {
    int phrase = 0;
    for (int c = 0; c < NUM_CELLS; c++) {
        int words = 1;
        for (const char* p = cell_phrases[c]; *p; p++) words += *p == ' ';
        if (words > phrase) phrase = words;
    }
    return 2 + max_objects * (4 + phrase) + (max_objects - 1);
}

static inline int shapes_find_word(const char* const* names, int n, const char* w, size_t len) {
    for (int i = 0; i < n; i++) {
        if (strlen(names[i]) == len && strncmp(names[i], w, len) == 0) return i;
    }
    return -1;
}

// how many words of the phrase match the text at *p (0 if it does not match); the words are
// compared one by one, so whitespace between them may be any run of blanks
static inline int shapes_match_phrase(const char* p, const char* phrase) {
    int words = 0;
    const char *w, *q = phrase, *pw;
    size_t len, plen;
    while ((plen = vocab_next_word(&q, &pw)) > 0) {
        len = vocab_next_word(&p, &w);
        if (len != plen || strncmp(w, pw, len) != 0) return 0;
        words++;
    }
    return words;
}

// 1 and the scene if text is a caption the grammar can produce (reading order, distinct cells,
// 1..3 objects; case-sensitive, any whitespace between words), else 0 and an empty scene.
// Reads only up to text's NUL.
static inline int caption_parse(Scene* s, const char* text) {
    Scene r;
    memset(&r, 0, sizeof r);
    memset(s, 0, sizeof *s);
    const char* p = text;
    const char* w;
    size_t len;
    for (;;) {
        if (r.n == SHAPES_MAX_OBJECTS) return 0;
        ShapeObject* o = &r.obj[r.n];
        len = vocab_next_word(&p, &w);
        if (len != 1 || w[0] != 'a') return 0;
        len = vocab_next_word(&p, &w);
        if ((o->size = shapes_find_word(size_names, NUM_SIZES, w, len)) < 0) return 0;
        len = vocab_next_word(&p, &w);
        if ((o->color = shapes_find_word(color_names, NUM_COLORS, w, len)) < 0) return 0;
        len = vocab_next_word(&p, &w);
        if ((o->shape = shapes_find_word(shape_names, NUM_SHAPES, w, len)) < 0) return 0;
        int best = 0; // the longest position phrase wins: "at the top" is a prefix of "at the top left"
        o->cell = -1;
        for (int c = 0; c < NUM_CELLS; c++) {
            int words = shapes_match_phrase(p, cell_phrases[c]);
            if (words > best) { best = words; o->cell = c; }
        }
        if (o->cell < 0) return 0;
        if (r.n > 0 && o->cell <= r.obj[r.n - 1].cell) return 0;
        r.n++;
        for (int k = 0; k < best; k++) vocab_next_word(&p, &w);
        len = vocab_next_word(&p, &w);
        if (len == 0) break;
        if (len != 3 || strncmp(w, "and", 3) != 0) return 0;
    }
    *s = r;
    return 1;
}

#endif
