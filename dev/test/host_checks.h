/*
Checks of host-side behaviour that test_vlv.c and test_vlv.cu share: caption dropout, the
C -> PyTorch -> C checkpoint round trip, and the readers' handling of broken files (run in
child processes, since the readers exit on failure). Include after the model implementation
(train_vlv.c or train_vlv.cu) and dev/test/checks.h.
*/
#ifndef VLVC_HOST_CHECKS_H
#define VLVC_HOST_CHECKS_H

#include <sys/wait.h>
#include <unistd.h>
#include "../../vlvc/random.h"
#include "../../vlvc/tokenizer.h"
#include "../../vlvc/clip_z.h"
#include "checks.h"

// how many of n floats differ in their bits
static inline size_t bits_differ(const float* a, const float* b, size_t n) {
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) { differ += memcmp(&a[i], &b[i], sizeof(float)) != 0; }
    return differ;
}

// caption dropout: about p of the captions become exactly the empty caption, the others
// stay untouched (10,000 captions: the binomial's standard deviation at p = 0.1 is 30)
static inline void check_caption_dropout(int N) {
    int B = 10000;
    int* tokens = (int*)mallocCheck((size_t)B * N * sizeof(int));
    int* orig = (int*)mallocCheck((size_t)B * N * sizeof(int));
    uint64_t rng = 7;
    for (size_t i = 0; i < (size_t)B * N; i++) { orig[i] = TOKEN_FIRST_WORD + (int)(random_u32(&rng) % 5); }
    float ps[3] = { 0.0f, 0.1f, 1.0f };
    for (int k = 0; k < 3; k++) {
        memcpy(tokens, orig, (size_t)B * N * sizeof(int));
        int dropped = caption_dropout(tokens, B, N, ps[k], &rng);
        int counted = 0, wrong = 0;
        for (int b = 0; b < B; b++) {
            const int* row = tokens + (size_t)b * N;
            int is_empty = row[0] == TOKEN_BOS && row[1] == TOKEN_EOS;
            for (int j = 2; j < N; j++) { is_empty &= row[j] == TOKEN_PAD; }
            counted += is_empty;
            if (!is_empty) { wrong += memcmp(row, orig + (size_t)b * N, N * sizeof(int)) != 0; }
        }
        int lo = ps[k] == 0.1f ? 900 : (int)(ps[k] * B), hi = ps[k] == 0.1f ? 1100 : (int)(ps[k] * B);
        report("caption dropout", dropped == counted && wrong == 0 && dropped >= lo && dropped <= hi,
               "p=%.1f: %d of %d captions empty (expected %d..%d), %d others changed", ps[k], dropped, B, lo, hi, wrong);
    }
    free(tokens);
    free(orig);
}

// stage 1's per-image clip at z: rows of known norms, the lower median (odd and even B, ties)
// and the bound k x median; a scaled row keeps its direction, every other row its bits
static inline void check_clip_rows(void) {
    enum { N = 4 };
    struct { int B; float norms[5], k; float median; int clipped; } cases[] = {
        { 5, { 1, 2, 3, 100, 4 }, 2.0f, 3.0f, 1 },  // one outlier: 100 -> 6
        { 4, { 4, 1, 3, 2 }, 1.0f, 2.0f, 2 },       // even B: the lower median; 4 and 3 -> 2
        { 3, { 2, 2, 2 }, 1.0f, 2.0f, 0 },          // ties: nothing above the bound
    };
    for (int c = 0; c < 3; c++) {
        int B = cases[c].B;
        float dz[5 * N], orig[5 * N], norms[5];
        for (int b = 0; b < B; b++) { // row b = norm * (0.5, -0.5, 0.5, 0.5): norm exactly
            for (int j = 0; j < N; j++) { orig[b * N + j] = dz[b * N + j] = cases[c].norms[b] * (j == 1 ? -0.5f : 0.5f); }
        }
        int clipped = clip_rows_to_median(dz, norms, B, N, cases[c].k);
        float bound = cases[c].k * cases[c].median, worst = 0.0f;
        int ok = clipped == cases[c].clipped && lower_median(cases[c].norms, B) == cases[c].median;
        for (int b = 0; b < B; b++) {
            float want = cases[c].norms[b] > bound ? bound / cases[c].norms[b] : 1.0f; // the row's scale
            for (int j = 0; j < N; j++) {
                float err = fabsf(dz[b * N + j] - want * orig[b * N + j]);
                worst = err > worst ? err : worst;
                if (want == 1.0f) { ok &= dz[b * N + j] == orig[b * N + j]; }
            }
        }
        report("clip at z", ok && worst <= 1e-6f, "B=%d k=%.0f: median %g, %d rows scaled (expected %d), worst error %.1e",
               B, cases[c].k, lower_median(cases[c].norms, B), clipped, cases[c].clipped, worst);
    }
}

// two checkpoints must hold the same config and the same bits (the C -> PyTorch -> C round trip)
static inline void run_compare(const char* a_path, const char* b_path) {
    Config ca, cb;
    size_t na, nb;
    FILE* fa = checkpoint_open(a_path, &ca, &na);
    FILE* fb = checkpoint_open(b_path, &cb, &nb);
    report("round trip keeps the config", memcmp(&ca, &cb, sizeof ca) == 0 && na == nb, "%s vs %s", a_path, b_path);
    if (na == nb) {
        float* pa = (float*)mallocCheck(na * sizeof(float));
        float* pb = (float*)mallocCheck(nb * sizeof(float));
        freadCheck(pa, sizeof(float), na, fa, a_path);
        freadCheck(pb, sizeof(float), nb, fb, b_path);
        size_t differ = bits_differ(pa, pb, na);
        report("round trip keeps every weight's bits", differ == 0, "%zu of %zu weights differ", differ, na);
        free(pa); free(pb);
    }
    fclose(fa);
    fclose(fb);
}

// bad input: every reader must reject a broken file with a message and exit status 1,
// never crash. Each case runs in a child process, since the readers exit on failure.

static inline void copy_bytes(const char* src, const char* dst, long keep, long patch_at, int patch_value) {
    FILE* in = fopenCheck(src, "rb");
    long size = file_size(in, src);
    char* buf = (char*)mallocCheck(size + 16);
    freadCheck(buf, 1, size, in, src);
    fclose(in);
    if (keep < 0) { keep = size + (-keep - 1); memset(buf + size, 0, 16); } // keep = -1 - extra: append zeros
    if (patch_at >= 0) { memcpy(buf + patch_at, &patch_value, sizeof(int)); }
    FILE* out = fopenCheck(dst, "wb");
    fwriteCheck(buf, 1, keep, out, dst);
    fcloseCheck(out, dst);
    free(buf);
}

// the readers a bad file is tried on: each must exit with status 1 and a message naming it
static void load_checkpoint_child(const char* path, const char* unused) { (void)unused; Model m; model_load(&m, path, 1); }
static void load_debug_state_child(const char* path, const char* unused) { (void)unused; DebugState ds; debug_state_load(&ds, path); }
static inline void expect_rejected(const char* what, const char* path, int is_checkpoint, const char* expect_in_message) {
    expect_exit_1(what, is_checkpoint ? load_checkpoint_child : load_debug_state_child, path, NULL, path, expect_in_message);
}

static inline void run_reader_checks(const char* ckpt, const char* state, const char* suffix) {
    char tmp[4096]; // next to the checkpoint, so that parallel runs (CPU and CUDA tests) do not collide
    snprintf(tmp, sizeof tmp, "%s.%s", ckpt, suffix);
    expect_rejected("checkpoint: missing file", "/nonexistent/vlv.bin", 1, "could not open");
    copy_bytes(ckpt, tmp, 100, -1, 0);
    expect_rejected("checkpoint: shorter than its header", tmp, 1, "truncated");
    FILE* fp = fopenCheck(ckpt, "rb");
    long size = file_size(fp, ckpt);
    fclose(fp);
    copy_bytes(ckpt, tmp, size - 4, -1, 0);
    expect_rejected("checkpoint: truncated by 4 bytes", tmp, 1, "truncated");
    copy_bytes(ckpt, tmp, -1 - 8, -1, 0);
    expect_rejected("checkpoint: trailing bytes", tmp, 1, "trailing data");
    copy_bytes(ckpt, tmp, size, 0, 12345);
    expect_rejected("checkpoint: wrong magic", tmp, 1, "magic");
    copy_bytes(ckpt, tmp, size, 4, 99);
    expect_rejected("checkpoint: unknown version", tmp, 1, "version");
    copy_bytes(ckpt, tmp, size, 4 * 3, 5); // patch = 5 does not divide img_size
    expect_rejected("checkpoint: inconsistent config", tmp, 1, "bad config");
    copy_bytes(ckpt, tmp, size, 4 * 24, 7); // num_params
    expect_rejected("checkpoint: wrong parameter count", tmp, 1, "parameters");
    copy_bytes(ckpt, tmp, size, 256 + 8, 0x7fc00000); // a NaN weight
    expect_rejected("checkpoint: NaN weight", tmp, 1, "NaN");
    fp = fopenCheck(state, "rb");
    size = file_size(fp, state);
    fclose(fp);
    copy_bytes(state, tmp, size / 2, -1, 0);
    expect_rejected("debug state: truncated", tmp, 0, "truncated");
    copy_bytes(state, tmp, size, 0, CHECKPOINT_MAGIC);
    expect_rejected("debug state: wrong magic", tmp, 0, "magic");
    remove(tmp);
}

#endif
