/*
The embedded "shapes" world (doc/data.md): scenes of 1 to 3 coloured shapes on a 3x3 grid,
drawn from a seed with integer arithmetic only, so that every machine renders the same bits;
the caption grammar and its parser; the oracle, a classical parser that reads a scene back
from an image; and the dataset export that lets the PyTorch twin train on the same data.
Host-side, shared by train_vlv.c, caption.c and the CUDA build.
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

// item index of a split: its scene and its image
static inline void shapes_sample(Scene* s, float* img, int img_size, int split, uint64_t index, int max_objects, uint64_t world_seed) {
    shapes_scene(s, split, index, max_objects, world_seed);
    shapes_render(img, s, img_size, shapes_jitter_seed(split, index, world_seed));
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

// exact: guess is truth (a valid scene). attr_correct[a] (0..truth->n): truth objects whose
// partner in guess agrees on attribute a, after pairing truth and guess objects one-to-one so
// that the most attributes agree (ties: the first pairing enumerated). With one object each,
// that is attribute by attribute. Extra guess objects cost only exactness; a guess with n
// outside 0..3 counts as empty.
static inline void scene_compare(const Scene* truth, const Scene* guess, int* exact, int attr_correct[NUM_ATTRS]) {
    int gn = guess->n >= 0 && guess->n <= SHAPES_MAX_OBJECTS ? guess->n : 0;
    *exact = gn == truth->n && scene_equal(truth, guess);
    for (int a = 0; a < NUM_ATTRS; a++) attr_correct[a] = 0;
    int best = -1, combos = 1;
    for (int k = 0; k < truth->n; k++) combos *= gn + 1;
    for (int code = 0; code < combos; code++) { // digit k of code in base gn + 1: truth object k's partner + 1 (0: none)
        int c = code, used = 0, ok = 1, counts[NUM_ATTRS] = {0};
        for (int k = 0; k < truth->n && ok; k++, c /= gn + 1) {
            int pick = c % (gn + 1) - 1;
            if (pick < 0) continue;
            ok = !(used >> pick & 1);
            used |= 1 << pick;
            const ShapeObject *t = &truth->obj[k], *g = &guess->obj[pick];
            counts[ATTR_SHAPE] += t->shape == g->shape;
            counts[ATTR_COLOR] += t->color == g->color;
            counts[ATTR_SIZE] += t->size == g->size;
            counts[ATTR_CELL] += t->cell == g->cell;
        }
        int total = counts[0] + counts[1] + counts[2] + counts[3];
        if (ok && total > best) {
            best = total;
            memcpy(attr_correct, counts, sizeof counts);
        }
    }
}

// ----------------------------------------------------------------------------
// the oracle: reads a scene back from an image, with no learning

// the palette colour a pixel shows, or -1 (background). Colour k fits pixel c (RGB, 0..255) as
// the nearest point a * k on the line from black to k (0 <= a <= 1); the best fit counts if it
// is more than half as bright as k (a > 1/2: an edge blurred into the background stays where
// it was) and within ORACLE_MAX_COLOR_DIST of c. NaN and infinities read as background.
static inline int oracle_pixel_color(const float* p) {
    float c[3], brightest = 0.0f;
    for (int k = 0; k < 3; k++) {
        if (!is_finite_float(p[k])) return -1;
        float v = (p[k] + 1.0f) * 127.5f;
        c[k] = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
        if (c[k] > brightest) brightest = c[k];
    }
    if (brightest <= 100.0f) return -1; // a < 1/2 for every colour (orange, the dimmest, needs 106): most pixels stop here
    float best = 3 * 256.0f * 256.0f, best_a = 0.0f;
    int color = -1;
    for (int i = 0; i < NUM_COLORS; i++) {
        const uint8_t* q = shapes_palette[i];
        float cq = c[0] * q[0] + c[1] * q[1] + c[2] * q[2];
        float qq = (float)(q[0] * q[0] + q[1] * q[1] + q[2] * q[2]);
        float a = cq / qq > 1.0f ? 1.0f : cq / qq;
        float d = 0.0f;
        for (int k = 0; k < 3; k++) { float e = c[k] - a * q[k]; d += e * e; }
        if (d < best) { best = d; best_a = a; color = i; }
    }
    return best_a > 0.5f && best <= (float)(ORACLE_MAX_COLOR_DIST * ORACLE_MAX_COLOR_DIST) ? color : -1;
}

// shape and size of component `id` (area px, bounding box x0..x1, y0..y1): the template of the
// world's 4 shapes x 2 sizes, placed within 2 px of the box's centre, with the highest
// intersection-over-union (compared exactly, in integers). A clean render scores 1.
static inline void oracle_classify(ShapeObject* o, const int* label, int id, int area, int x0, int y0, int x1, int y1, const ShapesGeometry* g) {
    int64_t best_inter = -1, best_union = 1;
    for (int size = 0; size < NUM_SIZES; size++) {
        int s = g->px[size];
        for (int shape = 0; shape < NUM_SHAPES; shape++) {
            int tx0 = x0 + (x1 - x0 + 1 - s) / 2, ty0 = y0 + (y1 - y0 + 1 - s) / 2;
            for (int dy = -2; dy <= 2; dy++) {
                for (int dx = -2; dx <= 2; dx++) {
                    int64_t inter = 0, tarea = 0;
                    for (int y = 0; y < s; y++) {
                        for (int x = 0; x < s; x++) {
                            if (!shape_covers(shape, s, x, y)) continue;
                            tarea++;
                            int px = tx0 + dx + x, py = ty0 + dy + y;
                            inter += px >= 0 && py >= 0 && px < g->img_size && py < g->img_size && label[py * g->img_size + px] == id;
                        }
                    }
                    int64_t uni = tarea + area - inter;
                    if (inter * best_union > best_inter * uni) {
                        best_inter = inter; best_union = uni;
                        o->shape = shape; o->size = size;
                    }
                }
            }
        }
    }
}

typedef struct { ShapeObject obj; int area, order; } OracleFind;

static inline int oracle_find_cmp(const void* a, const void* b) { // larger first, then first found
    const OracleFind *x = (const OracleFind*)a, *y = (const OracleFind*)b;
    if (x->area != y->area) return x->area > y->area ? -1 : 1;
    return x->order - y->order;
}

// Reads img ([img_size, img_size, 3], [-1, 1]): each pixel snaps to a palette colour or to the
// background (oracle_pixel_color), 4-connected components of one colour with at least half the
// area of the smallest object the world draws are objects, their centroid gives the cell,
// template matching the shape and size (oracle_classify). s gets the largest objects, one per cell, at most 3, in reading order.
// Returns 1 if that is the whole image (1..3 objects, no two in a cell), else 0. Any input is
// safe: NaN and infinities read as background, values outside [-1, 1] are clamped.
static inline int oracle_parse(Scene* s, const float* img, int img_size) {
    ShapesGeometry g = shapes_geometry(img_size);
    int npix = img_size * img_size;
    int* color = (int*)mallocCheck((size_t)npix * sizeof(int));
    int* label = (int*)mallocCheck((size_t)npix * sizeof(int));
    int* stack = (int*)mallocCheck((size_t)npix * sizeof(int));
    int min_area = npix;
    for (int shape = 0; shape < NUM_SHAPES; shape++) {
        int a = 0, side = g.px[SIZE_SMALL];
        for (int y = 0; y < side; y++) for (int x = 0; x < side; x++) a += shape_covers(shape, side, x, y);
        if (a < min_area) min_area = a;
    }
    min_area = (min_area + 1) / 2;
    OracleFind* found = (OracleFind*)mallocCheck((size_t)(npix / min_area + 1) * sizeof(OracleFind));
    int nfound = 0, ncomp = 0;
    for (int i = 0; i < npix; i++) { color[i] = oracle_pixel_color(img + (size_t)i * 3); label[i] = -1; }
    for (int start = 0; start < npix; start++) {
        if (color[start] < 0 || label[start] >= 0) continue;
        int id = ncomp++, top = 0, area = 0;
        int x0 = img_size, y0 = img_size, x1 = -1, y1 = -1;
        int64_t sx = 0, sy = 0;
        label[start] = id;
        stack[top++] = start;
        while (top > 0) { // flood fill: every pixel is pushed once, so the stack never overflows
            int i = stack[--top], x = i % img_size, y = i / img_size;
            area++; sx += x; sy += y;
            if (x < x0) x0 = x;
            if (x > x1) x1 = x;
            if (y < y0) y0 = y;
            if (y > y1) y1 = y;
            int nb[4] = {x > 0 ? i - 1 : -1, x + 1 < img_size ? i + 1 : -1, y > 0 ? i - img_size : -1, y + 1 < img_size ? i + img_size : -1};
            for (int k = 0; k < 4; k++) {
                int j = nb[k];
                if (j >= 0 && label[j] < 0 && color[j] == color[start]) { label[j] = id; stack[top++] = j; }
            }
        }
        if (area < min_area) continue;
        OracleFind* f = &found[nfound];
        f->area = area;
        f->order = nfound++;
        f->obj.color = color[start];
        oracle_classify(&f->obj, label, id, area, x0, y0, x1, y1, &g);
        // centroid (pixel centres at +0.5) -> cell; floor via the clamp for the negative side
        int64_t col = (2 * sx + area - 2 * (int64_t)g.offset * area) / (2 * (int64_t)g.cell * area);
        int64_t row = (2 * sy + area - 2 * (int64_t)g.offset * area) / (2 * (int64_t)g.cell * area);
        col = col < 0 ? 0 : col > 2 ? 2 : col;
        row = row < 0 ? 0 : row > 2 ? 2 : row;
        f->obj.cell = (int)(row * 3 + col);
    }
    qsort(found, (size_t)nfound, sizeof(OracleFind), oracle_find_cmp);
    memset(s, 0, sizeof *s);
    int taken = 0; // bit per cell
    for (int k = 0; k < nfound && s->n < SHAPES_MAX_OBJECTS; k++) {
        if (taken >> found[k].obj.cell & 1) continue;
        taken |= 1 << found[k].obj.cell;
        s->obj[s->n++] = found[k].obj;
    }
    for (int k = 1; k < s->n; k++) {
        for (int j = k; j > 0 && s->obj[j - 1].cell > s->obj[j].cell; j--) {
            ShapeObject t = s->obj[j]; s->obj[j] = s->obj[j - 1]; s->obj[j - 1] = t;
        }
    }
    free(color); free(label); free(stack); free(found);
    return s->n >= 1 && s->n == nfound;
}

// ----------------------------------------------------------------------------
// the vocabulary and the dataset export

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
    FILE* fp = fopenCheck(path, "wb");
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
    fcloseCheck(fp, path);
    free(img); free(px); free(scenes);
}

static inline void shapes_dataset_free(ShapesDataset* d) {
    free(d->images); free(d->scenes); free(d->captions);
    d->images = NULL; d->scenes = NULL; d->captions = NULL;
}

// reads and validates a dataset file: header, exact size, every scene valid, every caption
// the scene's caption, every pixel background or a palette colour
static inline void shapes_dataset_load(ShapesDataset* d, const char* path) {
    FILE* fp = fopenCheck(path, "rb");
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
