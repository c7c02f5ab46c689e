/*
dev/cpu/matmul.c — kernel lab for train_vlv.c's three matmul products (in the spirit of
llm.c's dev/cuda labs): a float64 reference, several versions of each product, a correctness
check of every version over many (odd) sizes at 1 and 2 threads, and a timing table on the
shapes the default model runs.

  forward          out[N,OC]  = inp[N,C] @ W[OC,C]^T + b      (b may be NULL)
  backward-input   dinp[N,C] += dout[N,OC] @ W[OC,C]
  backward-weight  dW[OC,C]  += dout^T @ inp,  db[OC] += colsum(dout)

Version 1 is train_vlv.c's original kernel (plain loops, before the blocked one), version 2
an intermediate step; the last version of each is train_vlv.c's own matmul_forward /
matmul_backward: the lab includes train_vlv.c itself (with VLV_NO_MAIN, so without its main
and pipeline), so it checks and times exactly the code the model runs.

Build and run (from the repository root):
  gcc -O3 -march=native -fopenmp -std=gnu11 -Wall -Wextra -o /tmp/matmul dev/cpu/matmul.c -lm -lz
  /tmp/matmul check          correctness: every version, many sizes, 1 and 2 threads
  /tmp/matmul bench          timing table at 1 and 2 threads (median of repeats)
  /tmp/matmul                both
Options: --threads a,b,...  (default 1,2)   --reps R (default 21)   --quick (check: fewer sizes).
The peak that the percentages refer to is measured at each thread count by vlvc/fma_peak.h, as
train_vlv does. The bench also reports how much CPU the rest of the machine used meanwhile: on a
shared machine 2-thread timings are meaningless.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <float.h>
#include <time.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

// the current kernels: matmul_forward, matmul_backward and their helpers (matmul_tile,
// matmul_units, MM_MR / MM_NR / MM_KC), straight from train_vlv.c without its main
#define VLV_NO_MAIN
#include "../../train_vlv.c"
#include "../../vlvc/fma_peak.h" // the measured peak (train_vlv.c includes it only with its main)

// ----------------------------------------------------------------------------
// utilities

static void set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}
static uint64_t rng_state = 1234;
static float frand(void) { // uniform in [-1, 1)
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (float)((uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 40) / 8388608.0 - 1.0);
}
static float* make(size_t n) {
    float* p = (float*)malloc((n ? n : 1) * sizeof(float));
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (size_t i = 0; i < n; i++) { p[i] = frand(); }
    return p;
}
static int cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

// ----------------------------------------------------------------------------
// reference, float64 accumulation, the same += semantics. Also returns through mag the
// sum of |terms| (+ |initial value|) per output, for the error bound.

static void ref_forward(double* out, double* mag, const float* inp, const float* w, const float* bias,
                        int N, int C, int OC) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0, m = bias ? fabs(bias[o]) : 0.0;
            for (int c = 0; c < C; c++) {
                double t = (double)inp[(size_t)n * C + c] * w[(size_t)o * C + c];
                s += t; m += fabs(t);
            }
            out[(size_t)n * OC + o] = s; mag[(size_t)n * OC + o] = m;
        }
    }
}
static void ref_backward(double* dinp, double* dinp_mag, double* dw, double* dw_mag, double* db, double* db_mag,
                         const float* dinp0, const float* dw0, const float* db0,
                         const float* dout, const float* inp, const float* w, int N, int C, int OC) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        for (int c = 0; c < C; c++) {
            double s = dinp0[(size_t)n * C + c], m = fabs(s);
            for (int o = 0; o < OC; o++) {
                double t = (double)dout[(size_t)n * OC + o] * w[(size_t)o * C + c];
                s += t; m += fabs(t);
            }
            dinp[(size_t)n * C + c] = s; dinp_mag[(size_t)n * C + c] = m;
        }
    }
    #pragma omp parallel for
    for (int o = 0; o < OC; o++) {
        for (int c = 0; c < C; c++) {
            double s = dw0[(size_t)o * C + c], m = fabs(s);
            for (int n = 0; n < N; n++) {
                double t = (double)dout[(size_t)n * OC + o] * inp[(size_t)n * C + c];
                s += t; m += fabs(t);
            }
            dw[(size_t)o * C + c] = s; dw_mag[(size_t)o * C + c] = m;
        }
        double s = db0[o], m = fabs(s);
        for (int n = 0; n < N; n++) { double t = dout[(size_t)n * OC + o]; s += t; m += fabs(t); }
        db[o] = s; db_mag[o] = m;
    }
}

// ----------------------------------------------------------------------------
// version 1: train_vlv.c's original kernels (plain loops; copied verbatim, renamed)

void matmul_forward1(float* out, const float* inp, const float* weight, const float* bias,
                     int N, int C, int OC) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* x = inp + (size_t)n * C;
        float* y = out + (size_t)n * OC;
        for (int o = 0; o < OC; o++) {
            const float* w = weight + (size_t)o * C;
            float acc = bias ? bias[o] : 0.0f;
            for (int c = 0; c < C; c++) { acc += x[c] * w[c]; }
            y[o] = acc;
        }
    }
}
void matmul_backward1(float* dinp, float* dweight, float* dbias, const float* dout,
                      const float* inp, const float* weight, int N, int C, int OC) {
    if (dinp) {
        #pragma omp parallel for
        for (int n = 0; n < N; n++) {
            const float* dy = dout + (size_t)n * OC;
            float* dx = dinp + (size_t)n * C;
            for (int o = 0; o < OC; o++) {
                const float* w = weight + (size_t)o * C;
                float d = dy[o];
                for (int c = 0; c < C; c++) { dx[c] += d * w[c]; }
            }
        }
    }
    if (dweight || dbias) {
        #pragma omp parallel for
        for (int o = 0; o < OC; o++) {
            float db = 0.0f;
            float* dw = dweight ? dweight + (size_t)o * C : NULL;
            for (int n = 0; n < N; n++) {
                float d = dout[(size_t)n * OC + o];
                db += d;
                if (dw) {
                    const float* x = inp + (size_t)n * C;
                    for (int c = 0; c < C; c++) { dw[c] += d * x[c]; }
                }
            }
            if (dbias) { dbias[o] += db; }
        }
    }
}

// ----------------------------------------------------------------------------
// version 2 of the forward: dot products, 4 rows x 4 outputs at a time, each a float
// reduction over c that `omp simd reduction` lets gcc vectorize (16 vector accumulators,
// a horizontal sum at the end). No packing, but 8 loads per 16 FMAs and the horizontal sums.

#define DOT_REDUCE_4x4(C_, x0, x1, x2, x3, w0, w1, w2, w3)                                         \
    _Pragma("omp simd reduction(+:s00,s01,s02,s03,s10,s11,s12,s13,s20,s21,s22,s23,s30,s31,s32,s33)") \
    for (int c = 0; c < (C_); c++) {                                                              \
        float a0 = x0[c], a1 = x1[c], a2 = x2[c], a3 = x3[c];                                     \
        float b0 = w0[c], b1 = w1[c], b2 = w2[c], b3 = w3[c];                                     \
        s00 += a0 * b0; s01 += a0 * b1; s02 += a0 * b2; s03 += a0 * b3;                           \
        s10 += a1 * b0; s11 += a1 * b1; s12 += a1 * b2; s13 += a1 * b3;                           \
        s20 += a2 * b0; s21 += a2 * b1; s22 += a2 * b2; s23 += a2 * b3;                           \
        s30 += a3 * b0; s31 += a3 * b1; s32 += a3 * b2; s33 += a3 * b3;                           \
    }

void matmul_forward2(float* out, const float* inp, const float* weight, const float* bias,
                     int N, int C, int OC) {
    int nt = (N + 3) / 4, ot = (OC + 3) / 4;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < nt; i++) {
        for (int q = 0; q < ot; q++) {
            int n0 = i * 4, o0 = q * 4;
            if (n0 + 4 <= N && o0 + 4 <= OC) {
                const float *x0 = inp + (size_t)n0 * C, *x1 = x0 + C, *x2 = x1 + C, *x3 = x2 + C;
                const float *w0 = weight + (size_t)o0 * C, *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
                float s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
                float s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
                DOT_REDUCE_4x4(C, x0, x1, x2, x3, w0, w1, w2, w3)
                float s[4][4] = { { s00, s01, s02, s03 }, { s10, s11, s12, s13 },
                                  { s20, s21, s22, s23 }, { s30, s31, s32, s33 } };
                for (int r = 0; r < 4; r++) {
                    for (int j = 0; j < 4; j++) {
                        out[(size_t)(n0 + r) * OC + o0 + j] = (bias ? bias[o0 + j] : 0.0f) + s[r][j];
                    }
                }
            } else { // edges: one dot product at a time
                for (int n = n0; n < N && n < n0 + 4; n++) {
                    for (int o = o0; o < OC && o < o0 + 4; o++) {
                        const float* x = inp + (size_t)n * C;
                        const float* w = weight + (size_t)o * C;
                        float acc = 0.0f;
                        #pragma omp simd reduction(+:acc)
                        for (int c = 0; c < C; c++) { acc += x[c] * w[c]; }
                        out[(size_t)n * OC + o] = (bias ? bias[o] : 0.0f) + acc;
                    }
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------
// version 2 of both backward products: the register tile of version 3, but reading B
// straight from memory (row stride ldb, no packing, no blocking over K). The backward-input
// B is W itself (rows of C floats), the backward-weight B is inp itself: both are already
// "k rows of contiguous j". Column edges (nc < 16) take a scalar loop.

MM_INLINE void tile_unpacked(float* c, size_t ldc, const float* a, size_t a_m, size_t a_k,
                             const float* b, size_t ldb, int K, const int mr) {
    float acc[MM_MR][MM_NR];
    for (int r = 0; r < mr; r++) {
        for (int j = 0; j < MM_NR; j++) { acc[r][j] = 0.0f; }
    }
    for (int k = 0; k < K; k++) {
        const float* bk = b + (size_t)k * ldb;
        for (int r = 0; r < mr; r++) {
            float av = a[r * a_m + k * a_k];
            #pragma omp simd
            for (int j = 0; j < MM_NR; j++) { acc[r][j] += av * bk[j]; }
        }
    }
    for (int r = 0; r < mr; r++) {
        #pragma omp simd
        for (int j = 0; j < MM_NR; j++) { c[r * ldc + j] += acc[r][j]; }
    }
}
// C[M, NC] += A[M, K] B[K, NC], B(k, j) = b[k * ldb + j]
static void matmul_unpacked(float* c, size_t ldc, const float* a, size_t a_m, size_t a_k,
                            const float* b, size_t ldb, int M, int K, int NC) {
    int m_tiles = (M + MM_MR - 1) / MM_MR, panels = (NC + MM_NR - 1) / MM_NR;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int p = 0; p < panels; p++) {
        for (int i = 0; i < m_tiles; i++) {
            int j0 = p * MM_NR, m0 = i * MM_MR;
            int nc = NC - j0 < MM_NR ? NC - j0 : MM_NR, mr = M - m0 < MM_MR ? M - m0 : MM_MR;
            float* ct = c + (size_t)m0 * ldc + j0;
            const float* at = a + (size_t)m0 * a_m;
            if (nc < MM_NR) { // scalar edge
                for (int r = 0; r < mr; r++) {
                    for (int j = 0; j < nc; j++) {
                        float s = 0.0f;
                        for (int k = 0; k < K; k++) { s += at[r * a_m + k * a_k] * b[(size_t)k * ldb + j0 + j]; }
                        ct[r * ldc + j] += s;
                    }
                }
            } else if (mr == MM_MR) {
                tile_unpacked(ct, ldc, at, a_m, a_k, b + j0, ldb, K, MM_MR);
            } else {
                for (int r = 0; r < mr; r++) { tile_unpacked(ct + r * ldc, ldc, at + r * a_m, a_m, a_k, b + j0, ldb, K, 1); }
            }
        }
    }
}
void matmul_backward2(float* dinp, float* dweight, float* dbias, const float* dout,
                      const float* inp, const float* weight, int N, int C, int OC) {
    if (dinp) { matmul_unpacked(dinp, C, dout, OC, 1, weight, C, N, OC, C); }
    if (dweight) { matmul_unpacked(dweight, C, dout, 1, OC, inp, C, OC, N, C); }
    if (dbias) {
        #pragma omp parallel for
        for (int o = 0; o < OC; o++) {
            float db = 0.0f;
            for (int n = 0; n < N; n++) { db += dout[(size_t)n * OC + o]; }
            dbias[o] += db;
        }
    }
}

// ----------------------------------------------------------------------------
// version 3 = train_vlv.c's matmul_forward / matmul_backward (included above): packed,
// cache-blocked register tile

#define matmul_forward3 matmul_forward
#define matmul_backward3 matmul_backward

typedef void (*fwd_fn)(float*, const float*, const float*, const float*, int, int, int);
typedef void (*bwd_fn)(float*, float*, float*, const float*, const float*, const float*, int, int, int);
static const fwd_fn fwd_versions[] = { NULL, matmul_forward1, matmul_forward2, matmul_forward3 };
static const bwd_fn bwd_versions[] = { NULL, matmul_backward1, matmul_backward2, matmul_backward3 };
#define MM_STR_(x) #x
#define MM_STR(x) MM_STR_(x)
#define MM_TILE_NAME MM_STR(MM_MR) "x" MM_STR(MM_NR) // the tile this build of train_vlv.c uses
static const char* fwd_names[] = { "", "v1 original (dot, scalar reduction)", "v2 dot 4x4, simd reduction", "v3 packed " MM_TILE_NAME " tile (train_vlv.c)" };
static const char* bwd_names[] = { "", "v1 original (axpy rows)", "v2 register tile, unpacked", "v3 packed " MM_TILE_NAME " tile (train_vlv.c)" };
#define NUM_VERSIONS 3

// ----------------------------------------------------------------------------
// correctness. Worst-case bound for float32 recursive summation of K terms plus an initial
// value (Higham, Accuracy and Stability, eq. 3.4-3.5): |computed - exact| <= gamma_{K+1} *
// (|init| + sum_k |a_k b_k|), gamma_n = n u / (1 - n u), u = 2^-24, plus the rounding of each
// product (one more u). Any summation order (blocked, tiled, split accumulators) obeys it
// with K the number of terms, so it holds for every version; it is tight enough that losing
// or doubling one term (typically ~ sum|t| / K) shows up unless K is in the thousands, and
// the report prints the worst observed error in units of the bound so one sees the margin
// (a correct blocked kernel sits at a few percent of it).

static double gamma_n(double n) { double u = ldexp(1.0, -24); return n * u / (1.0 - n * u); }

// returns max |got - ref| / (gamma * mag) over n outputs
static double worst_long = 0.0; // the worst over accumulations of 100+ terms
static double worst(const float* got, const double* ref, const double* mag, size_t n, int K) {
    double g = gamma_n(K + 2.0), w = 0.0;
    for (size_t i = 0; i < n; i++) {
        double bound = g * mag[i] + 1e-30;
        double e = fabs(got[i] - ref[i]) / bound;
        if (!(e <= w)) { w = e; } // NaN counts as a failure
    }
    if (K >= 100 && w > worst_long && w < 1e9) { worst_long = w; }
    return w;
}

static int check_one(int N, int C, int OC, int threads, int verbose, double* worst_seen) {
    float* inp = make((size_t)N * C);
    float* w = make((size_t)OC * C);
    float* b = make(OC);
    float* dout = make((size_t)N * OC);
    float* dinp0 = make((size_t)N * C); // initial gradient contents: the kernels must ADD to them
    float* dw0 = make((size_t)OC * C);
    float* db0 = make(OC);
    double* ref = (double*)malloc(((size_t)N * OC + 1) * sizeof(double));
    double* mag = (double*)malloc(((size_t)N * OC + 1) * sizeof(double));
    double *rdinp = malloc(((size_t)N * C + 1) * 8), *rdinp_m = malloc(((size_t)N * C + 1) * 8);
    double *rdw = malloc(((size_t)OC * C + 1) * 8), *rdw_m = malloc(((size_t)OC * C + 1) * 8);
    double *rdb = malloc(((size_t)OC + 1) * 8), *rdb_m = malloc(((size_t)OC + 1) * 8);
    float* out = malloc(((size_t)N * OC + 1) * 4);
    float* dinp = malloc(((size_t)N * C + 1) * 4);
    float* dw = malloc(((size_t)OC * C + 1) * 4);
    float* db = malloc(((size_t)OC + 1) * 4);
    set_threads(threads);
    int fails = 0;
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        ref_forward(ref, mag, inp, w, with_bias ? b : NULL, N, C, OC);
        for (int v = 1; v <= NUM_VERSIONS; v++) {
            for (size_t i = 0; i < (size_t)N * OC; i++) { out[i] = NAN; } // every output must be written
            fwd_versions[v](out, inp, w, with_bias ? b : NULL, N, C, OC);
            double e = worst(out, ref, mag, (size_t)N * OC, C);
            if (e > *worst_seen) { *worst_seen = e; }
            if (e > 1.0) { fails++; printf("FAIL forward v%d N=%d C=%d OC=%d bias=%d threads=%d: %.3g x bound\n", v, N, C, OC, with_bias, threads, e); }
        }
    }
    ref_backward(rdinp, rdinp_m, rdw, rdw_m, rdb, rdb_m, dinp0, dw0, db0, dout, inp, w, N, C, OC);
    for (int v = 1; v <= NUM_VERSIONS; v++) {
        // every combination of NULL outputs: the others must be exact as with all of them
        for (int mask = 1; mask < 8; mask++) {
            memcpy(dinp, dinp0, (size_t)N * C * 4); memcpy(dw, dw0, (size_t)OC * C * 4); memcpy(db, db0, (size_t)OC * 4);
            bwd_versions[v](mask & 1 ? dinp : NULL, mask & 2 ? dw : NULL, mask & 4 ? db : NULL, dout, inp, w, N, C, OC);
            double e1 = mask & 1 ? worst(dinp, rdinp, rdinp_m, (size_t)N * C, OC) : (memcmp(dinp, dinp0, (size_t)N * C * 4) ? 1e9 : 0);
            double e2 = mask & 2 ? worst(dw, rdw, rdw_m, (size_t)OC * C, N) : (memcmp(dw, dw0, (size_t)OC * C * 4) ? 1e9 : 0);
            double e3 = mask & 4 ? worst(db, rdb, rdb_m, (size_t)OC, N) : (memcmp(db, db0, (size_t)OC * 4) ? 1e9 : 0);
            double e = fmax(e1, fmax(e2, e3));
            if (e < 1e9 && e > *worst_seen) { *worst_seen = e; }
            if (e > 1.0) {
                fails++;
                printf("FAIL backward v%d N=%d C=%d OC=%d threads=%d outputs(dinp,dW,db)=%d%d%d: dinp %.3g dW %.3g db %.3g x bound (1e9: a NULL output was written)\n",
                       v, N, C, OC, threads, mask & 1, !!(mask & 2), !!(mask & 4), e1, e2, e3);
            }
            if (!verbose && mask == 7 && 0) { break; }
        }
    }
    if (verbose) { printf("  N=%5d C=%4d OC=%4d threads=%d: %s\n", N, C, OC, threads, fails ? "FAIL" : "ok"); }
    free(inp); free(w); free(b); free(dout); free(dinp0); free(dw0); free(db0); free(ref); free(mag);
    free(rdinp); free(rdinp_m); free(rdw); free(rdw_m); free(rdb); free(rdb_m); free(out); free(dinp); free(dw); free(db);
    return fails;
}

// train_vlv.c's kernels (v3) must give bitwise the same result at any thread count
static int check_determinism(int N, int C, int OC, int max_threads) {
    float *inp = make((size_t)N * C), *w = make((size_t)OC * C), *b = make(OC), *dout = make((size_t)N * OC);
    float *o1 = malloc((size_t)N * OC * 4), *o2 = malloc((size_t)N * OC * 4);
    float *g1 = make((size_t)N * C + (size_t)OC * C + OC), *g2 = malloc(((size_t)N * C + (size_t)OC * C + OC) * 4);
    size_t ng = (size_t)N * C + (size_t)OC * C + OC;
    memcpy(g2, g1, ng * 4);
    set_threads(1);
    matmul_forward(o1, inp, w, b, N, C, OC);
    matmul_backward(g1, g1 + (size_t)N * C, g1 + (size_t)N * C + (size_t)OC * C, dout, inp, w, N, C, OC);
    int bad = 0;
    for (int t = 2; t <= max_threads; t++) {
        float* g = malloc(ng * 4);
        memcpy(g, g2, ng * 4);
        set_threads(t);
        matmul_forward(o2, inp, w, b, N, C, OC);
        matmul_backward(g, g + (size_t)N * C, g + (size_t)N * C + (size_t)OC * C, dout, inp, w, N, C, OC);
        if (memcmp(o1, o2, (size_t)N * OC * 4) || memcmp(g1, g, ng * 4)) {
            printf("FAIL determinism N=%d C=%d OC=%d: %d threads differ from 1\n", N, C, OC, t); bad++;
        }
        free(g);
    }
    free(inp); free(w); free(b); free(dout); free(o1); free(o2); free(g1); free(g2);
    return bad;
}

static int run_checks(const int* threads, int nthreads, int quick) {
    static const int Ns[] = { 1, 7, 64, 2048 + 13 };
    static const int Cs[] = { 48, 128, 512, 13, 200 };
    static const int OCs[] = { 48, 128, 384, 512, 768, 13, 70 };
    int nN = 4, nC = quick ? 3 : 5, nO = quick ? 5 : 7;
    int fails = 0, cases = 0;
    double worst_seen = 0.0;
    for (int ti = 0; ti < nthreads; ti++) {
        for (int a = 0; a < nN; a++) {
            for (int c = 0; c < nC; c++) {
                for (int o = 0; o < nO; o++) {
                    if (quick && Ns[a] > 2000 && (Cs[c] == 512 || OCs[o] >= 512)) { continue; }
                    fails += check_one(Ns[a], Cs[c], OCs[o], threads[ti], 0, &worst_seen);
                    cases++;
                }
            }
        }
        printf("check: %d threads done, %d shapes so far, %d failures\n", threads[ti], cases, fails);
    }
    int maxt = 1;
    for (int ti = 0; ti < nthreads; ti++) { if (threads[ti] > maxt) { maxt = threads[ti]; } }
    int det = 0;
    static const int dshapes[][3] = { { 2048 + 13, 128, 384 }, { 7, 48, 13 }, { 64, 512, 128 }, { 24, 128, 64 }, { 1, 200, 770 } };
    for (int i = 0; i < 5; i++) { det += check_determinism(dshapes[i][0], dshapes[i][1], dshapes[i][2], maxt < 2 ? 2 : maxt); }
    printf("check: %d shapes x %d versions x (2 forward + 7 backward output sets): %d failures; "
           "worst error %.3g of the bound (%.3g where 100+ terms are summed); v3 (train_vlv.c) bitwise identical at 1..%d threads: %s\n",
           cases / nthreads, NUM_VERSIONS, fails, worst_seen, worst_long, maxt < 2 ? 2 : maxt, det ? "NO" : "yes");
    return fails + det;
}

// ----------------------------------------------------------------------------
// peak: vlvc/fma_peak.h's FMA chains at each thread count (what the core can do), beside
// train_vlv.c's register tile on data that sits in L1 (the kernel's own ceiling)

static double measure_tile_gflops(void) { // one thread, train_vlv.c's tile on L1-resident data
    static float a[MM_MR * MM_KC], bp[MM_KC * MM_NR], c[MM_MR * MM_NR];
    for (int i = 0; i < MM_MR * MM_KC; i++) { a[i] = frand() * 1e-3f; }
    for (int i = 0; i < MM_KC * MM_NR; i++) { bp[i] = frand() * 1e-3f; }
    memset(c, 0, sizeof c);
    double best = 1e30;
    for (int rep = 0; rep < 100; rep++) { // the fastest of 100 short trials: an interrupted one only reads slow
        double t0 = wall_seconds();
        for (int i = 0; i < 1000; i++) { matmul_tile(c, MM_NR, 1, a, MM_KC, 1, bp, MM_KC, MM_MR, MM_NR, MM_NR, 0, NULL); }
        double t = wall_seconds() - t0;
        if (t < best) { best = t; }
    }
    if (c[0] == 12345.0f) { printf(" "); }
    return 1000 * 2.0 * MM_MR * MM_NR * MM_KC / best / 1e9;
}

// ----------------------------------------------------------------------------
// timing

typedef struct { const char* name; int N, C, OC, calls, has_dinp; } Shape;
// the default model (train_vlv.c main) at B = 32 images: 64 patches -> N = 2048 rows; the
// caption GPT with the prefix: 16 + 24 = 40 rows per sample -> N = 1280; the LM head runs once
// per sample on its 24 caption rows (calls = 32 per step).
static const Shape shapes[] = {
    { "qkv        2048x128->384", 2048, 128, 384, 1, 1 },
    { "attn proj  2048x128->128", 2048, 128, 128, 1, 1 },
    { "mlp fc     2048x128->512", 2048, 128, 512, 1, 1 },
    { "mlp proj   2048x512->128", 2048, 512, 128, 1, 1 },
    { "cross kv   2048x128->256", 2048, 128, 256, 1, 1 },
    { "patch emb  2048x48->128 ", 2048, 48, 128, 1, 0 },
    { "DiT final  2048x128->48 ", 2048, 128, 48, 1, 1 },
    { "GPT qkv    1280x128->384", 1280, 128, 384, 1, 1 },
    { "GPT proj   1280x128->128", 1280, 128, 128, 1, 1 },
    { "GPT fc     1280x128->512", 1280, 128, 512, 1, 1 },
    { "GPT mproj  1280x512->128", 1280, 512, 128, 1, 1 },
    { "LM head    24x128->64 x32", 24, 128, 64, 32, 1 },
    { "adaLN      32x128->768  ", 32, 128, 768, 1, 1 },
};
#define NUM_SHAPES (sizeof(shapes) / sizeof(shapes[0]))

// one product of one version, `calls` times (0 forward, 1 backward-input, 2 backward-weight + bias)
static void run_product(int product, int v, const Shape* s, float* inp, float* w, float* b,
                        float* out, float* dout, float* dinp, float* dw, float* db) {
    for (int c = 0; c < s->calls; c++) {
        if (product == 0) { fwd_versions[v](out, inp, w, b, s->N, s->C, s->OC); }
        else if (product == 1) { bwd_versions[v](dinp, NULL, NULL, dout, inp, w, s->N, s->C, s->OC); }
        else { bwd_versions[v](NULL, dw, db, dout, inp, w, s->N, s->C, s->OC); }
    }
}

// median seconds over reps rounds; each round runs every version once, so that a burst of
// load from elsewhere on the machine hits all versions alike
static void time_versions(int product, const Shape* s, int reps, double* med, double* best, float* inp, float* w, float* b,
                          float* out, float* dout, float* dinp, float* dw, float* db) {
    double* ts = (double*)malloc((size_t)reps * (NUM_VERSIONS + 1) * sizeof(double));
    for (int r = -2; r < reps; r++) { // 2 warm-up rounds
        for (int v = 1; v <= NUM_VERSIONS; v++) {
            double t0 = wall_seconds();
            run_product(product, v, s, inp, w, b, out, dout, dinp, dw, db);
            if (r >= 0) { ts[(size_t)v * reps + r] = wall_seconds() - t0; }
        }
    }
    for (int v = 1; v <= NUM_VERSIONS; v++) {
        qsort(ts + (size_t)v * reps, reps, sizeof(double), cmp_double);
        med[v] = ts[(size_t)v * reps + reps / 2];
        best[v] = ts[(size_t)v * reps];
    }
    free(ts);
}

// CPU time the whole machine spent busy (from /proc/stat, in seconds; -1 where unavailable)
static double machine_busy_seconds(void) {
    FILE* f = fopen("/proc/stat", "r");
    if (!f) { return -1.0; }
    unsigned long long u, n, sy, idle, io, irq, sirq, steal;
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &u, &n, &sy, &idle, &io, &irq, &sirq, &steal);
    fclose(f);
    if (got != 8) { return -1.0; }
    return (double)(u + n + sy + irq + sirq + steal) / 100.0; // USER_HZ = 100 on Linux
}
static double process_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void run_bench(const int* threads, int nthreads, int reps) {
    static const char* prod_names[3] = { "forward", "bwd-input", "bwd-weight" };
    char how[128];
    double peak1 = fma_peak_gflops(1, 10, how, sizeof how), tile1 = measure_tile_gflops();
    printf("\npeak, 1 thread: %.1f GFLOP/s (%s);\n"
           "      train_vlv.c's %dx%d tile on L1-resident data: %.1f GFLOP/s (%.0f%%)\n",
           peak1, how, MM_MR, MM_NR, tile1, 100.0 * tile1 / peak1);
    double tot[8][3][NUM_VERSIONS + 1]; // per thread count, product, version: summed time of one step's calls
    memset(tot, 0, sizeof tot);
    double busy0 = machine_busy_seconds(), own0 = process_cpu_seconds(), wall0 = wall_seconds();
    for (int ti = 0; ti < nthreads; ti++) {
        int t = threads[ti];
        set_threads(t);
        double peak = fma_peak_gflops(t, 10, how, sizeof how);
        printf("\n%d thread%s (peak %.0f GFLOP/s, %s); per version: median ms of %d runs (of all the step's calls of that shape),\n"
               "GFLOP/s at the median and at the fastest run, %% of peak at the median\n", t, t > 1 ? "s" : "", peak, how, reps);
        printf("%-26s %-10s", "shape", "product");
        for (int v = 1; v <= NUM_VERSIONS; v++) { printf(" | v%d med ms  GF/s  best  %%pk", v); }
        printf(" | best\n");
        for (size_t si = 0; si < NUM_SHAPES; si++) {
            const Shape* s = &shapes[si];
            float *inp = make((size_t)s->N * s->C), *w = make((size_t)s->OC * s->C), *b = make(s->OC);
            float *out = make((size_t)s->N * s->OC), *dout = make((size_t)s->N * s->OC);
            float *dinp = make((size_t)s->N * s->C), *dw = make((size_t)s->OC * s->C), *db = make(s->OC);
            for (int prod = 0; prod < 3; prod++) {
                if (prod == 1 && !s->has_dinp) { continue; }
                double flops = 2.0 * s->N * s->C * s->OC * s->calls;
                printf("%-26s %-10s", s->name, prod_names[prod]);
                int best = 1; double best_t = 1e30, med[NUM_VERSIONS + 1], fastest[NUM_VERSIONS + 1];
                time_versions(prod, s, reps, med, fastest, inp, w, b, out, dout, dinp, dw, db);
                for (int v = 1; v <= NUM_VERSIONS; v++) {
                    double sec = med[v];
                    double gf = flops / sec / 1e9;
                    printf(" | %7.3f %6.1f %6.1f %3.0f%%", sec * 1e3, gf, flops / fastest[v] / 1e9, 100.0 * gf / peak);
                    if (sec < best_t) { best_t = sec; best = v; }
                    if (ti < 8) { tot[ti][prod][v] += sec; }
                }
                printf(" | v%d\n", best);
            }
            free(inp); free(w); free(b); free(out); free(dout); free(dinp); free(dw); free(db);
        }
        printf("%-37s", "sum over the shapes above");
        for (int v = 1; v <= NUM_VERSIONS; v++) {
            printf(" | %7.2f ms total            ", (tot[ti][0][v] + tot[ti][1][v] + tot[ti][2][v]) * 1e3);
        }
        printf("\nwinner per product (summed over shapes):");
        for (int prod = 0; prod < 3; prod++) {
            int best = 1;
            for (int v = 2; v <= NUM_VERSIONS; v++) { if (tot[ti][prod][v] < tot[ti][prod][best]) { best = v; } }
            printf("  %s: v%d %s (%.2f ms vs v1 %.2f ms, %.1fx)", prod_names[prod], best,
                   prod == 0 ? fwd_names[best] : bwd_names[best], tot[ti][prod][best] * 1e3,
                   tot[ti][prod][1] * 1e3, tot[ti][prod][1] / tot[ti][prod][best]);
        }
        printf("\n");
    }
    double busy = machine_busy_seconds() - busy0, own = process_cpu_seconds() - own0, wall = wall_seconds() - wall0;
    if (busy0 >= 0.0) {
        printf("\nother load on the machine during the bench: %.1f CPU-seconds in %.1f s of wall time (%.0f%% of one core)%s\n",
               busy - own, wall, 100.0 * (busy - own) / wall,
               busy - own > 0.05 * wall ? ": the timings above are disturbed, rerun on a quiet machine" : "");
    }
    if (nthreads >= 2) {
        printf("\nscaling %d -> %d threads (time ratio, summed over shapes):", threads[0], threads[nthreads - 1]);
        for (int prod = 0; prod < 3; prod++) {
            printf("  %s:", prod_names[prod]);
            for (int v = 1; v <= NUM_VERSIONS; v++) {
                printf(" v%d %.2fx", v, tot[0][prod][v] / tot[nthreads - 1][prod][v]);
            }
        }
        printf("\n");
    }
}

int main(int argc, char** argv) {
    int do_check = 1, do_bench = 1, quick = 0, reps = 21;
    int threads[8] = { 1, 2 }, nthreads = 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "check") == 0) { do_bench = 0; }
        else if (strcmp(argv[i], "bench") == 0) { do_check = 0; }
        else if (strcmp(argv[i], "--quick") == 0) { quick = 1; }
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) { reps = atoi(argv[++i]); }
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            nthreads = 0;
            for (char* tok = strtok(argv[++i], ","); tok && nthreads < 8; tok = strtok(NULL, ",")) { threads[nthreads++] = atoi(tok); }
        } else { fprintf(stderr, "usage: %s [check|bench] [--threads 1,2] [--reps 21] [--quick]\n", argv[0]); return 1; }
    }
    if (reps < 1) { reps = 1; }
    printf("matmul lab: tile %d x %d, K chunk %d", MM_MR, MM_NR, MM_KC);
#ifdef _OPENMP
    printf(", OpenMP max threads %d", omp_get_max_threads());
#else
    printf(", no OpenMP");
#endif
#ifdef __AVX512F__
    printf(", AVX-512");
#elif defined(__AVX2__)
    printf(", AVX2");
#endif
#ifdef __FAST_MATH__
    printf(", fast-math");
#endif
    printf("\n");
    int fails = 0;
    if (do_check) { fails = run_checks(threads, nthreads, quick); }
    if (do_bench) {
        run_bench(threads, nthreads, reps);
    }
    return fails ? 1 : 0;
}
