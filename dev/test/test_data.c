/*
Checks of the shapes world, its scorers and the tokenizer (vlvc/shapes.h, vlvc/tokenizer.h):
geometry, determinism, splits, the caption grammar and its parser, the oracle on clean, noisy
and garbage images, the vocabulary and dataset files (broken ones included). One line per
check, "N passed, N failed" last, exit status 1 on any failure.
    gcc -O2 -Wall -Wextra -std=gnu11 -o /tmp/test_data dev/test/test_data.c -lm && /tmp/test_data
*/
#include <unistd.h>
#include <sys/wait.h>
// config.h and debug_state.h define plain static functions for test_vlv.c; this program does
// not call them all (shapes.h and tokenizer.h use static inline and need no such pragma)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "../../vlvc/config.h"
#include "checks.h"
#pragma GCC diagnostic pop
#include "../../vlvc/shapes.h"
#include "../../vlvc/shapes_oracle.h"
#include "../../vlvc/shapes_export.h"

// ----------------------------------------------------------------------------
// helpers

static uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
    const uint8_t* p = (const uint8_t*)data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001B3ull; }
    return h;
}

static const char* tmp_path(const char* name) { // per process, so that parallel runs do not collide
    static char buf[8][256];
    static int next = 0;
    char* p = buf[next++ % 8];
    snprintf(p, 256, "/tmp/vlv_test_data_%d_%s", (int)getpid(), name);
    return p;
}

// copies src to dst, keeping its first `keep` bytes (-1: all), overwriting n bytes at offset
// `at` with `bytes` (at < 0: none), then appending `extra` zero bytes
static void copy_file(const char* src, const char* dst, long keep, long at, const void* bytes, size_t n, int extra) {
    FILE* fp = fopenCheck(src, "rb");
    long size = file_size(fp, src);
    char* buf = (char*)mallocCheck((size_t)size + n + 1);
    freadCheck(buf, 1, (size_t)size, fp, src);
    fclose(fp);
    if (at >= 0) memcpy(buf + at, bytes, n);
    fp = fopenCheck(dst, "wb");
    fwriteCheck(buf, 1, (size_t)(keep < 0 ? size : keep), fp, dst);
    for (int i = 0; i < extra; i++) fputc(0, fp);
    fcloseCheck(fp, dst);
    free(buf);
}

static void write_text(const char* path, const char* text) {
    FILE* fp = fopenCheck(path, "wb");
    fwriteCheck(text, 1, strlen(text), fp, path);
    fcloseCheck(fp, path);
}

static void load_vocab_child(const char* path, const char* unused) { (void)unused; Vocab v; vocab_load(&v, path); }
static void load_dataset_child(const char* path, const char* unused) { (void)unused; ShapesDataset d; shapes_dataset_load(&d, path); }
static void seed_past_end_child(const char* unused, const char* unused2) { (void)unused; (void)unused2; shapes_seed(SPLIT_TEST, 1ull << SHAPES_INDEX_BITS); }
static void seed_bad_split_child(const char* unused, const char* unused2) { (void)unused; (void)unused2; shapes_seed(NUM_SPLITS, 0); }
static void build_special_child(const char* text, const char* unused) { (void)unused; Vocab v; const char* t[1] = {text}; vocab_build(&v, t, 1); }
static void render_bad_size_child(const char* unused, const char* unused2) {
    (void)unused; (void)unused2;
    Scene s = {1, {{0, 0, 0, 0}}};
    float img[20 * 20 * 3];
    shapes_render(img, &s, 20, 0);
}

// every scene with one object, in a fixed order
static Scene single_scene(int i) {
    Scene s;
    memset(&s, 0, sizeof s);
    s.n = 1;
    s.obj[0].shape = i % NUM_SHAPES; i /= NUM_SHAPES;
    s.obj[0].color = i % NUM_COLORS; i /= NUM_COLORS;
    s.obj[0].size = i % NUM_SIZES; i /= NUM_SIZES;
    s.obj[0].cell = i;
    return s;
}
#define NUM_SINGLE (NUM_SHAPES * NUM_COLORS * NUM_SIZES * NUM_CELLS)

// ----------------------------------------------------------------------------
// the world

// every object stays inside its cell, off the cell's last row and column (so neighbours never
// touch), fills a box of its size edge to edge, in its exact colour
static void check_geometry(void) {
    int sizes[] = {24, 32, 48, 64, 100};
    for (int si = 0; si < (int)(sizeof sizes / sizeof sizes[0]); si++) {
        int S = sizes[si];
        ShapesGeometry g = shapes_geometry(S);
        float* img = (float*)mallocCheck((size_t)S * S * 3 * sizeof(float));
        int bad = 0, offsets_seen[NUM_SIZES][64] = {{0}};
        for (int i = 0; i < NUM_SINGLE; i++) {
            Scene s = single_scene(i);
            const ShapeObject* o = &s.obj[0];
            for (uint64_t j = 0; j < 16; j++) {
                shapes_render(img, &s, S, shapes_mix(j + 1000 * (uint64_t)i));
                int cx0 = g.offset + (o->cell % 3) * g.cell, cy0 = g.offset + (o->cell / 3) * g.cell;
                int x0 = S, y0 = S, x1 = -1, y1 = -1;
                for (int y = 0; y < S; y++) {
                    for (int x = 0; x < S; x++) {
                        const float* p = img + ((size_t)y * S + x) * 3;
                        if (p[0] == -1.0f && p[1] == -1.0f && p[2] == -1.0f) continue;
                        bad += memcmp(p, shapes_palette_float[o->color], 3 * sizeof(float)) != 0;
                        if (x < x0) x0 = x;
                        if (x > x1) x1 = x;
                        if (y < y0) y0 = y;
                        if (y > y1) y1 = y;
                    }
                }
                int side = g.px[o->size];
                bad += x1 - x0 + 1 != side || y1 - y0 + 1 != side;
                bad += x0 < cx0 || y0 < cy0 || x1 > cx0 + g.cell - 2 || y1 > cy0 + g.cell - 2;
                if (x0 - cx0 >= 0 && x0 - cx0 < 64) offsets_seen[o->size][x0 - cx0] = 1;
            }
        }
        char name[64], moves[2][32];
        for (int z = 0; z < NUM_SIZES; z++) {
            int lo = -1, hi = -1;
            for (int k = 0; k < 64; k++) if (offsets_seen[z][k]) { if (lo < 0) lo = k; hi = k; }
            snprintf(moves[z], sizeof moves[z], "%d..%d", lo, hi);
        }
        snprintf(name, sizeof name, "geometry %dx%d (576 scenes x 16 jitters)", S, S);
        report(name, bad == 0, "cell %d px, large %d, small %d (%.0f%%), offset in cell: large %s, small %s; %d bad",
               g.cell, g.px[SIZE_LARGE], g.px[SIZE_SMALL], 100.0 * g.px[SIZE_SMALL] / g.px[SIZE_LARGE], moves[SIZE_LARGE], moves[SIZE_SMALL], bad);
        free(img);
    }
    expect_exit_1("render rejects a 20 px canvas", render_bad_size_child, NULL, NULL, "20", "canvas");
}

// the same seed gives the same bits: a hash (FNV-1a over the float32 images and the scenes, as
// laid out in memory on a little-endian machine) against values recorded with gcc -O0 ... -Ofast
// -march=native, clang and ASan, which all agree
static void check_determinism(void) {
    struct { int img_size, max_objects; uint64_t world_seed, want; } cases[] = {
        {32, 1, 0, 0x618657f5ca10c535ull},
        {32, 3, 1234, 0x4f2c797a8b2d8d92ull},
        {48, 2, 7, 0xec2b6ea93a3e44beull},
    };
    for (int c = 0; c < 3; c++) {
        int S = cases[c].img_size;
        float* img = (float*)mallocCheck((size_t)S * S * 3 * sizeof(float));
        uint64_t h = 0xCBF29CE484222325ull;
        for (int split = 0; split < NUM_SPLITS; split++) {
            for (uint64_t i = 0; i < 250; i++) {
                Scene s;
                shapes_sample(&s, img, S, split, i, cases[c].max_objects, cases[c].world_seed);
                h = fnv1a(h, img, (size_t)S * S * 3 * sizeof(float));
                h = fnv1a(h, &s, sizeof s);
            }
        }
        char name[80];
        snprintf(name, sizeof name, "determinism %dx%d max %d seed %llu", S, S, cases[c].max_objects, (unsigned long long)cases[c].world_seed);
        report(name, h == cases[c].want, "hash of 4 x 250 items %016llx (recorded %016llx)", (unsigned long long)h, (unsigned long long)cases[c].want);
        free(img);
    }
}

static int cmp_u64(const void* a, const void* b) {
    uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
    return x < y ? -1 : x > y;
}

// the splits own disjoint seed ranges, and distinct items get distinct random streams
static void check_splits(void) {
    int disjoint = 1;
    for (int a = 0; a < NUM_SPLITS; a++) {
        for (int b = a + 1; b < NUM_SPLITS; b++) {
            uint64_t a_last = shapes_seed(a, (1ull << SHAPES_INDEX_BITS) - 1), b_first = shapes_seed(b, 0);
            disjoint &= a_last < b_first;
        }
    }
    report("splits: disjoint seed ranges", disjoint, "split k owns seeds [k * 2^%d, (k + 1) * 2^%d)", SHAPES_INDEX_BITS, SHAPES_INDEX_BITS);
    int per = 50000, n = NUM_SPLITS * per, dup = 0;
    uint64_t* st = (uint64_t*)mallocCheck((size_t)n * sizeof(uint64_t));
    for (int split = 0; split < NUM_SPLITS; split++) {
        for (int i = 0; i < per; i++) st[split * per + i] = shapes_item_state(split, (uint64_t)i, 99);
    }
    qsort(st, (size_t)n, sizeof(uint64_t), cmp_u64);
    for (int i = 1; i < n; i++) dup += st[i] == st[i - 1];
    report("splits: distinct item streams", dup == 0, "%d items of 4 splits, %d repeated states", n, dup);
    free(st);
    Scene a, b;
    shapes_scene(&a, SPLIT_TEST, 5, 3, 1);
    shapes_scene(&b, SPLIT_TEST, 5, 3, 2);
    int differ = 0;
    for (int i = 0; i < 100; i++) {
        shapes_scene(&a, SPLIT_TEST, (uint64_t)i, 3, 1);
        shapes_scene(&b, SPLIT_TEST, (uint64_t)i, 3, 2);
        differ += !scene_equal(&a, &b);
    }
    report("splits: the world seed changes the world", differ > 80, "%d of 100 scenes differ between world seeds 1 and 2", differ);
    expect_exit_1("splits: an index past 2^40 is rejected", seed_past_end_child, NULL, NULL, "past the end", "test");
    expect_exit_1("splits: an unknown split is rejected", seed_bad_split_child, NULL, NULL, "unknown split", NULL);
}

// the larger of worst and the largest |count / expected - 1| of k values drawn total times
static double deviation(const int* counts, int k, int total, double worst) {
    for (int i = 0; i < k; i++) {
        double d = fabs(counts[i] * (double)k / total - 1.0);
        if (d > worst) worst = d;
    }
    return worst;
}

// every count, attribute and cell occurs about equally often
static void check_scene_statistics(void) {
    int N = 90000, invalid = 0;
    int count[SHAPES_MAX_OBJECTS + 1] = {0}, shape[NUM_SHAPES] = {0}, color[NUM_COLORS] = {0}, size[NUM_SIZES] = {0}, cell[NUM_CELLS] = {0};
    int objects = 0;
    for (int i = 0; i < N; i++) {
        Scene s;
        shapes_scene(&s, SPLIT_T2I, (uint64_t)i, 3, 0);
        invalid += !scene_valid(&s, 3);
        count[s.n]++;
        for (int k = 0; k < s.n; k++) {
            shape[s.obj[k].shape]++; color[s.obj[k].color]++; size[s.obj[k].size]++; cell[s.obj[k].cell]++;
            objects++;
        }
    }
    double worst = 0.0; // the largest relative deviation from uniform
    worst = deviation(count + 1, 3, N, worst);
    worst = deviation(shape, NUM_SHAPES, objects, worst);
    worst = deviation(color, NUM_COLORS, objects, worst);
    worst = deviation(size, NUM_SIZES, objects, worst);
    worst = deviation(cell, NUM_CELLS, objects, worst);
    report("scenes: valid and uniform (90,000, max 3)", invalid == 0 && count[0] == 0 && worst < 0.03,
           "%d invalid; n = 1/2/3: %d/%d/%d; worst deviation from uniform %.1f%%", invalid, count[1], count[2], count[3], 100 * worst);
    int not_one = 0;
    for (int i = 0; i < 1000; i++) { Scene s; shapes_scene(&s, SPLIT_TEST, (uint64_t)i, 1, 0); not_one += s.n != 1; }
    report("scenes: the default world has one object", not_one == 0, "%d of 1000 scenes with n != 1", not_one);
}

// ----------------------------------------------------------------------------
// captions

static int cmp_str(const void* a, const void* b) { return strcmp((const char*)a, (const char*)b); }

static void check_captions_single(void) {
    static char caps[NUM_SINGLE][SHAPES_CAPTION_MAX];
    int bad = 0;
    for (int i = 0; i < NUM_SINGLE; i++) {
        Scene s = single_scene(i), r;
        scene_caption(caps[i], SHAPES_CAPTION_MAX, &s);
        bad += !caption_parse(&r, caps[i]) || !scene_equal(&s, &r);
    }
    qsort(caps, NUM_SINGLE, SHAPES_CAPTION_MAX, cmp_str);
    int dup = 0;
    for (int i = 1; i < NUM_SINGLE; i++) dup += strcmp(caps[i], caps[i - 1]) == 0;
    Scene s = single_scene(0);
    char one[SHAPES_CAPTION_MAX];
    scene_caption(one, sizeof one, &s);
    report("captions: all 576 one-object scenes round-trip", bad == 0 && dup == 0, "%d fail, %d repeated captions; e.g. '%s'", bad, dup, one);
}

static void check_captions_multi(void) {
    int N = 20000, bad = 0, counts[4] = {0};
    size_t longest = 0;
    char cap[SHAPES_CAPTION_MAX], ex[SHAPES_CAPTION_MAX] = "";
    for (int i = 0; i < N; i++) {
        Scene s, r;
        shapes_scene(&s, SPLIT_TEST, (uint64_t)i, 3, 5);
        scene_caption(cap, sizeof cap, &s);
        bad += !caption_parse(&r, cap) || !scene_equal(&s, &r);
        counts[s.n]++;
        if (s.n == 3 && ex[0] == '\0') memcpy(ex, cap, sizeof cap);
        if (strlen(cap) > longest) longest = strlen(cap);
    }
    report("captions: 20,000 scenes of 1-3 objects round-trip", bad == 0, "%d fail (n = 1/2/3: %d/%d/%d); e.g. '%s'", bad, counts[1], counts[2], counts[3], ex);
    // the longest caption there is: 3 objects with the longest words, in cells 6, 7, 8
    Scene worst = {3, {{SHAPE_TRIANGLE, COLOR_MAGENTA, SIZE_SMALL, 6}, {SHAPE_TRIANGLE, COLOR_MAGENTA, SIZE_SMALL, 7}, {SHAPE_TRIANGLE, COLOR_MAGENTA, SIZE_SMALL, 8}}};
    scene_caption(cap, sizeof cap, &worst);
    report("captions: the longest fits SHAPES_CAPTION_MAX", strlen(cap) < SHAPES_CAPTION_MAX && longest <= strlen(cap),
           "longest possible %zu bytes, longest seen %zu, room %d", strlen(cap), longest, SHAPES_CAPTION_MAX - 1);
}

// an independent reading of the grammar: the text (whitespace normalised) is up to 3 of the 576
// one-object captions joined by " and ", with increasing cells
typedef struct { char text[SHAPES_CAPTION_MAX]; int index; } SingleCaption; // index: single_scene()'s
static SingleCaption single_captions[NUM_SINGLE]; // sorted by text

static int cmp_single(const void* a, const void* b) { // also (key string, SingleCaption) for bsearch
    return strcmp((const char*)a, ((const SingleCaption*)b)->text);
}

static void single_captions_init(void) {
    for (int i = 0; i < NUM_SINGLE; i++) {
        Scene s = single_scene(i);
        scene_caption(single_captions[i].text, SHAPES_CAPTION_MAX, &s);
        single_captions[i].index = i;
    }
    qsort(single_captions, NUM_SINGLE, sizeof(SingleCaption), cmp_single); // text is the first member
}

static int grammar_reference(const char* norm, Scene* s) {
    memset(s, 0, sizeof *s);
    const char* p = norm;
    for (;;) {
        const char* e = strstr(p, " and ");
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (s->n == SHAPES_MAX_OBJECTS || len >= SHAPES_CAPTION_MAX) return 0;
        char piece[SHAPES_CAPTION_MAX];
        memcpy(piece, p, len);
        piece[len] = '\0';
        const SingleCaption* hit = (const SingleCaption*)bsearch(piece, single_captions, NUM_SINGLE, sizeof(SingleCaption), cmp_single);
        if (hit == NULL) return 0;
        s->obj[s->n] = single_scene(hit->index).obj[0];
        if (s->n > 0 && s->obj[s->n].cell <= s->obj[s->n - 1].cell) return 0;
        s->n++;
        if (e == NULL) return 1;
        p = e + 5;
    }
}

// caption_parse accepts exactly what grammar_reference accepts, with the same scene
static int parse_consistent(const char* text, int* accepted) {
    Scene s, ref;
    char norm[8192] = "";
    size_t n = 0;
    const char *p = text, *w;
    size_t len;
    while ((len = vocab_next_word(&p, &w)) > 0 && n + len + 2 < sizeof norm) {
        if (n > 0) norm[n++] = ' ';
        memcpy(norm + n, w, len);
        n += len;
        norm[n] = '\0';
    }
    int fits = len == 0;
    int ok = caption_parse(&s, text);
    *accepted = ok;
    if (!fits) return !ok && s.n == 0; // far longer than any caption
    int want = grammar_reference(norm, &ref);
    return ok == want && (ok ? scene_equal(&s, &ref) : s.n == 0);
}

static void check_caption_garbage(void) {
    const char* rejects[] = {
        "", " ", "a", "a large", "a large red", "a large red circle", "a large red circle at the",
        "a large red circle at the top left and", "and a large red circle at the top left",
        "a large red circle at the top left and and a small blue square in the center",
        "a large red circle in the center and a small blue square at the top left",       // order
        "a large red circle in the center and a small blue square in the center",         // same cell
        "a large red circle at the top left and a small red circle at the top and a large red circle at the top right and a small red circle on the left",
        "A large red circle at the top left", "a large red circle at the top left.", "a large red circle at the top-left",
        "the large red circle at the top left", "a red large circle at the top left", "a large red circle at top left",
        "a large red circle in the middle", "a large red circle at the top left left", "a large red circle at the top top",
        "a large red circle at the", "a large purple circle at the top left", "a large red circles at the top left",
        "a large red circle at the left", "a large red circle on the top", "<unk>", "a large red <unk> at the top left",
        "an large red circle at the top left", "aa large red circle at the top left", "a large red circle at the top leftt",
    };
    int bad = 0, nrej = (int)(sizeof rejects / sizeof rejects[0]);
    for (int i = 0; i < nrej; i++) {
        Scene s;
        if (caption_parse(&s, rejects[i]) || s.n != 0) { bad++; printf("     accepted: '%s'\n", rejects[i]); }
    }
    report("captions: ungrammatical texts rejected", bad == 0, "%d of %d accepted", bad, nrej);
    Scene s;
    int ok = caption_parse(&s, "  a large red circle\tat the top\n left  and a small cyan diamond in   the center \r\n");
    report("captions: any whitespace between words", ok && s.n == 2 && s.obj[0].cell == 0 && s.obj[1].shape == SHAPE_DIAMOND && s.obj[1].cell == 4, "");
    // random word salads from the grammar's words, random bytes, a long text
    Vocab v;
    shapes_vocab(&v);
    single_captions_init();
    uint64_t st = 77;
    int inconsistent = 0, accepted = 0, acc, N = 200000;
    char text[4096];
    for (int i = 0; i < N; i++) {
        size_t n = 0;
        if (i % 2 == 0) { // a valid caption with one word changed, dropped or inserted
            Scene sc;
            shapes_scene(&sc, SPLIT_T2I, (uint64_t)i, 3, 3);
            char cap[SHAPES_CAPTION_MAX], words[40][16];
            scene_caption(cap, sizeof cap, &sc);
            int nw = 0;
            const char *p = cap, *w;
            size_t len;
            while ((len = vocab_next_word(&p, &w)) > 0) { memcpy(words[nw], w, len); words[nw++][len] = '\0'; }
            int at = shapes_rng_int(&st, nw), op = shapes_rng_int(&st, 3);
            const char* other = v.words[TOKEN_FIRST_WORD + shapes_rng_int(&st, v.size - TOKEN_FIRST_WORD)];
            for (int k = 0; k < nw; k++) {
                if (k == at && op == 2) n += (size_t)snprintf(text + n, sizeof text - n, "%s ", other);
                if (k == at && op == 1) continue;
                n += (size_t)snprintf(text + n, sizeof text - n, "%s ", k == at && op == 0 ? other : words[k]);
            }
        } else if (i % 4 == 1) { // words of the grammar in random order
            int nw = 1 + shapes_rng_int(&st, 9) + (shapes_rng_int(&st, 4) == 0 ? shapes_rng_int(&st, 30) : 0);
            for (int k = 0; k < nw; k++) {
                n += (size_t)snprintf(text + n, sizeof text - n, "%s ", v.words[TOKEN_FIRST_WORD + shapes_rng_int(&st, v.size - TOKEN_FIRST_WORD)]);
            }
        } else { // random bytes 1..255
            int nb = shapes_rng_int(&st, 9) == 0 ? 3000 : 1 + shapes_rng_int(&st, 80);
            for (int k = 0; k < nb; k++) text[n++] = (char)(1 + shapes_rng_int(&st, 255));
        }
        text[n < sizeof text ? n : sizeof text - 1] = '\0';
        inconsistent += !parse_consistent(text, &acc);
        accepted += acc;
    }
    report("captions: 200,000 mutated, shuffled and random texts", inconsistent == 0,
           "%d disagree with an independent reading of the grammar; %d are captions", inconsistent, accepted);
    char* huge = (char*)mallocCheck(200001);
    for (int i = 0; i < 200000; i++) huge[i] = i % 2 ? ' ' : 'a';
    huge[200000] = '\0';
    int rej_huge = !caption_parse(&s, huge);
    memset(huge, 'x', 200000);
    rej_huge &= !caption_parse(&s, huge);
    report("captions: 200 KB texts rejected", rej_huge, "");
    free(huge);
    vocab_free(&v);
}

static void check_scene_compare(void) {
    Scene t = {1, {{SHAPE_CIRCLE, COLOR_RED, SIZE_LARGE, 4}}};
    Scene g = t;
    int exact, a[NUM_ATTRS], ok = 1;
    scene_compare(&t, &g, &exact, a);
    ok &= exact && a[0] == 1 && a[1] == 1 && a[2] == 1 && a[3] == 1;
    g.obj[0].color = COLOR_BLUE;
    g.obj[0].cell = 0;
    scene_compare(&t, &g, &exact, a);
    ok &= !exact && a[ATTR_SHAPE] == 1 && a[ATTR_COLOR] == 0 && a[ATTR_SIZE] == 1 && a[ATTR_CELL] == 0;
    Scene empty = {0, {{0, 0, 0, 0}}};
    scene_compare(&t, &empty, &exact, a);
    ok &= !exact && a[0] + a[1] + a[2] + a[3] == 0;
    Scene broken = {7, {{0, 0, 0, 0}}};
    scene_compare(&t, &broken, &exact, a);
    ok &= !exact && a[0] + a[1] + a[2] + a[3] == 0;
    // two objects: the guess swapped the colours and moved one; pairing keeps shapes together
    Scene t2 = {2, {{SHAPE_SQUARE, COLOR_RED, SIZE_SMALL, 0}, {SHAPE_TRIANGLE, COLOR_GREEN, SIZE_LARGE, 8}}};
    Scene g2 = {2, {{SHAPE_TRIANGLE, COLOR_RED, SIZE_LARGE, 5}, {SHAPE_SQUARE, COLOR_GREEN, SIZE_SMALL, 6}}};
    scene_compare(&t2, &g2, &exact, a);
    ok &= !exact && a[ATTR_SHAPE] == 2 && a[ATTR_COLOR] == 0 && a[ATTR_SIZE] == 2 && a[ATTR_CELL] == 0;
    Scene g3 = {3, {t2.obj[0], {SHAPE_CIRCLE, COLOR_WHITE, SIZE_SMALL, 4}, t2.obj[1]}}; // one extra object
    scene_compare(&t2, &g3, &exact, a);
    ok &= !exact && a[0] == 2 && a[1] == 2 && a[2] == 2 && a[3] == 2;
    scene_compare(&g3, &t2, &exact, a); // one missing
    ok &= !exact && a[0] == 2 && a[1] == 2 && a[2] == 2 && a[3] == 2;
    report("scene_compare: exact and per-attribute counts", ok, "");
}

// ----------------------------------------------------------------------------
// the oracle

typedef enum { CLEAN, NOISE, SOFT_BLUR, SOFT_BLUR_NOISE, BOX_BLUR } Damage;
static const char* damage_names[] = {"clean", "noise +-0.3", "[1 2 1] blur", "[1 2 1] blur + noise +-0.2", "3x3 box blur"};

// blurs with the separable kernel w (3 taps, edges repeated), then adds uniform noise +-amp
static void damage(float* img, int S, Damage d, uint64_t* st) {
    static const float soft[3] = {0.25f, 0.5f, 0.25f}, box[3] = {1.0f / 3, 1.0f / 3, 1.0f / 3};
    const float* w = d == SOFT_BLUR || d == SOFT_BLUR_NOISE ? soft : d == BOX_BLUR ? box : NULL;
    size_t n = (size_t)S * S * 3;
    float* tmp = (float*)mallocCheck(n * sizeof(float));
    for (int pass = 0; w != NULL && pass < 2; pass++) { // x, then y
        memcpy(tmp, img, n * sizeof(float));
        for (int y = 0; y < S; y++) for (int x = 0; x < S; x++) for (int c = 0; c < 3; c++) {
            float sum = 0.0f;
            for (int k = -1; k <= 1; k++) {
                int xx = pass == 0 ? x + k : x, yy = pass == 1 ? y + k : y;
                xx = xx < 0 ? 0 : xx >= S ? S - 1 : xx;
                yy = yy < 0 ? 0 : yy >= S ? S - 1 : yy;
                sum += w[k + 1] * tmp[((size_t)yy * S + xx) * 3 + c];
            }
            img[((size_t)y * S + x) * 3 + c] = sum;
        }
    }
    free(tmp);
    float amp = d == NOISE ? 0.3f : d == SOFT_BLUR_NOISE ? 0.2f : 0.0f;
    for (size_t i = 0; amp > 0.0f && i < n; i++) img[i] += amp * ((float)(shapes_rng(st) >> 40) / (float)(1 << 23) - 1.0f);
}

// reads N items of the test split back; returns the exact rate
static double oracle_rate(int S, int max_objects, int N, Damage d, double need) {
    float* img = (float*)mallocCheck((size_t)S * S * 3 * sizeof(float));
    int exact_n = 0, attr[NUM_ATTRS] = {0}, objects = 0, whole = 0;
    uint64_t st = 1;
    for (int i = 0; i < N; i++) {
        Scene s, r;
        shapes_sample(&s, img, S, SPLIT_TEST, (uint64_t)i, max_objects, 2024);
        damage(img, S, d, &st);
        whole += oracle_parse(&r, img, S);
        int exact, a[NUM_ATTRS];
        scene_compare(&s, &r, &exact, a);
        exact_n += exact;
        for (int k = 0; k < NUM_ATTRS; k++) attr[k] += a[k];
        objects += s.n;
    }
    double rate = (double)exact_n / N;
    char name[96];
    snprintf(name, sizeof name, "oracle %dx%d max %d, %s (%d)", S, S, max_objects, damage_names[d], N);
    report(name, rate >= need, "exact %.2f%% (need %.1f%%); shape %.2f%% colour %.2f%% size %.2f%% cell %.2f%%; whole-image reads %d",
           100 * rate, 100 * need, 100.0 * attr[0] / objects, 100.0 * attr[1] / objects, 100.0 * attr[2] / objects, 100.0 * attr[3] / objects, whole);
    free(img);
    return rate;
}

static void check_oracle_clean(void) {
    oracle_rate(32, 1, 20000, CLEAN, 0.995);
    oracle_rate(32, 3, 20000, CLEAN, 0.995);
    oracle_rate(24, 3, 5000, CLEAN, 0.995);
    oracle_rate(48, 3, 5000, CLEAN, 0.995);
    oracle_rate(64, 1, 2000, CLEAN, 0.995);
    // every one-object scene at every jitter the world can draw
    float img[32 * 32 * 3];
    int bad = 0;
    for (int i = 0; i < NUM_SINGLE; i++) {
        Scene s = single_scene(i), r;
        for (uint64_t j = 0; j < 64; j++) {
            shapes_render(img, &s, 32, shapes_mix(j));
            bad += !oracle_parse(&r, img, 32) || !scene_equal(&s, &r);
        }
    }
    report("oracle 32x32: 576 one-object scenes x 64 jitters", bad == 0, "%d misread", bad);
}

static void check_oracle_noisy(void) {
    oracle_rate(32, 3, 5000, NOISE, 0.995);
    oracle_rate(32, 3, 5000, SOFT_BLUR, 0.995);
    oracle_rate(32, 3, 5000, SOFT_BLUR_NOISE, 0.99);
    oracle_rate(32, 3, 5000, BOX_BLUR, 0.70); // a small square blurs into a small circle: the masks become equal
}

// the oracle survives any input and always returns a well-formed (possibly empty) reading
static void check_oracle_garbage(void) {
    int S = 32, bad = 0, N = 3000;
    float img[32 * 32 * 3];
    uint64_t st = 5;
    uint32_t nan_bits = 0x7fc00000u, inf_bits = 0x7f800000u, ninf_bits = 0xff800000u;
    float nan, inf, ninf;
    memcpy(&nan, &nan_bits, 4); memcpy(&inf, &inf_bits, 4); memcpy(&ninf, &ninf_bits, 4);
    for (int i = 0; i < N; i++) {
        int kind = i % 6;
        for (int k = 0; k < S * S * 3; k++) {
            float u = (float)(shapes_rng(&st) >> 40) / (float)(1 << 24); // [0, 1)
            switch (kind) {
            case 0: img[k] = 3.0f * u - 1.5f; break;                                   // uniform noise
            case 1: img[k] = u < 0.05f ? nan : u < 0.1f ? inf : u < 0.15f ? ninf : 2 * u - 1; break;
            case 2: img[k] = nan; break;
            case 3: img[k] = 1.0f; break;                                              // one white canvas
            case 4: img[k] = ((k / 3 + k / (3 * S)) & 1) ? 1.0f : -1.0f; break;        // checkerboard
            default: img[k] = shapes_palette_float[(k / 3 / 7) % NUM_COLORS][k % 3]; break; // colour stripes
            }
        }
        Scene r;
        r.n = -5;
        int whole = oracle_parse(&r, img, S);
        int valid = r.n == 0 ? !whole : scene_valid(&r, SHAPES_MAX_OBJECTS);
        if (kind == 2 || kind == 4) valid &= r.n == 0; // NaN is background; a checkerboard has no object
        bad += !valid;
    }
    report("oracle: noise, NaN, inf, white, checkerboard, stripes", bad == 0, "%d of %d readings malformed", bad, N);
}

// ----------------------------------------------------------------------------
// the tokenizer

static void check_tokenizer(void) {
    Vocab v;
    shapes_vocab(&v);
    int sorted = v.size == 29;
    for (int i = 0; i < TOKEN_FIRST_WORD; i++) sorted &= strcmp(v.words[i], vocab_specials[i]) == 0;
    for (int i = TOKEN_FIRST_WORD + 1; i < v.size; i++) sorted &= strcmp(v.words[i - 1], v.words[i]) < 0;
    char list[512] = "";
    for (int i = TOKEN_FIRST_WORD; i < v.size; i++) { strcat(list, v.words[i]); strcat(list, " "); }
    report("tokenizer: shapes vocabulary, specials then sorted words", sorted, "%d ids: %s", v.size, list);
    // every one-object caption and 20,000 longer ones: encode, decode, the same text, no UNK
    int bad = 0, most[4] = {0};
    int tokens[64];
    char cap[SHAPES_CAPTION_MAX], back[SHAPES_CAPTION_MAX];
    for (int i = 0; i < NUM_SINGLE + 20000; i++) {
        Scene s = i < NUM_SINGLE ? single_scene(i) : (Scene){0, {{0, 0, 0, 0}}};
        if (i >= NUM_SINGLE) shapes_scene(&s, SPLIT_CAPTIONED, (uint64_t)i, 3, 11);
        scene_caption(cap, sizeof cap, &s);
        int len = shapes_max_tokens(s.n);
        int t = vocab_encode(&v, cap, tokens, len);
        if (t > most[s.n]) most[s.n] = t;
        for (int k = 0; k < len; k++) bad += tokens[k] == TOKEN_UNK || tokens[k] < 0 || tokens[k] >= v.size;
        vocab_decode(&v, tokens, len, back, sizeof back);
        bad += t < 2 || tokens[0] != TOKEN_BOS || tokens[t - 1] != TOKEN_EOS || strcmp(cap, back) != 0;
    }
    report("tokenizer: captions round-trip within shapes_max_tokens", bad == 0 && most[1] == shapes_max_tokens(1) && most[3] == shapes_max_tokens(3),
           "%d bad; most tokens (BOS, EOS included) for 1/2/3 objects: %d/%d/%d", bad, most[1], most[2], most[3]);
    // the edges
    int ok = 1;
    const char* eight = "a large red circle at the top left";
    ok &= vocab_encode(&v, eight, tokens, 10) == 10 && vocab_encode(&v, eight, tokens, 9) == 0;
    for (int k = 0; k < 9; k++) ok &= tokens[k] == TOKEN_PAD;
    report("tokenizer: too long is reported, not truncated", ok, "8 words need 10 tokens: 10 fits, 9 returns 0 (all PAD)");
    ok = vocab_encode(&v, "", tokens, 4) == 2 && tokens[0] == TOKEN_BOS && tokens[1] == TOKEN_EOS && tokens[2] == TOKEN_PAD && tokens[3] == TOKEN_PAD;
    report("tokenizer: the empty caption is [BOS, EOS, PAD...]", ok, "");
    ok = vocab_encode(&v, "a large purple circle", tokens, 8) == 6 && tokens[3] == TOKEN_UNK && tokens[2] != TOKEN_UNK;
    vocab_decode(&v, tokens, 8, back, sizeof back);
    ok &= strcmp(back, "a large <unk> circle") == 0;
    report("tokenizer: unknown words are UNK", ok, "'a large purple circle' -> '%s'", back);
    int a = vocab_lookup(&v, "a", 1), large = vocab_lookup(&v, "large", 5);
    int seq[] = {TOKEN_PAD, TOKEN_BOS, a, TOKEN_PAD, large, TOKEN_BOS, TOKEN_EOS, a, a};
    vocab_decode(&v, seq, 9, back, sizeof back);
    ok = strcmp(back, "a large") == 0;
    int odd[] = {a, -7, v.size, 1 << 30};
    vocab_decode(&v, odd, 4, back, sizeof back);
    ok &= strcmp(back, "a <unk> <unk> <unk>") == 0;
    char tiny[6];
    int many[] = {large, large, large};
    vocab_decode(&v, many, 3, tiny, sizeof tiny);
    ok &= strcmp(tiny, "large") == 0;
    vocab_decode(&v, many, 3, tiny, 3);
    ok &= strcmp(tiny, "la") == 0;
    report("tokenizer: decode stops at EOS, skips PAD/BOS, never overflows", ok, "");
    vocab_free(&v);
    const char* corpus[] = {"b a", "  a\tc\n", "b", ""};
    vocab_build(&v, corpus, 4);
    ok = v.size == 7 && strcmp(v.words[4], "a") == 0 && strcmp(v.words[5], "b") == 0 && strcmp(v.words[6], "c") == 0;
    ok &= vocab_lookup(&v, "b", 1) == 5 && vocab_lookup(&v, "bb", 2) == TOKEN_UNK && vocab_lookup(&v, "", 0) == TOKEN_UNK;
    report("tokenizer: any corpus, in byte order", ok, "");
    vocab_free(&v);
    expect_exit_1("tokenizer: a corpus with '<eos>' is rejected", build_special_child, "a <eos> b", NULL, "<eos>", "special");
}

static void check_vocab_files(void) {
    Vocab v, w;
    shapes_vocab(&v);
    const char* path = tmp_path("vocab.txt");
    const char* broken = tmp_path("vocab.broken");
    vocab_save(&v, path);
    vocab_load(&w, path);
    int same = v.size == w.size;
    for (int i = 0; same && i < v.size; i++) same = strcmp(v.words[i], w.words[i]) == 0;
    FILE* fp = fopenCheck(path, "rb");
    char first[64] = "";
    if (fgets(first, sizeof first, fp) == NULL) first[0] = '\0';
    long size = file_size(fp, path);
    fclose(fp);
    first[strcspn(first, "\n")] = '\0';
    report("vocab file: save and load", same, "%ld bytes, first line '%s'", size, first);
    expect_exit_1("vocab file: missing", load_vocab_child, "/nonexistent/vocab.txt", NULL, "could not open", "/nonexistent/vocab.txt");
    write_text(broken, "");
    expect_exit_1("vocab file: empty", load_vocab_child, broken, NULL, broken, "not a vlv.c vocabulary");
    write_text(broken, "vlv.c-checkpoint 1 5\n<pad>\n<bos>\n<eos>\n<unk>\na\n");
    expect_exit_1("vocab file: wrong magic", load_vocab_child, broken, NULL, broken, "not a vlv.c vocabulary");
    write_text(broken, "vlv.c-vocabulary 2 5\n<pad>\n<bos>\n<eos>\n<unk>\na\n");
    expect_exit_1("vocab file: unknown version", load_vocab_child, broken, NULL, broken, "version 2");
    write_text(broken, "vlv.c-vocabulary 1 five\n");
    expect_exit_1("vocab file: a bad first line", load_vocab_child, broken, NULL, broken, "corrupt");
    write_text(broken, "vlv.c-vocabulary 1 3\n<pad>\n<bos>\n<eos>\n");
    expect_exit_1("vocab file: no words", load_vocab_child, broken, NULL, broken, "word count");
    copy_file(path, broken, size - 3, -1, NULL, 0, 0);
    expect_exit_1("vocab file: truncated by 3 bytes", load_vocab_child, broken, NULL, broken, "truncated");
    copy_file(path, broken, (long)strlen(first) + 1 + 20, -1, NULL, 0, 0);
    expect_exit_1("vocab file: truncated after 3 words", load_vocab_child, broken, NULL, broken, "truncated");
    copy_file(path, broken, (long)strlen(first), -1, NULL, 0, 0);
    expect_exit_1("vocab file: only half a first line", load_vocab_child, broken, NULL, broken, "truncated");
    write_text(broken, "vlv.c-vocabulary 1 6\n<pad>\n<bos>\n<eos>\n<unk>\nb\na\n");
    expect_exit_1("vocab file: words out of order", load_vocab_child, broken, NULL, broken, "not sorted");
    write_text(broken, "vlv.c-vocabulary 1 6\n<pad>\n<bos>\n<eos>\n<unk>\na\na\n");
    expect_exit_1("vocab file: a repeated word", load_vocab_child, broken, NULL, broken, "repeat");
    write_text(broken, "vlv.c-vocabulary 1 5\n<pad>\n<bos>\n<eos>\n<unk>\na b\n");
    expect_exit_1("vocab file: a word with a space", load_vocab_child, broken, NULL, broken, "not a word");
    write_text(broken, "vlv.c-vocabulary 1 5\n<pad>\n<bos>\n<eos>\n<unk>\n\n");
    expect_exit_1("vocab file: an empty word", load_vocab_child, broken, NULL, broken, "not a word");
    write_text(broken, "vlv.c-vocabulary 1 5\n<pad>\n<eos>\n<bos>\n<unk>\na\n");
    expect_exit_1("vocab file: specials swapped", load_vocab_child, broken, NULL, broken, "special token");
    copy_file(path, broken, -1, -1, NULL, 0, 1);
    expect_exit_1("vocab file: trailing data", load_vocab_child, broken, NULL, broken, "trailing data");
    char nul[] = "vlv.c-vocabulary 1 5\n<pad>\n<bos>\n<eos>\n<unk>\na\0b\n";
    fp = fopenCheck(broken, "wb");
    fwriteCheck(nul, 1, sizeof nul - 1, fp, broken);
    fcloseCheck(fp, broken);
    expect_exit_1("vocab file: a NUL byte in a word", load_vocab_child, broken, NULL, broken, "not a word");
    remove(path);
    remove(broken);
    vocab_free(&v);
    vocab_free(&w);
}

// ----------------------------------------------------------------------------
// the dataset file

static void check_dataset(void) {
    const char* path = tmp_path("shapes.bin");
    const char* broken = tmp_path("shapes.broken");
    int n = 300, S = 32;
    uint64_t seed = 0x123456789ABCDEFull;
    shapes_export(path, SPLIT_CAPTIONED, n, S, 3, seed);
    ShapesDataset d;
    shapes_dataset_load(&d, path);
    int ok = d.split == SPLIT_CAPTIONED && d.n == n && d.img_size == S && d.max_objects == 3 && d.world_seed == seed &&
             d.caption_bytes == SHAPES_CAPTION_MAX;
    float img[32 * 32 * 3];
    int bad = 0;
    for (int i = 0; i < n; i++) {
        Scene s;
        shapes_sample(&s, img, S, SPLIT_CAPTIONED, (uint64_t)i, 3, seed);
        char cap[SHAPES_CAPTION_MAX];
        scene_caption(cap, sizeof cap, &s);
        bad += !scene_equal(&s, &d.scenes[i]) || strcmp(cap, d.captions + (size_t)i * d.caption_bytes) != 0;
        for (int k = 0; k < S * S * 3; k++) {
            uint8_t v = d.images[(size_t)i * S * S * 3 + k];
            bad += (float)(2 * v - 255) / 255.0f != img[k]; // what doc/data.md tells Python to do
        }
    }
    FILE* fp = fopenCheck(path, "rb");
    long size = file_size(fp, path);
    fclose(fp);
    report("dataset file: export and load round-trip", ok && bad == 0, "%d items, %ld bytes, %d mismatches", n, size, bad);
    shapes_dataset_free(&d);

    int val;
    expect_exit_1("dataset file: missing", load_dataset_child, "/nonexistent/shapes.bin", NULL, "could not open", "/nonexistent/shapes.bin");
    copy_file(path, broken, 100, -1, NULL, 0, 0);
    expect_exit_1("dataset file: shorter than its header", load_dataset_child, broken, NULL, broken, "truncated");
    copy_file(path, broken, size - 1, -1, NULL, 0, 0);
    expect_exit_1("dataset file: truncated by 1 byte", load_dataset_child, broken, NULL, broken, "truncated");
    copy_file(path, broken, -1, -1, NULL, 0, 4);
    expect_exit_1("dataset file: trailing data", load_dataset_child, broken, NULL, broken, "trailing data");
    val = 20261126;
    copy_file(path, broken, -1, 0, &val, 4, 0);
    expect_exit_1("dataset file: wrong magic", load_dataset_child, broken, NULL, broken, "magic");
    val = 9;
    copy_file(path, broken, -1, 4, &val, 4, 0);
    expect_exit_1("dataset file: unknown version", load_dataset_child, broken, NULL, broken, "version 9");
    val = 7;
    copy_file(path, broken, -1, 4 * 4, &val, 4, 0);
    expect_exit_1("dataset file: img_size 7", load_dataset_child, broken, NULL, broken, "bad header");
    val = n + 1;
    copy_file(path, broken, -1, 4 * 3, &val, 4, 0);
    expect_exit_1("dataset file: one item more in the header", load_dataset_child, broken, NULL, broken, "truncated");
    long scenes_at = 256 + (long)n * S * S * 3, captions_at = scenes_at + (long)n * SHAPES_SCENE_INTS * 4;
    val = NUM_SHAPES;
    copy_file(path, broken, -1, scenes_at + 4, &val, 4, 0);
    expect_exit_1("dataset file: a shape out of range", load_dataset_child, broken, NULL, broken, "invalid scene");
    val = 0;
    copy_file(path, broken, -1, scenes_at + (long)SHAPES_SCENE_INTS * 4 * 5, &val, 4, 0); // item 5 with 0 objects
    expect_exit_1("dataset file: a scene with no object", load_dataset_child, broken, NULL, broken, "invalid scene");
    Scene sc; // the first item with an unused object slot, whose fields must stay -1
    int small = -1;
    do { shapes_scene(&sc, SPLIT_CAPTIONED, (uint64_t)++small, 3, seed); } while (sc.n == SHAPES_MAX_OBJECTS);
    val = 0;
    copy_file(path, broken, -1, scenes_at + ((long)small * SHAPES_SCENE_INTS + SHAPES_SCENE_INTS - 1) * 4, &val, 4, 0);
    expect_exit_1("dataset file: a value in an unused object slot", load_dataset_child, broken, NULL, broken, "invalid scene");
    char c = 'x';
    copy_file(path, broken, -1, captions_at + SHAPES_CAPTION_MAX - 1, &c, 1, 0);
    expect_exit_1("dataset file: a caption without its NUL", load_dataset_child, broken, NULL, broken, "caption of item 0");
    copy_file(path, broken, -1, captions_at + 3 * SHAPES_CAPTION_MAX + 2, &c, 1, 0);
    expect_exit_1("dataset file: a caption that is not its scene's", load_dataset_child, broken, NULL, broken, "caption of item 3");
    uint8_t grey = 77;
    copy_file(path, broken, -1, 256 + 17, &grey, 1, 0);
    expect_exit_1("dataset file: a pixel off the palette", load_dataset_child, broken, NULL, broken, "palette");
    remove(path);
    remove(broken);
}

int main(void) {
    check_geometry();
    check_determinism();
    check_splits();
    check_scene_statistics();
    check_captions_single();
    check_captions_multi();
    check_caption_garbage();
    check_scene_compare();
    check_oracle_clean();
    check_oracle_noisy();
    check_oracle_garbage();
    check_tokenizer();
    check_vocab_files();
    check_dataset();
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
