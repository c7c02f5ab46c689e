// ----------------------------------------------------------------------------
// dev/cpu/matmul_kernels.h — the proposed drop-in matmul_forward / matmul_backward for
// train_vlv.c: paste from '// register tile:' to the end in place of the two current
// functions (needs <stddef.h>, <math.h> and, under _OPENMP, <omp.h>, all already included
// there; dev/cpu/splice.py does it). dev/cpu/matmul.c includes this file and checks and times
// exactly this code; dev/cpu/attention_kernels.h runs attention on its matmul_units.
//
// All three products are one blocked kernel, C[M, NC] (+)= A[M, K] B[K, NC]:
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

// register tile: 12 x 16 is 12 zmm or 24 ymm accumulators (32 vector registers with AVX-512);
// with 16 vector registers (AVX2, NEON) 6 x 16 is 12 ymm accumulators
#if defined(__AVX512F__)
#define MM_MR 12
#else
#define MM_MR 6
#endif
#define MM_NR 16
#define MM_KC 256 // rows of a B panel: 16 KiB, kept in L1 while all of a thread's row tiles use it

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

// one tile: c[r, j] (+)= sum_k a[r * a_m + k * a_k] * bp[k * MM_NR + j] for r < mr, j < nc.
// mr is a constant at each call, so the accumulators become registers. first: this is the
// first K chunk of a forward, so c = bias + sum instead of c += sum.
MM_INLINE void matmul_tile(float* c, size_t ldc, const float* a, size_t a_m, size_t a_k,
                           const float* bp, int K, const int mr, int nc, int first, const float* bias) {
    float acc[MM_MR][MM_NR];
    for (int r = 0; r < mr; r++) {
        for (int j = 0; j < MM_NR; j++) { acc[r][j] = 0.0f; }
    }
    for (int k = 0; k < K; k++) {
        const float* b = bp + (size_t)k * MM_NR;
        for (int r = 0; r < mr; r++) {
            float av = a[r * a_m + k * a_k];
            #pragma omp simd
            for (int j = 0; j < MM_NR; j++) { acc[r][j] = MM_FMA(av, b[j], acc[r][j]); }
        }
    }
    for (int r = 0; r < mr; r++) {
        float* cr = c + r * ldc;
        if (nc == MM_NR) {
            #pragma omp simd
            for (int j = 0; j < MM_NR; j++) { cr[j] = (first ? (bias ? bias[j] : 0.0f) : cr[j]) + acc[r][j]; }
        } else {
            for (int j = 0; j < nc; j++) { cr[j] = (first ? (bias ? bias[j] : 0.0f) : cr[j]) + acc[r][j]; }
        }
    }
}

// C[M, NC] (+)= A[M, K] B[K, NC] with A(m, k) = a[m * a_m + k * a_k], B(k, j) = b[k * b_k + j * b_j],
// C(m, j) = c[m * ldc + j]; forward: C = bias + A B (bias may be NULL), else C += A B. Serial:
// computes the units [u0, u1) (unit u: column panel u / m_tiles, row tile u % m_tiles).
static void matmul_units(float* c, size_t ldc, const float* a, size_t a_m, size_t a_k,
                         const float* b, size_t b_k, size_t b_j, const float* bias, int forward,
                         int M, int K, int NC, long u0, long u1) {
    int m_tiles = (M + MM_MR - 1) / MM_MR, panels = (NC + MM_NR - 1) / MM_NR;
    float bp[MM_KC * MM_NR]; // the B panel: 16 KiB of stack, nothing allocated
    for (int p = (int)(u0 / m_tiles); u0 < u1 && p < panels && (long)p * m_tiles < u1; p++) {
        int j0 = p * MM_NR, nc = NC - j0 < MM_NR ? NC - j0 : MM_NR;
        long first_unit = (long)p * m_tiles;
        int i_begin = u0 > first_unit ? (int)(u0 - first_unit) : 0;
        int i_end = u1 < first_unit + m_tiles ? (int)(u1 - first_unit) : m_tiles;
        for (int k0 = 0; k0 < K; k0 += MM_KC) {
            int kc = K - k0 < MM_KC ? K - k0 : MM_KC;
            // the panel: B rows k0..k0+kc, columns j0..j0+nc, zeros beyond nc
            const float* src = b + (size_t)k0 * b_k + (size_t)j0 * b_j;
            if (b_j == 1 && nc == MM_NR) { // rows of B: a copy of 16 floats per row
                for (int k = 0; k < kc; k++) {
                    #pragma omp simd
                    for (int j = 0; j < MM_NR; j++) { bp[k * MM_NR + j] = src[k * b_k + j]; }
                }
            } else if (b_k == 1) { // columns of B (the forward's W^T): read along k
                for (int j = 0; j < MM_NR; j++) {
                    for (int k = 0; k < kc; k++) { bp[k * MM_NR + j] = j < nc ? src[j * b_j + k] : 0.0f; }
                }
            } else {
                for (int k = 0; k < kc; k++) {
                    for (int j = 0; j < MM_NR; j++) { bp[k * MM_NR + j] = j < nc ? src[k * b_k + j * b_j] : 0.0f; }
                }
            }
            int first = forward && k0 == 0;
            const float* bias_p = bias ? bias + j0 : NULL;
            const float* a_k0 = a + (size_t)k0 * a_k;
            for (int i = i_begin; i < i_end; i++) {
                int m0 = i * MM_MR, mr = M - m0 < MM_MR ? M - m0 : MM_MR;
                float* c_t = c + (size_t)m0 * ldc + j0;
                const float* a_t = a_k0 + (size_t)m0 * a_m;
                if (mr == MM_MR) { matmul_tile(c_t, ldc, a_t, a_m, a_k, bp, kc, MM_MR, nc, first, bias_p); }
                else { // the last row tile: sub-tiles of 8 and 4 rows, then single rows
                    int r = 0;
                    if (MM_MR > 8 && mr >= 8) {
                        matmul_tile(c_t, ldc, a_t, a_m, a_k, bp, kc, 8, nc, first, bias_p);
                        r = 8;
                    }
                    for (; r + 4 <= mr; r += 4) {
                        matmul_tile(c_t + r * ldc, ldc, a_t + r * a_m, a_m, a_k, bp, kc, 4, nc, first, bias_p);
                    }
                    for (; r < mr; r++) {
                        matmul_tile(c_t + r * ldc, ldc, a_t + r * a_m, a_m, a_k, bp, kc, 1, nc, first, bias_p);
                    }
                }
            }
        }
    }
}

// the same over all units, split into contiguous ranges over the threads
static void matmul_blocked(float* c, size_t ldc, const float* a, size_t a_m, size_t a_k,
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
        matmul_units(c, ldc, a, a_m, a_k, b, b_k, b_j, bias, forward, M, K, NC, units * t / nt, units * (t + 1) / nt);
    }
}

// out[N, OC] = inp[N, C] @ weight[OC, C]^T + bias[OC]  (bias may be NULL)
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int N, int C, int OC) {
    matmul_blocked(out, OC, inp, C, 1, weight, 1, C, bias, 1, N, C, OC);
}

// y = x W^T + b gives dx = dy W, dW = dy^T x, db = sum over rows of dy (all added with +=)
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC) {
    if (dinp) { matmul_blocked(dinp, C, dout, OC, 1, weight, C, 1, NULL, 0, N, OC, C); }
    if (dweight) { matmul_blocked(dweight, C, dout, 1, OC, inp, C, 1, NULL, 0, OC, N, C); }
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
