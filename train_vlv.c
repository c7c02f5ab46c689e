/*
train_vlv.c — the Vision-Language-Vision (VLV) auto-encoder in plain C.

An image goes through a vision encoder (ViT) and an adapter of learned queries to N_q
continuous "caption embeddings" z. A frozen text-to-image decoder (a CLIP-like text encoder
and a DiT with cross-attention) must reconstruct the image from z: that is stage 1, trained
on images alone. A caption decoder (a small GPT) then learns to turn TextEnc(z) into words:
stage 2, with few captions. Since no pretrained weights can be downloaded, this file also
trains the decoder itself (stage 0, text-to-image) and the GPT (stage 0b, language model).

Every layer has a forward and a hand-written backward here; doc/model.md pins down the
architecture, doc/layers.md the math of each backward. test_vlv.c checks all of it, tensor by
tensor, against the PyTorch twin dev/vlv.py.

Conventions: a layer's backward ACCUMULATES (+=) into the gradients it is given, and skips
any gradient pointer that is NULL. Frozen parts are run with all-NULL gradient views: they
pass activation gradients through and compute no parameter gradient at all.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <float.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "vlvc/utils.h"
#include "vlvc/config.h"
#include "vlvc/vlv.h"       // the interface this file implements for the pipeline
#include "vlvc/model.h"     // the parameter and activation views, checkpoint files
#include "vlvc/random.h"
#include "vlvc/tokenizer.h" // token rows: the empty caption, range checks
#include "vlvc/clip_z.h"
#include "vlvc/dist.h"      // data parallel: the sums over ranks (one rank without USE_MPI)
#include "vlvc/beams.h"

// ----------------------------------------------------------------------------
// layers

// Floating-point operations of the matmuls and of attention's products so far (2 per
// multiply-add), added by those layer functions from their arguments: 2·N·C·OC per matmul
// product, 4·B·Tq·Tk·C for attention's forward (QKᵀ, AV) and 8·B·Tq·Tk·C for its backward
// (vlv_flops hands them to the pipeline, which turns them into GFLOP/s).
static double flops_counted = 0.0;
static double attention_flops_counted = 0.0; // the part of flops_counted that attention did

// Copies between images [B, H, W, 3] and their patches [B, Np, P*P*3] (doc/model.md):
// patch (r, q) is row r*(W/P)+q, and inside it index (py*P + px)*3 + ch. A permutation, so
// patchify's backward is unpatchify and vice versa. to_patches picks the direction.
void patch_copy(float* patches, float* img, int B, int H, int P, int to_patches) {
    int G = H / P, PD = P * P * 3;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int r = 0; r < G; r++) {
            for (int q = 0; q < G; q++) {
                float* patch = patches + ((size_t)(b * G + r) * G + q) * PD;
                for (int py = 0; py < P; py++) {
                    float* pix = img + (((size_t)b * H + r * P + py) * H + q * P) * 3;
                    float* row = patch + py * P * 3;
                    if (to_patches) { memcpy(row, pix, P * 3 * sizeof(float)); }
                    else { memcpy(pix, row, P * 3 * sizeof(float)); }
                }
            }
        }
    }
}

// Matmul. All three products are one blocked kernel, C[M, NC] (+)= A[M, K] B[K, NC]:
//   forward        out  = inp  W^T (+ b): M = N,  K = C,  NC = OC, B(k, j) = W[j, k]
//   backward-input dinp += dout W:        M = N,  K = OC, NC = C,  B(k, j) = W[k, j]
//   backward-weight dW  += dout^T inp:    M = OC, K = N,  NC = C,  A(m, k) = dout[k, m]
// B is copied, MM_KC rows x MM_NR columns at a time, into a panel on the stack (contiguous,
// zero-padded past NC: the transpose for the forward, and no cache-set conflicts from long
// row strides); a register tile of MM_MR rows x MM_NR columns then runs over the panel: per k,
// one row of the panel times MM_MR broadcast scalars of A, MM_MR * MM_NR FMAs that gcc
// vectorizes along the columns. Every output element is the sum over k in MM_KC-long chunks,
// each chunk summed in k order in float and then added to the output, whatever the tile
// sizes or the thread count: results are bitwise identical for any number of threads.
// Work is split into (row tile, column panel) units, contiguous ranges of them per thread;
// each unit has exactly one owner, so there are no races and nothing to reduce.

// The register tile, chosen per microarchitecture at build time (-march=native; doc/speed.md
// has the timings). Cores with two full-width 512-bit FMA units (Intel's AVX-512 Xeons, AMD's
// Zen 5 EPYC): 6 x 64 is 24 zmm accumulators, 6 broadcasts and 4 panel loads per 24 FMAs
// (12 x 16 needs 13 loads per 12 FMAs, bound by the 2 loads a cycle). AMD's Zen 4 runs AVX-512
// as two 256-bit halves with a 32 KiB L1d: 12 x 16 (12 zmm) reaches its peak. gcc 12 calls Zen 4
// and Zen 5 znver3 (a gcc without znver5 would call both znver4); Zen 5 is told apart by
// VP2INTERSECT, which no earlier AMD core has. With 16 vector registers (AVX2, NEON) 6 x 16 is 12 ymm accumulators.
// -DMM_MR=.. -DMM_NR=.. override (a multiple of 16 columns). The sums do not depend on the tile.
#if (defined(__znver3__) || defined(__znver4__)) && !defined(__AVX512VP2INTERSECT__)
#define MM_AVX512_HALF_WIDTH 1 // Zen 4 (Zen 1-3 have no AVX-512)
#else
#define MM_AVX512_HALF_WIDTH 0
#endif
#if defined(__AVX512F__) && !MM_AVX512_HALF_WIDTH
#define MM_MR_NATIVE 6
#define MM_NR_NATIVE 64
#elif defined(__AVX512F__)
#define MM_MR_NATIVE 12
#define MM_NR_NATIVE 16
#else
#define MM_MR_NATIVE 6
#define MM_NR_NATIVE 16
#endif
#ifndef MM_MR
#define MM_MR MM_MR_NATIVE
#endif
#ifndef MM_NR
#define MM_NR MM_NR_NATIVE
#endif
#define MM_NR_MIN 16 // the narrowest tile a narrow last panel uses: one zmm
// MM_KC: rows of a B panel, kept in L1 while all of a thread's row tiles use it. It alone sets
// the order of the sums (the tile sizes do not), so it stays the same on every machine.
#define MM_KC 256

// the multiply-add of the tile as one fused, singly rounded operation wherever the hardware
// has it: then the result does not depend on the optimization level (gcc fuses a * b + c
// only from -O2 on, so the -O1 sanitizer build would otherwise round differently)
#ifdef FP_FAST_FMAF
#define MM_FMA(a, b, c) fmaf(a, b, c)
#else
#define MM_FMA(a, b, c) ((a) * (b) + (c))
#endif

#if defined(__GNUC__)
#define MM_INLINE static inline __attribute__((always_inline))
#else
#define MM_INLINE static inline
#endif

// one tile: C(r, j) (+)= sum_k a[r * a_m + k * a_k] * bp[k * MM_NR + j] for r < mr, j < nc, with
// C(r, j) = c[r * c_m + j * c_j]. mr and nr (the panel columns computed, nc <= nr <= MM_NR) are
// constants at each call, so the accumulators become registers. first: this is the first K
// chunk of a forward, so C = bias + sum instead of C += sum; the bias is per column j, or per
// row r when C is stored transposed (c_j != 1: the forward of few rows, matmul_forward).
MM_INLINE void matmul_tile(float* c, size_t c_m, size_t c_j, const float* a, size_t a_m, size_t a_k,
                           const float* bp, int K, const int mr, const int nr, int nc, int first, const float* bias) {
    float acc[MM_MR][MM_NR];
    for (int r = 0; r < mr; r++) {
        for (int j = 0; j < nr; j++) { acc[r][j] = 0.0f; }
    }
    // C rows that the tile adds to are fetched while the k loop runs: the hardware prefetcher
    // does not follow a tile's few lines spaced a whole row apart, and the load at the end missed
    if (!first && c_j == 1) {
        for (int r = 0; r < mr; r++) {
            __builtin_prefetch(c + r * c_m, 1);
            __builtin_prefetch(c + r * c_m + nc - 1, 1);
        }
    }
    for (int k = 0; k < K; k++) {
        const float* b = bp + (size_t)k * MM_NR;
        for (int r = 0; r < mr; r++) {
            float av = a[r * a_m + k * a_k];
            #pragma omp simd
            for (int j = 0; j < nr; j++) { acc[r][j] = MM_FMA(av, b[j], acc[r][j]); }
        }
    }
    for (int r = 0; r < mr; r++) {
        float* cr = c + r * c_m;
        if (c_j == 1 && nc == nr) {
            #pragma omp simd
            for (int j = 0; j < nr; j++) { cr[j] = (first ? (bias ? bias[j] : 0.0f) : cr[j]) + acc[r][j]; }
        } else if (c_j == 1) {
            for (int j = 0; j < nc; j++) { cr[j] = (first ? (bias ? bias[j] : 0.0f) : cr[j]) + acc[r][j]; }
        } else {
            for (int j = 0; j < nc; j++) { cr[j * c_j] = (first ? (bias ? bias[r] : 0.0f) : cr[j * c_j]) + acc[r][j]; }
        }
    }
}

// the row tiles [i_begin, i_end) of one panel and K chunk, nr columns of it computed (a constant
// at each call); the last row tile, if short, in sub-tiles of 8 and 4 rows, then single rows
MM_INLINE void matmul_row_tiles(float* c, size_t c_m, size_t c_j, const float* a, size_t a_m, size_t a_k,
                                const float* bp, int K, int M, int i_begin, int i_end, const int nr, int nc,
                                int first, const float* bias) {
    size_t bias_m = c_j != 1; // the bias steps with the rows when C is stored transposed
    for (int i = i_begin; i < i_end; i++) {
        int m0 = i * MM_MR, mr = M - m0 < MM_MR ? M - m0 : MM_MR;
        for (int r = 0; r < mr;) { // the whole tile, or the last one in sub-tiles
            float* c_t = c + (size_t)(m0 + r) * c_m;
            const float* a_t = a + (size_t)(m0 + r) * a_m;
            const float* bias_t = bias ? bias + (m0 + r) * bias_m : NULL;
            if (mr == MM_MR) { matmul_tile(c_t, c_m, c_j, a_t, a_m, a_k, bp, K, MM_MR, nr, nc, first, bias_t); r = mr; }
            else if (MM_MR > 8 && mr - r >= 8) { matmul_tile(c_t, c_m, c_j, a_t, a_m, a_k, bp, K, 8, nr, nc, first, bias_t); r += 8; }
            else if (mr - r >= 4) { matmul_tile(c_t, c_m, c_j, a_t, a_m, a_k, bp, K, 4, nr, nc, first, bias_t); r += 4; }
            else { matmul_tile(c_t, c_m, c_j, a_t, a_m, a_k, bp, K, 1, nr, nc, first, bias_t); r += 1; }
        }
    }
}

// C[M, NC] (+)= A[M, K] B[K, NC] with A(m, k) = a[m * a_m + k * a_k], B(k, j) = b[k * b_k + j * b_j],
// C(m, j) = c[m * c_m + j * c_j]; forward: C = bias + A B (bias may be NULL; per row m if c_j != 1),
// else C += A B. Serial: computes the units [u0, u1) (unit u: column panel u / m_tiles, row tile
// u % m_tiles).
static void matmul_units(float* c, size_t c_m, size_t c_j, const float* a, size_t a_m, size_t a_k,
                         const float* b, size_t b_k, size_t b_j, const float* bias, int forward,
                         int M, int K, int NC, long u0, long u1) {
    int m_tiles = (M + MM_MR - 1) / MM_MR, panels = (NC + MM_NR - 1) / MM_NR;
    float bp[MM_KC * MM_NR]; // the B panel on the stack, nothing allocated
    for (int p = (int)(u0 / m_tiles); u0 < u1 && p < panels && (long)p * m_tiles < u1; p++) {
        int j0 = p * MM_NR, nc = NC - j0 < MM_NR ? NC - j0 : MM_NR;
        // the columns computed: a narrow last panel computes a half or a quarter of the tile's
        int nr = MM_NR;
        while (nr > MM_NR / 4 && nr / 2 >= MM_NR_MIN && nc <= nr / 2) { nr /= 2; }
        long first_unit = (long)p * m_tiles;
        int i_begin = u0 > first_unit ? (int)(u0 - first_unit) : 0;
        int i_end = u1 < first_unit + m_tiles ? (int)(u1 - first_unit) : m_tiles;
        for (int k0 = 0; k0 < K; k0 += MM_KC) {
            int kc = K - k0 < MM_KC ? K - k0 : MM_KC;
            // the panel: B rows k0..k0+kc, columns j0..j0+nc, zeros from nc to nr
            const float* src = b + (size_t)k0 * b_k + (size_t)j0 * b_j;
            if (b_j == 1 && nc == MM_NR) { // rows of B: a copy of MM_NR floats per row
                for (int k = 0; k < kc; k++) {
                    #pragma omp simd
                    for (int j = 0; j < MM_NR; j++) { bp[k * MM_NR + j] = src[k * b_k + j]; }
                }
            } else if (b_j == 1) { // rows of B, nc < MM_NR of them
                for (int k = 0; k < kc; k++) {
                    for (int j = 0; j < nc; j++) { bp[k * MM_NR + j] = src[k * b_k + j]; }
                    for (int j = nc; j < nr; j++) { bp[k * MM_NR + j] = 0.0f; }
                }
            } else if (b_k == 1) { // columns of B (the forward's W^T): a panel row gathers
                // one float from each of nc rows of W (vector gathers with AVX-512 and AVX2)
                for (int k = 0; k < kc; k++) {
                    #pragma omp simd
                    for (int j = 0; j < nr; j++) { bp[k * MM_NR + j] = j < nc ? src[j * b_j + k] : 0.0f; }
                }
            } else {
                for (int k = 0; k < kc; k++) {
                    for (int j = 0; j < nr; j++) { bp[k * MM_NR + j] = j < nc ? src[k * b_k + j * b_j] : 0.0f; }
                }
            }
            int first = forward && k0 == 0;
            const float* bias_p = bias && c_j == 1 ? bias + j0 : bias;
            const float* a_k0 = a + (size_t)k0 * a_k;
            float* c_p = c + (size_t)j0 * c_j;
            if (nr == MM_NR) {
                matmul_row_tiles(c_p, c_m, c_j, a_k0, a_m, a_k, bp, kc, M, i_begin, i_end, MM_NR, nc, first, bias_p);
            } else if (MM_NR / 2 >= MM_NR_MIN && nr == MM_NR / 2) { // (constant: no narrow tiles for 16 columns)
                matmul_row_tiles(c_p, c_m, c_j, a_k0, a_m, a_k, bp, kc, M, i_begin, i_end, MM_NR / 2, nc, first, bias_p);
            } else {
                matmul_row_tiles(c_p, c_m, c_j, a_k0, a_m, a_k, bp, kc, M, i_begin, i_end, MM_NR / 4, nc, first, bias_p);
            }
        }
    }
}

// the same over all units, split into contiguous ranges over the threads
static void matmul_blocked(float* c, size_t c_m, size_t c_j, const float* a, size_t a_m, size_t a_k,
                           const float* b, size_t b_k, size_t b_j, const float* bias, int forward,
                           int M, int K, int NC) {
    long units = (long)((M + MM_MR - 1) / MM_MR) * ((NC + MM_NR - 1) / MM_NR);
    #pragma omp parallel
    {
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        matmul_units(c, c_m, c_j, a, a_m, a_k, b, b_k, b_j, bias, forward, M, K, NC, units * t / nt, units * (t + 1) / nt);
    }
}

// out[N, OC] = inp[N, C] @ weight[OC, C]^T + bias[OC]  (bias may be NULL)
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int N, int C, int OC) {
    flops_counted += 2.0 * N * C * OC;
    if (N <= 64 && N < OC) { // few rows: out^T = W inp^T, so the panels copied (transposed) are inp's, not W's
        matmul_blocked(out, 1, OC, weight, C, 1, inp, 1, C, bias, 1, OC, C, N);
    } else {
        matmul_blocked(out, OC, 1, inp, C, 1, weight, 1, C, bias, 1, N, C, OC);
    }
}

// y = x W^T + b gives dx = dy W, dW = dy^T x, db = sum over rows of dy (all added with +=)
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC) {
    flops_counted += 2.0 * N * C * OC * ((dinp != NULL) + (dweight != NULL));
    if (dinp) { matmul_blocked(dinp, C, 1, dout, OC, 1, weight, C, 1, NULL, 0, N, OC, C); }
    if (dweight) { matmul_blocked(dweight, C, 1, dout, 1, OC, inp, C, 1, NULL, 0, OC, N, C); }
    if (dbias) {
        // column sums, MM_NR columns per unit, in MM_KC-row chunks like the products
        #pragma omp parallel for
        for (int o0 = 0; o0 < OC; o0 += MM_NR) {
            int nc = OC - o0 < MM_NR ? OC - o0 : MM_NR;
            float sum[MM_NR] = { 0.0f };
            for (int n0 = 0; n0 < N; n0 += MM_KC) {
                float part[MM_NR] = { 0.0f };
                for (int n = n0; n < N && n < n0 + MM_KC; n++) {
                    const float* d = dout + (size_t)n * OC + o0;
                    for (int j = 0; j < nc; j++) { part[j] += d[j]; }
                }
                for (int j = 0; j < MM_NR; j++) { sum[j] += part[j]; }
            }
            for (int o = o0; o < o0 + nc; o++) { float db = sum[o - o0]; dbias[o] += db; }
        }
    }
}

// Row sums in LANES interleaved partial sums (element c goes to lane c % LANES), added up at
// the end in one fixed order: the loops over a row vectorize at any vector width, and the bits
// are the same at any width and thread count. A plain `sum += x[c]` stays scalar (reordering it
// would change the rounding), one dependent add per element.
#define LANES 16

// the LANES partial sums, added pairwise in a fixed order
static inline float lanes_total(float part[LANES]) {
    #pragma GCC unroll 4
    for (int w = LANES / 2; w > 0; w /= 2) {
        for (int j = 0; j < w; j++) { part[j] += part[j + w]; }
    }
    return part[0];
}

// a row's sum, and its dot product with another row, each in LANES partial results: whole
// groups of LANES (a loop of constant length keeps the lanes in a register), then the tail
static inline float row_sum(const float* x, int n) {
    float part[LANES] = { 0.0f };
    int c0 = 0;
    for (; c0 + LANES <= n; c0 += LANES) {
        #pragma omp simd
        for (int j = 0; j < LANES; j++) { part[j] += x[c0 + j]; }
    }
    for (int j = 0; c0 + j < n; j++) { part[j] += x[c0 + j]; }
    return lanes_total(part);
}
static inline float row_dot(const float* x, const float* y, int n) {
    float part[LANES] = { 0.0f };
    int c0 = 0;
    for (; c0 + LANES <= n; c0 += LANES) {
        #pragma omp simd
        for (int j = 0; j < LANES; j++) { part[j] += x[c0 + j] * y[c0 + j]; }
    }
    for (int j = 0; c0 + j < n; j++) { part[j] += x[c0 + j] * y[c0 + j]; }
    return lanes_total(part);
}

// LayerNorm over the last dimension: out = (x - mean) * rstd * w + b, rstd = 1/sqrt(var + 1e-5).
// weight == NULL means no affine (the DiT's modulated norms). mean and rstd [N] are kept.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int N, int C) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* x = inp + (size_t)n * C;
        float* y = out + (size_t)n * C;
        float m = row_sum(x, C) / C;
        float part[LANES] = { 0.0f };
        for (int c0 = 0; c0 < C; c0 += LANES) {
            int lanes = C - c0 < LANES ? C - c0 : LANES;
            for (int j = 0; j < lanes; j++) { float xm = x[c0 + j] - m; part[j] += xm * xm; }
        }
        float s = 1.0f / sqrtf(lanes_total(part) / C + 1e-5f);
        for (int c = 0; c < C; c++) {
            float norm = (x[c] - m) * s;
            y[c] = weight ? norm * weight[c] + bias[c] : norm;
        }
        mean[n] = m;
        rstd[n] = s;
    }
}

// With n = (x - mean) * rstd and g = dy * w: dx = rstd * (g - mean(g) - n * mean(g * n)),
// dw = sum over rows of dy * n, db = sum over rows of dy.
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C) {
    if (dinp) {
        #pragma omp parallel for
        for (int n = 0; n < N; n++) {
            const float* dy = dout + (size_t)n * C;
            const float* x = inp + (size_t)n * C;
            float* dx = dinp + (size_t)n * C;
            float m = mean[n], s = rstd[n];
            float g_part[LANES] = { 0.0f }, gn_part[LANES] = { 0.0f };
            for (int c0 = 0; c0 < C; c0 += LANES) {
                int lanes = C - c0 < LANES ? C - c0 : LANES;
                for (int j = 0; j < lanes; j++) {
                    float g = weight ? dy[c0 + j] * weight[c0 + j] : dy[c0 + j];
                    g_part[j] += g;
                    gn_part[j] += g * (x[c0 + j] - m) * s;
                }
            }
            float g_mean = lanes_total(g_part) / C, gn_mean = lanes_total(gn_part) / C;
            for (int c = 0; c < C; c++) {
                float g = weight ? dy[c] * weight[c] : dy[c];
                dx[c] += s * (g - g_mean - (x[c] - m) * s * gn_mean);
            }
        }
    }
    if (dweight || dbias) {
        // LANES columns at a time, the rows in order: each column's sum is over n in order
        #pragma omp parallel for
        for (int c0 = 0; c0 < C; c0 += LANES) {
            float dw[LANES] = { 0.0f }, db[LANES] = { 0.0f };
            int nc = C - c0 < LANES ? C - c0 : LANES;
            for (int n = 0; n < N; n++) {
                const float* dy = dout + (size_t)n * C + c0;
                const float* x = inp + (size_t)n * C + c0;
                float m = mean[n], s = rstd[n];
                for (int j = 0; j < nc; j++) {
                    dw[j] += dy[j] * (x[j] - m) * s;
                    db[j] += dy[j];
                }
            }
            for (int j = 0; j < nc; j++) {
                if (dweight) { dweight[c0 + j] += dw[j]; }
                if (dbias) { dbias[c0 + j] += db[j]; }
            }
        }
    }
}

// x where cond holds, else y, without a branch: a compare and bit operations. gcc vectorizes
// this, where it leaves a ?: that feeds a float-to-int conversion as a branch (and then nothing).
static inline float select_bits(int cond, float x, float y) {
    int32_t xb, yb, keep = -(int32_t)cond;
    memcpy(&xb, &x, sizeof xb);
    memcpy(&yb, &y, sizeof yb);
    xb = (xb & keep) | (yb & ~keep);
    memcpy(&x, &xb, sizeof x);
    return x;
}

// e^x that gcc vectorizes (glibc's expf is a scalar call: in the softmax of attention it cost
// as much as attention's matmuls). Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2, a degree-6
// polynomial for e^r, 2^n from the exponent bits. x is first clamped to [-87, 87], the ends of
// float's normal range (e^-87 = 1.6e-38 counts as nothing next to a softmax row's largest
// term, 1). Relative error ~1e-7, like expf's; no infinities or NaNs on the way, so -Ofast
// keeps it. (No floorf: gcc vectorizes that only with -ffast-math.)
static inline float exp_vec(float x) {
    x = select_bits(x < 87.0f, x, 87.0f);
    x = select_bits(x > -87.0f, x, -87.0f);
    int32_t ni = (int32_t)(x * 1.44269504088896341f + copysignf(0.5f, x)); // round(x / ln2)
    float n = (float)ni;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = (ni + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

// tanh that gcc vectorizes: tanh(u) = sign(u) (1 - 2 / (e^y + 1)), y = 2|u| (tanh is 1 in
// float from |u| ~ 9 on, so exp_vec's clamp changes nothing). Absolute error ~1e-7, like
// tanhf's near |tanh| = 1.
static inline float tanh_vec(float u) {
    return copysignf(1.0f - 2.0f / (exp_vec(2.0f * fabsf(u)) + 1.0f), u);
}

// GELU, tanh approximation: 0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi)
#define GELU_K 0.7978845608028654f
void gelu_forward(float* out, const float* inp, size_t N) {
    #pragma omp parallel for simd
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanh_vec(GELU_K * (x + 0.044715f * x * x * x)));
    }
}

// d/dx = 0.5 (1 + th) + 0.5 x (1 - th^2) k (1 + 3 * 0.044715 x^2), th = tanh(k (x + 0.044715 x^3))
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t N) {
    #pragma omp parallel for simd
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        float th = tanh_vec(GELU_K * (x + 0.044715f * x * x * x));
        float grad = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += grad * dout[i];
    }
}

// SiLU: x * sigmoid(x); d/dx = s (1 + x (1 - s)) with s = sigmoid(x)
void silu_forward(float* out, const float* inp, size_t N) {
    for (size_t i = 0; i < N; i++) { out[i] = inp[i] / (1.0f + exp_vec(-inp[i])); }
}
void silu_backward(float* dinp, const float* inp, const float* dout, size_t N) {
    for (size_t i = 0; i < N; i++) {
        float s = 1.0f / (1.0f + exp_vec(-inp[i]));
        dinp[i] += dout[i] * s * (1.0f + inp[i] * (1.0f - s));
    }
}

// out = a + b
void residual_forward(float* out, const float* a, const float* b, size_t N) {
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) { out[i] = a[i] + b[i]; }
}
void residual_backward(float* da, float* db, const float* dout, size_t N) {
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) { da[i] += dout[i]; db[i] += dout[i]; }
}

// adaLN-Zero, the DiT's conditioning. Per-sample vectors shift, scale, gate [B, C] are slices
// of a modulation buffer whose rows are mod_stride floats apart; they broadcast over the T tokens.
// modulate: out = x * (1 + scale) + shift
void modulate_forward(float* out, const float* x, const float* shift, const float* scale,
                      int mod_stride, int B, int T, int C) {
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float* sh = shift + (size_t)b * mod_stride;
            const float* sc = scale + (size_t)b * mod_stride;
            size_t row = ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) { out[row + c] = x[row + c] * (1.0f + sc[c]) + sh[c]; }
        }
    }
}
// dx = dy (1 + scale); dshift = sum_t dy; dscale = sum_t dy x
void modulate_backward(float* dx, float* dshift, float* dscale, const float* dout, const float* x,
                       const float* scale, int mod_stride, int B, int T, int C) {
    #pragma omp parallel for
    for (int b = 0; b < B; b++) {
        const float* sc = scale + (size_t)b * mod_stride;
        float* dsh = dshift + (size_t)b * mod_stride;
        float* dsc = dscale + (size_t)b * mod_stride;
        for (int t = 0; t < T; t++) {
            size_t row = ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) {
                float dy = dout[row + c];
                dx[row + c] += dy * (1.0f + sc[c]);
                dsh[c] += dy;
                dsc[c] += dy * x[row + c];
            }
        }
    }
}

// gated residual: out = x + gate * y; dx = dy, d(y) = dy gate, dgate = sum_t dy y
void gated_residual_forward(float* out, const float* x, const float* y, const float* gate,
                            int mod_stride, int B, int T, int C) {
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float* g = gate + (size_t)b * mod_stride;
            size_t row = ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) { out[row + c] = x[row + c] + g[c] * y[row + c]; }
        }
    }
}
void gated_residual_backward(float* dx, float* dy, float* dgate, const float* dout, const float* y,
                             const float* gate, int mod_stride, int B, int T, int C) {
    #pragma omp parallel for
    for (int b = 0; b < B; b++) {
        const float* g = gate + (size_t)b * mod_stride;
        float* dg = dgate + (size_t)b * mod_stride;
        for (int t = 0; t < T; t++) {
            size_t row = ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) {
                float d = dout[row + c];
                dx[row + c] += d;
                dy[row + c] += d * g[c];
                dg[c] += d * y[row + c];
            }
        }
    }
}

// Multi-head attention, self or cross, with one code path. Queries are rows of q_stride floats
// ([B, Tq, q_stride], the C query channels first), keys and values rows of kv_stride floats
// ([B, Tk, kv_stride]), so a packed qkv buffer and separate q / kv buffers both work.
// att [B, NH, Tq, Tk] keeps the softmax probabilities (0 where masked) for the backward;
// out [B, Tq, C]. causal: query i sees keys j <= i (then Tq == Tk).
void attention_forward(float* out, float* att, const float* q, int q_stride, const float* k,
                       const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    flops_counted += 4.0 * B * Tq * Tk * C;
    attention_flops_counted += 4.0 * B * Tq * Tk * C;
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    long tq_tiles = (Tq + MM_MR - 1) / MM_MR;
    long s_units = tq_tiles * ((Tk + MM_NR - 1) / MM_NR), o_units = tq_tiles * ((hs + MM_NR - 1) / MM_NR);
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float* qh = q + (size_t)b * Tq * q_stride + h * hs;
            const float* kh = k + (size_t)b * Tk * kv_stride + h * hs;
            const float* vh = v + (size_t)b * Tk * kv_stride + h * hs;
            float* s = att + ((size_t)b * NH + h) * Tq * Tk;
            // S[Tq, Tk] = Q K^T: A(i, c) = q_i[c], B(c, j) = k_j[c]
            matmul_units(s, Tk, 1, qh, q_stride, 1, kh, 1, kv_stride, NULL, 1, Tq, hs, Tk, 0, s_units);
            // a numerically safe softmax of each row (-FLT_MAX, not -INFINITY: -Ofast
            // assumes there are no infinities). Every loop vectorizes: the max is exact in any
            // order, the exponentials are a loop of their own, the sum is row_sum's 16 lanes.
            for (int i = 0; i < Tq; i++) {
                float* a = s + (size_t)i * Tk;
                int jend = causal ? i + 1 : Tk;
                float maxv = -FLT_MAX;
                #pragma omp simd reduction(max:maxv)
                for (int j = 0; j < jend; j++) { a[j] *= scale; maxv = a[j] > maxv ? a[j] : maxv; }
                for (int j = 0; j < jend; j++) { a[j] = exp_vec(a[j] - maxv); }
                float inv = 1.0f / row_sum(a, jend);
                for (int j = 0; j < jend; j++) { a[j] *= inv; }
                for (int j = jend; j < Tk; j++) { a[j] = 0.0f; }
            }
            // O[Tq, hs] = A V: B(j, c) = v_j[c]
            matmul_units(out + (size_t)b * Tq * C + h * hs, C, 1, s, Tk, 1, vh, kv_stride, 1, NULL, 1, Tq, Tk, hs, 0, o_units);
        }
    }
}

// Backward of attention_forward. With o_i = sum_j a_ij v_j and a_i = softmax(s_i),
// s_ij = scale q_i.k_j: dv_j += a_ij do_i; da_ij = do_i.v_j; ds_ij = a_ij (da_ij - sum_k a_ik da_ik);
// dq_i += scale sum_j ds_ij k_j; dk_j += scale ds_ij q_i. datt [B, NH, Tq, Tk] is scratch
// (holds da, then ds). Each (b, h) touches only its own rows and head channels, so (b, h)
// runs in parallel.
void attention_backward(float* dq, float* dk, float* dv, float* datt, const float* dout,
                        const float* att, const float* q, int q_stride, const float* k,
                        const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    flops_counted += 8.0 * B * Tq * Tk * C;
    attention_flops_counted += 8.0 * B * Tq * Tk * C;
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    long tq_tiles = (Tq + MM_MR - 1) / MM_MR, tk_tiles = (Tk + MM_MR - 1) / MM_MR;
    long hs_panels = (hs + MM_NR - 1) / MM_NR, tk_panels = (Tk + MM_NR - 1) / MM_NR;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float* qh = q + (size_t)b * Tq * q_stride + h * hs;
            const float* kh = k + (size_t)b * Tk * kv_stride + h * hs;
            const float* vh = v + (size_t)b * Tk * kv_stride + h * hs;
            const float* doh = dout + (size_t)b * Tq * C + h * hs;
            const float* ah = att + ((size_t)b * NH + h) * Tq * Tk;
            float* dsh = datt + ((size_t)b * NH + h) * Tq * Tk;
            // dV[Tk, hs] += A^T dO: A(j, i) = a_ij, B(i, c) = do_i[c]
            matmul_units(dv + (size_t)b * Tk * kv_stride + h * hs, kv_stride, 1, ah, 1, Tk, doh, C, 1, NULL, 0,
                         Tk, Tq, hs, 0, tk_tiles * hs_panels);
            // dA[Tq, Tk] = dO V^T: A(i, c) = do_i[c], B(c, j) = v_j[c]
            matmul_units(dsh, Tk, 1, doh, C, 1, vh, 1, kv_stride, NULL, 1, Tq, hs, Tk, 0, tq_tiles * tk_panels);
            // dS = A (dA - rowsum(A dA)) scale, in place. The row sum runs over every key (a_ij
            // = 0 where masked); causal: ds_ij = 0 for the keys j > i that query i does not see
            for (int i = 0; i < Tq; i++) {
                const float* a = ah + (size_t)i * Tk;
                float* da = dsh + (size_t)i * Tk;
                int jend = causal ? i + 1 : Tk;
                float a_da = row_dot(a, da, Tk);
                for (int j = 0; j < jend; j++) {
                    float ds = a[j] * (da[j] - a_da) * scale;
                    da[j] = ds;
                }
                for (int j = jend; j < Tk; j++) { da[j] = 0.0f; }
            }
            // dQ[Tq, hs] += dS K: B(j, c) = k_j[c]
            matmul_units(dq + (size_t)b * Tq * q_stride + h * hs, q_stride, 1, dsh, Tk, 1, kh, kv_stride, 1, NULL, 0,
                         Tq, Tk, hs, 0, tq_tiles * hs_panels);
            // dK[Tk, hs] += dS^T Q: A(j, i) = ds_ij, B(i, c) = q_i[c]
            matmul_units(dk + (size_t)b * Tk * kv_stride + h * hs, kv_stride, 1, dsh, 1, Tk, qh, q_stride, 1, NULL, 0,
                         Tk, Tq, hs, 0, tk_tiles * hs_panels);
        }
    }
}

// Input embeddings with positions: row t of sample b is
//   (t < Tp ? prefix[b, t] : wte[tokens[b, t - Tp]]) + wpe[t],   t < Tp + Tt.
// One function serves every part: patches + positions (ViT, DiT: prefix = projected
// patches), token ids (text encoder, GPT), z (text encoder in stages 1 and 2), the GPT's
// prefix + tokens, and the adapter's learned queries (prefix NULL: positions only).
void embed_forward(float* out, const float* prefix, const int* tokens, const float* wte,
                   const float* wpe, int B, int Tp, int Tt, int C) {
    int T = Tp + Tt;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float* o = out + ((size_t)b * T + t) * C;
            const float* pos = wpe + (size_t)t * C;
            const float* in = t < Tp ? (prefix ? prefix + ((size_t)b * Tp + t) * C : NULL)
                                     : wte + (size_t)tokens[b * Tt + t - Tp] * C;
            for (int c = 0; c < C; c++) { o[c] = (in ? in[c] : 0.0f) + pos[c]; }
        }
    }
}
void embed_backward(float* dprefix, float* dwte, float* dwpe, const float* dout, const int* tokens,
                    int B, int Tp, int Tt, int C) {
    int T = Tp + Tt;
    // serial over rows: several rows may add into the same wte / wpe row
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float* d = dout + ((size_t)b * T + t) * C;
            float* din = t < Tp ? (dprefix ? dprefix + ((size_t)b * Tp + t) * C : NULL)
                                : (dwte ? dwte + (size_t)tokens[b * Tt + t - Tp] * C : NULL);
            float* dpos = dwpe ? dwpe + (size_t)t * C : NULL;
            for (int c = 0; c < C; c++) {
                if (din) { din[c] += d[c]; }
                if (dpos) { dpos[c] += d[c]; }
            }
        }
    }
}

// Sinusoidal timestep features [B, F]: [cos(t phi_i), sin(t phi_i)], phi_i = 10000^(-i/(F/2)).
// Computed in double: t phi reaches ~1000 radians, where a float argument would already be
// off by ~1e-4.
void timestep_features(float* out, const int* t, int B, int F) {
    int half = F / 2;
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < half; i++) {
            double arg = t[b] * exp(-log(10000.0) * i / half);
            out[b * F + i] = (float)cos(arg);
            out[b * F + half + i] = (float)sin(arg);
        }
    }
}

// Fixed 2D sin-cos positions [G*G, C] (MAE/DiT style): with k = C/4, w_i = 10000^(-i/k),
// patch (r, q) gets [sin(q w), cos(q w), sin(r w), cos(r w)]: column first, then row.
void sincos_2d_positions(float* out, int G, int C) {
    int k = C / 4;
    for (int r = 0; r < G; r++) {
        for (int q = 0; q < G; q++) {
            float* o = out + ((size_t)r * G + q) * C;
            for (int i = 0; i < k; i++) {
                double w = pow(10000.0, -(double)i / k);
                o[i] = (float)sin(q * w);
                o[k + i] = (float)cos(q * w);
                o[2 * k + i] = (float)sin(r * w);
                o[3 * k + i] = (float)cos(r * w);
            }
        }
    }
}

// Softmax cross-entropy over V classes for N rows; rows whose target is PAD are ignored.
// Keeps the probabilities [N, V]; returns the loss summed over the counted rows, divided by
// `count`: the counted rows of the whole batch, over every rank's rows (count_targets)
float crossentropy_forward(float* probs, const float* logits, const int* targets, int N, int V, int count) {
    double loss = 0.0;
    for (int n = 0; n < N; n++) {
        const float* z = logits + (size_t)n * V;
        float* p = probs + (size_t)n * V;
        float maxv = -FLT_MAX;
        for (int i = 0; i < V; i++) { if (z[i] > maxv) { maxv = z[i]; } }
        float sum = 0.0f;
        for (int i = 0; i < V; i++) { p[i] = exp_vec(z[i] - maxv); sum += p[i]; }
        for (int i = 0; i < V; i++) { p[i] /= sum; }
        if (targets[n] != TOKEN_PAD) {
            // -log p[target] = log(sum) - (z[target] - max), without taking the log of a tiny p
            loss += logf(sum) - (z[targets[n]] - maxv);
        }
    }
    return count ? (float)(loss / count) : 0.0f;
}
// d(mean loss)/dz = (p - onehot(target)) / count on the counted rows
void crossentropy_backward(float* dlogits, const float* probs, const int* targets, int N, int V, int count) {
    if (count == 0) { return; }
    float inv = 1.0f / count;
    for (int n = 0; n < N; n++) {
        if (targets[n] == TOKEN_PAD) { continue; }
        const float* p = probs + (size_t)n * V;
        float* dz = dlogits + (size_t)n * V;
        for (int i = 0; i < V; i++) { dz[i] += (p[i] - (i == targets[n] ? 1.0f : 0.0f)) * inv; }
    }
}

// squared error over N elements divided by `total`, the elements of the whole batch over
// every rank's rows (N with one rank: the mean), and its gradient 2 (pred - target) / total
float mse_forward(const float* pred, const float* target, size_t N, size_t total) {
    double sum = 0.0;
    for (size_t i = 0; i < N; i++) { double d = pred[i] - target[i]; sum += d * d; }
    return (float)(sum / total);
}
void mse_backward(float* dpred, const float* pred, const float* target, size_t N, size_t total) {
    float s = 2.0f / total;
    for (size_t i = 0; i < N; i++) { dpred[i] += s * (pred[i] - target[i]); }
}

// ----------------------------------------------------------------------------
// sub-layers and blocks: how the layers above make self-attention, cross-attention, the MLP,
// and the three kinds of block. Each *_backward finds the gradient of its output in the output
// slot of its gradient-activation struct (d->out, d->res2, ...), filled by the caller.

// self-attention on normalized input xn [B,T,C] -> a->out [B,T,C]
void self_attention_forward(SelfAttnA* a, const float* xn, const SelfAttnP* p, int B, int T, int C, int NH, int causal) {
    matmul_forward(a->qkv, xn, p->qkv.w, p->qkv.b, B * T, C, 3 * C);
    attention_forward(a->atty, a->att, a->qkv, 3 * C, a->qkv + C, a->qkv + 2 * C, 3 * C, B, T, T, C, NH, causal);
    matmul_forward(a->out, a->atty, p->proj.w, p->proj.b, B * T, C, C);
}
void self_attention_backward(float* dxn, SelfAttnA* d, const SelfAttnP* g, const SelfAttnA* a,
                             const float* xn, const SelfAttnP* p, int B, int T, int C, int NH, int causal) {
    matmul_backward(d->atty, g->proj.w, g->proj.b, d->out, a->atty, p->proj.w, B * T, C, C);
    attention_backward(d->qkv, d->qkv + C, d->qkv + 2 * C, d->att, d->atty, a->att,
                       a->qkv, 3 * C, a->qkv + C, a->qkv + 2 * C, 3 * C, B, T, T, C, NH, causal);
    matmul_backward(dxn, g->qkv.w, g->qkv.b, d->qkv, xn, p->qkv.w, B * T, C, 3 * C);
}

// cross-attention from xn [B,T,C] to a context ctx [B,S,Cc] -> a->out [B,T,C]
void cross_attention_forward(CrossAttnA* a, const float* xn, const float* ctx, const CrossAttnP* p,
                             int B, int T, int S, int C, int Cc, int NH) {
    matmul_forward(a->q, xn, p->q.w, p->q.b, B * T, C, C);
    matmul_forward(a->kv, ctx, p->kv.w, p->kv.b, B * S, Cc, 2 * C);
    attention_forward(a->atty, a->att, a->q, C, a->kv, a->kv + C, 2 * C, B, T, S, C, NH, 0);
    matmul_forward(a->out, a->atty, p->proj.w, p->proj.b, B * T, C, C);
}
void cross_attention_backward(float* dxn, float* dctx, CrossAttnA* d, const CrossAttnP* g, const CrossAttnA* a,
                              const float* xn, const float* ctx, const CrossAttnP* p,
                              int B, int T, int S, int C, int Cc, int NH) {
    matmul_backward(d->atty, g->proj.w, g->proj.b, d->out, a->atty, p->proj.w, B * T, C, C);
    attention_backward(d->q, d->kv, d->kv + C, d->att, d->atty, a->att,
                       a->q, C, a->kv, a->kv + C, 2 * C, B, T, S, C, NH, 0);
    matmul_backward(dctx, g->kv.w, g->kv.b, d->kv, ctx, p->kv.w, B * S, Cc, 2 * C);
    matmul_backward(dxn, g->q.w, g->q.b, d->q, xn, p->q.w, B * T, C, C);
}

// MLP: Linear(C->4C) -> GELU -> Linear(4C->C) on N rows
void mlp_forward(MLPA* a, const float* xn, const MLPP* p, int N, int C) {
    matmul_forward(a->fc, xn, p->fc.w, p->fc.b, N, C, 4 * C);
    gelu_forward(a->gelu, a->fc, (size_t)N * 4 * C);
    matmul_forward(a->out, a->gelu, p->proj.w, p->proj.b, N, 4 * C, C);
}
void mlp_backward(float* dxn, MLPA* d, const MLPP* g, const MLPA* a, const float* xn, const MLPP* p, int N, int C) {
    matmul_backward(d->gelu, g->proj.w, g->proj.b, d->out, a->gelu, p->proj.w, N, 4 * C, C);
    gelu_backward(d->fc, a->fc, d->gelu, (size_t)N * 4 * C);
    matmul_backward(dxn, g->fc.w, g->fc.b, d->fc, xn, p->fc.w, N, C, 4 * C);
}

void norm_forward(NormA* a, const float* x, const NormP* p, int N, int C) {
    layernorm_forward(a->out, a->mean, a->rstd, x, p ? p->w : NULL, p ? p->b : NULL, N, C);
}
void norm_backward(float* dx, NormA* d, const NormP* g, const NormA* a, const float* x, const NormP* p, int N, int C) {
    layernorm_backward(dx, g ? g->w : NULL, g ? g->b : NULL, d->out, x, p ? p->w : NULL, a->mean, a->rstd, N, C);
}

// standard pre-LN block: x + Attn(LN1(x)), then + MLP(LN2(.)); output a->res2 [B,T,C]
void block_forward(BlockA* a, const float* x, const BlockP* p, int B, int T, int C, int NH, int causal) {
    int N = B * T;
    norm_forward(&a->ln1, x, &p->ln1, N, C);
    self_attention_forward(&a->attn, a->ln1.out, &p->attn, B, T, C, NH, causal);
    residual_forward(a->res1, x, a->attn.out, (size_t)N * C);
    norm_forward(&a->ln2, a->res1, &p->ln2, N, C);
    mlp_forward(&a->mlp, a->ln2.out, &p->mlp, N, C);
    residual_forward(a->res2, a->res1, a->mlp.out, (size_t)N * C);
}
void block_backward(float* dx, BlockA* d, const BlockP* g, const BlockA* a, const float* x, const BlockP* p,
                    int B, int T, int C, int NH, int causal) {
    int N = B * T;
    residual_backward(d->res1, d->mlp.out, d->res2, (size_t)N * C);
    mlp_backward(d->ln2.out, &d->mlp, &g->mlp, &a->mlp, a->ln2.out, &p->mlp, N, C);
    norm_backward(d->res1, &d->ln2, &g->ln2, &a->ln2, a->res1, &p->ln2, N, C);
    residual_backward(dx, d->attn.out, d->res1, (size_t)N * C);
    self_attention_backward(d->ln1.out, &d->attn, &g->attn, &a->attn, a->ln1.out, &p->attn, B, T, C, NH, causal);
    norm_backward(dx, &d->ln1, &g->ln1, &a->ln1, x, &p->ln1, N, C);
}

// a stack of L standard blocks on x0 [B,T,C]; returns the last block's output
const float* blocks_forward(BlockA* a, const float* x0, const BlockP* p, int L, int B, int T, int C, int NH, int causal) {
    const float* x = x0;
    for (int l = 0; l < L; l++) {
        block_forward(&a[l], x, &p[l], B, T, C, NH, causal);
        x = a[l].res2;
    }
    return x;
}
// the gradient of the stack's output is in d[L-1].res2 (or dx0 when L == 0); adds into dx0
void blocks_backward(float* dx0, BlockA* d, const BlockP* g, const BlockA* a, const float* x0, const BlockP* p,
                     int L, int B, int T, int C, int NH, int causal) {
    for (int l = L - 1; l >= 0; l--) {
        float* dx = l ? d[l - 1].res2 : dx0;
        const float* x = l ? a[l - 1].res2 : x0;
        block_backward(dx, &d[l], &g[l], &a[l], x, &p[l], B, T, C, NH, causal);
    }
}

// adapter block on the queries x [B,Nq,C], attending to the visual tokens vis [B,Np,C]
void adapter_block_forward(AdapterBlockA* a, const float* x, const float* vis, const AdapterBlockP* p,
                           int B, int T, int S, int C, int NH) {
    int N = B * T;
    norm_forward(&a->ln1, x, &p->ln1, N, C);
    self_attention_forward(&a->attn, a->ln1.out, &p->attn, B, T, C, NH, 1);
    residual_forward(a->res1, x, a->attn.out, (size_t)N * C);
    norm_forward(&a->ln2, a->res1, &p->ln2, N, C);
    cross_attention_forward(&a->cross, a->ln2.out, vis, &p->cross, B, T, S, C, C, NH);
    residual_forward(a->res2, a->res1, a->cross.out, (size_t)N * C);
    norm_forward(&a->ln3, a->res2, &p->ln3, N, C);
    mlp_forward(&a->mlp, a->ln3.out, &p->mlp, N, C);
    residual_forward(a->res3, a->res2, a->mlp.out, (size_t)N * C);
}
void adapter_block_backward(float* dx, float* dvis, AdapterBlockA* d, const AdapterBlockP* g, const AdapterBlockA* a,
                            const float* x, const float* vis, const AdapterBlockP* p, int B, int T, int S, int C, int NH) {
    int N = B * T;
    residual_backward(d->res2, d->mlp.out, d->res3, (size_t)N * C);
    mlp_backward(d->ln3.out, &d->mlp, &g->mlp, &a->mlp, a->ln3.out, &p->mlp, N, C);
    norm_backward(d->res2, &d->ln3, &g->ln3, &a->ln3, a->res2, &p->ln3, N, C);
    residual_backward(d->res1, d->cross.out, d->res2, (size_t)N * C);
    cross_attention_backward(d->ln2.out, dvis, &d->cross, &g->cross, &a->cross, a->ln2.out, vis, &p->cross,
                             B, T, S, C, C, NH);
    norm_backward(d->res1, &d->ln2, &g->ln2, &a->ln2, a->res1, &p->ln2, N, C);
    residual_backward(dx, d->attn.out, d->res1, (size_t)N * C);
    self_attention_backward(d->ln1.out, &d->attn, &g->attn, &a->attn, a->ln1.out, &p->attn, B, T, C, NH, 1);
    norm_backward(dx, &d->ln1, &g->ln1, &a->ln1, x, &p->ln1, N, C);
}

// DiT block on patch tokens x [B,Np,C], conditioned on s = SiLU(temb) [B,C] through adaLN-Zero
// and on the context ctx [B,S,Cc] through cross-attention
void dit_block_forward(DiTBlockA* a, const float* x, const float* s, const float* ctx, const DiTBlockP* p,
                       int B, int T, int S, int C, int Cc, int NH) {
    int N = B * T, M = 6 * C;
    const float* mod = a->mod; // shift1, scale1, gate1, shift2, scale2, gate2 at offsets 0..5 C
    matmul_forward(a->mod, s, p->ada.w, p->ada.b, B, C, M);
    norm_forward(&a->ln1, x, NULL, N, C);
    modulate_forward(a->mod1, a->ln1.out, mod, mod + C, M, B, T, C);
    self_attention_forward(&a->attn, a->mod1, &p->attn, B, T, C, NH, 0);
    gated_residual_forward(a->res1, x, a->attn.out, mod + 2 * C, M, B, T, C);
    norm_forward(&a->ln_c, a->res1, &p->ln_c, N, C);
    cross_attention_forward(&a->cross, a->ln_c.out, ctx, &p->cross, B, T, S, C, Cc, NH);
    residual_forward(a->res2, a->res1, a->cross.out, (size_t)N * C);
    norm_forward(&a->ln2, a->res2, NULL, N, C);
    modulate_forward(a->mod2, a->ln2.out, mod + 3 * C, mod + 4 * C, M, B, T, C);
    mlp_forward(&a->mlp, a->mod2, &p->mlp, N, C);
    gated_residual_forward(a->res3, a->res2, a->mlp.out, mod + 5 * C, M, B, T, C);
}
void dit_block_backward(float* dx, float* ds, float* dctx, DiTBlockA* d, const DiTBlockP* g, const DiTBlockA* a,
                        const float* x, const float* s, const float* ctx, const DiTBlockP* p,
                        int B, int T, int S, int C, int Cc, int NH) {
    int N = B * T, M = 6 * C;
    const float* mod = a->mod;
    float* dmod = d->mod;
    gated_residual_backward(d->res2, d->mlp.out, dmod + 5 * C, d->res3, a->mlp.out, mod + 5 * C, M, B, T, C);
    mlp_backward(d->mod2, &d->mlp, &g->mlp, &a->mlp, a->mod2, &p->mlp, N, C);
    modulate_backward(d->ln2.out, dmod + 3 * C, dmod + 4 * C, d->mod2, a->ln2.out, mod + 4 * C, M, B, T, C);
    norm_backward(d->res2, &d->ln2, NULL, &a->ln2, a->res2, NULL, N, C);
    residual_backward(d->res1, d->cross.out, d->res2, (size_t)N * C);
    cross_attention_backward(d->ln_c.out, dctx, &d->cross, &g->cross, &a->cross, a->ln_c.out, ctx, &p->cross,
                             B, T, S, C, Cc, NH);
    norm_backward(d->res1, &d->ln_c, &g->ln_c, &a->ln_c, a->res1, &p->ln_c, N, C);
    gated_residual_backward(dx, d->attn.out, dmod + 2 * C, d->res1, a->attn.out, mod + 2 * C, M, B, T, C);
    self_attention_backward(d->mod1, &d->attn, &g->attn, &a->attn, a->mod1, &p->attn, B, T, C, NH, 0);
    modulate_backward(d->ln1.out, dmod, dmod + C, d->mod1, a->ln1.out, mod + C, M, B, T, C);
    norm_backward(dx, &d->ln1, NULL, &a->ln1, x, NULL, N, C);
    matmul_backward(ds, g->ada.w, g->ada.b, dmod, s, p->ada.w, B, C, M);
}

// ----------------------------------------------------------------------------
// the five parts (doc/model.md has their shapes, doc/layers.md the math of each backward)

// vision encoder: img [B,H,W,3] -> visual tokens a->ln_f.out [B,Np,d_v]
void vit_forward(ViTA* a, const float* img, const ViTP* p, const Config* c, int B) {
    int Np = config_num_patches(c), PD = config_patch_dim(c), C = c->d_v;
    patch_copy(a->patches, (float*)img, B, c->img_size, c->patch, 1);
    matmul_forward(a->patch_out, a->patches, p->patch.w, p->patch.b, B * Np, PD, C);
    embed_forward(a->x0, a->patch_out, NULL, NULL, p->pos, B, Np, 0, C);
    const float* x = blocks_forward(a->blocks, a->x0, p->blocks, c->L_v, B, Np, C, c->nh_v, 0);
    norm_forward(&a->ln_f, x, &p->ln_f, B * Np, C);
}
// gradient of the visual tokens in d->ln_f.out; the image gets none
void vit_backward(ViTA* d, const ViTP* g, const ViTA* a, const ViTP* p, const Config* c, int B) {
    int Np = config_num_patches(c), PD = config_patch_dim(c), C = c->d_v, L = c->L_v;
    float* dx = L ? d->blocks[L - 1].res2 : d->x0;
    const float* x = L ? a->blocks[L - 1].res2 : a->x0;
    norm_backward(dx, &d->ln_f, &g->ln_f, &a->ln_f, x, &p->ln_f, B * Np, C);
    blocks_backward(d->x0, d->blocks, g->blocks, a->blocks, a->x0, p->blocks, L, B, Np, C, c->nh_v, 0);
    embed_backward(d->patch_out, NULL, g->pos, d->x0, NULL, B, Np, 0, C);
    matmul_backward(NULL, g->patch.w, g->patch.b, d->patch_out, a->patches, p->patch.w, B * Np, PD, C);
}

// adapter: visual tokens vis [B,Np,d_v] -> z = a->z [B,n_z,d_t], one row per learned query
void adapter_forward(AdapterA* a, const float* vis, const AdapterP* p, const Config* c, int B) {
    int Np = config_num_patches(c), Nz = c->n_z, C = c->d_v;
    embed_forward(a->x0, NULL, NULL, NULL, p->queries, B, Nz, 0, C); // the same queries for every image
    const float* x = a->x0;
    for (int l = 0; l < c->L_a; l++) {
        adapter_block_forward(&a->blocks[l], x, vis, &p->blocks[l], B, Nz, Np, C, c->nh_a);
        x = a->blocks[l].res3;
    }
    norm_forward(&a->ln_f, x, &p->ln_f, B * Nz, C);
    matmul_forward(a->h1, a->ln_f.out, p->out1.w, p->out1.b, B * Nz, C, c->d_t);
    gelu_forward(a->h1_gelu, a->h1, (size_t)B * Nz * c->d_t);
    matmul_forward(a->z, a->h1_gelu, p->out2.w, p->out2.b, B * Nz, c->d_t, c->d_t);
}
// gradient of z in d->z; adds the visual tokens' gradient into dvis (NULL: not needed)
void adapter_backward(float* dvis, AdapterA* d, const AdapterP* g, const AdapterA* a, const float* vis,
                      const AdapterP* p, const Config* c, int B) {
    int Np = config_num_patches(c), Nz = c->n_z, C = c->d_v, L = c->L_a;
    matmul_backward(d->h1_gelu, g->out2.w, g->out2.b, d->z, a->h1_gelu, p->out2.w, B * Nz, c->d_t, c->d_t);
    gelu_backward(d->h1, a->h1, d->h1_gelu, (size_t)B * Nz * c->d_t);
    matmul_backward(d->ln_f.out, g->out1.w, g->out1.b, d->h1, a->ln_f.out, p->out1.w, B * Nz, C, c->d_t);
    float* dx = L ? d->blocks[L - 1].res3 : d->x0;
    norm_backward(dx, &d->ln_f, &g->ln_f, &a->ln_f, L ? a->blocks[L - 1].res3 : a->x0, &p->ln_f, B * Nz, C);
    for (int l = L - 1; l >= 0; l--) {
        adapter_block_backward(l ? d->blocks[l - 1].res3 : d->x0, dvis, &d->blocks[l], &g->blocks[l], &a->blocks[l],
                               l ? a->blocks[l - 1].res3 : a->x0, vis, &p->blocks[l], B, Nz, Np, C, c->nh_a);
    }
    embed_backward(NULL, NULL, g->queries, d->x0, NULL, B, Nz, 0, C);
}

// text encoder: token ids tokens [B,N_q] (z NULL), or z [B,n_z,d_t] in the first n_z positions
// and tokens [B,N_q-n_z] in the rest (the PAD token, as a caption of n_z tokens is padded)
// -> context c = a->ln_f.out [B,N_q,d_t]
void textenc_forward(TextEncA* a, const int* tokens, const float* z, const TextEncP* p, const Config* c, int B) {
    int Nq = c->n_q, Nz = z ? c->n_z : 0, C = c->d_t;
    embed_forward(a->x0, z, tokens, p->wte, p->wpe, B, Nz, Nq - Nz, C);
    const float* x = blocks_forward(a->blocks, a->x0, p->blocks, c->L_t, B, Nq, C, c->nh_t, 1);
    norm_forward(&a->ln_f, x, &p->ln_f, B * Nq, C);
}
// gradient of c in d->ln_f.out; adds into dz when the input was z (dz not NULL: the z path,
// whose tokens are the PAD rows after z)
void textenc_backward(float* dz, TextEncA* d, const TextEncP* g, const TextEncA* a, const int* tokens,
                      const TextEncP* p, const Config* c, int B) {
    int Nq = c->n_q, Nz = dz ? c->n_z : 0, C = c->d_t, L = c->L_t;
    float* dx = L ? d->blocks[L - 1].res2 : d->x0;
    norm_backward(dx, &d->ln_f, &g->ln_f, &a->ln_f, L ? a->blocks[L - 1].res2 : a->x0, &p->ln_f, B * Nq, C);
    blocks_backward(d->x0, d->blocks, g->blocks, a->blocks, a->x0, p->blocks, L, B, Nq, C, c->nh_t, 1);
    embed_backward(dz, g->wte, g->wpe, d->x0, tokens, B, Nz, Nq - Nz, C);
}

// the timestep conditioning s = SiLU(temb(t)) [B, d_d] that feeds every adaLN: sinusoidal
// features -> Linear -> SiLU -> Linear -> SiLU
void dit_conditioning(DiTA* a, const int* t, const DiTP* p, const Config* c, int B) {
    int C = c->d_d;
    timestep_features(a->tfreq, t, B, c->d_freq);
    matmul_forward(a->t1, a->tfreq, p->t_mlp1.w, p->t_mlp1.b, B, c->d_freq, C);
    silu_forward(a->t1_silu, a->t1, (size_t)B * C);
    matmul_forward(a->temb, a->t1_silu, p->t_mlp2.w, p->t_mlp2.b, B, C, C);
    silu_forward(a->s, a->temb, (size_t)B * C);
}
// DiT: noisy image xt [B,H,W,3], timesteps t [B], context ctx [B,N_q,d_t] -> a->out [B,H,W,3]
// (the prediction of eps, or of v). pos2d is the fixed sin-cos table [Np, d_d].
void dit_forward(DiTA* a, const float* xt, const int* t, const float* ctx, const DiTP* p, const float* pos2d,
                 const Config* c, int B) {
    int Np = config_num_patches(c), PD = config_patch_dim(c), C = c->d_d;
    patch_copy(a->patches, (float*)xt, B, c->img_size, c->patch, 1);
    matmul_forward(a->patch_out, a->patches, p->patch.w, p->patch.b, B * Np, PD, C);
    embed_forward(a->x0, a->patch_out, NULL, NULL, pos2d, B, Np, 0, C);
    dit_conditioning(a, t, p, c, B);
    const float* x = a->x0;
    for (int l = 0; l < c->L_d; l++) {
        dit_block_forward(&a->blocks[l], x, a->s, ctx, &p->blocks[l], B, Np, c->n_q, C, c->d_t, c->nh_d);
        x = a->blocks[l].res3;
    }
    // final layer: modulated LN (shift, scale) -> Linear -> unpatchify
    matmul_forward(a->fmod, a->s, p->final_ada.w, p->final_ada.b, B, C, 2 * C);
    norm_forward(&a->ln_f, x, NULL, B * Np, C);
    modulate_forward(a->fmodded, a->ln_f.out, a->fmod, a->fmod + C, 2 * C, B, Np, C);
    matmul_forward(a->fout, a->fmodded, p->final.w, p->final.b, B * Np, C, PD);
    patch_copy(a->fout, a->out, B, c->img_size, c->patch, 0);
}
// gradient of the output in d->out; adds the context's gradient into dctx (NULL: not needed)
void dit_backward(float* dctx, DiTA* d, const DiTP* g, const DiTA* a, const float* ctx, const DiTP* p,
                  const Config* c, int B) {
    int Np = config_num_patches(c), PD = config_patch_dim(c), C = c->d_d, L = c->L_d;
    // unpatchify's backward is patchify; it assigns (not +=): d->fout has no other contributor
    patch_copy(d->fout, d->out, B, c->img_size, c->patch, 1);
    matmul_backward(d->fmodded, g->final.w, g->final.b, d->fout, a->fmodded, p->final.w, B * Np, C, PD);
    modulate_backward(d->ln_f.out, d->fmod, d->fmod + C, d->fmodded, a->ln_f.out, a->fmod + C, 2 * C, B, Np, C);
    float* dx = L ? d->blocks[L - 1].res3 : d->x0;
    norm_backward(dx, &d->ln_f, NULL, &a->ln_f, L ? a->blocks[L - 1].res3 : a->x0, NULL, B * Np, C);
    matmul_backward(d->s, g->final_ada.w, g->final_ada.b, d->fmod, a->s, p->final_ada.w, B, C, 2 * C);
    for (int l = L - 1; l >= 0; l--) {
        dit_block_backward(l ? d->blocks[l - 1].res3 : d->x0, d->s, dctx, &d->blocks[l], &g->blocks[l], &a->blocks[l],
                           l ? a->blocks[l - 1].res3 : a->x0, a->s, ctx, &p->blocks[l], B, Np, c->n_q, C, c->d_t, c->nh_d);
    }
    silu_backward(d->temb, a->temb, d->s, (size_t)B * C);
    matmul_backward(d->t1_silu, g->t_mlp2.w, g->t_mlp2.b, d->temb, a->t1_silu, p->t_mlp2.w, B, C, C);
    silu_backward(d->t1, a->t1, d->t1_silu, (size_t)B * C);
    matmul_backward(NULL, g->t_mlp1.w, g->t_mlp1.b, d->t1, a->tfreq, p->t_mlp1.w, B, c->d_freq, C);
    embed_backward(d->patch_out, NULL, NULL, d->x0, NULL, B, Np, 0, C);
    matmul_backward(NULL, g->patch.w, g->patch.b, d->patch_out, a->patches, p->patch.w, B * Np, PD, C);
}

// caption decoder: context ctx [B,N_q,d_t] (NULL: no prefix, language-model pretraining) and
// caption tokens [B,T_c] -> logits a->logits [B,T_c,V] of the caption rows (row j predicts token j+1)
void capdec_forward(CapDecA* a, const float* ctx, const int* tokens, const CapDecP* p, const Config* c, int B) {
    int Nq = c->n_q, Tc = c->cap_len, C = c->d_g, V = c->vocab;
    int Tp = ctx ? Nq : 0, T = Tp + Tc;
    if (ctx) {
        matmul_forward(a->p1, ctx, p->prefix1.w, p->prefix1.b, B * Nq, c->d_t, C);
        gelu_forward(a->p1_gelu, a->p1, (size_t)B * Nq * C);
        matmul_forward(a->prefix, a->p1_gelu, p->prefix2.w, p->prefix2.b, B * Nq, C, C);
    }
    // caption token j always sits at position N_q + j, with or without the prefix
    embed_forward(a->x0, a->prefix, tokens, p->wte, p->wpe + (size_t)(Nq - Tp) * C, B, Tp, Tc, C);
    const float* x = blocks_forward(a->blocks, a->x0, p->blocks, c->L_g, B, T, C, c->nh_g, 1);
    norm_forward(&a->ln_f, x, &p->ln_f, B * T, C);
    // tied LM head on the caption rows: all rows at once without a prefix, else sample by sample
    if (Tp == 0) { matmul_forward(a->logits, a->ln_f.out, p->wte, NULL, B * Tc, C, V); }
    for (int b = 0; b < B && Tp > 0; b++) {
        matmul_forward(a->logits + (size_t)b * Tc * V, a->ln_f.out + ((size_t)b * T + Tp) * C, p->wte, NULL, Tc, C, V);
    }
}
// gradient of the logits in d->logits; adds the context's gradient into dctx (NULL: not needed)
void capdec_backward(float* dctx, CapDecA* d, const CapDecP* g, const CapDecA* a, const float* ctx, const int* tokens,
                     const CapDecP* p, const Config* c, int B) {
    int Nq = c->n_q, Tc = c->cap_len, C = c->d_g, V = c->vocab, L = c->L_g;
    int Tp = ctx ? Nq : 0, T = Tp + Tc;
    if (Tp == 0) { matmul_backward(d->ln_f.out, g->wte, NULL, d->logits, a->ln_f.out, p->wte, B * Tc, C, V); }
    for (int b = 0; b < B && Tp > 0; b++) {
        matmul_backward(d->ln_f.out + ((size_t)b * T + Tp) * C, g->wte, NULL, d->logits + (size_t)b * Tc * V,
                        a->ln_f.out + ((size_t)b * T + Tp) * C, p->wte, Tc, C, V);
    }
    float* dx = L ? d->blocks[L - 1].res2 : d->x0;
    norm_backward(dx, &d->ln_f, &g->ln_f, &a->ln_f, L ? a->blocks[L - 1].res2 : a->x0, &p->ln_f, B * T, C);
    blocks_backward(d->x0, d->blocks, g->blocks, a->blocks, a->x0, p->blocks, L, B, T, C, c->nh_g, 1);
    embed_backward(d->prefix, g->wte, g->wpe ? g->wpe + (size_t)(Nq - Tp) * C : NULL, d->x0, tokens, B, Tp, Tc, C);
    if (ctx) {
        matmul_backward(d->p1_gelu, g->prefix2.w, g->prefix2.b, d->prefix, a->p1_gelu, p->prefix2.w, B * Nq, C, C);
        gelu_backward(d->p1, a->p1, d->p1_gelu, (size_t)B * Nq * C);
        matmul_backward(dctx, g->prefix1.w, g->prefix1.b, d->p1, ctx, p->prefix1.w, B * Nq, c->d_t, C);
    }
}


// ----------------------------------------------------------------------------
// the model: all parameters, gradients, AdamW moments and activations

#define NORM_CHUNK 4096 // floats per partial sum of the gradient norm (fixed: deterministic)

struct Model {
    Config config;
    int B;                    // batch size the activations are sized for
    size_t num_params;
    float* params;            // [num_params] every part, in checkpoint order
    float* grads;             // [num_params]
    float *m, *v;             // AdamW moments [shard_len] of the parameters shard_start ..
    size_t shard_start, shard_len; // all of them, or under ZeRO-1 this rank's chunk (model_shard_optimizer)
    int adam_step;
    float grad_norm;          // the gradient norm of the last training step, before clipping
    int z_clipped;            // images whose gradient at z the last stage-1 step scaled down (clip_z)
    float* z_norms;           // [B * ranks] scratch: each image's gradient norm at z, over the global batch (clip_rows_to_median)
    float* ema;               // [num_params] moving average of the weights (vlv_ema_update)
    TensorInfo* tensors;      // name, shape, offset and group of each parameter tensor
    int num_tensors;
    ParamViews p, g, frozen;  // views into params, into grads, and all-NULL (no gradients)
    double* norm_partials;    // [num_params / NORM_CHUNK + num_tensors] sums of squares per chunk (vlv_update)
    size_t num_acts;
    size_t act_part_start[NUM_ACT_PARTS + 1]; // where each part's activations start (ACTS_VIT...)
    float *acts_memory, *dacts_memory;
    ActViews a, d;            // activations and their gradients
    // diffusion constants and scratch
    float* alphas_cumprod;    // [n_timesteps]
    float* pos2d;             // [Np, d_d] the DiT's fixed positions
    float *xt, *target;       // [B,H,W,3] noisy input and regression target
    float* guided;            // [B,H,W,3] guided model output (sampling)
    float *ctx_cond, *ctx_empty; // [B,N_q,d_t] contexts for guided sampling
    int* targets;             // [B,T_c] next-token targets (PAD: ignored)
    int* tokens;              // [B,N_q] token scratch (the empty caption)
    int* pad_tokens;          // [B,N_q-n_z] the PAD token: the text encoder's positions after z
    int* timesteps;           // [B] timestep scratch (sampling)
    float loss;               // of the last forward
    int loss_count;           // tokens the last cross-entropy counted
};

static size_t image_numel(const Model* m) { return (size_t)m->B * m->config.img_size * m->config.img_size * 3; }

void model_build(Model* m, const Config* c, int B) {
    const char* problem = config_problem(c);
    if (!problem) { problem = config_batch_problem(c, B); }
    if (problem) fail("bad model config: %s", problem);
    memset(m, 0, sizeof *m);
    m->config = *c;
    m->B = B;
    m->num_params = count_params(c, &m->tensors, &m->num_tensors);
    if (m->num_params > 0x7fffffff) fail("the config has %zu parameters; a checkpoint holds at most 2^31 - 1", m->num_params);
    m->params = (float*)mallocCheck(m->num_params * sizeof(float));
    m->grads = (float*)callocCheck(m->num_params, sizeof(float));
    m->norm_partials = (double*)mallocCheck((m->num_params / NORM_CHUNK + m->num_tensors) * sizeof(double));
    m->z_norms = (float*)mallocCheck((size_t)B * dist_ranks() * sizeof(float));
    m->m = (float*)callocCheck(m->num_params, sizeof(float));
    m->v = (float*)callocCheck(m->num_params, sizeof(float));
    m->shard_start = 0;
    m->shard_len = m->num_params;
    m->ema = (float*)callocCheck(m->num_params, sizeof(float));
    Arena pa = { .base = m->params }, ga = { .base = m->grads }, na = { .base = NULL };
    params_layout(&m->p, &pa, c);
    params_layout(&m->g, &ga, c);
    params_layout(&m->frozen, &na, c);
    // activations: count, allocate, then lay out the activations and their gradients
    Arena count = { .base = NULL };
    ActViews tmp;
    acts_layout(&tmp, &count, c, B);
    acts_views_free(&tmp);
    m->num_acts = count.used;
    memcpy(m->act_part_start, count.part_start, sizeof m->act_part_start);
    m->acts_memory = (float*)callocCheck(m->num_acts, sizeof(float));
    m->dacts_memory = (float*)callocCheck(m->num_acts, sizeof(float));
    Arena aa = { .base = m->acts_memory }, da = { .base = m->dacts_memory };
    acts_layout(&m->a, &aa, c, B);
    acts_layout(&m->d, &da, c, B);
    // diffusion schedule: sqrt(beta) linear from sqrt(0.00085) to sqrt(0.012), in double
    m->alphas_cumprod = (float*)mallocCheck(c->n_timesteps * sizeof(float));
    double prod = 1.0, lo = sqrt(0.00085), hi = sqrt(0.012);
    for (int t = 0; t < c->n_timesteps; t++) {
        double sb = c->n_timesteps > 1 ? lo + (hi - lo) * t / (c->n_timesteps - 1) : lo;
        prod *= 1.0 - sb * sb;
        m->alphas_cumprod[t] = (float)prod;
    }
    m->pos2d = (float*)mallocCheck((size_t)config_num_patches(c) * c->d_d * sizeof(float));
    sincos_2d_positions(m->pos2d, c->img_size / c->patch, c->d_d);
    size_t img = image_numel(m), ctx = (size_t)B * c->n_q * c->d_t;
    m->xt = (float*)mallocCheck(img * sizeof(float));
    m->target = (float*)mallocCheck(img * sizeof(float));
    m->guided = (float*)mallocCheck(img * sizeof(float));
    m->ctx_cond = (float*)mallocCheck(ctx * sizeof(float));
    m->ctx_empty = (float*)mallocCheck(ctx * sizeof(float));
    m->targets = (int*)mallocCheck((size_t)B * c->cap_len * sizeof(int));
    m->tokens = (int*)mallocCheck((size_t)B * c->n_q * sizeof(int));
    m->pad_tokens = (int*)mallocCheck(((size_t)B * (c->n_q - c->n_z) + 1) * sizeof(int));
    for (size_t i = 0; i < (size_t)B * (c->n_q - c->n_z); i++) { m->pad_tokens[i] = TOKEN_PAD; }
    m->timesteps = (int*)mallocCheck(B * sizeof(int));
}

void model_free(Model* m) {
    params_views_free(&m->p);
    params_views_free(&m->g);
    params_views_free(&m->frozen);
    acts_views_free(&m->a);
    acts_views_free(&m->d);
    free(m->params); free(m->grads); free(m->m); free(m->v); free(m->ema); free(m->tensors);
    free(m->norm_partials); free(m->z_norms);
    free(m->acts_memory); free(m->dacts_memory);
    free(m->alphas_cumprod); free(m->pos2d);
    free(m->xt); free(m->target); free(m->guided); free(m->ctx_cond); free(m->ctx_empty);
    free(m->targets); free(m->tokens); free(m->pad_tokens); free(m->timesteps);
}

// the pipeline holds the model through vlvc/vlv.h, which hides its fields
Model* model_create(const Config* c, int B) {
    Model* m = (Model*)mallocCheck(sizeof(Model));
    model_build(m, c, B);
    return m;
}
void model_destroy(Model* m) { model_free(m); free(m); }
const Config* model_config(const Model* m) { return &m->config; }
size_t model_num_params(const Model* m) { return m->num_params; }

// reads the weights of a checkpoint into a model of the same config
static void read_weights(Model* m, FILE* fp, const char* path) {
    freadCheck(m->params, sizeof(float), m->num_params, fp, path);
    fclose(fp);
    for (size_t i = 0; i < m->num_params; i++) {
        if (!is_finite_float(m->params[i])) fail("'%s' holds a NaN or infinite weight (parameter %zu)", path, i);
    }
}

// builds the model from a checkpoint's config and loads its weights
void model_load(Model* m, const char* path, int B) {
    Config c;
    size_t n;
    FILE* fp = checkpoint_open(path, &c, &n);
    model_build(m, &c, B);
    read_weights(m, fp, path);
}

// loads a checkpoint's weights into a built model; the configs must match
void model_load_weights(Model* m, const char* path) {
    Config c;
    size_t n;
    FILE* fp = checkpoint_open(path, &c, &n);
    char differs[256];
    if (config_difference(&c, &m->config, differs, sizeof differs)) fail("'%s' holds a model with %s", path, differs);
    read_weights(m, fp, path);
}

// the model's buffers by number, for the training state: 0 weights, 1 and 2 AdamW's moments, 3 the EMA
static float* model_buffer(const Model* m, int which) {
    float* buffers[4] = { m->params, m->m, m->v, m->ema };
    return buffers[which];
}
// Under ZeRO-1 the moments are this rank's chunk: reading one gathers the chunks of every rank
// (all ranks call it together), writing one keeps this rank's chunk
void model_buffer_read(const Model* m, int which, float* out) {
    if (which == 0 || which == 3 || m->shard_len == m->num_params) { memcpy(out, model_buffer(m, which), m->num_params * sizeof(float)); return; }
    memcpy(out + m->shard_start, model_buffer(m, which), m->shard_len * sizeof(float));
    dist_allgather_floats(out, m->num_params);
}
void model_buffer_write(Model* m, int which, const float* in) {
    if (which == 0 || which == 3) { memcpy(model_buffer(m, which), in, m->num_params * sizeof(float)); return; }
    memcpy(model_buffer(m, which), in + m->shard_start, m->shard_len * sizeof(float));
}

// ZeRO-1 (Rajbhandari et al. 2020, stage 1): from here on this rank keeps AdamW's moments of its
// chunk of the parameters only (vlvc/dist.h's dist_chunk), 1/N of them: each step reduces the
// gradients onto the chunks, each rank updates its chunk, and the ranks gather the weights
void model_shard_optimizer(Model* m) {
    size_t start, len;
    dist_chunk(m->num_params, dist_rank(), &start, &len);
    float* mom = (float*)mallocCheck((len + 1) * sizeof(float));
    float* vel = (float*)mallocCheck((len + 1) * sizeof(float));
    memcpy(mom, m->m + start, len * sizeof(float));
    memcpy(vel, m->v + start, len * sizeof(float));
    free(m->m);
    free(m->v);
    m->m = mom;
    m->v = vel;
    m->shard_start = start;
    m->shard_len = len;
}

void model_save(const Model* m, const char* path) {
    checkpoint_write(path, &m->config, m->params, m->num_params);
}


// initialization for training from scratch (doc/model.md): matrices and embeddings N(0, 0.02),
// biases 0, LayerNorm weights 1; the DiT's adaLN and final layers 0 (adaLN-Zero: the gated
// branches start closed and the DiT's output starts at exactly 0)
void model_init(Model* m, uint64_t seed) {
    uint64_t state = seed * 2654435761ull + 1;
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo* t = &m->tensors[i];
        float* w = m->params + t->offset;
        int zero_init = strstr(t->name, ".ada.") || strncmp(t->name, "dit.final", 9) == 0;
        int is_weight = strcmp(t->name + strlen(t->name) - 7, ".weight") == 0;
        for (size_t j = 0; j < t->numel; j++) {
            if (zero_init) { w[j] = 0.0f; }
            else if (t->ndim == 2) { w[j] = 0.02f * random_normal(&state); }
            else { w[j] = is_weight ? 1.0f : 0.0f; } // 1-D ".weight" tensors are LayerNorm gains
        }
    }
}

// ----------------------------------------------------------------------------
// objectives: stage 0 (T2I), 0b (LM), 1 (VLV through the frozen decoder), 2 (captions)



// gradient views for a set of trained groups: trained parts get the real gradient views,
// the others all-NULL views (frozen: activation gradients only)
static ParamViews grad_views(const Model* m, int groups) {
    ParamViews v;
    v.vit = groups & 1 << GROUP_VIT ? m->g.vit : m->frozen.vit;
    v.adapter = groups & 1 << GROUP_ADAPTER ? m->g.adapter : m->frozen.adapter;
    v.textenc = groups & 1 << GROUP_TEXTENC ? m->g.textenc : m->frozen.textenc;
    v.dit = groups & 1 << GROUP_DIT ? m->g.dit : m->frozen.dit;
    v.capdec = groups & 1 << GROUP_GPT ? m->g.capdec : m->frozen.capdec;
    const CapDecP* prefix = groups & 1 << GROUP_PREFIX ? &m->g.capdec : &m->frozen.capdec;
    v.capdec.prefix1 = prefix->prefix1;
    v.capdec.prefix2 = prefix->prefix2;
    return v;
}


// x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, and the regression target (eps, or v)
static void diffusion_inputs(Model* m, const float* x0, const float* noise, const int* t) {
    const Config* c = &m->config;
    size_t per = (size_t)c->img_size * c->img_size * 3;
    for (int b = 0; b < m->B; b++) {
        if (t[b] < 0 || t[b] >= c->n_timesteps) fail("timestep %d is outside [0, %d)", t[b], c->n_timesteps);
        float ab = m->alphas_cumprod[t[b]], sa = sqrtf(ab), sb = sqrtf(1.0f - ab);
        for (size_t i = b * per; i < (b + 1) * per; i++) {
            m->xt[i] = sa * x0[i] + sb * noise[i];
            m->target[i] = c->prediction == PREDICT_V ? sa * noise[i] - sb * x0[i] : noise[i];
        }
    }
}

// out[r, :] = gate[r] in[r, :] for R rows of K (vlv_vit_from_dit: a projection's rows by an adaLN gate)
static void scale_rows(float* out, const float* in, const float* gate, int R, int K) {
    for (int r = 0; r < R; r++) {
        for (int k = 0; k < K; k++) { out[(size_t)r * K + k] = gate[r] * in[(size_t)r * K + k]; }
    }
}

// The vision encoder started from the frozen DiT, which learned to see these images while
// learning to draw them (the paper starts its encoder from a pretrained vision model, not from
// random weights): the DiT's patch embedding and fixed 2D positions, and for l < L_v the DiT's
// block l at t = 0 without its cross-attention. At a fixed t the adaLN modulation is a constant
// per channel, so LN0(x)(1 + scale) + shift is a LayerNorm of gain 1 + scale and bias shift,
// and the gated residual x + gate * proj(h) is x + proj'(h), proj's rows and bias scaled by
// the gate. Needs d_v = d_d, nh_v = nh_d and L_v <= L_d (vit_from_dit_problem, which
// settings_parse checks). The DiT's activations are the scratch (batch row 0).
void vlv_vit_from_dit(Model* m) {
    const Config* c = &m->config;
    int C = c->d_d, Np = config_num_patches(c), PD = config_patch_dim(c);
    ViTP* v = &m->p.vit;
    const DiTP* d = &m->p.dit;
    DiTA* a = &m->a.dit;
    memcpy(v->patch.w, d->patch.w, (size_t)C * PD * sizeof(float));
    memcpy(v->patch.b, d->patch.b, C * sizeof(float));
    memcpy(v->pos, m->pos2d, (size_t)Np * C * sizeof(float));
    m->timesteps[0] = 0; // s = SiLU(temb(0)) [1, C], as dit_forward computes it
    dit_conditioning(a, m->timesteps, d, c, 1);
    for (int l = 0; l < c->L_v; l++) {
        const DiTBlockP* db = &d->blocks[l];
        BlockP* vb = &v->blocks[l];
        float* mod = a->blocks[l].mod; // shift1, scale1, gate1, shift2, scale2, gate2 [6C]
        matmul_forward(mod, a->s, db->ada.w, db->ada.b, 1, C, 6 * C);
        for (int i = 0; i < C; i++) {
            vb->ln1.w[i] = 1.0f + mod[C + i];
            vb->ln1.b[i] = mod[i];
            vb->ln2.w[i] = 1.0f + mod[4 * C + i];
            vb->ln2.b[i] = mod[3 * C + i];
        }
        memcpy(vb->attn.qkv.w, db->attn.qkv.w, (size_t)3 * C * C * sizeof(float));
        memcpy(vb->attn.qkv.b, db->attn.qkv.b, (size_t)3 * C * sizeof(float));
        memcpy(vb->mlp.fc.w, db->mlp.fc.w, (size_t)4 * C * C * sizeof(float));
        memcpy(vb->mlp.fc.b, db->mlp.fc.b, (size_t)4 * C * sizeof(float));
        scale_rows(vb->attn.proj.w, db->attn.proj.w, mod + 2 * C, C, C);
        scale_rows(vb->attn.proj.b, db->attn.proj.b, mod + 2 * C, C, 1);
        scale_rows(vb->mlp.proj.w, db->mlp.proj.w, mod + 5 * C, C, 4 * C);
        scale_rows(vb->mlp.proj.b, db->mlp.proj.b, mod + 5 * C, C, 1);
    }
}

// runs an objective's forward pass; returns the loss (also kept in m->loss)
float vlv_forward(Model* m, Objective o, const Batch* batch) {
    const Config* c = &m->config;
    int B = m->B, Tc = c->cap_len;
    ActViews* a = &m->a;
    if (o == STAGE1 || o == STAGE2) {
        vit_forward(&a->vit, batch->images, &m->p.vit, c, B);
        adapter_forward(&a->adapter, a->vit.ln_f.out, &m->p.adapter, c, B);
        textenc_forward(&a->textenc, m->pad_tokens, a->adapter.z, &m->p.textenc, c, B);
    }
    if (o == STAGE0 || o == STAGE1) {
        if (o == STAGE0) {
            check_tokens(batch->text_tokens, (size_t)B * c->n_q, c->vocab, "text tokens");
            textenc_forward(&a->textenc, batch->text_tokens, NULL, &m->p.textenc, c, B);
        }
        diffusion_inputs(m, batch->images, batch->noise, batch->timesteps);
        dit_forward(&a->dit, m->xt, batch->timesteps, a->textenc.ln_f.out, &m->p.dit, m->pos2d, c, B);
        m->loss = (float)dist_sum_double(mse_forward(a->dit.out, m->target, image_numel(m), image_numel(m) * dist_ranks()));
    } else {
        check_tokens(batch->caption_tokens, (size_t)B * Tc, c->vocab, "caption tokens");
        for (int b = 0; b < B; b++) {
            for (int j = 0; j < Tc; j++) {
                m->targets[b * Tc + j] = j + 1 < Tc ? batch->caption_tokens[b * Tc + j + 1] : TOKEN_PAD;
            }
        }
        capdec_forward(&a->capdec, o == STAGE2 ? a->textenc.ln_f.out : NULL, batch->caption_tokens, &m->p.capdec, c, B);
        m->loss_count = (int)dist_sum_double(count_targets(m->targets, B * Tc));
        m->loss = (float)dist_sum_double(crossentropy_forward(a->capdec.probs, a->capdec.logits, m->targets, B * Tc, c->vocab, m->loss_count));
    }
    return m->loss;
}

// sets n floats to zero, both threads at once (memory bandwidth is per core here)
static void zero_floats(float* x, size_t n) {
    const size_t chunk = 1 << 16;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i += chunk) { memset(x + i, 0, (n - i < chunk ? n - i : chunk) * sizeof(float)); }
}

// the backward of the last vlv_forward of objective o: adds into the gradients of the
// groups in `groups`; every other part only passes activation gradients through
// clip_z > 0: stage 1 scales each image's gradient at z to at most clip_z times the batch's median
void vlv_backward(Model* m, Objective o, const Batch* batch, int groups, float clip_z) {
    const Config* c = &m->config;
    int B = m->B;
    ActViews *a = &m->a, *d = &m->d;
    ParamViews g = grad_views(m, groups);
    m->z_clipped = 0;
    int through_encoder = o == STAGE1 || (o == STAGE2 && (groups & ENCODER_GROUPS));
    // activation gradients accumulate (+=): zero those of the parts this backward runs
    // through, and only those (all of them would cost stage 0b more than its matmuls)
    int parts = o == STAGE0 || o == STAGE1 ? 1 << ACTS_TEXTENC | 1 << ACTS_DIT : 1 << ACTS_CAPDEC;
    if (through_encoder) { parts |= 1 << ACTS_VIT | 1 << ACTS_ADAPTER | 1 << ACTS_TEXTENC; }
    for (int k = 0; k < NUM_ACT_PARTS; k++) {
        size_t start = m->act_part_start[k], end = m->act_part_start[k + 1];
        if (parts & 1 << k) { zero_floats(m->dacts_memory + start, end - start); }
    }
    if (o == STAGE0 || o == STAGE1) {
        mse_backward(d->dit.out, a->dit.out, m->target, image_numel(m), image_numel(m) * dist_ranks());
        int ctx_grad = o == STAGE1 || (groups & 1 << GROUP_TEXTENC);
        dit_backward(ctx_grad ? d->textenc.ln_f.out : NULL, &d->dit, &g.dit, &a->dit, a->textenc.ln_f.out, &m->p.dit, c, B);
        if (ctx_grad) {
            textenc_backward(o == STAGE1 ? d->adapter.z : NULL, &d->textenc, &g.textenc, &a->textenc,
                             o == STAGE0 ? batch->text_tokens : m->pad_tokens, &m->p.textenc, c, B);
        }
        if (o == STAGE1 && clip_z > 0.0f) {
            m->z_clipped = clip_rows_to_median(d->adapter.z, m->z_norms, B, (size_t)c->n_z * c->d_t, clip_z);
        }
    } else {
        crossentropy_backward(d->capdec.logits, a->capdec.probs, m->targets, B * c->cap_len, c->vocab, m->loss_count);
        const float* ctx = o == STAGE2 ? a->textenc.ln_f.out : NULL;
        capdec_backward(through_encoder ? d->textenc.ln_f.out : NULL, &d->capdec, &g.capdec, &a->capdec, ctx,
                        batch->caption_tokens, &m->p.capdec, c, B);
        if (through_encoder) {
            textenc_backward(d->adapter.z, &d->textenc, &g.textenc, &a->textenc, m->pad_tokens, &m->p.textenc, c, B);
        }
    }
    if (through_encoder) {
        adapter_backward(d->vit.ln_f.out, &d->adapter, &g.adapter, &a->adapter, a->vit.ln_f.out, &m->p.adapter, c, B);
        vit_backward(&d->vit, &g.vit, &a->vit, &m->p.vit, c, B);
    }
}

// ----------------------------------------------------------------------------
// optimizer: AdamW with global-norm gradient clipping, over the tensors of some groups


void vlv_zero_grad(Model* m, int groups) {
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo* t = &m->tensors[i];
        if (groups & 1 << t->group) { zero_floats(m->grads + t->offset, t->numel); }
    }
}

// a fresh optimizer (each stage starts one)
void vlv_reset_optimizer(Model* m) {
    memset(m->m, 0, m->shard_len * sizeof(float));
    memset(m->v, 0, m->shard_len * sizeof(float));
    m->adam_step = 0;
}

// the part of tensor t within the shard [lo, lo + len): its first float and length (0: none)
static size_t tensor_in_shard(const TensorInfo* t, size_t lo, size_t len, size_t* first) {
    size_t a = t->offset > lo ? t->offset : lo, b = t->offset + t->numel < lo + len ? t->offset + t->numel : lo + len;
    *first = a;
    return b > a ? b - a : 0;
}

// The squared L2 norm of the groups' gradients within the shard, in double. The same bits at
// any thread count: each tensor is cut into fixed chunks of NORM_CHUNK floats, a chunk sums into
// 8 accumulators (which vectorize) in a fixed order, and the chunk sums are added serially in
// layout order.
static double grad_sumsq(Model* m, int groups) {
    int num_chunks = 0;
    size_t first;
    for (int i = 0; i < m->num_tensors; i++) {
        size_t numel = tensor_in_shard(&m->tensors[i], m->shard_start, m->shard_len, &first);
        if (groups & 1 << m->tensors[i].group) { num_chunks += (int)((numel + NORM_CHUNK - 1) / NORM_CHUNK); }
    }
    #pragma omp parallel
    {
        int chunk = 0;
        for (int i = 0; i < m->num_tensors; i++) {
            const TensorInfo* t = &m->tensors[i];
            if (!(groups & 1 << t->group)) { continue; }
            size_t start, numel = tensor_in_shard(t, m->shard_start, m->shard_len, &start);
            int n_chunks = (int)((numel + NORM_CHUNK - 1) / NORM_CHUNK);
            #pragma omp for schedule(static) nowait
            for (int k = 0; k < n_chunks; k++) {
                const float* g = m->grads + start + (size_t)k * NORM_CHUNK;
                size_t n = numel - (size_t)k * NORM_CHUNK < NORM_CHUNK ? numel - (size_t)k * NORM_CHUNK : NORM_CHUNK;
                double acc[8] = { 0 };
                size_t j = 0;
                for (; j + 8 <= n; j += 8) {
                    for (int l = 0; l < 8; l++) { acc[l] += (double)g[j + l] * g[j + l]; }
                }
                for (; j < n; j++) { acc[0] += (double)g[j] * g[j]; }
                m->norm_partials[chunk + k] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            }
            chunk += n_chunks;
        }
    }
    double sumsq = 0.0;
    for (int k = 0; k < num_chunks; k++) { sumsq += m->norm_partials[k]; }
    return sumsq;
}

// clips the groups' gradients to a global L2 norm of opt->grad_clip (as
// torch.nn.utils.clip_grad_norm_) and applies one AdamW step; returns the norm before clipping.
// Under ZeRO-1 the step updates this rank's chunk (its gradients summed there), the squared
// norm is summed over the chunks, and the ranks then gather the weights.
float vlv_update(Model* m, int groups, const AdamW* opt) {
    int sharded = m->shard_len < m->num_params;
    float norm = (float)sqrt(sharded ? dist_sum_double(grad_sumsq(m, groups)) : grad_sumsq(m, groups));
    float clip = opt->grad_clip / (norm + 1e-6f);
    if (clip > 1.0f) { clip = 1.0f; }
    m->adam_step++;
    float bc1 = 1.0f - powf(opt->beta1, (float)m->adam_step), bc2 = 1.0f - powf(opt->beta2, (float)m->adam_step);
    float beta1 = opt->beta1, beta2 = opt->beta2, lr = opt->lr, eps = opt->eps;
    #pragma omp parallel // one team for all tensors; each element is updated alone, so nowait is safe
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo* t = &m->tensors[i];
        if (!(groups & 1 << t->group)) { continue; }
        // decoupled weight decay on matrices and embeddings only, none on biases and norms
        float decay = t->ndim >= 2 ? lr * opt->weight_decay : 0.0f;
        size_t start, numel = tensor_in_shard(t, m->shard_start, m->shard_len, &start);
        float* restrict w = m->params + start;
        float* restrict mom = m->m + (start - m->shard_start);
        float* restrict vel = m->v + (start - m->shard_start);
        const float* restrict grad = m->grads + start;
        #pragma omp for schedule(static) nowait
        for (size_t j = 0; j < numel; j++) {
            float g = grad[j] * clip;
            w[j] -= decay * w[j];
            mom[j] = beta1 * mom[j] + (1.0f - beta1) * g;
            vel[j] = beta2 * vel[j] + (1.0f - beta2) * g * g;
            w[j] -= lr * (mom[j] / bc1) / (sqrtf(vel[j] / bc2) + eps);
        }
    }
    if (sharded) { dist_allgather_floats(m->params, m->num_params); }
    return norm;
}

// An exponential moving average of the weights of some groups (stage 0 samples with the
// decoder's EMA, which is much smoother than the raw weights): ema = d ema + (1 - d) params.
// decay 0 copies the weights into the EMA (its start).
void vlv_ema_update(Model* m, int groups, float decay) {
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo* t = &m->tensors[i];
        if (!(groups & 1 << t->group)) { continue; }
        for (size_t j = t->offset; j < t->offset + t->numel; j++) { m->ema[j] = decay * m->ema[j] + (1.0f - decay) * m->params[j]; }
    }
}

// exchanges the weights of some groups with their EMA (twice restores them)
void vlv_ema_swap(Model* m, int groups) {
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo* t = &m->tensors[i];
        if (!(groups & 1 << t->group)) { continue; }
        for (size_t j = t->offset; j < t->offset + t->numel; j++) { float w = m->params[j]; m->params[j] = m->ema[j]; m->ema[j] = w; }
    }
}

// Data parallel (vlvc/dist.h): each rank's gradients are its rows' share of the global batch's
// mean (the losses divide by the whole batch's count), so their sum over ranks is the global
// gradient, the same bits on every rank. Summed per run of consecutive tensors the groups train.
static void sum_grads_over_ranks(Model* m, int groups) {
    if (dist_ranks() == 1) { return; }
    size_t start, len;
    for (int i = 0; next_group_run(m->tensors, m->num_tensors, groups, &i, &start, &len);) { dist_sum_floats(m->grads + start, len); }
}

// one training step of an objective: zero grads, forward, backward, clip, AdamW (the
// gradients summed over the ranks between the last two, or under ZeRO-1 onto each rank's
// chunk). Returns the loss.
float vlv_train_step(Model* m, Objective o, const Batch* batch, int groups, const AdamW* opt) {
    vlv_zero_grad(m, groups);
    float loss = vlv_forward(m, o, batch);
    if (!is_finite_float(loss)) { return loss; } // the caller stops; weights are untouched
    vlv_backward(m, o, batch, groups, opt->clip_z);
    if (m->shard_len < m->num_params) { dist_reduce_scatter_floats(m->grads, m->num_params); } // ZeRO-1: onto the chunks
    else { sum_grads_over_ranks(m, groups); }
    m->grad_norm = vlv_update(m, groups, opt);
    return loss;
}
int model_adam_step(const Model* m) { return m->adam_step; }
void model_set_adam_step(Model* m, int step) { m->adam_step = step; }
float model_grad_norm(const Model* m) { return m->grad_norm; }
int model_z_clipped(const Model* m) { return m->z_clipped; }
double vlv_flops(double* attention) {
    *attention = attention_flops_counted;
    return flops_counted;
}

// ----------------------------------------------------------------------------
// inference: contexts, guided DDIM sampling, greedy captions

// the context c of captions: tokens [B,N_q] -> ctx [B,N_q,d_t]
void text_context(Model* m, const int* tokens, float* ctx) {
    const Config* c = &m->config;
    check_tokens(tokens, (size_t)m->B * c->n_q, c->vocab, "text tokens");
    textenc_forward(&m->a.textenc, tokens, NULL, &m->p.textenc, c, m->B);
    memcpy(ctx, m->a.textenc.ln_f.out, (size_t)m->B * c->n_q * c->d_t * sizeof(float));
}

// the context of the empty caption [BOS, EOS, PAD...] for every sample -> ctx [B,N_q,d_t]
void empty_context(Model* m, float* ctx) {
    for (int b = 0; b < m->B; b++) { empty_caption(m->tokens + (size_t)b * m->config.n_q, m->config.n_q); }
    text_context(m, m->tokens, ctx);
}

// the context c = TextEnc(z) of images: [B,H,W,3] -> ctx [B,N_q,d_t] (what VLV encodes an image to)
void image_context(Model* m, const float* images, float* ctx) {
    const Config* c = &m->config;
    vit_forward(&m->a.vit, images, &m->p.vit, c, m->B);
    adapter_forward(&m->a.adapter, m->a.vit.ln_f.out, &m->p.adapter, c, m->B);
    textenc_forward(&m->a.textenc, m->pad_tokens, m->a.adapter.z, &m->p.textenc, c, m->B);
    memcpy(ctx, m->a.textenc.ln_f.out, (size_t)m->B * c->n_q * c->d_t * sizeof(float));
}

// Runs the first steps_run steps of the num_steps-step DDIM (eta = 0) schedule on x [B,H,W,3]
// in place, with classifier-free guidance: out = out_empty + w (out_cond - out_empty). The
// predicted x0 is clipped to the data range [-1, 1] (diffusers' clip_sample), eps is kept.
void ddim_sample(Model* m, float* x, const float* ctx_cond, const float* ctx_empty, float guidance,
                 int num_steps, int steps_run) {
    const Config* c = &m->config;
    size_t n = image_numel(m);
    int delta = c->n_timesteps / num_steps;
    if (delta < 1) fail("ddim: %d steps is more than the %d diffusion timesteps", num_steps, c->n_timesteps);
    for (int i = 0; i < steps_run && i < num_steps; i++) {
        int t = (num_steps - 1 - i) * delta, t_prev = t - delta;
        for (int b = 0; b < m->B; b++) { m->timesteps[b] = t; }
        dit_forward(&m->a.dit, x, m->timesteps, ctx_cond, &m->p.dit, m->pos2d, c, m->B);
        memcpy(m->guided, m->a.dit.out, n * sizeof(float));
        dit_forward(&m->a.dit, x, m->timesteps, ctx_empty, &m->p.dit, m->pos2d, c, m->B);
        float ab = m->alphas_cumprod[t], ab_prev = t_prev >= 0 ? m->alphas_cumprod[t_prev] : 1.0f;
        float sa = sqrtf(ab), sb = sqrtf(1.0f - ab), sa_prev = sqrtf(ab_prev), sb_prev = sqrtf(1.0f - ab_prev);
        for (size_t j = 0; j < n; j++) {
            float out = m->a.dit.out[j] + guidance * (m->guided[j] - m->a.dit.out[j]);
            float eps, x0;
            if (c->prediction == PREDICT_V) { x0 = sa * x[j] - sb * out; eps = sb * x[j] + sa * out; }
            else { eps = out; x0 = (x[j] - sb * eps) / sa; }
            x0 = fminf(fmaxf(x0, -1.0f), 1.0f); // the data range; early steps divide by sqrt(abar) ~ 0.07
            x[j] = sa_prev * x0 + sb_prev * eps;
        }
    }
}

// greedy decoding from the context ctx [B,N_q,d_t]: tokens [B,T_c] = BOS, argmax... until EOS, PAD after
void greedy_caption(Model* m, int* tokens, const float* ctx) {
    const Config* c = &m->config;
    int Tc = c->cap_len, V = c->vocab;
    for (int i = 0; i < m->B * Tc; i++) { tokens[i] = i % Tc == 0 ? TOKEN_BOS : TOKEN_PAD; }
    for (int pos = 1; pos < Tc; pos++) {
        capdec_forward(&m->a.capdec, ctx, tokens, &m->p.capdec, c, m->B);
        for (int b = 0; b < m->B; b++) {
            int prev = tokens[b * Tc + pos - 1];
            if (pos > 1 && (prev == TOKEN_EOS || prev == TOKEN_PAD)) { continue; } // finished: PAD
            const float* row = m->a.capdec.logits + ((size_t)b * Tc + pos - 1) * V;
            int best = 0;
            for (int i = 1; i < V; i++) { if (row[i] > row[best]) { best = i; } }
            tokens[b * Tc + pos] = best;
        }
    }
}

// Beam search for one image's context ctx [N_q,d_t], with the model's batch rows as the beams
// (beams <= B; the bookkeeping is vlvc/beams.h's Beams). Writes the best finished caption
// (or, if none finished, the best one) to best [T_c]. beams = 1 is greedy decoding.
void beam_caption(Model* m, int* best, const float* ctx, int beams) {
    const Config* c = &m->config;
    int B = m->B;
    size_t ctx_row = (size_t)c->n_q * c->d_t;
    Beams s;
    beams_start(&s, beams, B, c->cap_len, c->vocab);
    for (int b = 0; b < B; b++) { memcpy(m->ctx_cond + b * ctx_row, ctx, ctx_row * sizeof(float)); }
    for (int pos = 1; pos < c->cap_len; pos++) {
        capdec_forward(&m->a.capdec, m->ctx_cond, s.seqs, &m->p.capdec, c, B);
        beams_extend(&s, pos, m->a.capdec.logits);
    }
    beams_finish(&s, best);
}

// ----------------------------------------------------------------------------
#ifndef VLV_NO_MAIN // test_vlv.c and caption.c include this file for its functions
#include "vlvc/fma_peak.h"

// what the pipeline runs on, in words, and its fp32 peak in GFLOP/s (for the "% of peak"),
// measured with FMA chains on every thread (vlvc/fma_peak.h); --peak overrides it
float device_describe(int threads, char* desc, size_t cap, char* peak_how, size_t how_cap) {
    // the CPU's name, family and model (Zen 3, Zen 4 and Xeons differ in speed and in float
    // rounding of vectorized sums), its widest vector unit, and the threads used
    char name[128] = "a CPU", line[4096];
    int family = -1, model = -1, avx512 = 0, avx2 = 0;
    FILE* fp = fopen("/proc/cpuinfo", "r");
    while (fp && fgets(line, sizeof line, fp)) {
        char* colon = strchr(line, ':');
        if (colon && strncmp(line, "model name", 10) == 0 && strcmp(name, "a CPU") == 0) {
            snprintf(name, sizeof name, "%s", colon + 2);
            name[strcspn(name, "\n")] = '\0';
        }
        if (family < 0) { sscanf(line, "cpu family : %d", &family); }
        if (model < 0 && strncmp(line, "model\t", 6) == 0 && colon) { model = atoi(colon + 1); }
        if (strncmp(line, "flags", 5) == 0) { avx512 = strstr(line, " avx512f") != NULL; avx2 = strstr(line, " avx2") != NULL; }
    }
    if (fp) { fclose(fp); }
    snprintf(desc, cap, "%s (family %d model %d, %s), %d CPU thread%s", name, family, model,
             avx512 ? "AVX-512" : avx2 ? "AVX2" : "no AVX2", threads, threads == 1 ? "" : "s");
    return (float)fma_peak_gflops(threads, 10, peak_how, how_cap);
}

// the pipeline (command line, data, the stages, checkpoints, evaluation) is host code shared
// with train_vlv.cu: vlvc/pipeline.h
#include "vlvc/pipeline.h"

int main(int argc, char** argv) {
    dist_init(&argc, &argv); // one rank unless built with USE_MPI=1 and run under mpirun
    int status = vlv_main(argc, argv);
    if (status == 0) { dist_finish(); }
    return status;
}
#endif
