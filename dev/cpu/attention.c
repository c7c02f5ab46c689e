/*
dev/cpu/attention.c — kernel lab for train_vlv.c's attention_forward / attention_backward:
a float64 reference, versions, a correctness check over odd sizes (causal or not, self and
cross, strided q / kv rows as in the packed qkv buffer) at 1 and 2 threads, and a timing
table on the default model's attention shapes (B = 32). The lab includes train_vlv.c itself
(with VLV_NO_MAIN, so without its main and pipeline): v4 is exactly the code the model runs.

  v1  train_vlv.c's original attention: per (query, key) pair a scalar dot product over the
      head (a float reduction gcc may not vectorize without -ffast-math), dk / dv updated in
      memory per pair
  v2  the same loops with `omp simd reduction` on the dot products (vectorized over the head)
  v3  per (b, h): K^T (and V^T) copied to the stack once, so scores and dO V^T are computed a
      query row at a time vectorized over the keys; dk and dv summed in stack rows and added
      once; datt is not touched (the one row of da lives on the stack). Falls back to v2's
      loops when hs * Tk > ATT_TILE (the stack copy would not fit).
  v4  per (b, h) the four products as small matmuls on train_vlv.c's matmul register tile
      (matmul_units: S = Q K^T, O = A V; dV, dA, dQ, dK), a row softmax of scalar loops (its
      sum a serial chain, so its exponentials stay scalar too); the backward is v5's
  v5  train_vlv.c's attention_forward / attention_backward: v4 with a softmax whose loops all
      vectorize (the max as an `omp simd` reduction, which is exact in any order; the
      exponentials in a loop of their own; the sum in row_sum's 16 lanes, the same bits at
      any vector width)

Build and run (from the repository root):
  gcc -O3 -march=native -fopenmp -std=gnu11 -Wall -Wextra -o /tmp/attention dev/cpu/attention.c -lm -lz
  /tmp/attention [check|bench] [--threads 1,2] [--reps 21]
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

// the current kernels: attention_forward, attention_backward and the matmul_units / MM_MR /
// MM_NR they (and v4) run on, straight from train_vlv.c without its main
#define VLV_NO_MAIN
#include "../../train_vlv.c"

static void set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}
static uint64_t rng_state = 99;
static float frand(void) {
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (float)((uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 40) / 8388608.0 - 1.0);
}
static float* make(size_t n, float s) {
    float* p = (float*)malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) { p[i] = s * frand(); }
    return p;
}
static int cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

// ----------------------------------------------------------------------------
// v1: train_vlv.c's original attention (verbatim, renamed)

void attention_forward1(float* out, float* att, const float* q, int q_stride, const float* k,
                        const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int i = 0; i < Tq; i++) {
                const float* qi = q + ((size_t)b * Tq + i) * q_stride + h * hs;
                float* a = att + (((size_t)b * NH + h) * Tq + i) * Tk;
                int jend = causal ? i + 1 : Tk;
                float maxv = -FLT_MAX;
                for (int j = 0; j < jend; j++) {
                    const float* kj = k + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    float dot = 0.0f;
                    for (int c = 0; c < hs; c++) { dot += qi[c] * kj[c]; }
                    a[j] = dot * scale;
                    if (a[j] > maxv) { maxv = a[j]; }
                }
                float sum = 0.0f;
                for (int j = 0; j < jend; j++) { a[j] = expf(a[j] - maxv); sum += a[j]; }
                float inv = 1.0f / sum;
                for (int j = 0; j < jend; j++) { a[j] *= inv; }
                for (int j = jend; j < Tk; j++) { a[j] = 0.0f; }
                float* o = out + ((size_t)b * Tq + i) * C + h * hs;
                for (int c = 0; c < hs; c++) { o[c] = 0.0f; }
                for (int j = 0; j < jend; j++) {
                    const float* vj = v + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    for (int c = 0; c < hs; c++) { o[c] += a[j] * vj[c]; }
                }
            }
        }
    }
}
void attention_backward1(float* dq, float* dk, float* dv, float* datt, const float* dout,
                         const float* att, const float* q, int q_stride, const float* k,
                         const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int i = 0; i < Tq; i++) {
                const float* a = att + (((size_t)b * NH + h) * Tq + i) * Tk;
                float* da = datt + (((size_t)b * NH + h) * Tq + i) * Tk;
                const float* doi = dout + ((size_t)b * Tq + i) * C + h * hs;
                const float* qi = q + ((size_t)b * Tq + i) * q_stride + h * hs;
                float* dqi = dq + ((size_t)b * Tq + i) * q_stride + h * hs;
                int jend = causal ? i + 1 : Tk;
                float a_da = 0.0f;
                for (int j = 0; j < jend; j++) {
                    const float* vj = v + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    float* dvj = dv + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    float dot = 0.0f;
                    for (int c = 0; c < hs; c++) { dot += doi[c] * vj[c]; dvj[c] += a[j] * doi[c]; }
                    da[j] = dot;
                    a_da += a[j] * dot;
                }
                for (int j = 0; j < jend; j++) {
                    float ds = a[j] * (da[j] - a_da) * scale;
                    const float* kj = k + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    float* dkj = dk + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    for (int c = 0; c < hs; c++) { dqi[c] += ds * kj[c]; dkj[c] += ds * qi[c]; }
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------
// v2: v1 with the dot products vectorized over the head (omp simd reduction) and the dv
// update split from the dot product

void attention_forward2(float* out, float* att, const float* q, int q_stride, const float* k,
                        const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int i = 0; i < Tq; i++) {
                const float* qi = q + ((size_t)b * Tq + i) * q_stride + h * hs;
                float* a = att + (((size_t)b * NH + h) * Tq + i) * Tk;
                int jend = causal ? i + 1 : Tk;
                float maxv = -FLT_MAX;
                for (int j = 0; j < jend; j++) {
                    const float* kj = k + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    float dot = 0.0f;
                    #pragma omp simd reduction(+:dot)
                    for (int c = 0; c < hs; c++) { dot += qi[c] * kj[c]; }
                    a[j] = dot * scale;
                    if (a[j] > maxv) { maxv = a[j]; }
                }
                float sum = 0.0f;
                for (int j = 0; j < jend; j++) { a[j] = expf(a[j] - maxv); sum += a[j]; }
                float inv = 1.0f / sum;
                for (int j = 0; j < jend; j++) { a[j] *= inv; }
                for (int j = jend; j < Tk; j++) { a[j] = 0.0f; }
                float* o = out + ((size_t)b * Tq + i) * C + h * hs;
                for (int c = 0; c < hs; c++) { o[c] = 0.0f; }
                for (int j = 0; j < jend; j++) {
                    const float* vj = v + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    #pragma omp simd
                    for (int c = 0; c < hs; c++) { o[c] += a[j] * vj[c]; }
                }
            }
        }
    }
}
void attention_backward2(float* dq, float* dk, float* dv, float* datt, const float* dout,
                         const float* att, const float* q, int q_stride, const float* k,
                         const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int i = 0; i < Tq; i++) {
                const float* a = att + (((size_t)b * NH + h) * Tq + i) * Tk;
                float* da = datt + (((size_t)b * NH + h) * Tq + i) * Tk;
                const float* doi = dout + ((size_t)b * Tq + i) * C + h * hs;
                const float* qi = q + ((size_t)b * Tq + i) * q_stride + h * hs;
                float* dqi = dq + ((size_t)b * Tq + i) * q_stride + h * hs;
                int jend = causal ? i + 1 : Tk;
                float a_da = 0.0f;
                for (int j = 0; j < jend; j++) {
                    const float* vj = v + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    float* dvj = dv + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    float dot = 0.0f;
                    #pragma omp simd reduction(+:dot)
                    for (int c = 0; c < hs; c++) { dot += doi[c] * vj[c]; }
                    #pragma omp simd
                    for (int c = 0; c < hs; c++) { dvj[c] += a[j] * doi[c]; }
                    da[j] = dot;
                    a_da += a[j] * dot;
                }
                for (int j = 0; j < jend; j++) {
                    float ds = a[j] * (da[j] - a_da) * scale;
                    const float* kj = k + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    float* dkj = dk + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    #pragma omp simd
                    for (int c = 0; c < hs; c++) { dqi[c] += ds * kj[c]; dkj[c] += ds * qi[c]; }
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------
// v3: per (b, h), K^T / V^T copied to the stack so that a row of scores (and of da) is one
// loop vectorized over the keys; dk, dv summed in stack rows and added once

#define ATT_TILE 4096 // floats in each stack copy (16 KiB): hs 32 x 128 keys

// Multi-head attention, self or cross, with one code path. Queries are rows of q_stride floats
// ([B, Tq, q_stride], the C query channels first), keys and values rows of kv_stride floats
// ([B, Tk, kv_stride]), so a packed qkv buffer and separate q / kv buffers both work.
// att [B, NH, Tq, Tk] keeps the softmax probabilities (0 where masked) for the backward;
// out [B, Tq, C]. causal: query i sees keys j <= i (then Tq == Tk).
void attention_forward3(float* out, float* att, const float* q, int q_stride, const float* k,
                       const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    int tiled = hs * Tk <= ATT_TILE;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            float kt[ATT_TILE]; // K^T of this (b, h): kt[c * Tk + j] = k_j[c]
            for (int j = 0; tiled && j < Tk; j++) {
                const float* kj = k + ((size_t)b * Tk + j) * kv_stride + h * hs;
                for (int c = 0; c < hs; c++) { kt[c * Tk + j] = kj[c]; }
            }
            for (int i = 0; i < Tq; i++) {
                const float* qi = q + ((size_t)b * Tq + i) * q_stride + h * hs;
                float* a = att + (((size_t)b * NH + h) * Tq + i) * Tk;
                int jend = causal ? i + 1 : Tk;
                // scores, then a numerically safe softmax (-FLT_MAX, not -INFINITY: -Ofast
                // assumes there are no infinities)
                if (tiled) {
                    for (int j = 0; j < jend; j++) { a[j] = 0.0f; }
                    for (int c = 0; c < hs; c++) {
                        float qc = qi[c];
                        const float* ktc = kt + c * Tk;
                        #pragma omp simd
                        for (int j = 0; j < jend; j++) { a[j] += qc * ktc[j]; }
                    }
                } else {
                    for (int j = 0; j < jend; j++) {
                        const float* kj = k + ((size_t)b * Tk + j) * kv_stride + h * hs;
                        float dot = 0.0f;
                        #pragma omp simd reduction(+:dot)
                        for (int c = 0; c < hs; c++) { dot += qi[c] * kj[c]; }
                        a[j] = dot;
                    }
                }
                float maxv = -FLT_MAX;
                #pragma omp simd reduction(max:maxv)
                for (int j = 0; j < jend; j++) { a[j] *= scale; maxv = a[j] > maxv ? a[j] : maxv; }
                float sum = 0.0f;
                for (int j = 0; j < jend; j++) { a[j] = expf(a[j] - maxv); sum += a[j]; }
                float inv = 1.0f / sum;
                for (int j = 0; j < jend; j++) { a[j] *= inv; }
                for (int j = jend; j < Tk; j++) { a[j] = 0.0f; }
                // weighted sum of the values, four keys per pass over the output row
                float* o = out + ((size_t)b * Tq + i) * C + h * hs;
                for (int c = 0; c < hs; c++) { o[c] = 0.0f; }
                int j = 0;
                for (; j + 4 <= jend; j += 4) {
                    const float* v0 = v + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    const float *v1 = v0 + kv_stride, *v2 = v1 + kv_stride, *v3 = v2 + kv_stride;
                    float a0 = a[j], a1 = a[j + 1], a2 = a[j + 2], a3 = a[j + 3];
                    #pragma omp simd
                    for (int c = 0; c < hs; c++) { o[c] += (a0 * v0[c] + a1 * v1[c]) + (a2 * v2[c] + a3 * v3[c]); }
                }
                for (; j < jend; j++) {
                    const float* vj = v + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    #pragma omp simd
                    for (int c = 0; c < hs; c++) { o[c] += a[j] * vj[c]; }
                }
            }
        }
    }
}

// Backward of attention_forward. With o_i = sum_j a_ij v_j and a_i = softmax(s_i),
// s_ij = scale q_i.k_j: dv_j += a_ij do_i; da_ij = do_i.v_j; ds_ij = a_ij (da_ij - sum_k a_ik da_ik);
// dq_i += scale sum_j ds_ij k_j; dk_j += scale ds_ij q_i. datt [B, NH, Tq, Tk] is scratch
// (used only by heads too large for the stack copies). Each (b, h) touches only its own rows
// and head channels, so (b, h) runs in parallel.
void attention_backward3(float* dq, float* dk, float* dv, float* datt, const float* dout,
                        const float* att, const float* q, int q_stride, const float* k,
                        const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    int tiled = hs * Tk <= ATT_TILE;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            // V^T, this head's dk and dv rows, and a row of da, on the stack (64 KiB)
            float vt[ATT_TILE], dk_h[ATT_TILE], dv_h[ATT_TILE], da_row[ATT_TILE];
            if (tiled) {
                for (int j = 0; j < Tk; j++) {
                    const float* vj = v + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    for (int c = 0; c < hs; c++) { vt[c * Tk + j] = vj[c]; }
                }
                for (int x = 0; x < hs * Tk; x++) { dk_h[x] = 0.0f; dv_h[x] = 0.0f; }
            }
            for (int i = 0; i < Tq; i++) {
                const float* a = att + (((size_t)b * NH + h) * Tq + i) * Tk;
                float* da = tiled ? da_row : datt + (((size_t)b * NH + h) * Tq + i) * Tk;
                const float* doi = dout + ((size_t)b * Tq + i) * C + h * hs;
                const float* qi = q + ((size_t)b * Tq + i) * q_stride + h * hs;
                float* dqi = dq + ((size_t)b * Tq + i) * q_stride + h * hs;
                int jend = causal ? i + 1 : Tk;
                if (tiled) { // da_j = do_i . v_j for all j at once, vectorized over the keys
                    for (int j = 0; j < jend; j++) { da[j] = 0.0f; }
                    for (int c = 0; c < hs; c++) {
                        float dc = doi[c];
                        const float* vtc = vt + c * Tk;
                        #pragma omp simd
                        for (int j = 0; j < jend; j++) { da[j] += dc * vtc[j]; }
                    }
                } else {
                    for (int j = 0; j < jend; j++) {
                        const float* vj = v + ((size_t)b * Tk + j) * kv_stride + h * hs;
                        float dot = 0.0f;
                        #pragma omp simd reduction(+:dot)
                        for (int c = 0; c < hs; c++) { dot += doi[c] * vj[c]; }
                        da[j] = dot;
                    }
                }
                float a_da = 0.0f;
                #pragma omp simd reduction(+:a_da)
                for (int j = 0; j < jend; j++) { a_da += a[j] * da[j]; }
                for (int j = 0; j < jend; j++) {
                    float ds = a[j] * (da[j] - a_da) * scale;
                    float aj = a[j];
                    const float* kj = k + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    float* dkj = tiled ? dk_h + j * hs : dk + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    float* dvj = tiled ? dv_h + j * hs : dv + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    #pragma omp simd
                    for (int c = 0; c < hs; c++) { dqi[c] += ds * kj[c]; dkj[c] += ds * qi[c]; dvj[c] += aj * doi[c]; }
                }
            }
            for (int j = 0; tiled && j < Tk; j++) { // add the head's dk, dv rows once
                float* dkj = dk + ((size_t)b * Tk + j) * kv_stride + h * hs;
                float* dvj = dv + ((size_t)b * Tk + j) * kv_stride + h * hs;
                #pragma omp simd
                for (int c = 0; c < hs; c++) { dkj[c] += dk_h[j * hs + c]; dvj[c] += dv_h[j * hs + c]; }
            }
        }
    }
}

// ----------------------------------------------------------------------------
// v4: the four products on matmul_units, as in train_vlv.c, and a softmax of scalar loops

void attention_forward4(float* out, float* att, const float* q, int q_stride, const float* k,
                        const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
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
            matmul_units(s, Tk, 1, qh, q_stride, 1, kh, 1, kv_stride, NULL, 1, Tq, hs, Tk, 0, s_units);
            for (int i = 0; i < Tq; i++) {
                float* a = s + (size_t)i * Tk;
                int jend = causal ? i + 1 : Tk;
                float maxv = -FLT_MAX;
                for (int j = 0; j < jend; j++) { a[j] *= scale; maxv = a[j] > maxv ? a[j] : maxv; }
                float sum = 0.0f;
                for (int j = 0; j < jend; j++) { a[j] = exp_vec(a[j] - maxv); sum += a[j]; }
                float inv = 1.0f / sum;
                for (int j = 0; j < jend; j++) { a[j] *= inv; }
                for (int j = jend; j < Tk; j++) { a[j] = 0.0f; }
            }
            matmul_units(out + (size_t)b * Tq * C + h * hs, C, 1, s, Tk, 1, vh, kv_stride, 1, NULL, 1, Tq, Tk, hs, 0, o_units);
        }
    }
}

// ----------------------------------------------------------------------------
// v5: train_vlv.c's attention_forward / attention_backward (included at the top)

#define attention_forward5 attention_forward
#define attention_backward5 attention_backward

typedef void (*afwd_fn)(float*, float*, const float*, int, const float*, const float*, int, int, int, int, int, int, int);
typedef void (*abwd_fn)(float*, float*, float*, float*, const float*, const float*, const float*, int, const float*,
                        const float*, int, int, int, int, int, int, int);
static const afwd_fn fwd_v[] = { NULL, attention_forward1, attention_forward2, attention_forward3, attention_forward4, attention_forward5 };
static const abwd_fn bwd_v[] = { NULL, attention_backward1, attention_backward2, attention_backward3, attention_backward5, attention_backward5 };
#define NV 5

// ----------------------------------------------------------------------------
// float64 reference of both passes

static void ref_attention(double* out, double* att, double* dq, double* dk, double* dv,
                          const float* q, int q_stride, const float* k, const float* v, int kv_stride,
                          const float* dout, int B, int Tq, int Tk, int C, int NH, int causal) {
    int hs = C / NH;
    double scale = 1.0 / sqrt((double)hs);
    double* da = (double*)malloc(Tk * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int i = 0; i < Tq; i++) {
                const float* qi = q + ((size_t)b * Tq + i) * q_stride + h * hs;
                double* a = att + (((size_t)b * NH + h) * Tq + i) * Tk;
                int jend = causal ? i + 1 : Tk;
                double maxv = -1e300;
                for (int j = 0; j < Tk; j++) { a[j] = 0.0; }
                for (int j = 0; j < jend; j++) {
                    const float* kj = k + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    double s = 0.0;
                    for (int c = 0; c < hs; c++) { s += (double)qi[c] * kj[c]; }
                    a[j] = s * scale;
                    if (a[j] > maxv) { maxv = a[j]; }
                }
                double sum = 0.0;
                for (int j = 0; j < jend; j++) { a[j] = exp(a[j] - maxv); sum += a[j]; }
                for (int j = 0; j < jend; j++) { a[j] /= sum; }
                double* o = out + ((size_t)b * Tq + i) * C + h * hs;
                for (int c = 0; c < hs; c++) {
                    double s = 0.0;
                    for (int j = 0; j < jend; j++) { s += a[j] * v[((size_t)b * Tk + j) * kv_stride + h * hs + c]; }
                    o[c] = s;
                }
                // backward
                const float* doi = dout + ((size_t)b * Tq + i) * C + h * hs;
                double a_da = 0.0;
                for (int j = 0; j < jend; j++) {
                    const float* vj = v + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    double s = 0.0;
                    for (int c = 0; c < hs; c++) { s += (double)doi[c] * vj[c]; dv[((size_t)b * Tk + j) * kv_stride + h * hs + c] += a[j] * doi[c]; }
                    da[j] = s;
                    a_da += a[j] * s;
                }
                for (int j = 0; j < jend; j++) {
                    double ds = a[j] * (da[j] - a_da) * scale;
                    const float* kj = k + ((size_t)b * Tk + j) * kv_stride + h * hs;
                    for (int c = 0; c < hs; c++) {
                        dq[((size_t)b * Tq + i) * q_stride + h * hs + c] += ds * kj[c];
                        dk[((size_t)b * Tk + j) * kv_stride + h * hs + c] += ds * qi[c];
                    }
                }
            }
        }
    }
    free(da);
}

// norm-wise relative error max|got - ref| / max|ref| over the entries selected by stride / width
static double relerr(const float* got, const double* ref, size_t rows, int stride, int offset, int width) {
    double e = 0.0, m = 0.0;
    for (size_t r = 0; r < rows; r++) {
        for (int c = 0; c < width; c++) {
            size_t i = r * stride + offset + c;
            double d = fabs(got[i] - ref[i]);
            if (!(d <= e)) { e = d; }
            if (fabs(ref[i]) > m) { m = fabs(ref[i]); }
        }
    }
    return e / (m + 1e-30);
}

// the layout of self-attention: a packed qkv buffer [B, T, 3C]; of cross-attention: q [B, Tq, C], kv [B, Tk, 2C]
static int check_case(int B, int Tq, int Tk, int C, int NH, int causal, int cross, int threads, double* worst) {
    int q_stride = cross ? C : 3 * C, kv_stride = cross ? 2 * C : 3 * C;
    size_t nq = (size_t)B * Tq * q_stride, nkv = cross ? (size_t)B * Tk * kv_stride : 0;
    float* qbuf = make(nq, 2.0f);
    float* kvbuf = cross ? make(nkv, 2.0f) : qbuf;
    const float *q = qbuf, *k = cross ? kvbuf : qbuf + C, *v = cross ? kvbuf + C : qbuf + 2 * C;
    float* dout = make((size_t)B * Tq * C, 1.0f);
    size_t natt = (size_t)B * NH * Tq * Tk;
    double *rout = calloc((size_t)B * Tq * C, 8), *ratt = calloc(natt, 8);
    double *rdq = calloc(nq, 8), *rdkv = calloc(cross ? nkv : nq, 8);
    // initial gradient contents (the backward adds): start from the same random values
    float* dq0 = make(nq, 0.1f);
    float* dkv0 = cross ? make(nkv, 0.1f) : dq0;
    for (size_t i = 0; i < nq; i++) { rdq[i] = dq0[i]; }
    if (cross) { for (size_t i = 0; i < nkv; i++) { rdkv[i] = dkv0[i]; } }
    ref_attention(rout, ratt, rdq, cross ? rdkv : rdq + C, cross ? rdkv + C : rdq + 2 * C, q, q_stride, k, v, kv_stride,
                  dout, B, Tq, Tk, C, NH, causal);
    float *out = malloc((size_t)B * Tq * C * 4), *att = malloc(natt * 4), *datt = malloc(natt * 4);
    float *dq = malloc(nq * 4), *dkv = cross ? malloc(nkv * 4) : NULL;
    set_threads(threads);
    int fails = 0;
    for (int ver = 1; ver <= NV; ver++) {
        for (size_t i = 0; i < (size_t)B * Tq * C; i++) { out[i] = NAN; }
        for (size_t i = 0; i < natt; i++) { att[i] = NAN; datt[i] = NAN; }
        fwd_v[ver](out, att, q, q_stride, k, v, kv_stride, B, Tq, Tk, C, NH, causal);
        memcpy(dq, dq0, nq * 4);
        if (cross) { memcpy(dkv, dkv0, nkv * 4); }
        float *dk = cross ? dkv : dq + C, *dv = cross ? dkv + C : dq + 2 * C;
        bwd_v[ver](dq, dk, dv, datt, dout, att, q, q_stride, k, v, kv_stride, B, Tq, Tk, C, NH, causal);
        double e_out = relerr(out, rout, (size_t)B * Tq, C, 0, C);
        double e_att = relerr(att, ratt, natt, 1, 0, 1);
        double e_dq = relerr(dq, rdq, (size_t)B * Tq, q_stride, 0, C);
        double e_dk = cross ? relerr(dkv, rdkv, (size_t)B * Tk, kv_stride, 0, C) : relerr(dq, rdq, (size_t)B * Tq, q_stride, C, C);
        double e_dv = cross ? relerr(dkv, rdkv, (size_t)B * Tk, kv_stride, C, C) : relerr(dq, rdq, (size_t)B * Tq, q_stride, 2 * C, C);
        double e = fmax(fmax(e_out, e_att), fmax(e_dq, fmax(e_dk, e_dv)));
        if (e > *worst || e != e) { *worst = e; }
        // tolerance: a few float32 ulps times the accumulation length (Tk keys, hs channels, Tq
        // queries for dk/dv); the inputs are O(1) so no cancellation beyond that
        double tol = 1e-6 * (4.0 + sqrt((double)Tq * Tk * (C / NH)) / 8.0);
        if (!(e <= tol)) {
            fails++;
            printf("FAIL v%d B=%d Tq=%d Tk=%d C=%d NH=%d causal=%d cross=%d threads=%d: out %.2g att %.2g dq %.2g dk %.2g dv %.2g (tol %.2g)\n",
                   ver, B, Tq, Tk, C, NH, causal, cross, threads, e_out, e_att, e_dq, e_dk, e_dv, tol);
        }
    }
    free(qbuf); if (cross) { free(kvbuf); free(dkv0); free(dkv); }
    free(dout); free(rout); free(ratt); free(rdq); free(rdkv); free(dq0); free(out); free(att); free(datt); free(dq);
    return fails;
}

static int run_checks(const int* threads, int nthreads) {
    // (B, Tq, Tk, C, NH, causal, cross): the default model's kinds, the test configs' odd
    // widths and head counts, a single query, and T large enough for v3's stack fallback
    static const int cases[][7] = {
        { 3, 64, 64, 128, 4, 0, 0 }, { 3, 16, 16, 128, 4, 1, 0 }, { 3, 40, 40, 128, 4, 1, 0 },
        { 3, 16, 64, 128, 4, 0, 1 }, { 3, 64, 16, 128, 4, 0, 1 }, { 5, 9, 9, 24, 3, 0, 0 },
        { 5, 6, 9, 24, 4, 0, 1 }, { 5, 9, 6, 20, 5, 0, 1 }, { 5, 13, 13, 12, 3, 1, 0 },
        { 1, 1, 1, 8, 2, 1, 0 }, { 2, 7, 5, 16, 2, 0, 1 }, { 2, 200, 200, 64, 1, 1, 0 },
        { 2, 33, 150, 128, 2, 0, 1 },
    };
    int n = sizeof(cases) / sizeof(cases[0]), fails = 0;
    double worst = 0.0;
    for (int t = 0; t < nthreads; t++) {
        for (int i = 0; i < n; i++) {
            const int* c = cases[i];
            fails += check_case(c[0], c[1], c[2], c[3], c[4], c[5], c[6], threads[t], &worst);
        }
    }
    // train_vlv.c's attention (v5) must give bitwise the same at 1 and 2 threads
    int det = 0;
    for (int i = 0; i < n; i++) {
        const int* cs = cases[i];
        int B = cs[0], Tq = cs[1], Tk = cs[2], C = cs[3], NH = cs[4], causal = cs[5], cross = cs[6];
        int q_stride = cross ? C : 3 * C, kv_stride = cross ? 2 * C : 3 * C;
        size_t nq = (size_t)B * Tq * q_stride, nkv = cross ? (size_t)B * Tk * kv_stride : nq, natt = (size_t)B * NH * Tq * Tk;
        float* qb = make(nq, 2.0f);
        float* kvb = cross ? make(nkv, 2.0f) : qb;
        const float *q = qb, *k = cross ? kvb : qb + C, *v = cross ? kvb + C : qb + 2 * C;
        float* dout = make((size_t)B * Tq * C, 1.0f);
        float *out[2], *att[2], *datt[2], *dq[2], *dkv[2];
        for (int r = 0; r < 2; r++) {
            out[r] = calloc((size_t)B * Tq * C, 4); att[r] = calloc(natt, 4); datt[r] = calloc(natt, 4);
            dq[r] = calloc(nq, 4); dkv[r] = cross ? calloc(nkv, 4) : dq[r];
            set_threads(r + 1);
            attention_forward5(out[r], att[r], q, q_stride, k, v, kv_stride, B, Tq, Tk, C, NH, causal);
            attention_backward5(dq[r], cross ? dkv[r] : dq[r] + C, cross ? dkv[r] + C : dq[r] + 2 * C, datt[r], dout, att[r],
                                q, q_stride, k, v, kv_stride, B, Tq, Tk, C, NH, causal);
        }
        if (memcmp(out[0], out[1], (size_t)B * Tq * C * 4) || memcmp(att[0], att[1], natt * 4) || memcmp(dq[0], dq[1], nq * 4) ||
            (cross && memcmp(dkv[0], dkv[1], nkv * 4))) { det++; printf("FAIL determinism case %d: 1 and 2 threads differ\n", i); }
        for (int r = 0; r < 2; r++) { free(out[r]); free(att[r]); free(datt[r]); free(dq[r]); if (cross) { free(dkv[r]); } }
        free(qb); if (cross) { free(kvb); } free(dout);
    }
    printf("check: %d cases x %d versions x %d thread counts: %d failures; worst norm-wise relative error %.3g; "
           "train_vlv.c's v5 bitwise identical at 1 and 2 threads: %s\n", n, NV, nthreads, fails, worst, det ? "NO" : "yes");
    return fails + det;
}

// ----------------------------------------------------------------------------
// timing on the default model's attention shapes (B = 32); calls = layers per step

typedef struct { const char* name; int Tq, Tk, C, NH, causal, cross, layers; } AShape;
static const AShape ashapes[] = {
    { "ViT / DiT self  T=64      ", 64, 64, 128, 4, 0, 0, 1 },
    { "DiT cross       64 <- 16  ", 64, 16, 128, 4, 0, 1, 1 },
    { "adapter cross   16 <- 64  ", 16, 64, 128, 4, 0, 1, 1 },
    { "GPT causal      T=40      ", 40, 40, 128, 4, 1, 0, 1 },
    { "text/adapter causal T=16  ", 16, 16, 128, 4, 1, 0, 1 },
};

static void run_bench(const int* threads, int nthreads, int reps) {
    int B = 32;
    for (int t = 0; t < nthreads; t++) {
        set_threads(threads[t]);
        printf("\n%d thread%s, B=%d, median of %d (ms; GFLOP/s counting 4 hs FLOPs per (query, key) pair forward, 8 backward)\n",
               threads[t], threads[t] > 1 ? "s" : "", B, reps);
        printf("%-27s %-8s", "shape", "pass");
        for (int v = 1; v <= NV; v++) { printf(" |   v%d ms  GFLOP/s", v); }
        printf(" | best\n");
        for (size_t si = 0; si < sizeof(ashapes) / sizeof(ashapes[0]); si++) {
            const AShape* s = &ashapes[si];
            int C = s->C, q_stride = s->cross ? C : 3 * C, kv_stride = s->cross ? 2 * C : 3 * C;
            float* qb = make((size_t)B * s->Tq * q_stride, 2.0f);
            float* kvb = s->cross ? make((size_t)B * s->Tk * kv_stride, 2.0f) : qb;
            float* dqb = make((size_t)B * s->Tq * q_stride, 0.1f);
            float* dkvb = s->cross ? make((size_t)B * s->Tk * kv_stride, 0.1f) : dqb;
            const float *q = qb, *k = s->cross ? kvb : qb + C, *v = s->cross ? kvb + C : qb + 2 * C;
            float *dk = s->cross ? dkvb : dqb + C, *dv = s->cross ? dkvb + C : dqb + 2 * C;
            float* dout = make((size_t)B * s->Tq * C, 1.0f);
            float* out = make((size_t)B * s->Tq * C, 1.0f);
            size_t natt = (size_t)B * s->NH * s->Tq * s->Tk;
            float *att = make(natt, 1.0f), *datt = make(natt, 1.0f);
            double pairs = (double)B * s->NH * (s->causal ? s->Tq * (s->Tq + 1) / 2.0 : (double)s->Tq * s->Tk);
            for (int pass = 0; pass < 2; pass++) {
                double flops = (pass ? 8.0 : 4.0) * (C / s->NH) * pairs;
                double* ts = malloc((size_t)reps * (NV + 1) * sizeof(double));
                for (int r = -2; r < reps; r++) {
                    for (int ver = 1; ver <= NV; ver++) {
                        fwd_v[ver](out, att, q, q_stride, k, v, kv_stride, B, s->Tq, s->Tk, C, s->NH, s->causal);
                        double t0 = wall_seconds();
                        if (pass == 0) { fwd_v[ver](out, att, q, q_stride, k, v, kv_stride, B, s->Tq, s->Tk, C, s->NH, s->causal); }
                        else { bwd_v[ver](dqb, dk, dv, datt, dout, att, q, q_stride, k, v, kv_stride, B, s->Tq, s->Tk, C, s->NH, s->causal); }
                        if (r >= 0) { ts[(size_t)ver * reps + r] = wall_seconds() - t0; }
                    }
                }
                printf("%-27s %-8s", s->name, pass ? "backward" : "forward");
                int best = 1; double bt = 1e30;
                for (int ver = 1; ver <= NV; ver++) {
                    qsort(ts + (size_t)ver * reps, reps, sizeof(double), cmp_double);
                    double med = ts[(size_t)ver * reps + reps / 2];
                    printf(" | %7.3f %8.1f", med * 1e3, flops / med / 1e9);
                    if (med < bt) { bt = med; best = ver; }
                }
                printf(" | v%d\n", best);
                free(ts);
            }
            free(qb); if (s->cross) { free(kvb); free(dkvb); }
            free(dqb); free(dout); free(out); free(att); free(datt);
        }
    }
}

int main(int argc, char** argv) {
    int do_check = 1, do_bench = 1, reps = 21, threads[8] = { 1, 2 }, nthreads = 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "check") == 0) { do_bench = 0; }
        else if (strcmp(argv[i], "bench") == 0) { do_check = 0; }
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) { reps = atoi(argv[++i]); }
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            nthreads = 0;
            for (char* tok = strtok(argv[++i], ","); tok && nthreads < 8; tok = strtok(NULL, ",")) { threads[nthreads++] = atoi(tok); }
        } else { fprintf(stderr, "usage: %s [check|bench] [--threads 1,2] [--reps 21]\n", argv[0]); return 1; }
    }
    if (reps < 1) { reps = 1; }
    int fails = do_check ? run_checks(threads, nthreads) : 0;
    if (do_bench) { run_bench(threads, nthreads, reps); }
    return fails ? 1 : 0;
}
