/*
Scoring in the shapes world (doc/data.md "Oracle"): how a guessed scene compares with the true
one, attribute by attribute, and the oracle, a classical parser that reads a scene back from
an image with no learning.
*/
#ifndef VLVC_SHAPES_ORACLE_H
#define VLVC_SHAPES_ORACLE_H

#include "shapes.h"

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
// the oracle: reads a scene back from an image

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

#endif
