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

// Two runs that should train alike, up to float rounding (e.g. data parallel over 2 ranks
// against one process: the gradients summed in another order): per tensor, how far apart their
// weights are, relative to how far training moved them from the weights both started from,
// ||a - b|| / ||a - start||. A tensor that training left unchanged in a must be unchanged, bit
// for bit, in b. The worst tensor must be within tol.
static inline void run_close(const char* a_path, const char* b_path, const char* start_path, double tol) {
    Config c[3];
    size_t n[3];
    const char* paths[3] = { a_path, b_path, start_path };
    float* w[3];
    for (int k = 0; k < 3; k++) {
        FILE* fp = checkpoint_open(paths[k], &c[k], &n[k]);
        w[k] = (float*)mallocCheck(n[k] * sizeof(float));
        freadCheck(w[k], sizeof(float), n[k], fp, paths[k]);
        fclose(fp);
    }
    int same = memcmp(&c[0], &c[1], sizeof c[0]) == 0 && memcmp(&c[0], &c[2], sizeof c[0]) == 0 && n[0] == n[1] && n[0] == n[2];
    report("the three checkpoints hold one config", same, "%s, %s, from %s", a_path, b_path, start_path);
    if (same) {
        TensorInfo* tensors;
        int num_tensors;
        count_params(&c[0], &tensors, &num_tensors);
        double worst = 0.0;
        int worst_at = 0, moved = 0;
        size_t still_differ = 0;
        for (int i = 0; i < num_tensors; i++) {
            const TensorInfo* t = &tensors[i];
            double diff = 0.0, step = 0.0;
            for (size_t j = t->offset; j < t->offset + t->numel; j++) {
                double d = (double)w[0][j] - w[1][j], s = (double)w[0][j] - w[2][j];
                diff += d * d;
                step += s * s;
            }
            if (step == 0.0) { still_differ += bits_differ(w[0] + t->offset, w[1] + t->offset, t->numel); continue; }
            moved++;
            double ratio = sqrt(diff / step);
            if (ratio > worst) { worst = ratio; worst_at = i; }
        }
        report("the tensors training left alone are the same bits", still_differ == 0, "%zu weights differ in them", still_differ);
        report("the trained tensors agree", moved > 0 && worst <= tol, "%d tensors trained; worst ||a - b|| / ||a - start|| = %.2e (%s), at most %.0e",
               moved, worst, moved ? tensors[worst_at].name : "none", tol);
        free(tensors);
    }
    for (int k = 0; k < 3; k++) { free(w[k]); }
}

// bad input: every reader must reject a broken file with a message and exit status 1,
// never crash. Each case runs in a child process, since the readers exit on failure.

// A broken copy of src: its first `keep` bytes (keep = -1 - extra: all of them and `extra` zero
// bytes), the int32 at byte `at` set to `value` (at < 0: none), and with fix_crc its last 4 bytes
// the CRC32 of the bytes before them, so that the change gets past the CRC check to the checks
// behind it.
static inline void copy_bytes(const char* src, const char* dst, long keep, long at, int value, int fix_crc) {
    FILE* in = fopenCheck(src, "rb");
    long size = file_size(in, src);
    unsigned char* buf = (unsigned char*)mallocCheck(size + 16);
    freadCheck(buf, 1, size, in, src);
    fclose(in);
    if (keep < 0) { keep = size + (-keep - 1); memset(buf + size, 0, 16); } // keep = -1 - extra: append zeros
    if (at >= 0) { memcpy(buf + at, &value, sizeof(int)); }
    if (fix_crc) {
        uint32_t crc = (uint32_t)crc32(0L, buf, (uInt)(keep - CRC_BYTES));
        for (int i = 0; i < CRC_BYTES; i++) { buf[keep - CRC_BYTES + i] = (unsigned char)(crc >> 8 * i); }
    }
    FILE* out = fopenCheck(dst, "wb");
    fwriteCheck(buf, 1, keep, out, dst);
    fcloseCheck(out, dst);
    free(buf);
}

// the int32 at byte `at` of a file
static inline int int_at(const char* path, long at) {
    FILE* fp = fopenCheck(path, "rb");
    if (fseek(fp, at, SEEK_SET) != 0) fail("cannot seek in '%s'", path);
    int value;
    freadCheck(&value, sizeof value, 1, fp, path);
    fclose(fp);
    return value;
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
    enum { KEEP_CRC, FIX_CRC };
    const long HEADER = HEADER_INTS * 4, SLOT = 4; // header slot i is at byte SLOT * i
    expect_rejected("checkpoint: missing file", "/nonexistent/vlv.bin", 1, "could not open");
    copy_bytes(ckpt, tmp, 100, -1, 0, KEEP_CRC);
    expect_rejected("checkpoint: shorter than its header", tmp, 1, "truncated");
    FILE* fp = fopenCheck(ckpt, "rb");
    long size = file_size(fp, ckpt);
    fclose(fp);
    copy_bytes(ckpt, tmp, size - 4, -1, 0, KEEP_CRC);
    expect_rejected("checkpoint: truncated by 4 bytes", tmp, 1, "truncated");
    copy_bytes(ckpt, tmp, -1 - 8, -1, 0, KEEP_CRC);
    expect_rejected("checkpoint: trailing bytes", tmp, 1, "trailing data");
    copy_bytes(ckpt, tmp, size, 0, 12345, KEEP_CRC);
    expect_rejected("checkpoint: wrong magic", tmp, 1, "magic");
    char reads[64];
    snprintf(reads, sizeof reads, "version 99; this program reads version %d", CHECKPOINT_VERSION);
    copy_bytes(ckpt, tmp, size, SLOT * 1, 99, KEEP_CRC);
    expect_rejected("checkpoint: unknown version", tmp, 1, reads);
    // one byte changed where no field check can see it: the CRC32 must
    copy_bytes(ckpt, tmp, size, SLOT * 22, int_at(ckpt, SLOT * 22) ^ 1, KEEP_CRC); // prediction eps <-> v
    expect_rejected("checkpoint: a header byte changed", tmp, 1, "is corrupt: its CRC32 is");
    copy_bytes(ckpt, tmp, size, HEADER + 4, int_at(ckpt, HEADER + 4) ^ 0x100, KEEP_CRC); // the second weight
    expect_rejected("checkpoint: a weight's byte changed", tmp, 1, "is corrupt: its CRC32 is");
    copy_bytes(ckpt, tmp, size, size - CRC_BYTES, int_at(ckpt, size - CRC_BYTES) ^ 1, KEEP_CRC);
    expect_rejected("checkpoint: its CRC32 changed", tmp, 1, "is corrupt: its CRC32 is");
    // with the CRC32 made right again: the field checks behind it
    copy_bytes(ckpt, tmp, size, SLOT * 3, 5, FIX_CRC); // patch = 5 does not divide img_size
    expect_rejected("checkpoint: inconsistent config", tmp, 1, "bad config");
    copy_bytes(ckpt, tmp, size, SLOT * 22, 2, FIX_CRC);
    expect_rejected("checkpoint: prediction 2", tmp, 1, "prediction = 2 is out of range");
    copy_bytes(ckpt, tmp, size, SLOT * 23, 100000, FIX_CRC);
    expect_rejected("checkpoint: 100,000 diffusion steps", tmp, 1, "n_timesteps = 100000 is out of range");
    copy_bytes(ckpt, tmp, size, SLOT * 9, 0, FIX_CRC);
    expect_rejected("checkpoint: no vision heads", tmp, 1, "nh_v = 0 is out of range");
    char n_z_slot[64]; // n_z: 1 to n_q - 1, or 0 for n_q; n_q itself is not a stored value
    snprintf(n_z_slot, sizeof n_z_slot, "slot 25 (n_z) is %d", int_at(ckpt, SLOT * 4));
    copy_bytes(ckpt, tmp, size, SLOT * 25, int_at(ckpt, SLOT * 4), FIX_CRC);
    expect_rejected("checkpoint: n_z stored as n_q", tmp, 1, n_z_slot);
    copy_bytes(ckpt, tmp, size, SLOT * 25, -3, FIX_CRC);
    expect_rejected("checkpoint: a negative n_z", tmp, 1, "slot 25 (n_z) is -3");
    copy_bytes(ckpt, tmp, size, SLOT * 25, 1, KEEP_CRC); // the message names n_q without arithmetic on it
    copy_bytes(tmp, tmp, size, SLOT * 4, INT_MIN, FIX_CRC);
    expect_rejected("checkpoint: n_z beside n_q = INT_MIN", tmp, 1, "(n_q = -2147483648)");
    copy_bytes(ckpt, tmp, size, SLOT * 40, 1, FIX_CRC);
    expect_rejected("checkpoint: a reserved header slot not 0", tmp, 1, "reserved slot 40 is 1");
    copy_bytes(ckpt, tmp, size, SLOT * 24, -1, FIX_CRC);
    expect_rejected("checkpoint: a negative parameter count", tmp, 1, "num_params = -1 is negative");
    copy_bytes(ckpt, tmp, size, SLOT * 24, 7, FIX_CRC);
    expect_rejected("checkpoint: wrong parameter count", tmp, 1, "7 parameters");
    int n = int_at(ckpt, SLOT * 24); // one parameter fewer, in a file of that size
    copy_bytes(ckpt, tmp, size - 4, SLOT * 24, n - 1, FIX_CRC);
    expect_rejected("checkpoint: a count unlike its config's", tmp, 1, "but its config implies");
    copy_bytes(ckpt, tmp, size, HEADER + 8, 0x7fc00000, FIX_CRC); // a NaN weight
    expect_rejected("checkpoint: NaN weight", tmp, 1, "NaN");
    fp = fopenCheck(state, "rb");
    size = file_size(fp, state);
    fclose(fp);
    copy_bytes(state, tmp, size / 2, -1, 0, KEEP_CRC);
    expect_rejected("debug state: truncated", tmp, 0, "truncated");
    copy_bytes(state, tmp, size, 0, CHECKPOINT_MAGIC, KEEP_CRC);
    expect_rejected("debug state: wrong magic", tmp, 0, "magic");
    copy_bytes(state, tmp, size, SLOT * 63, 1, KEEP_CRC); // the debug state has no CRC32
    expect_rejected("debug state: a reserved header slot not 0", tmp, 0, "reserved slot 63 is 1");
    remove(tmp);
}

#endif
