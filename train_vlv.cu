/*
train_vlv.cu — the Vision-Language-Vision (VLV) auto-encoder in CUDA, every layer a
hand-written kernel.

The same model, objectives, optimizer and sampling as train_vlv.c (read that file first:
this one mirrors it top to bottom, with the same function names and argument order). Each
layer of train_vlv.c becomes a host function of the same name that launches one or more
__global__ kernels; the blocks and the five parts above the layers are the same host code as
in train_vlv.c, since they only do pointer arithmetic on the parameter and activation views
(vlvc/model.h), which here are laid out over device memory. test_vlv.cu checks all of it
against the PyTorch twin dev/vlv.py, tensor by tensor, like test_vlv.c.

Conventions (the same as train_vlv.c):
  * a layer's backward ACCUMULATES (+=) into the gradients it is given and skips any
    gradient pointer that is NULL; frozen parts run with all-NULL gradient views;
  * every pointer to model data is DEVICE memory (from cudaMalloc). Host memory appears only
    in the Model fields whose names end in _host, and in the Batch (host arrays, uploaded by
    vlv_forward).

Determinism: two runs on the same GPU give the same bits. No kernel uses atomics. Every
reduction (matmul products, bias and LayerNorm parameter gradients, sums over tokens,
embedding gradients, losses, the gradient norm) is computed by a fixed set of threads in a
fixed order: one thread or one warp per output, or per-block partial results combined by a
second pass in a fixed order. Launch shapes depend on the problem's sizes only, never on
the device, so the order of every sum is a function of the sizes.

Thread mappings: each kernel says which thread computes what in a comment starting with
"threads:". Kernels are launched on the default stream, in program order; each launch is
followed by cudaCheckLaunch() (compile with -DSYNC_CHECK to also synchronize after every
launch, which pins an error raised while a kernel runs to the launch that caused it).

Build: nvcc -O3 -std=c++20 -arch=sm_90 train_vlv.cu -o train_vlvcu (see doc/cuda.md);
-DUSE_CUBLAS (link -lcublas) makes the three matrix products call cublasSgemm instead of the
hand-written kernel, as a yardstick.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <float.h>
#include <time.h>
#include <cuda_runtime.h>
#ifdef _OPENMP // host code of the pipeline (-Xcompiler -fopenmp)
#include <omp.h>
#endif
#ifdef USE_CUBLAS
#include <cublas_v2.h>
static const char* const matmul_kind = "cuBLAS matmuls";
#else
static const char* const matmul_kind = "hand-written matmuls";
#endif
#include "vlvc/utils.h"
#include "vlvc/config.h"
#include "vlvc/vlv.h"       // the interface this file implements for the pipeline
#include "vlvc/model.h"     // the parameter and activation views, checkpoint files
#include "vlvc/random.h"
#include "vlvc/tokenizer.h" // token rows: the empty caption, range checks
#include "vlvc/clip_z.h"
#include "vlvc/dist.h"      // data parallel: the sums over ranks (one rank without USE_NCCL)
#include "vlvc/beams.h"

// ----------------------------------------------------------------------------
// CUDA error checking: every runtime call goes through cudaCheck, every launch is followed
// by cudaCheckLaunch. A failure names the call, the file and the line, then exits 1.

static void cuda_check(cudaError_t err, const char* what, const char* file, int line) {
    if (err != cudaSuccess) {
        fail("CUDA error \"%s\" (%s) in %s [%s:%d]", cudaGetErrorString(err), cudaGetErrorName(err), what, file, line);
    }
}
#define cudaCheck(call) cuda_check((call), #call, __FILE__, __LINE__)

// a launch with a bad configuration fails at once (cudaGetLastError); a fault while the
// kernel runs shows up at the next synchronizing call, unless SYNC_CHECK waits for it here
static void cuda_check_launch(const char* file, int line) {
    cuda_check(cudaGetLastError(), "a kernel launch", file, line);
#ifdef SYNC_CHECK
    cuda_check(cudaDeviceSynchronize(), "a kernel (SYNC_CHECK)", file, line);
#endif
}
#define cudaCheckLaunch() cuda_check_launch(__FILE__, __LINE__)

#ifdef USE_CUBLAS
static void cublas_check(cublasStatus_t status, const char* what, const char* file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS) fail("cuBLAS error %d in %s [%s:%d]", (int)status, what, file, line);
}
#define cublasCheck(call) cublas_check((call), #call, __FILE__, __LINE__)
#endif

static float* device_floats(size_t n, const char* what) {
    void* p = NULL;
    cudaError_t err = cudaMalloc(&p, (n ? n : 1) * sizeof(float));
    if (err != cudaSuccess) {
        fail("could not allocate %.1f MiB of GPU memory for %s: %s%s", n * 4.0 / (1 << 20), what, cudaGetErrorString(err),
             err == cudaErrorMemoryAllocation ? "\n  use a smaller batch or model" : "");
    }
    return (float*)p;
}
static int* device_ints(size_t n, const char* what) { return (int*)device_floats(n, what); } // 4 bytes each
static void to_device(void* dst, const void* src, size_t bytes) { cudaCheck(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice)); }
static void to_host(void* dst, const void* src, size_t bytes) { cudaCheck(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost)); }
static void device_copy(void* dst, const void* src, size_t bytes) { cudaCheck(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice)); }

static unsigned int ceil_div(size_t a, size_t b) {
    size_t q = (a + b - 1) / b;
    if (q > 0x7fffffffu) fail("launch too large: %zu blocks", q);
    return (unsigned int)q;
}
// blocks for a grid-stride loop over n items: enough to fill any GPU, and a function of n only
#define BLOCK 256
static unsigned int grid_for(size_t n) {
    unsigned int g = ceil_div(n, BLOCK);
    return g < 8192 ? g : 8192;
}
#define GRID_STRIDE_LOOP(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

// Scratch device memory shared by the layers (split-K partial products, per-row losses).
// Grown on demand; a layer may only use it within its own launches, since the next layer's
// request can replace the buffer. Freed by cuda_scratch_free().
static float* scratch = NULL;
static size_t scratch_floats = 0;
static float* scratch_get(size_t n) {
    if (n > scratch_floats) {
        cudaCheck(cudaDeviceSynchronize()); // kernels still queued may be using the old buffer
        if (scratch) cudaCheck(cudaFree(scratch));
        scratch = device_floats(n, "scratch");
        scratch_floats = n;
    }
    return scratch;
}
// partial sums of the deterministic double reductions, and their result (slot REDUCE_MAX_BLOCKS)
#define REDUCE_MAX_BLOCKS 256
static double* reduce_buf = NULL;
static void cuda_scratch_free(void) {
    if (scratch) cudaCheck(cudaFree(scratch));
    if (reduce_buf) cudaCheck(cudaFree(reduce_buf));
    scratch = NULL;
    reduce_buf = NULL;
    scratch_floats = 0;
}

// ----------------------------------------------------------------------------
// reductions inside a warp and across the rows of a matrix, in a fixed order

// Butterfly sum over the 32 lanes: every lane ends with the same value, since each step adds
// the same two numbers in both partner lanes (float addition is commutative). All 32 lanes
// of the warp must call it.
__device__ inline float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) { v += __shfl_xor_sync(0xffffffffu, v, offset); }
    return v;
}
__device__ inline float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) { v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset)); }
    return v;
}

// out[r * out_stride + c] += sum over k < K of f(r, k, c), for r < R and c < C: the sums over
// rows that the backward passes need (bias gradients, LayerNorm weights, adaLN shift / scale /
// gate summed over tokens, position gradients summed over the batch). f is a small functor.
// threads: block (32, 32), grid (ceil(C/32), R). threadIdx.x picks the column c (32
// consecutive columns per block: coalesced), threadIdx.y strides over k (k = y, y + 32, ...);
// the 32 partial sums of a column then meet in shared memory and are added pairwise in a
// fixed tree order.
#define RED_X 32
#define RED_Y 32
template <class F>
__global__ void reduce_rows_kernel(float* out, size_t out_stride, int R, int K, int C, F f) {
    __shared__ float part[RED_Y][RED_X];
    int c = blockIdx.x * RED_X + threadIdx.x;
    int r = blockIdx.y;
    float acc = 0.0f;
    if (c < C && r < R) {
        for (int k = threadIdx.y; k < K; k += RED_Y) { acc += f(r, k, c); }
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    for (int s = RED_Y / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.y < s) { part[threadIdx.y][threadIdx.x] += part[threadIdx.y + s][threadIdx.x]; }
        __syncthreads();
    }
    if (threadIdx.y == 0 && c < C && r < R) { out[(size_t)r * out_stride + c] += part[0][threadIdx.x]; }
}
template <class F>
static void reduce_rows(float* out, size_t out_stride, int R, int K, int C, F f) {
    if (out == NULL || R == 0 || C == 0) return;
    if (R > 65535) fail("reduce_rows: %d output rows exceed the grid's y limit", R);
    dim3 grid(ceil_div(C, RED_X), R), block(RED_X, RED_Y);
    reduce_rows_kernel<F><<<grid, block>>>(out, out_stride, R, K, C, f);
    cudaCheckLaunch();
}
// the functors: element (r, k, c) of a [R, K, C] tensor, or the product of two such tensors
struct RowsOf {
    const float* x; int K, C;
    __device__ float operator()(int r, int k, int c) const { return x[((size_t)r * K + k) * C + c]; }
};
struct RowsProduct {
    const float* x; const float* y; int K, C;
    __device__ float operator()(int r, int k, int c) const { size_t i = ((size_t)r * K + k) * C + c; return x[i] * y[i]; }
};

// Deterministic sum of n doubles f(i) (losses, the gradient norm): pass 1 gives each of G
// blocks a fixed grid-stride share (G depends on n only) and reduces it in shared memory in a
// fixed tree order; pass 2, one block, adds the G partial sums the same way.
// threads: pass 1: block 256, grid G = min(256, ceil(n/256)); pass 2: one block of 256.
// The sum of every thread's acc over a block of BLOCK threads, in a fixed tree order (the same
// bits every run), through the block's shared scratch s [BLOCK]; every thread must call it.
__device__ double block_sum_double(double* s, double acc) {
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int k = BLOCK / 2; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) { s[threadIdx.x] += s[threadIdx.x + k]; }
        __syncthreads();
    }
    return s[0];
}
template <class F>
__global__ void sum_double_kernel(double* partial, size_t n, F f) {
    __shared__ double s[BLOCK];
    double acc = 0.0;
    GRID_STRIDE_LOOP(i, n) { acc += f(i); }
    double total = block_sum_double(s, acc);
    if (threadIdx.x == 0) { partial[blockIdx.x] = total; }
}
__global__ void sum_partials_kernel(double* partial, int G) {
    __shared__ double s[BLOCK];
    double acc = 0.0;
    for (int i = threadIdx.x; i < G; i += BLOCK) { acc += partial[i]; }
    double total = block_sum_double(s, acc);
    if (threadIdx.x == 0) { partial[REDUCE_MAX_BLOCKS] = total; }
}
template <class F>
static double device_sum(size_t n, F f) {
    if (n == 0) return 0.0;
    if (reduce_buf == NULL) {
        cudaCheck(cudaMalloc((void**)&reduce_buf, (REDUCE_MAX_BLOCKS + 1) * sizeof(double)));
    }
    unsigned int G = ceil_div(n, BLOCK);
    if (G > REDUCE_MAX_BLOCKS) G = REDUCE_MAX_BLOCKS;
    sum_double_kernel<F><<<G, BLOCK>>>(reduce_buf, n, f);
    cudaCheckLaunch();
    sum_partials_kernel<<<1, BLOCK>>>(reduce_buf, (int)G);
    cudaCheckLaunch();
    double result;
    to_host(&result, reduce_buf + REDUCE_MAX_BLOCKS, sizeof(double));
    return result;
}

// ----------------------------------------------------------------------------
// layers

// Floating-point operations of the matmuls and of attention's products so far (2 per
// multiply-add), added by those launchers from their arguments: 2·N·C·OC per matmul product,
// 4·B·Tq·Tk·C for attention's forward (QKᵀ, AV) and 8·B·Tq·Tk·C for its backward (vlv_flops
// hands them to the pipeline, which turns them into GFLOP/s).
static double flops_counted = 0.0;
static double attention_flops_counted = 0.0; // the part of flops_counted that attention did

// Copies between images [B, H, W, 3] and their patches [B, Np, P*P*3] (doc/model.md):
// patch (r, q) is row r*(W/P)+q, and inside it index (py*P + px)*3 + ch. A permutation, so
// patchify's backward is unpatchify and vice versa. to_patches picks the direction.
// threads: one per element of the patch tensor (grid-stride); consecutive threads copy
// consecutive floats of a patch row, P*3 of which are contiguous in the image too.
__global__ void patch_copy_kernel(float* patches, float* img, int B, int H, int P, int to_patches) {
    int G = H / P, PD = P * P * 3, row = P * 3;
    size_t n = (size_t)B * G * G * PD;
    GRID_STRIDE_LOOP(e, n) {
        int inner = (int)(e % row);                 // px * 3 + ch
        int py = (int)((e / row) % P);
        size_t patch = e / PD;                      // b * G * G + r * G + q
        int q = (int)(patch % G), r = (int)((patch / G) % G);
        size_t b = patch / ((size_t)G * G);
        size_t pix = ((b * H + (size_t)r * P + py) * H + (size_t)q * P) * 3 + inner;
        if (to_patches) { patches[e] = img[pix]; }
        else { img[pix] = patches[e]; }
    }
}
void patch_copy(float* patches, float* img, int B, int H, int P, int to_patches) {
    size_t n = (size_t)B * H * H * 3;
    if (n == 0) return;
    patch_copy_kernel<<<grid_for(n), BLOCK>>>(patches, img, B, H, P, to_patches);
    cudaCheckLaunch();
}

// --- matrix products --------------------------------------------------------
// All three products of a Linear layer are one tiled kernel, C[M, N] (+)= A[M, K] B[K, N]
// (+ bias[N]), where each operand is read in the layout it has in memory:
//   A(m, k) = A_MK ? A[m * lda + k] : A[k * lda + m]
//   B(k, n) = B_NK ? B[n * ldb + k] : B[k * ldb + n]
// forward  out = inp W^T:   A = inp [N, C] (A_MK), B(k, n) = W[n, k] (B_NK)
// dinp    += dout W:        A = dout [N, OC] (A_MK), B(k, n) = W[k, n]
// dweight += dout^T inp:    A(m, k) = dout[k, m], B(k, n) = inp[k, n]
//
// threads: a block of 256 = 16 x 16 threads computes a 64 x 64 tile of C; thread (ty, tx)
// owns the 4 x 4 outputs at rows ty + 16 i and columns tx + 16 j (i, j < 4), so that a
// warp's loads from shared memory and its stores to C touch consecutive columns. The K
// dimension is walked in slices of 16: the block copies a 64 x 16 slice of A and a 16 x 64
// slice of B into shared memory (zeros outside the matrices), then every thread does
// 16 x 4 x 4 multiply-adds from registers. Grid: (ceil(N/64), ceil(M/64), splits).
// Split-K: when the grid would have few blocks (thin products such as dweight, whose K is
// the number of rows), blockIdx.z takes the k range [z k_chunk, (z+1) k_chunk), and writes
// its partial tile to C + z split_stride (scratch); matmul_split_reduce_kernel then adds the
// partial tiles in z order. Each output is always a sum in a fixed order: deterministic.
#ifndef USE_CUBLAS // the hand-written products (the cuBLAS build uses cublasSgemm below)
#define MM_BM 64
#define MM_BN 64
#define MM_BK 16
#define MM_THREADS 256
template <bool A_MK, bool B_NK>
__global__ void __launch_bounds__(MM_THREADS)
matmul_tiled_kernel(float* C, int ldc, const float* __restrict__ A, int lda, const float* __restrict__ Bm, int ldb,
                    const float* __restrict__ bias, int M, int N, int K, int k_chunk, size_t split_stride, int accumulate) {
    // +1 column of padding: the copy below writes a column of each tile per warp (k varies
    // fastest when k is the contiguous index), which without it would hit one bank 16 times
    __shared__ float As[MM_BK][MM_BM + 1];
    __shared__ float Bs[MM_BK][MM_BN + 1];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.y * MM_BM, n0 = blockIdx.x * MM_BN;
    const int kb = blockIdx.z * k_chunk, ke = min(K, kb + k_chunk);
    C += blockIdx.z * split_stride;

    float acc[4][4];
    #pragma unroll
    for (int i = 0; i < 4; i++) {
        #pragma unroll
        for (int j = 0; j < 4; j++) {
            int n = n0 + tx + 16 * j;
            acc[i][j] = (bias != NULL && n < N) ? bias[n] : 0.0f; // as the CPU: start from the bias
        }
    }
    for (int k0 = kb; k0 < ke; k0 += MM_BK) {
        // copy the slices; consecutive threads read consecutive addresses in either layout
        for (int e = tid; e < MM_BM * MM_BK; e += MM_THREADS) {
            int mm = A_MK ? e / MM_BK : e % MM_BM;
            int kk = A_MK ? e % MM_BK : e / MM_BM;
            int m = m0 + mm, k = k0 + kk;
            float a = 0.0f;
            if (m < M && k < ke) { a = A_MK ? A[(size_t)m * lda + k] : A[(size_t)k * lda + m]; }
            As[kk][mm] = a;
        }
        for (int e = tid; e < MM_BN * MM_BK; e += MM_THREADS) {
            int nn = B_NK ? e / MM_BK : e % MM_BN;
            int kk = B_NK ? e % MM_BK : e / MM_BN;
            int n = n0 + nn, k = k0 + kk;
            float b = 0.0f;
            if (n < N && k < ke) { b = B_NK ? Bm[(size_t)n * ldb + k] : Bm[(size_t)k * ldb + n]; }
            Bs[kk][nn] = b;
        }
        __syncthreads(); // the slices are complete
        #pragma unroll
        for (int kk = 0; kk < MM_BK; kk++) {
            float a[4], b[4];
            #pragma unroll
            for (int i = 0; i < 4; i++) { a[i] = As[kk][ty + 16 * i]; }
            #pragma unroll
            for (int j = 0; j < 4; j++) { b[j] = Bs[kk][tx + 16 * j]; }
            #pragma unroll
            for (int i = 0; i < 4; i++) {
                #pragma unroll
                for (int j = 0; j < 4; j++) { acc[i][j] += a[i] * b[j]; }
            }
        }
        __syncthreads(); // everyone is done reading before the next copy overwrites
    }
    #pragma unroll
    for (int i = 0; i < 4; i++) {
        int m = m0 + ty + 16 * i;
        if (m >= M) continue;
        #pragma unroll
        for (int j = 0; j < 4; j++) {
            int n = n0 + tx + 16 * j;
            if (n >= N) continue;
            float* c = C + (size_t)m * ldc + n;
            *c = accumulate ? *c + acc[i][j] : acc[i][j];
        }
    }
}
// C[m, n] (+)= bias[n] + sum over z of part[z][m, n], z in order
// threads: one per output element (grid-stride)
__global__ void matmul_split_reduce_kernel(float* C, int ldc, const float* part, int splits, const float* bias,
                                           int M, int N, int accumulate) {
    size_t MN = (size_t)M * N;
    GRID_STRIDE_LOOP(i, MN) {
        int n = (int)(i % N);
        size_t m = i / N;
        float s = bias ? bias[n] : 0.0f;
        for (int z = 0; z < splits; z++) { s += part[z * MN + i]; }
        float* c = C + m * ldc + n;
        *c = accumulate ? *c + s : s;
    }
}
// the number of K slices: enough blocks to fill a large GPU (about 256), each slice at
// least 128 deep; a function of the sizes only, so the order of every sum is too
static int matmul_splits(int M, int N, int K) {
    int tiles = (int)(ceil_div(M, MM_BM) * ceil_div(N, MM_BN));
    int want = (int)ceil_div(256, tiles), by_k = (int)ceil_div(K, 128);
    int s = want < by_k ? want : by_k;
    return s < 1 ? 1 : s > 32 ? 32 : s;
}
template <bool A_MK, bool B_NK>
static void matmul_tiled(float* C, int ldc, const float* A, int lda, const float* Bm, int ldb, const float* bias,
                         int M, int N, int K, int accumulate) {
    dim3 block(MM_THREADS);
    unsigned int gx = ceil_div(N, MM_BN), gy = ceil_div(M, MM_BM);
    if (gy > 65535) fail("matmul: %d rows exceed the grid's y limit", M);
    int splits = matmul_splits(M, N, K);
    if (splits == 1) {
        matmul_tiled_kernel<A_MK, B_NK><<<dim3(gx, gy, 1), block>>>(C, ldc, A, lda, Bm, ldb, bias, M, N, K, K, 0, accumulate);
        cudaCheckLaunch();
        return;
    }
    int k_chunk = (int)ceil_div(ceil_div(K, splits), MM_BK) * MM_BK; // whole slices of 16
    splits = (int)ceil_div(K, k_chunk);                               // every split non-empty
    size_t MN = (size_t)M * N;
    float* part = scratch_get(splits * MN);
    matmul_tiled_kernel<A_MK, B_NK><<<dim3(gx, gy, splits), block>>>(part, N, A, lda, Bm, ldb, NULL, M, N, K, k_chunk, MN, 0);
    cudaCheckLaunch();
    matmul_split_reduce_kernel<<<grid_for(MN), BLOCK>>>(C, ldc, part, splits, bias, M, N, accumulate);
    cudaCheckLaunch();
}

#endif // USE_CUBLAS

#ifdef USE_CUBLAS
// the yardstick: the same products through cuBLAS in full fp32 (no TF32). cuBLAS is
// column-major; a row-major [R, S] matrix is a column-major [S, R] one, so each product is
// written for the transposes.
static cublasHandle_t cublas_handle(void) {
    static cublasHandle_t handle = NULL;
    if (handle == NULL) {
        cublasCheck(cublasCreate(&handle));
        cublasCheck(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH)); // fp32: cuBLAS uses TF32 only when asked
    }
    return handle;
}
// out[n, o] += bias[o]. threads: one per element of out (grid-stride)
__global__ void add_bias_kernel(float* out, const float* bias, int N, int OC) {
    GRID_STRIDE_LOOP(i, (size_t)N * OC) { out[i] += bias[i % OC]; }
}
#endif

// out[N, OC] = inp[N, C] @ weight[OC, C]^T + bias[OC]  (bias may be NULL)
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int N, int C, int OC) {
    flops_counted += 2.0 * N * C * OC;
    if (N == 0 || OC == 0) return;
#ifdef USE_CUBLAS
    const float one = 1.0f, zero = 0.0f;
    // out^T [OC, N] = W [OC, C] . inp^T [C, N]
    cublasCheck(cublasSgemm(cublas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, &one, weight, C, inp, C, &zero, out, OC));
    if (bias) {
        add_bias_kernel<<<grid_for((size_t)N * OC), BLOCK>>>(out, bias, N, OC);
        cudaCheckLaunch();
    }
#else
    matmul_tiled<true, true>(out, OC, inp, C, weight, C, bias, N, OC, C, 0);
#endif
}

// y = x W^T + b gives dx = dy W, dW = dy^T x, db = sum over rows of dy
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC) {
    flops_counted += 2.0 * N * C * OC * ((dinp != NULL) + (dweight != NULL));
    if (N == 0 || OC == 0) return;
#ifdef USE_CUBLAS
    const float one = 1.0f;
    if (dinp) { // dinp^T [C, N] += W^T [C, OC] . dout^T [OC, N]
        cublasCheck(cublasSgemm(cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, &one, weight, C, dout, OC, &one, dinp, C));
    }
    if (dweight) { // dW^T [C, OC] += inp^T [C, N] . dout [N, OC]
        cublasCheck(cublasSgemm(cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, &one, inp, C, dout, OC, &one, dweight, C));
    }
#else
    if (dinp) { matmul_tiled<true, false>(dinp, C, dout, OC, weight, C, NULL, N, C, OC, 1); }
    if (dweight) { matmul_tiled<false, false>(dweight, C, dout, OC, inp, C, NULL, OC, C, N, 1); }
#endif
    reduce_rows(dbias, 0, 1, N, OC, RowsOf{ dout, N, OC });
}

// --- LayerNorm ----------------------------------------------------------------
// LayerNorm over the last dimension: out = (x - mean) * rstd * w + b, rstd = 1/sqrt(var + 1e-5).
// weight == NULL means no affine (the DiT's modulated norms). mean and rstd [N] are kept.
// threads: one warp per row (8 rows per block of 256); lane l handles channels l, l + 32, ...
// Mean and variance are two passes over the row, as in the CPU code.
__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* inp,
                                         const float* weight, const float* bias, int N, int C) {
    int lane = threadIdx.x % 32;
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (n >= N) return; // the whole warp leaves together
    const float* x = inp + (size_t)n * C;
    float* y = out + (size_t)n * C;
    float m = 0.0f;
    for (int c = lane; c < C; c += 32) { m += x[c]; }
    m = warp_sum(m) / C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) { float xm = x[c] - m; v += xm * xm; }
    v = warp_sum(v) / C;
    float s = 1.0f / sqrtf(v + 1e-5f);
    for (int c = lane; c < C; c += 32) {
        float norm = (x[c] - m) * s;
        y[c] = weight ? norm * weight[c] + bias[c] : norm;
    }
    if (lane == 0) { mean[n] = m; rstd[n] = s; }
}
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int N, int C) {
    if (N == 0) return;
    layernorm_forward_kernel<<<ceil_div(N, BLOCK / 32), BLOCK>>>(out, mean, rstd, inp, weight, bias, N, C);
    cudaCheckLaunch();
}

// With n = (x - mean) * rstd and g = dy * w: dx = rstd * (g - mean(g) - n * mean(g * n)),
// dw = sum over rows of dy * n, db = sum over rows of dy.
// threads (dx): one warp per row, lanes over channels, as the forward.
__global__ void layernorm_backward_kernel(float* dinp, const float* dout, const float* inp, const float* weight,
                                          const float* mean, const float* rstd, int N, int C) {
    int lane = threadIdx.x % 32;
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (n >= N) return;
    const float* dy = dout + (size_t)n * C;
    const float* x = inp + (size_t)n * C;
    float* dx = dinp + (size_t)n * C;
    float m = mean[n], s = rstd[n];
    float g_mean = 0.0f, gn_mean = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float g = weight ? dy[c] * weight[c] : dy[c];
        g_mean += g;
        gn_mean += g * (x[c] - m) * s;
    }
    g_mean = warp_sum(g_mean) / C;
    gn_mean = warp_sum(gn_mean) / C;
    for (int c = lane; c < C; c += 32) {
        float g = weight ? dy[c] * weight[c] : dy[c];
        dx[c] += s * (g - g_mean - (x[c] - m) * s * gn_mean);
    }
}
// dy * (x - mean) * rstd at (row k, channel c), for the weight gradient
struct LayerNormWeightGrad {
    const float* dout; const float* inp; const float* mean; const float* rstd; int C;
    __device__ float operator()(int, int k, int c) const {
        size_t i = (size_t)k * C + c;
        return dout[i] * (inp[i] - mean[k]) * rstd[k];
    }
};
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C) {
    if (N == 0) return;
    if (dinp) {
        layernorm_backward_kernel<<<ceil_div(N, BLOCK / 32), BLOCK>>>(dinp, dout, inp, weight, mean, rstd, N, C);
        cudaCheckLaunch();
    }
    reduce_rows(dweight, 0, 1, N, C, LayerNormWeightGrad{ dout, inp, mean, rstd, C });
    reduce_rows(dbias, 0, 1, N, C, RowsOf{ dout, N, C });
}

// --- pointwise layers ---------------------------------------------------------
// threads: one per element (grid-stride), for every kernel of this section

// GELU, tanh approximation: 0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi)
#define GELU_K 0.7978845608028654f
__global__ void gelu_forward_kernel(float* out, const float* inp, size_t N) {
    GRID_STRIDE_LOOP(i, N) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
    }
}
void gelu_forward(float* out, const float* inp, size_t N) {
    if (N == 0) return;
    gelu_forward_kernel<<<grid_for(N), BLOCK>>>(out, inp, N);
    cudaCheckLaunch();
}

// d/dx = 0.5 (1 + th) + 0.5 x (1 - th^2) k (1 + 3 * 0.044715 x^2), th = tanh(k (x + 0.044715 x^3))
__global__ void gelu_backward_kernel(float* dinp, const float* inp, const float* dout, size_t N) {
    GRID_STRIDE_LOOP(i, N) {
        float x = inp[i];
        float th = tanhf(GELU_K * (x + 0.044715f * x * x * x));
        float grad = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += grad * dout[i];
    }
}
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t N) {
    if (N == 0) return;
    gelu_backward_kernel<<<grid_for(N), BLOCK>>>(dinp, inp, dout, N);
    cudaCheckLaunch();
}

// SiLU: x * sigmoid(x); d/dx = s (1 + x (1 - s)) with s = sigmoid(x)
__global__ void silu_forward_kernel(float* out, const float* inp, size_t N) {
    GRID_STRIDE_LOOP(i, N) { out[i] = inp[i] / (1.0f + expf(-inp[i])); }
}
void silu_forward(float* out, const float* inp, size_t N) {
    if (N == 0) return;
    silu_forward_kernel<<<grid_for(N), BLOCK>>>(out, inp, N);
    cudaCheckLaunch();
}
__global__ void silu_backward_kernel(float* dinp, const float* inp, const float* dout, size_t N) {
    GRID_STRIDE_LOOP(i, N) {
        float s = 1.0f / (1.0f + expf(-inp[i]));
        dinp[i] += dout[i] * s * (1.0f + inp[i] * (1.0f - s));
    }
}
void silu_backward(float* dinp, const float* inp, const float* dout, size_t N) {
    if (N == 0) return;
    silu_backward_kernel<<<grid_for(N), BLOCK>>>(dinp, inp, dout, N);
    cudaCheckLaunch();
}

// out = a + b
__global__ void residual_forward_kernel(float* out, const float* a, const float* b, size_t N) {
    GRID_STRIDE_LOOP(i, N) { out[i] = a[i] + b[i]; }
}
void residual_forward(float* out, const float* a, const float* b, size_t N) {
    if (N == 0) return;
    residual_forward_kernel<<<grid_for(N), BLOCK>>>(out, a, b, N);
    cudaCheckLaunch();
}
__global__ void residual_backward_kernel(float* da, float* db, const float* dout, size_t N) {
    GRID_STRIDE_LOOP(i, N) { da[i] += dout[i]; db[i] += dout[i]; }
}
void residual_backward(float* da, float* db, const float* dout, size_t N) {
    if (N == 0) return;
    residual_backward_kernel<<<grid_for(N), BLOCK>>>(da, db, dout, N);
    cudaCheckLaunch();
}

// adaLN-Zero, the DiT's conditioning. Per-sample vectors shift, scale, gate [B, C] are slices
// of a modulation buffer whose rows are mod_stride floats apart; they broadcast over the T tokens.
// modulate: out = x * (1 + scale) + shift
__global__ void modulate_forward_kernel(float* out, const float* x, const float* shift, const float* scale,
                                        int mod_stride, int B, int T, int C) {
    GRID_STRIDE_LOOP(i, (size_t)B * T * C) {
        int c = (int)(i % C);
        size_t b = i / ((size_t)T * C);
        out[i] = x[i] * (1.0f + scale[b * mod_stride + c]) + shift[b * mod_stride + c];
    }
}
void modulate_forward(float* out, const float* x, const float* shift, const float* scale,
                      int mod_stride, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    if (n == 0) return;
    modulate_forward_kernel<<<grid_for(n), BLOCK>>>(out, x, shift, scale, mod_stride, B, T, C);
    cudaCheckLaunch();
}
// dx = dy (1 + scale); dshift = sum_t dy; dscale = sum_t dy x
// threads: dx one per element; dshift, dscale: reduce_rows (a column of 32 threads per (b, c))
__global__ void modulate_backward_kernel(float* dx, const float* dout, const float* scale, int mod_stride,
                                         int B, int T, int C) {
    GRID_STRIDE_LOOP(i, (size_t)B * T * C) {
        int c = (int)(i % C);
        size_t b = i / ((size_t)T * C);
        dx[i] += dout[i] * (1.0f + scale[b * mod_stride + c]);
    }
}
void modulate_backward(float* dx, float* dshift, float* dscale, const float* dout, const float* x,
                       const float* scale, int mod_stride, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    if (n == 0) return;
    if (dx) {
        modulate_backward_kernel<<<grid_for(n), BLOCK>>>(dx, dout, scale, mod_stride, B, T, C);
        cudaCheckLaunch();
    }
    reduce_rows(dshift, mod_stride, B, T, C, RowsOf{ dout, T, C });
    reduce_rows(dscale, mod_stride, B, T, C, RowsProduct{ dout, x, T, C });
}

// gated residual: out = x + gate * y; dx = dy, d(y) = dy gate, dgate = sum_t dy y
__global__ void gated_residual_forward_kernel(float* out, const float* x, const float* y, const float* gate,
                                              int mod_stride, int B, int T, int C) {
    GRID_STRIDE_LOOP(i, (size_t)B * T * C) {
        int c = (int)(i % C);
        size_t b = i / ((size_t)T * C);
        out[i] = x[i] + gate[b * mod_stride + c] * y[i];
    }
}
void gated_residual_forward(float* out, const float* x, const float* y, const float* gate,
                            int mod_stride, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    if (n == 0) return;
    gated_residual_forward_kernel<<<grid_for(n), BLOCK>>>(out, x, y, gate, mod_stride, B, T, C);
    cudaCheckLaunch();
}
// threads: dx, dy one per element; dgate: reduce_rows
__global__ void gated_residual_backward_kernel(float* dx, float* dy, const float* dout, const float* gate,
                                               int mod_stride, int B, int T, int C) {
    GRID_STRIDE_LOOP(i, (size_t)B * T * C) {
        int c = (int)(i % C);
        size_t b = i / ((size_t)T * C);
        float d = dout[i];
        if (dx) { dx[i] += d; }
        if (dy) { dy[i] += d * gate[b * mod_stride + c]; }
    }
}
void gated_residual_backward(float* dx, float* dy, float* dgate, const float* dout, const float* y,
                             const float* gate, int mod_stride, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    if (n == 0) return;
    if (dx || dy) {
        gated_residual_backward_kernel<<<grid_for(n), BLOCK>>>(dx, dy, dout, gate, mod_stride, B, T, C);
        cudaCheckLaunch();
    }
    reduce_rows(dgate, mod_stride, B, T, C, RowsProduct{ dout, y, T, C });
}

// --- attention --------------------------------------------------------------
// Multi-head attention, self or cross, with one code path. Queries are rows of q_stride floats
// ([B, Tq, q_stride], the C query channels first), keys and values rows of kv_stride floats
// ([B, Tk, kv_stride]), so a packed qkv buffer and separate q / kv buffers both work.
// att [B, NH, Tq, Tk] keeps the softmax probabilities (0 where masked) for the backward;
// out [B, Tq, C]. causal: query i sees keys j <= i (then Tq == Tk).
// threads: one warp per (b, h, i) query row, 4 rows per block of 128. Lane l computes the
// scores of keys j = l, l + 32, ... (each a dot product over the head's hs channels, in
// channel order) into the att row; the row's max and sum meet by warp_max / warp_sum; after
// __syncwarp() (the lanes now read each other's probabilities) lane l computes output
// channels c = l, l + 32, ... as sum over j of a_j v_j[c], in key order.
#define ATT_WARPS 4
__global__ void attention_forward_kernel(float* out, float* att, const float* q, int q_stride, const float* k,
                                         const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH,
                                         int causal) {
    int lane = threadIdx.x % 32;
    size_t row = (size_t)blockIdx.x * ATT_WARPS + threadIdx.x / 32; // (b * NH + h) * Tq + i
    if (row >= (size_t)B * NH * Tq) return; // the whole warp leaves together
    int i = (int)(row % Tq), h = (int)((row / Tq) % NH);
    size_t b = row / ((size_t)Tq * NH);
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    const float* qi = q + (b * Tq + i) * q_stride + h * hs;
    float* a = att + row * Tk;
    int jend = causal ? i + 1 : Tk;
    // scores, then a numerically safe softmax (-FLT_MAX, as the CPU code)
    float maxv = -FLT_MAX;
    for (int j = lane; j < jend; j += 32) {
        const float* kj = k + (b * Tk + j) * kv_stride + h * hs;
        float dot = 0.0f;
        for (int c = 0; c < hs; c++) { dot += qi[c] * kj[c]; }
        a[j] = dot * scale;
        maxv = fmaxf(maxv, a[j]);
    }
    maxv = warp_max(maxv);
    float sum = 0.0f;
    for (int j = lane; j < jend; j += 32) { a[j] = expf(a[j] - maxv); sum += a[j]; }
    float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < jend; j += 32) { a[j] *= inv; }
    for (int j = jend + lane; j < Tk; j += 32) { a[j] = 0.0f; }
    __syncwarp(); // every lane's probabilities are written before any lane reads them
    // weighted sum of the values
    float* o = out + (b * Tq + i) * C + h * hs;
    for (int c = lane; c < hs; c += 32) {
        float acc = 0.0f;
        for (int j = 0; j < jend; j++) { acc += a[j] * v[(b * Tk + j) * kv_stride + h * hs + c]; }
        o[c] = acc;
    }
}
void attention_forward(float* out, float* att, const float* q, int q_stride, const float* k,
                       const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    flops_counted += 4.0 * B * Tq * Tk * C;
    attention_flops_counted += 4.0 * B * Tq * Tk * C;
    size_t rows = (size_t)B * NH * Tq;
    if (rows == 0) return;
    attention_forward_kernel<<<ceil_div(rows, ATT_WARPS), 32 * ATT_WARPS>>>(out, att, q, q_stride, k, v, kv_stride,
                                                                           B, Tq, Tk, C, NH, causal);
    cudaCheckLaunch();
}

// Backward of attention_forward. With o_i = sum_j a_ij v_j and a_i = softmax(s_i),
// s_ij = scale q_i.k_j: dv_j += a_ij do_i; da_ij = do_i.v_j; ds_ij = a_ij (da_ij - sum_k a_ik da_ik);
// dq_i += scale sum_j ds_ij k_j; dk_j += scale ds_ij q_i. datt [B, NH, Tq, Tk] is scratch.
// The CPU loops over i and adds into dk_j, dv_j as it goes; on the GPU the sums over i are
// gathered instead, in two kernels that each own their outputs:
// (1) per query row: da_ij, then ds_ij (scale included) into datt, then dq_i.
// threads: one warp per (b, h, i) row as in the forward: lanes over keys j for da and ds,
// then (after __syncwarp) lanes over channels c for dq_i[c] = sum_j ds_ij k_j[c].
__global__ void attention_backward_query_kernel(float* dq, float* datt, const float* dout, const float* att,
                                                const float* k, const float* v, int q_stride, int kv_stride,
                                                int B, int Tq, int Tk, int C, int NH, int causal) {
    int lane = threadIdx.x % 32;
    size_t row = (size_t)blockIdx.x * ATT_WARPS + threadIdx.x / 32;
    if (row >= (size_t)B * NH * Tq) return;
    int i = (int)(row % Tq), h = (int)((row / Tq) % NH);
    size_t b = row / ((size_t)Tq * NH);
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    const float* a = att + row * Tk;
    float* da = datt + row * Tk;
    const float* doi = dout + (b * Tq + i) * C + h * hs;
    int jend = causal ? i + 1 : Tk;
    float a_da = 0.0f;
    for (int j = lane; j < jend; j += 32) {
        const float* vj = v + (b * Tk + j) * kv_stride + h * hs;
        float dot = 0.0f;
        for (int c = 0; c < hs; c++) { dot += doi[c] * vj[c]; }
        da[j] = dot;
        a_da += a[j] * dot;
    }
    a_da = warp_sum(a_da);
    for (int j = lane; j < jend; j += 32) { da[j] = a[j] * (da[j] - a_da) * scale; } // ds_ij
    for (int j = jend + lane; j < Tk; j += 32) { da[j] = 0.0f; }
    __syncwarp(); // every ds_ij of the row is written before the lanes read them all
    float* dqi = dq + (b * Tq + i) * q_stride + h * hs;
    for (int c = lane; c < hs; c += 32) {
        float acc = 0.0f;
        for (int j = 0; j < jend; j++) { acc += da[j] * k[(b * Tk + j) * kv_stride + h * hs + c]; }
        dqi[c] += acc;
    }
}
// (2) per key row: dv_j[c] += sum_i a_ij do_i[c], dk_j[c] += sum_i ds_ij q_i[c], over the
// queries i that see key j (i >= j when causal).
// threads: one warp per (b, h, j) key row; lane l owns channels c = l, l + 32, ... and sums
// over i in order. The att / datt column entry is the same address for the whole warp.
__global__ void attention_backward_key_kernel(float* dk, float* dv, const float* datt, const float* dout,
                                              const float* att, const float* q, int q_stride, int kv_stride,
                                              int B, int Tq, int Tk, int C, int NH, int causal) {
    int lane = threadIdx.x % 32;
    size_t row = (size_t)blockIdx.x * ATT_WARPS + threadIdx.x / 32; // (b * NH + h) * Tk + j
    if (row >= (size_t)B * NH * Tk) return;
    int j = (int)(row % Tk), h = (int)((row / Tk) % NH);
    size_t b = row / ((size_t)Tk * NH);
    size_t bh = b * NH + h;
    int hs = C / NH;
    int ibeg = causal ? j : 0;
    float* dkj = dk + (b * Tk + j) * kv_stride + h * hs;
    float* dvj = dv + (b * Tk + j) * kv_stride + h * hs;
    for (int c = lane; c < hs; c += 32) {
        float acc_k = 0.0f, acc_v = 0.0f;
        for (int i = ibeg; i < Tq; i++) {
            size_t aij = (bh * Tq + i) * Tk + j;
            acc_v += att[aij] * dout[(b * Tq + i) * C + h * hs + c];
            acc_k += datt[aij] * q[(b * Tq + i) * q_stride + h * hs + c];
        }
        dvj[c] += acc_v;
        dkj[c] += acc_k;
    }
}
void attention_backward(float* dq, float* dk, float* dv, float* datt, const float* dout,
                        const float* att, const float* q, int q_stride, const float* k,
                        const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    flops_counted += 8.0 * B * Tq * Tk * C;
    attention_flops_counted += 8.0 * B * Tq * Tk * C;
    size_t qrows = (size_t)B * NH * Tq, krows = (size_t)B * NH * Tk;
    if (qrows == 0 || krows == 0) return;
    attention_backward_query_kernel<<<ceil_div(qrows, ATT_WARPS), 32 * ATT_WARPS>>>(
        dq, datt, dout, att, k, v, q_stride, kv_stride, B, Tq, Tk, C, NH, causal);
    cudaCheckLaunch();
    attention_backward_key_kernel<<<ceil_div(krows, ATT_WARPS), 32 * ATT_WARPS>>>(
        dk, dv, datt, dout, att, q, q_stride, kv_stride, B, Tq, Tk, C, NH, causal);
    cudaCheckLaunch();
}

// --- embeddings -------------------------------------------------------------
// Input embeddings with positions: row t of sample b is
//   (t < Tp ? prefix[b, t] : wte[tokens[b, t - Tp]]) + wpe[t],   t < Tp + Tt.
// One function serves every part: patches + positions (ViT, DiT: prefix = projected
// patches), token ids (text encoder, GPT), z (text encoder in stages 1 and 2), the GPT's
// prefix + tokens, and the adapter's learned queries (prefix NULL: positions only).
// tokens is a device array.
// threads: one per output element (grid-stride)
__global__ void embed_forward_kernel(float* out, const float* prefix, const int* tokens, const float* wte,
                                     const float* wpe, int B, int Tp, int Tt, int C) {
    int T = Tp + Tt;
    GRID_STRIDE_LOOP(i, (size_t)B * T * C) {
        int c = (int)(i % C);
        int t = (int)((i / C) % T);
        size_t b = i / ((size_t)T * C);
        float in = 0.0f;
        if (t < Tp) { if (prefix) { in = prefix[(b * Tp + t) * C + c]; } }
        else { in = wte[(size_t)tokens[b * Tt + t - Tp] * C + c]; }
        out[i] = in + wpe[(size_t)t * C + c];
    }
}
void embed_forward(float* out, const float* prefix, const int* tokens, const float* wte,
                   const float* wpe, int B, int Tp, int Tt, int C) {
    size_t n = (size_t)B * (Tp + Tt) * C;
    if (n == 0) return;
    embed_forward_kernel<<<grid_for(n), BLOCK>>>(out, prefix, tokens, wte, wpe, B, Tp, Tt, C);
    cudaCheckLaunch();
}
// dprefix: threads one per element of the prefix rows.
__global__ void embed_backward_prefix_kernel(float* dprefix, const float* dout, int B, int Tp, int Tt, int C) {
    int T = Tp + Tt;
    GRID_STRIDE_LOOP(i, (size_t)B * Tp * C) {
        int c = (int)(i % C);
        int t = (int)((i / C) % Tp);
        size_t b = i / ((size_t)Tp * C);
        dprefix[i] += dout[(b * T + t) * C + c];
    }
}
// dwte: several rows may add into the same row of wte (the CPU runs serially for that). Here
// thread (v, c) owns dwte[v, c] and scans all B * Tt tokens in order, adding the rows whose
// token is v: no two threads write the same address, and the order is fixed.
// threads: block of 128 = 128 channels of one vocabulary row v = blockIdx.x; grid
// (V, ceil(C/128)). The tokens are staged through shared memory 128 at a time.
#define EMB_THREADS 128
__global__ void embed_backward_wte_kernel(float* dwte, const float* dout, const int* tokens,
                                          int B, int Tp, int Tt, int C) {
    __shared__ int tok[EMB_THREADS];
    int v = blockIdx.x;
    int c = blockIdx.y * EMB_THREADS + threadIdx.x;
    int T = Tp + Tt, R = B * Tt;
    float acc = 0.0f;
    for (int r0 = 0; r0 < R; r0 += EMB_THREADS) {
        int r = r0 + threadIdx.x;
        tok[threadIdx.x] = r < R ? tokens[r] : -1;
        __syncthreads();
        int n = R - r0 < EMB_THREADS ? R - r0 : EMB_THREADS;
        if (c < C) {
            for (int s = 0; s < n; s++) {
                if (tok[s] == v) {
                    int b = (r0 + s) / Tt, t = (r0 + s) % Tt;
                    acc += dout[((size_t)b * T + Tp + t) * C + c];
                }
            }
        }
        __syncthreads(); // all reads of tok are done before the next chunk overwrites it
    }
    if (c < C) { dwte[(size_t)v * C + c] += acc; }
}
// The GPU version needs the vocabulary size V (the grid of the wte gradient); the CPU one
// does not. Position gradients: dwpe[t, c] += sum over b of dout[b, t, c] (reduce_rows).
struct AcrossBatch { // element (t, b, c) = dout[b, t, c]
    const float* x; int T, C;
    __device__ float operator()(int t, int b, int c) const { return x[((size_t)b * T + t) * C + c]; }
};
void embed_backward(float* dprefix, float* dwte, float* dwpe, const float* dout, const int* tokens,
                    int B, int Tp, int Tt, int C, int V) {
    int T = Tp + Tt;
    if (dprefix && Tp > 0) {
        size_t n = (size_t)B * Tp * C;
        embed_backward_prefix_kernel<<<grid_for(n), BLOCK>>>(dprefix, dout, B, Tp, Tt, C);
        cudaCheckLaunch();
    }
    if (dwte && Tt > 0 && B > 0) {
        embed_backward_wte_kernel<<<dim3(V, ceil_div(C, EMB_THREADS)), EMB_THREADS>>>(dwte, dout, tokens, B, Tp, Tt, C);
        cudaCheckLaunch();
    }
    reduce_rows(dwpe, C, T, B, C, AcrossBatch{ dout, T, C });
}

// --- constants: timestep features and 2D positions ---------------------------
// Sinusoidal timestep features [B, F]: [cos(t phi_i), sin(t phi_i)], phi_i = 10000^(-i/(F/2)).
// Computed in double: t phi reaches ~1000 radians, where a float argument would already be
// off by ~1e-4. t is a device array.
// threads: one per (b, i), i < F/2
__global__ void timestep_features_kernel(float* out, const int* t, int B, int F) {
    int half = F / 2;
    GRID_STRIDE_LOOP(e, (size_t)B * half) {
        int i = (int)(e % half);
        size_t b = e / half;
        double arg = t[b] * exp(-log(10000.0) * i / half);
        out[b * F + i] = (float)cos(arg);
        out[b * F + half + i] = (float)sin(arg);
    }
}
void timestep_features(float* out, const int* t, int B, int F) {
    size_t n = (size_t)B * (F / 2);
    if (n == 0) return;
    timestep_features_kernel<<<grid_for(n), BLOCK>>>(out, t, B, F);
    cudaCheckLaunch();
}

// Fixed 2D sin-cos positions [G*G, C] (MAE/DiT style): with k = C/4, w_i = 10000^(-i/k),
// patch (r, q) gets [sin(q w), cos(q w), sin(r w), cos(r w)]: column first, then row.
// threads: one per (patch, i), i < k
__global__ void sincos_2d_positions_kernel(float* out, int G, int C) {
    int k = C / 4;
    GRID_STRIDE_LOOP(e, (size_t)G * G * k) {
        int i = (int)(e % k);
        size_t patch = e / k;
        int r = (int)(patch / G), q = (int)(patch % G);
        float* o = out + patch * C;
        double w = pow(10000.0, -(double)i / k);
        o[i] = (float)sin(q * w);
        o[k + i] = (float)cos(q * w);
        o[2 * k + i] = (float)sin(r * w);
        o[3 * k + i] = (float)cos(r * w);
    }
}
void sincos_2d_positions(float* out, int G, int C) {
    size_t n = (size_t)G * G * (C / 4);
    if (n == 0) return;
    sincos_2d_positions_kernel<<<grid_for(n), BLOCK>>>(out, G, C);
    cudaCheckLaunch();
}

// --- losses -----------------------------------------------------------------
// Softmax cross-entropy over V classes for N rows; rows whose target is PAD are ignored.
// Keeps the probabilities [N, V]; returns the mean loss over the counted rows (*count of them).
// threads: one warp per row (8 per block): lanes over the V classes for the max, the sum of
// exponentials and the probabilities; lane 0 writes the row's loss to scratch. The mean over
// rows is then a deterministic double sum (device_sum), like the CPU's double accumulator.
__global__ void crossentropy_forward_kernel(float* probs, float* row_loss, const float* logits, const int* targets,
                                            int N, int V) {
    int lane = threadIdx.x % 32;
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (n >= N) return;
    const float* z = logits + (size_t)n * V;
    float* p = probs + (size_t)n * V;
    float maxv = -FLT_MAX;
    for (int i = lane; i < V; i += 32) { maxv = fmaxf(maxv, z[i]); }
    maxv = warp_max(maxv);
    float sum = 0.0f;
    for (int i = lane; i < V; i += 32) { p[i] = expf(z[i] - maxv); sum += p[i]; }
    sum = warp_sum(sum);
    for (int i = lane; i < V; i += 32) { p[i] /= sum; }
    if (lane == 0) {
        // -log p[target] = log(sum) - (z[target] - max), without taking the log of a tiny p
        row_loss[n] = targets[n] != TOKEN_PAD ? logf(sum) - (z[targets[n]] - maxv) : 0.0f;
    }
}
struct CountedRowLoss {
    const float* row_loss; const int* targets;
    __device__ double operator()(size_t i) const { return targets[i] != TOKEN_PAD ? (double)row_loss[i] : 0.0; }
};
// the loss summed over the counted rows, divided by `count`: the counted rows of the whole
// batch, over every rank's rows (count_targets)
float crossentropy_forward(float* probs, const float* logits, const int* targets, int N, int V, int count) {
    if (N == 0) return 0.0f;
    float* row_loss = scratch_get(N);
    crossentropy_forward_kernel<<<ceil_div(N, BLOCK / 32), BLOCK>>>(probs, row_loss, logits, targets, N, V);
    cudaCheckLaunch();
    double loss = device_sum(N, CountedRowLoss{ row_loss, targets });
    return count ? (float)(loss / count) : 0.0f;
}
// d(mean loss)/dz = (p - onehot(target)) / count on the counted rows
// threads: one per element of the logits
__global__ void crossentropy_backward_kernel(float* dlogits, const float* probs, const int* targets, int N, int V, float inv) {
    GRID_STRIDE_LOOP(e, (size_t)N * V) {
        int i = (int)(e % V);
        size_t n = e / V;
        int target = targets[n];
        if (target == TOKEN_PAD) continue;
        dlogits[e] += (probs[e] - (i == target ? 1.0f : 0.0f)) * inv;
    }
}
void crossentropy_backward(float* dlogits, const float* probs, const int* targets, int N, int V, int count) {
    if (count == 0 || N == 0) { return; }
    float inv = 1.0f / count;
    crossentropy_backward_kernel<<<grid_for((size_t)N * V), BLOCK>>>(dlogits, probs, targets, N, V, inv);
    cudaCheckLaunch();
}

// squared error over N elements divided by `total`, the elements of the whole batch over
// every rank's rows (N with one rank: the mean), and its gradient 2 (pred - target) / total
struct SquaredError {
    const float* pred; const float* target;
    __device__ double operator()(size_t i) const { double d = pred[i] - target[i]; return d * d; }
};
float mse_forward(const float* pred, const float* target, size_t N, size_t total) {
    double sum = device_sum(N, SquaredError{ pred, target });
    return (float)(sum / total);
}
// threads: one per element
__global__ void mse_backward_kernel(float* dpred, const float* pred, const float* target, size_t N, float s) {
    GRID_STRIDE_LOOP(i, N) { dpred[i] += s * (pred[i] - target[i]); }
}
void mse_backward(float* dpred, const float* pred, const float* target, size_t N, size_t total) {
    if (N == 0) return;
    float s = 2.0f / total;
    mse_backward_kernel<<<grid_for(N), BLOCK>>>(dpred, pred, target, N, s);
    cudaCheckLaunch();
}

// ----------------------------------------------------------------------------
// sub-layers and blocks: train_vlv.c's, line for line, calling the launchers above with device
// pointers (a deliberate mirror: the same tests check both). Each *_backward finds the gradient
// of its output in the output slot of its gradient-activation struct, filled by the caller.

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
    embed_backward(d->patch_out, NULL, g->pos, d->x0, NULL, B, Np, 0, C, c->vocab);
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
    embed_backward(NULL, NULL, g->queries, d->x0, NULL, B, Nz, 0, C, c->vocab);
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
    embed_backward(dz, g->wte, g->wpe, d->x0, tokens, B, Nz, Nq - Nz, C, c->vocab);
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
    embed_backward(d->patch_out, NULL, NULL, d->x0, NULL, B, Np, 0, C, c->vocab);
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
    embed_backward(d->prefix, g->wte, g->wpe ? g->wpe + (size_t)(Nq - Tp) * C : NULL, d->x0, tokens, B, Tp, Tc, C, V);
    if (ctx) {
        matmul_backward(d->p1_gelu, g->prefix2.w, g->prefix2.b, d->prefix, a->p1_gelu, p->prefix2.w, B * Nq, C, C);
        gelu_backward(d->p1, a->p1, d->p1_gelu, (size_t)B * Nq * C);
        matmul_backward(dctx, g->prefix1.w, g->prefix1.b, d->p1, ctx, p->prefix1.w, B * Nq, c->d_t, C);
    }
}


// ----------------------------------------------------------------------------
// the model: all parameters, gradients, AdamW moments and activations, on the device

struct Model {
    Config config;
    int B;                    // batch size the activations are sized for
    size_t num_params;
    float* params;            // [padded] every part, in checkpoint order (zeros past num_params)
    float* grads;             // [padded]
    size_t padded;            // num_params rounded up to a multiple of the ranks (NCCL's chunks are equal)
    float *m, *v;             // AdamW moments [shard_len] of the parameters shard_start ..
    size_t shard_start, shard_len; // all of them, or under ZeRO-1 this rank's chunk (model_shard_optimizer)
    float* ema;               // [num_params] moving average of the weights (vlv_ema_update)
    unsigned char* param_info; // [num_params] group of each parameter | 0x80 if weight-decayed (AdamW)
    int adam_step;
    float grad_norm;          // the gradient norm of the last training step, before clipping
    int z_clipped;            // images whose gradient at z the last stage-1 step scaled down (clip_z)
    float* z_norms;           // [B] each image's gradient norm at z (clip_rows_to_median_device)
    float* z_norms_host;      // [B * ranks] the same, read back, for the global batch (rank r's at r B)
    TensorInfo* tensors;      // (host) name, shape, offset and group of each parameter tensor
    int num_tensors;
    ParamViews p, g, frozen;  // views into params, into grads, and all-NULL (no gradients)
    size_t num_acts;
    size_t act_part_start[NUM_ACT_PARTS + 1]; // where each part's activations start (ACTS_VIT...)
    float *acts_memory, *dacts_memory;
    ActViews a, d;            // activations and their gradients
    // diffusion constants and scratch
    float* alphas_cumprod;    // [n_timesteps]
    float* alphas_cumprod_host; // the same, for the DDIM coefficients computed on the host
    float* pos2d;             // [Np, d_d] the DiT's fixed positions
    float *xt, *target;       // [B,H,W,3] noisy input and regression target
    float* guided;            // [B,H,W,3] guided model output (sampling)
    float *ctx_cond, *ctx_empty; // [B,N_q,d_t] contexts for guided sampling
    int* targets;             // [B,T_c] next-token targets (PAD: ignored)
    int* tokens;              // [B,N_q] token scratch (the empty caption)
    int* pad_tokens;          // [B,N_q-n_z] the PAD token: the text encoder's positions after z
    int* timesteps;           // [B] timestep scratch (sampling)
    int* greedy_tokens;       // [B,T_c] the caption being decoded
    float* sample_x;          // [B,H,W,3] the image being sampled (ddim_sample)
    // the batch of the last vlv_forward, uploaded: its backward reads these
    float *in_images, *in_noise; // [B,H,W,3]
    int *in_text_tokens, *in_caption_tokens, *in_timesteps; // [B,N_q], [B,T_c], [B]
    int* int_host;            // [B * max(N_q, T_c)] host scratch for token rows and timesteps
    float loss;               // of the last forward
    int loss_count;           // tokens the last cross-entropy counted
};

static size_t image_numel(const Model* m) { return (size_t)m->B * m->config.img_size * m->config.img_size * 3; }

static Arena arena_over(float* base) {
    Arena a;
    memset(&a, 0, sizeof a);
    a.base = base;
    return a;
}

void model_build(Model* m, const Config* c, int B) {
    const char* problem = config_problem(c);
    if (!problem) { problem = config_batch_problem(c, B); }
    if (problem) fail("bad model config: %s", problem);
    memset(m, 0, sizeof *m);
    m->config = *c;
    m->B = B;
    m->num_params = count_params(c, &m->tensors, &m->num_tensors);
    if (m->num_params > 0x7fffffff) fail("the config has %zu parameters; a checkpoint holds at most 2^31 - 1", m->num_params);
    size_t n = m->num_params;
    m->padded = (n + dist_ranks() - 1) / dist_ranks() * dist_ranks();
    m->shard_start = 0;
    m->shard_len = n;
    m->params = device_floats(m->padded, "the parameters");
    m->grads = device_floats(m->padded, "the gradients");
    m->m = device_floats(n, "AdamW's m");
    m->v = device_floats(n, "AdamW's v");
    m->ema = device_floats(n, "the EMA of the weights");
    cudaCheck(cudaMemset(m->params, 0, m->padded * sizeof(float)));
    cudaCheck(cudaMemset(m->grads, 0, m->padded * sizeof(float)));
    cudaCheck(cudaMemset(m->m, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(m->v, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(m->ema, 0, n * sizeof(float)));
    // per parameter: its group, and whether AdamW decays it (matrices and embeddings)
    unsigned char* info = (unsigned char*)mallocCheck(n);
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo* t = &m->tensors[i];
        memset(info + t->offset, t->group | (t->ndim >= 2 ? 0x80 : 0), t->numel);
    }
    m->param_info = (unsigned char*)device_floats((n + 3) / 4, "the parameter groups");
    to_device(m->param_info, info, n);
    free(info);
    Arena pa = arena_over(m->params), ga = arena_over(m->grads), na = arena_over(NULL);
    params_layout(&m->p, &pa, c);
    params_layout(&m->g, &ga, c);
    params_layout(&m->frozen, &na, c);
    // activations: count, allocate, then lay out the activations and their gradients
    Arena count = arena_over(NULL);
    ActViews tmp;
    acts_layout(&tmp, &count, c, B);
    acts_views_free(&tmp);
    m->num_acts = count.used;
    memcpy(m->act_part_start, count.part_start, sizeof m->act_part_start);
    m->acts_memory = device_floats(m->num_acts, "the activations");
    m->dacts_memory = device_floats(m->num_acts, "the activation gradients");
    cudaCheck(cudaMemset(m->acts_memory, 0, m->num_acts * sizeof(float)));
    cudaCheck(cudaMemset(m->dacts_memory, 0, m->num_acts * sizeof(float)));
    Arena aa = arena_over(m->acts_memory), da = arena_over(m->dacts_memory);
    acts_layout(&m->a, &aa, c, B);
    acts_layout(&m->d, &da, c, B);
    // diffusion schedule: sqrt(beta) linear from sqrt(0.00085) to sqrt(0.012), in double
    m->alphas_cumprod_host = (float*)mallocCheck(c->n_timesteps * sizeof(float));
    double prod = 1.0, lo = sqrt(0.00085), hi = sqrt(0.012);
    for (int t = 0; t < c->n_timesteps; t++) {
        double sb = c->n_timesteps > 1 ? lo + (hi - lo) * t / (c->n_timesteps - 1) : lo;
        prod *= 1.0 - sb * sb;
        m->alphas_cumprod_host[t] = (float)prod;
    }
    m->alphas_cumprod = device_floats(c->n_timesteps, "the noise schedule");
    to_device(m->alphas_cumprod, m->alphas_cumprod_host, c->n_timesteps * sizeof(float));
    m->pos2d = device_floats((size_t)config_num_patches(c) * c->d_d, "the 2D positions");
    sincos_2d_positions(m->pos2d, c->img_size / c->patch, c->d_d);
    size_t img = image_numel(m), ctx = (size_t)B * c->n_q * c->d_t;
    m->xt = device_floats(img, "x_t");
    m->target = device_floats(img, "the diffusion target");
    m->guided = device_floats(img, "the guided output");
    m->ctx_cond = device_floats(ctx, "the sampling context");
    m->ctx_empty = device_floats(ctx, "the empty context");
    m->targets = device_ints((size_t)B * c->cap_len, "the targets");
    m->tokens = device_ints((size_t)B * c->n_q, "the token scratch");
    size_t pads = (size_t)B * (c->n_q - c->n_z);
    m->pad_tokens = device_ints(pads, "the PAD tokens after z");
    int* pad_host = (int*)mallocCheck((pads + 1) * sizeof(int));
    for (size_t i = 0; i < pads; i++) { pad_host[i] = TOKEN_PAD; }
    to_device(m->pad_tokens, pad_host, pads * sizeof(int));
    free(pad_host);
    m->timesteps = device_ints(B, "the timestep scratch");
    m->z_norms = device_floats(B, "the gradient norms at z");
    m->z_norms_host = (float*)mallocCheck((size_t)B * dist_ranks() * sizeof(float));
    m->greedy_tokens = device_ints((size_t)B * c->cap_len, "the decoded tokens");
    m->sample_x = device_floats(img, "the DDIM sample");
    m->in_images = device_floats(img, "the batch's images");
    m->in_noise = device_floats(img, "the batch's noise");
    m->in_text_tokens = device_ints((size_t)B * c->n_q, "the batch's text tokens");
    m->in_caption_tokens = device_ints((size_t)B * c->cap_len, "the batch's caption tokens");
    m->in_timesteps = device_ints(B, "the batch's timesteps");
    int row = c->n_q > c->cap_len ? c->n_q : c->cap_len;
    m->int_host = (int*)mallocCheck((size_t)B * row * sizeof(int));
}

void model_free(Model* m) {
    params_views_free(&m->p);
    params_views_free(&m->g);
    params_views_free(&m->frozen);
    acts_views_free(&m->a);
    acts_views_free(&m->d);
    float* device[] = { m->params, m->grads, m->m, m->v, m->ema, m->sample_x, (float*)m->param_info, m->acts_memory, m->dacts_memory,
                        m->alphas_cumprod, m->pos2d, m->xt, m->target, m->guided, m->ctx_cond, m->ctx_empty,
                        (float*)m->targets, (float*)m->tokens, (float*)m->pad_tokens, (float*)m->timesteps, (float*)m->greedy_tokens,
                        m->in_images, m->in_noise, (float*)m->in_text_tokens, (float*)m->in_caption_tokens,
                        (float*)m->in_timesteps, m->z_norms };
    for (size_t i = 0; i < sizeof device / sizeof device[0]; i++) { cudaCheck(cudaFree(device[i])); }
    free(m->tensors);
    free(m->alphas_cumprod_host);
    free(m->int_host); free(m->z_norms_host);
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

// the n weights of an open checkpoint, read and checked on the host (the caller frees them)
static float* read_weights(FILE* fp, const char* path, size_t n) {
    float* host = (float*)mallocCheck(n * sizeof(float));
    freadCheck(host, sizeof(float), n, fp, path);
    fclose(fp);
    for (size_t i = 0; i < n; i++) {
        if (!is_finite_float(host[i])) fail("'%s' holds a NaN or infinite weight (parameter %zu)", path, i);
    }
    return host;
}

// builds the model from a checkpoint's config and loads its weights. The weights are read
// and checked on the host before any device memory is touched.
void model_load(Model* m, const char* path, int B) {
    Config c;
    size_t n;
    FILE* fp = checkpoint_open(path, &c, &n);
    float* host = read_weights(fp, path, n);
    model_build(m, &c, B);
    to_device(m->params, host, n * sizeof(float));
    free(host);
}

// loads a checkpoint's weights into a built model; the configs must match
void model_load_weights(Model* m, const char* path) {
    Config c;
    size_t n;
    FILE* fp = checkpoint_open(path, &c, &n);
    char differs[256];
    if (config_difference(&c, &m->config, differs, sizeof differs)) fail("'%s' holds a model with %s", path, differs);
    float* host = read_weights(fp, path, n);
    to_device(m->params, host, n * sizeof(float));
    free(host);
}

// ZeRO-1's collectives on a device buffer x [n] of the ranks' equal chunks: the sum over the
// ranks onto each rank's chunk (gather 0), or every chunk from its rank (gather 1). Only the
// NCCL build has several ranks; model_shard_optimizer is never called in the others.
static void zero1_collective(float* x, size_t n, int gather) {
#ifdef USE_NCCL
    if (gather) { dist_allgather_device_floats(x, n); }
    else { dist_reduce_scatter_device_floats(x, n); }
#else
    (void)x;
    (void)n;
    (void)gather;
    fail("ZeRO-1 runs over several GPUs: build with USE_NCCL=1");
#endif
}

// the model's buffers by number, for the training state: 0 weights, 1 and 2 AdamW's moments,
// 3 the EMA; read into and written from host arrays of num_params floats
static float* model_buffer(const Model* m, int which) {
    float* buffers[4] = { m->params, m->m, m->v, m->ema };
    if (which < 0 || which > 3) fail("model_buffer: no buffer %d", which);
    return buffers[which];
}
// Under ZeRO-1 the moments are this rank's chunk: reading one gathers the chunks of every rank
// (all ranks call it together), writing one keeps this rank's chunk
void model_buffer_read(const Model* m, int which, float* out) {
    if (which == 0 || which == 3 || m->shard_len == m->num_params) { to_host(out, model_buffer(m, which), m->num_params * sizeof(float)); return; }
    float* all = device_floats(m->padded, "the gathered AdamW moments");
    cudaCheck(cudaMemcpy(all + m->shard_start, model_buffer(m, which), m->shard_len * sizeof(float), cudaMemcpyDeviceToDevice));
    zero1_collective(all, m->padded, 1);
    to_host(out, all, m->num_params * sizeof(float));
    cudaCheck(cudaFree(all));
}
void model_buffer_write(Model* m, int which, const float* in) {
    if (which == 0 || which == 3) { to_device(model_buffer(m, which), in, m->num_params * sizeof(float)); return; }
    to_device(model_buffer(m, which), in + m->shard_start, m->shard_len * sizeof(float));
}

// ZeRO-1, as train_vlv.c's: from here on this rank keeps AdamW's moments of its chunk of the
// (padded) parameters only, 1/N of the moments' device memory. The last rank's chunk ends at
// num_params: the padding has no moments.
void model_shard_optimizer(Model* m) {
    size_t start, len;
    dist_chunk(m->padded, dist_rank(), &start, &len);
    len = start >= m->num_params ? 0 : start + len > m->num_params ? m->num_params - start : len;
    float* mom = device_floats(len + 1, "AdamW's m (this rank's chunk)");
    float* vel = device_floats(len + 1, "AdamW's v (this rank's chunk)");
    cudaCheck(cudaMemcpy(mom, m->m + start, len * sizeof(float), cudaMemcpyDeviceToDevice));
    cudaCheck(cudaMemcpy(vel, m->v + start, len * sizeof(float), cudaMemcpyDeviceToDevice));
    cudaCheck(cudaFree(m->m));
    cudaCheck(cudaFree(m->v));
    m->m = mom;
    m->v = vel;
    m->shard_start = start;
    m->shard_len = len;
}

void model_save(const Model* m, const char* path) {
    float* host = (float*)mallocCheck(m->num_params * sizeof(float));
    to_host(host, m->params, m->num_params * sizeof(float));
    checkpoint_write(path, &m->config, host, m->num_params);
    free(host);
}

// initialization for training from scratch, exactly as train_vlv.c's model_init (the same
// random numbers, drawn on the host, then uploaded): matrices and embeddings N(0, 0.02),
// biases 0, LayerNorm weights 1; the DiT's adaLN and final layers 0 (adaLN-Zero)
void model_init(Model* m, uint64_t seed) {
    float* host = (float*)mallocCheck(m->num_params * sizeof(float));
    uint64_t state = seed * 2654435761ull + 1;
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo* t = &m->tensors[i];
        float* w = host + t->offset;
        int zero_init = strstr(t->name, ".ada.") || strncmp(t->name, "dit.final", 9) == 0;
        int is_weight = strcmp(t->name + strlen(t->name) - 7, ".weight") == 0;
        for (size_t j = 0; j < t->numel; j++) {
            if (zero_init) { w[j] = 0.0f; }
            else if (t->ndim == 2) { w[j] = 0.02f * random_normal(&state); }
            else { w[j] = is_weight ? 1.0f : 0.0f; } // 1-D ".weight" tensors are LayerNorm gains
        }
    }
    to_device(m->params, host, m->num_params * sizeof(float));
    free(host);
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

// x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, and the regression target (eps, or v); device arrays
// threads: one per element of the image batch
__global__ void diffusion_inputs_kernel(float* xt, float* target, const float* x0, const float* noise, const int* t,
                                        const float* alphas_cumprod, size_t per, size_t n, int predict_v) {
    GRID_STRIDE_LOOP(i, n) {
        float ab = alphas_cumprod[t[i / per]], sa = sqrtf(ab), sb = sqrtf(1.0f - ab);
        xt[i] = sa * x0[i] + sb * noise[i];
        target[i] = predict_v ? sa * noise[i] - sb * x0[i] : noise[i];
    }
}
static void diffusion_inputs(Model* m, const float* x0, const float* noise, const int* t) {
    const Config* c = &m->config;
    size_t per = (size_t)c->img_size * c->img_size * 3, n = image_numel(m);
    diffusion_inputs_kernel<<<grid_for(n), BLOCK>>>(m->xt, m->target, x0, noise, t, m->alphas_cumprod, per, n,
                                                   c->prediction == PREDICT_V);
    cudaCheckLaunch();
}

// vlv_vit_from_dit's two folds of a constant adaLN modulation: a LayerNorm of gain 1 + scale and
// bias shift, and a projection's rows scaled by the gate, out[r, :] = gate[r] in[r, :] (R rows of K)
__global__ void adaln_to_layernorm_kernel(float* w, float* b, const float* shift, const float* scale, int C) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < C) { w[i] = 1.0f + scale[i]; b[i] = shift[i]; }
}
__global__ void scale_rows_kernel(float* out, const float* in, const float* gate, int R, int K) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < (size_t)R * K) { out[i] = gate[i / K] * in[i]; }
}

// The vision encoder started from the frozen DiT: train_vlv.c's vlv_vit_from_dit explains it;
// the same steps on the device.
void vlv_vit_from_dit(Model* m) {
    const Config* c = &m->config;
    int C = c->d_d, Np = config_num_patches(c), PD = config_patch_dim(c);
    ViTP* v = &m->p.vit;
    const DiTP* d = &m->p.dit;
    DiTA* a = &m->a.dit;
    device_copy(v->patch.w, d->patch.w, (size_t)C * PD * sizeof(float));
    device_copy(v->patch.b, d->patch.b, C * sizeof(float));
    device_copy(v->pos, m->pos2d, (size_t)Np * C * sizeof(float));
    m->int_host[0] = 0; // s = SiLU(temb(0)) [1, C], as dit_forward computes it
    to_device(m->timesteps, m->int_host, sizeof(int));
    dit_conditioning(a, m->timesteps, d, c, 1);
    for (int l = 0; l < c->L_v; l++) {
        const DiTBlockP* db = &d->blocks[l];
        BlockP* vb = &v->blocks[l];
        float* mod = a->blocks[l].mod; // shift1, scale1, gate1, shift2, scale2, gate2 [6C]
        matmul_forward(mod, a->s, db->ada.w, db->ada.b, 1, C, 6 * C);
        adaln_to_layernorm_kernel<<<grid_for(C), BLOCK>>>(vb->ln1.w, vb->ln1.b, mod, mod + C, C);
        adaln_to_layernorm_kernel<<<grid_for(C), BLOCK>>>(vb->ln2.w, vb->ln2.b, mod + 3 * C, mod + 4 * C, C);
        device_copy(vb->attn.qkv.w, db->attn.qkv.w, (size_t)3 * C * C * sizeof(float));
        device_copy(vb->attn.qkv.b, db->attn.qkv.b, (size_t)3 * C * sizeof(float));
        device_copy(vb->mlp.fc.w, db->mlp.fc.w, (size_t)4 * C * C * sizeof(float));
        device_copy(vb->mlp.fc.b, db->mlp.fc.b, (size_t)4 * C * sizeof(float));
        scale_rows_kernel<<<grid_for((size_t)C * C), BLOCK>>>(vb->attn.proj.w, db->attn.proj.w, mod + 2 * C, C, C);
        scale_rows_kernel<<<grid_for(C), BLOCK>>>(vb->attn.proj.b, db->attn.proj.b, mod + 2 * C, C, 1);
        scale_rows_kernel<<<grid_for((size_t)C * 4 * C), BLOCK>>>(vb->mlp.proj.w, db->mlp.proj.w, mod + 5 * C, C, 4 * C);
        scale_rows_kernel<<<grid_for(C), BLOCK>>>(vb->mlp.proj.b, db->mlp.proj.b, mod + 5 * C, C, 1);
        cudaCheckLaunch();
    }
}

// runs an objective's forward pass; returns the loss (also kept in m->loss). The batch is
// checked and uploaded here; the backward uses the uploaded copy.
float vlv_forward(Model* m, Objective o, const Batch* batch) {
    const Config* c = &m->config;
    int B = m->B, Tc = c->cap_len;
    ActViews* a = &m->a;
    size_t img = image_numel(m);
    if (o == STAGE1 || o == STAGE2) {
        to_device(m->in_images, batch->images, img * sizeof(float));
        vit_forward(&a->vit, m->in_images, &m->p.vit, c, B);
        adapter_forward(&a->adapter, a->vit.ln_f.out, &m->p.adapter, c, B);
        textenc_forward(&a->textenc, m->pad_tokens, a->adapter.z, &m->p.textenc, c, B);
    }
    if (o == STAGE0 || o == STAGE1) {
        if (o == STAGE0) {
            check_tokens(batch->text_tokens, (size_t)B * c->n_q, c->vocab, "text tokens");
            to_device(m->in_text_tokens, batch->text_tokens, (size_t)B * c->n_q * sizeof(int));
            textenc_forward(&a->textenc, m->in_text_tokens, NULL, &m->p.textenc, c, B);
            to_device(m->in_images, batch->images, img * sizeof(float));
        }
        for (int b = 0; b < B; b++) {
            int t = batch->timesteps[b];
            if (t < 0 || t >= c->n_timesteps) fail("timestep %d is outside [0, %d)", t, c->n_timesteps);
        }
        to_device(m->in_noise, batch->noise, img * sizeof(float));
        to_device(m->in_timesteps, batch->timesteps, B * sizeof(int));
        diffusion_inputs(m, m->in_images, m->in_noise, m->in_timesteps);
        dit_forward(&a->dit, m->xt, m->in_timesteps, a->textenc.ln_f.out, &m->p.dit, m->pos2d, c, B);
        m->loss = (float)dist_sum_double(mse_forward(a->dit.out, m->target, img, img * dist_ranks()));
    } else {
        check_tokens(batch->caption_tokens, (size_t)B * Tc, c->vocab, "caption tokens");
        int* targets = m->int_host;
        for (int b = 0; b < B; b++) {
            for (int j = 0; j < Tc; j++) {
                targets[b * Tc + j] = j + 1 < Tc ? batch->caption_tokens[b * Tc + j + 1] : TOKEN_PAD;
            }
        }
        to_device(m->targets, targets, (size_t)B * Tc * sizeof(int));
        to_device(m->in_caption_tokens, batch->caption_tokens, (size_t)B * Tc * sizeof(int));
        capdec_forward(&a->capdec, o == STAGE2 ? a->textenc.ln_f.out : NULL, m->in_caption_tokens, &m->p.capdec, c, B);
        m->loss_count = (int)dist_sum_double(count_targets(targets, B * Tc));
        m->loss = (float)dist_sum_double(crossentropy_forward(a->capdec.probs, a->capdec.logits, m->targets, B * Tc, c->vocab, m->loss_count));
    }
    return m->loss;
}

// Stage 1's per-image clip at z, as clip_rows_to_median (vlvc/clip_z.h): each image's row of
// dz [B, n] is scaled to at most k times the batch's lower median row norm. The norms go to the
// host (B floats, one sync, only when the clip is on), which finds the bound (clip_bound).
// threads: one block of BLOCK per row; the row's sum of squares meets in shared memory in a
// fixed tree order, in double (block_sum_double)
__global__ void row_norms_kernel(float* norms, const float* x, size_t n) {
    __shared__ double s[BLOCK];
    const float* row = x + (size_t)blockIdx.x * n;
    double acc = 0.0;
    for (size_t j = threadIdx.x; j < n; j += BLOCK) { acc += (double)row[j] * row[j]; }
    double sumsq = block_sum_double(s, acc);
    if (threadIdx.x == 0) { norms[blockIdx.x] = (float)sqrt(sumsq); }
}
// threads: one block of BLOCK per row, its threads striding over the row; rows within the bound are left alone
__global__ void clip_rows_kernel(float* x, const float* norms, size_t n, float bound) {
    float norm = norms[blockIdx.x];
    if (norm <= bound) return;
    float scale = bound / norm, *row = x + (size_t)blockIdx.x * n;
    for (size_t j = threadIdx.x; j < n; j += BLOCK) { row[j] *= scale; }
}
// returns how many rows were scaled down
int clip_rows_to_median_device(float* dz, float* norms, float* norms_host, int B, size_t n, float k) {
    row_norms_kernel<<<B, BLOCK>>>(norms, dz, n);
    cudaCheckLaunch();
    to_host(norms_host + (size_t)dist_rank() * B, norms, B * sizeof(float));
    dist_gather_blocks(norms_host, (size_t)B * sizeof(float)); // the median of the global batch
    int clipped;
    float bound = clip_bound(norms_host, B * dist_ranks(), k, &clipped);
    clip_rows_kernel<<<B, BLOCK>>>(dz, norms, n, bound);
    cudaCheckLaunch();
    return clipped;
}

// the backward of the last vlv_forward of objective o: adds into the gradients of the
// groups in `groups`; every other part only passes activation gradients through. The tokens
// are the device copies the forward uploaded (batch is kept for train_vlv.c's signature).
// clip_z > 0: stage 1 scales each image's gradient at z to at most clip_z times the batch's median
void vlv_backward(Model* m, Objective o, const Batch* batch, int groups, float clip_z) {
    (void)batch;
    const Config* c = &m->config;
    int B = m->B;
    ActViews *a = &m->a, *d = &m->d;
    ParamViews g = grad_views(m, groups);
    m->z_clipped = 0;
    int through_encoder = o == STAGE1 || (o == STAGE2 && (groups & ENCODER_GROUPS));
    // activation gradients accumulate (+=): zero those of the parts this backward runs
    // through, and only those
    int parts = o == STAGE0 || o == STAGE1 ? 1 << ACTS_TEXTENC | 1 << ACTS_DIT : 1 << ACTS_CAPDEC;
    if (through_encoder) { parts |= 1 << ACTS_VIT | 1 << ACTS_ADAPTER | 1 << ACTS_TEXTENC; }
    for (int k = 0; k < NUM_ACT_PARTS; k++) {
        size_t start = m->act_part_start[k], end = m->act_part_start[k + 1];
        if (parts & 1 << k) { cudaCheck(cudaMemset(m->dacts_memory + start, 0, (end - start) * sizeof(float))); }
    }
    if (o == STAGE0 || o == STAGE1) {
        mse_backward(d->dit.out, a->dit.out, m->target, image_numel(m), image_numel(m) * dist_ranks());
        int ctx_grad = o == STAGE1 || (groups & 1 << GROUP_TEXTENC);
        dit_backward(ctx_grad ? d->textenc.ln_f.out : NULL, &d->dit, &g.dit, &a->dit, a->textenc.ln_f.out, &m->p.dit, c, B);
        if (ctx_grad) {
            textenc_backward(o == STAGE1 ? d->adapter.z : NULL, &d->textenc, &g.textenc, &a->textenc,
                             o == STAGE0 ? m->in_text_tokens : m->pad_tokens, &m->p.textenc, c, B);
        }
        if (o == STAGE1 && clip_z > 0.0f) {
            m->z_clipped = clip_rows_to_median_device(d->adapter.z, m->z_norms, m->z_norms_host, B,
                                                      (size_t)c->n_z * c->d_t, clip_z);
        }
    } else {
        crossentropy_backward(d->capdec.logits, a->capdec.probs, m->targets, B * c->cap_len, c->vocab, m->loss_count);
        const float* ctx = o == STAGE2 ? a->textenc.ln_f.out : NULL;
        capdec_backward(through_encoder ? d->textenc.ln_f.out : NULL, &d->capdec, &g.capdec, &a->capdec, ctx,
                        m->in_caption_tokens, &m->p.capdec, c, B);
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


// zeroes the gradients of the groups: the tensors of a group are consecutive in the buffer,
// so this is one cudaMemset per run of consecutive trained tensors
void vlv_zero_grad(Model* m, int groups) {
    for (int i = 0; i < m->num_tensors;) {
        if (!(groups & 1 << m->tensors[i].group)) { i++; continue; }
        int j = i;
        while (j + 1 < m->num_tensors && (groups & 1 << m->tensors[j + 1].group)) { j++; }
        size_t begin = m->tensors[i].offset, end = m->tensors[j].offset + m->tensors[j].numel;
        cudaCheck(cudaMemset(m->grads + begin, 0, (end - begin) * sizeof(float)));
        i = j + 1;
    }
}

// a fresh optimizer (each stage starts one)
void vlv_reset_optimizer(Model* m) {
    cudaCheck(cudaMemset(m->m, 0, m->shard_len * sizeof(float)));
    cudaCheck(cudaMemset(m->v, 0, m->shard_len * sizeof(float)));
    m->adam_step = 0;
}

struct TrainedSquare { // g^2 for the parameters of the trained groups, 0 elsewhere
    const float* grads; const unsigned char* info; int groups;
    __device__ double operator()(size_t i) const {
        return (groups >> (info[i] & 0x7f) & 1) ? (double)grads[i] * grads[i] : 0.0;
    }
};
// threads: one per parameter (grid-stride); parameters outside the groups are left alone
__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, const unsigned char* info,
                             int groups, size_t n, float clip, float lr, float lr_wd, float beta1, float beta2,
                             float bc1, float bc2, float eps) {
    GRID_STRIDE_LOOP(j, n) {
        unsigned char f = info[j];
        if (!(groups >> (f & 0x7f) & 1)) continue;
        // decoupled weight decay on matrices and embeddings only, none on biases and norms
        float decay = (f & 0x80) ? lr_wd : 0.0f;
        float g = grads[j] * clip;
        params[j] -= decay * params[j];
        m[j] = beta1 * m[j] + (1.0f - beta1) * g;
        v[j] = beta2 * v[j] + (1.0f - beta2) * g * g;
        params[j] -= lr * (m[j] / bc1) / (sqrtf(v[j] / bc2) + eps);
    }
}

// the squared L2 norm of the groups' gradients within the shard, in double (the same bits
// every run: a fixed tree, no atomics)
static double grad_sumsq(Model* m, int groups) {
    size_t s = m->shard_start;
    return device_sum(m->shard_len, TrainedSquare{ m->grads + s, m->param_info + s, groups });
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
    size_t s = m->shard_start;
    if (m->shard_len > 0) {
        adamw_kernel<<<grid_for(m->shard_len), BLOCK>>>(m->params + s, m->grads + s, m->m, m->v, m->param_info + s, groups,
                                                         m->shard_len, clip, opt->lr, opt->lr * opt->weight_decay,
                                                         opt->beta1, opt->beta2, bc1, bc2, opt->eps);
        cudaCheckLaunch();
    }
    if (sharded) { zero1_collective(m->params, m->padded, 1); }
    return norm;
}

// An exponential moving average of the weights of some groups (stage 0 samples with the
// decoder's EMA, which is much smoother than the raw weights): ema = d ema + (1 - d) params.
// decay 0 copies the weights into the EMA (its start). swap exchanges weights and EMA.
// threads: one per parameter (grid-stride); parameters outside the groups are left alone
__global__ void ema_kernel(float* ema, float* params, const unsigned char* info, int groups, size_t n, float decay, int swap) {
    GRID_STRIDE_LOOP(j, n) {
        if (!(groups >> (info[j] & 0x7f) & 1)) continue;
        if (swap) { float w = params[j]; params[j] = ema[j]; ema[j] = w; }
        else { ema[j] = decay * ema[j] + (1.0f - decay) * params[j]; }
    }
}
void vlv_ema_update(Model* m, int groups, float decay) {
    ema_kernel<<<grid_for(m->num_params), BLOCK>>>(m->ema, m->params, m->param_info, groups, m->num_params, decay, 0);
    cudaCheckLaunch();
}
// exchanges the weights of some groups with their EMA (twice restores them)
void vlv_ema_swap(Model* m, int groups) {
    ema_kernel<<<grid_for(m->num_params), BLOCK>>>(m->ema, m->params, m->param_info, groups, m->num_params, 0.0f, 1);
    cudaCheckLaunch();
}

// Data parallel (vlvc/dist.h, USE_NCCL), as train_vlv.c's: each rank's gradients are its rows'
// share of the global batch's mean, so their sum over the ranks (ncclAllReduce on the device)
// is the global gradient. Summed per run of consecutive tensors the groups train.
static void sum_grads_over_ranks(Model* m, int groups) {
#ifdef USE_NCCL
    size_t start, len;
    for (int i = 0; next_group_run(m->tensors, m->num_tensors, groups, &i, &start, &len);) { dist_sum_device_floats(m->grads + start, len); }
#else
    (void)m; // one rank: nothing to sum
    (void)groups;
#endif
}

// one training step of an objective: zero grads, forward, backward, clip, AdamW (the
// gradients summed over the ranks between the last two, or under ZeRO-1 onto each rank's
// chunk). Returns the loss.
float vlv_train_step(Model* m, Objective o, const Batch* batch, int groups, const AdamW* opt) {
    vlv_zero_grad(m, groups);
    float loss = vlv_forward(m, o, batch);
    if (!is_finite_float(loss)) { return loss; } // the caller stops; weights are untouched
    vlv_backward(m, o, batch, groups, opt->clip_z);
    if (m->shard_len < m->num_params) { zero1_collective(m->grads, m->padded, 0); } // ZeRO-1: onto the chunks
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
// inference: contexts, guided DDIM sampling, greedy captions, beam search. As in train_vlv.c
// (and as vlvc/pipeline.h calls them), every array argument is a HOST array; the functions
// upload and download what they need.

// the context c of captions: tokens [B,N_q] -> ctx [B,N_q,d_t]
void text_context(Model* m, const int* tokens, float* ctx) {
    const Config* c = &m->config;
    check_tokens(tokens, (size_t)m->B * c->n_q, c->vocab, "text tokens");
    to_device(m->tokens, tokens, (size_t)m->B * c->n_q * sizeof(int));
    textenc_forward(&m->a.textenc, m->tokens, NULL, &m->p.textenc, c, m->B);
    to_host(ctx, m->a.textenc.ln_f.out, (size_t)m->B * c->n_q * c->d_t * sizeof(float));
}

// the context of the empty caption [BOS, EOS, PAD...] for every sample -> ctx [B,N_q,d_t]
void empty_context(Model* m, float* ctx) {
    for (int b = 0; b < m->B; b++) { empty_caption(m->int_host + (size_t)b * m->config.n_q, m->config.n_q); }
    text_context(m, m->int_host, ctx);
}

// the context c = TextEnc(z) of images: [B,H,W,3] -> ctx [B,N_q,d_t] (what VLV encodes an image to)
void image_context(Model* m, const float* images, float* ctx) {
    const Config* c = &m->config;
    to_device(m->in_images, images, image_numel(m) * sizeof(float));
    vit_forward(&m->a.vit, m->in_images, &m->p.vit, c, m->B);
    adapter_forward(&m->a.adapter, m->a.vit.ln_f.out, &m->p.adapter, c, m->B);
    textenc_forward(&m->a.textenc, m->pad_tokens, m->a.adapter.z, &m->p.textenc, c, m->B);
    to_host(ctx, m->a.textenc.ln_f.out, (size_t)m->B * c->n_q * c->d_t * sizeof(float));
}

// one guided DDIM update of x in place: out = out_empty + w (out_cond - out_empty), then
// x0 and eps from it (eps- or v-prediction), x0 clipped to the data range [-1, 1] (diffusers'
// clip_sample; eps is kept), then x = sqrt(abar') x0 + sqrt(1 - abar') eps
// threads: one per element of the image batch
__global__ void ddim_step_kernel(float* x, const float* out_cond, const float* out_empty, size_t n, float guidance,
                                 float sa, float sb, float sa_prev, float sb_prev, int predict_v) {
    GRID_STRIDE_LOOP(j, n) {
        float out = out_empty[j] + guidance * (out_cond[j] - out_empty[j]);
        float eps, x0;
        if (predict_v) { x0 = sa * x[j] - sb * out; eps = sb * x[j] + sa * out; }
        else { eps = out; x0 = (x[j] - sb * eps) / sa; }
        x0 = fminf(fmaxf(x0, -1.0f), 1.0f); // the data range; early steps divide by sqrt(abar) ~ 0.07
        x[j] = sa_prev * x0 + sb_prev * eps;
    }
}
// Runs the first steps_run steps of the num_steps-step DDIM (eta = 0) schedule on x [B,H,W,3]
// in place, with classifier-free guidance: out = out_empty + w (out_cond - out_empty). The
// predicted x0 is clipped to the data range [-1, 1] (diffusers' clip_sample), eps is kept.
// x, ctx_cond and ctx_empty [B,N_q,d_t] are host arrays; the sampling runs on the device.
void ddim_sample(Model* m, float* x, const float* ctx_cond, const float* ctx_empty, float guidance,
                 int num_steps, int steps_run) {
    const Config* c = &m->config;
    size_t n = image_numel(m), ctx = (size_t)m->B * c->n_q * c->d_t;
    int delta = c->n_timesteps / num_steps;
    if (delta < 1) fail("ddim: %d steps is more than the %d diffusion timesteps", num_steps, c->n_timesteps);
    to_device(m->sample_x, x, n * sizeof(float));
    to_device(m->ctx_cond, ctx_cond, ctx * sizeof(float));
    to_device(m->ctx_empty, ctx_empty, ctx * sizeof(float));
    for (int i = 0; i < steps_run && i < num_steps; i++) {
        int t = (num_steps - 1 - i) * delta, t_prev = t - delta;
        for (int b = 0; b < m->B; b++) { m->int_host[b] = t; }
        to_device(m->timesteps, m->int_host, m->B * sizeof(int));
        dit_forward(&m->a.dit, m->sample_x, m->timesteps, m->ctx_cond, &m->p.dit, m->pos2d, c, m->B);
        device_copy(m->guided, m->a.dit.out, n * sizeof(float));
        dit_forward(&m->a.dit, m->sample_x, m->timesteps, m->ctx_empty, &m->p.dit, m->pos2d, c, m->B);
        float ab = m->alphas_cumprod_host[t], ab_prev = t_prev >= 0 ? m->alphas_cumprod_host[t_prev] : 1.0f;
        float sa = sqrtf(ab), sb = sqrtf(1.0f - ab), sa_prev = sqrtf(ab_prev), sb_prev = sqrtf(1.0f - ab_prev);
        ddim_step_kernel<<<grid_for(n), BLOCK>>>(m->sample_x, m->guided, m->a.dit.out, n, guidance, sa, sb, sa_prev,
                                                 sb_prev, c->prediction == PREDICT_V);
        cudaCheckLaunch();
    }
    to_host(x, m->sample_x, n * sizeof(float));
}

// the next token of each unfinished caption: argmax of the logits row pos-1, the lowest index
// among equal maxima (as the CPU's strict >). A caption whose previous token is EOS or PAD
// (pos > 1) is finished and keeps its PAD.
// threads: one warp per sample; lane l scans classes l, l + 32, ...; the (value, index) pairs
// then meet by shuffles, ties going to the lower index.
__global__ void greedy_next_kernel(int* tokens, const float* logits, int B, int Tc, int V, int pos) {
    int lane = threadIdx.x % 32;
    int b = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (b >= B) return;
    int prev = tokens[b * Tc + pos - 1];
    if (pos > 1 && (prev == TOKEN_EOS || prev == TOKEN_PAD)) return; // finished: the whole warp leaves
    const float* row = logits + ((size_t)b * Tc + pos - 1) * V;
    float best = -FLT_MAX;
    int best_i = V; // no class yet
    for (int i = lane; i < V; i += 32) {
        if (best_i == V || row[i] > best) { best = row[i]; best_i = i; }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        float other = __shfl_xor_sync(0xffffffffu, best, offset);
        int other_i = __shfl_xor_sync(0xffffffffu, best_i, offset);
        int take = other_i != V && (best_i == V || other > best || (other == best && other_i < best_i));
        if (take) { best = other; best_i = other_i; }
    }
    if (lane == 0) { tokens[b * Tc + pos] = best_i; }
}
// greedy decoding from the context ctx [B,N_q,d_t]: tokens [B,T_c] = BOS, argmax... until EOS,
// PAD after. Host arrays; the tokens stay on the device between positions.
void greedy_caption(Model* m, int* tokens, const float* ctx) {
    const Config* c = &m->config;
    int Tc = c->cap_len, V = c->vocab;
    for (int i = 0; i < m->B * Tc; i++) { tokens[i] = i % Tc == 0 ? TOKEN_BOS : TOKEN_PAD; }
    to_device(m->greedy_tokens, tokens, (size_t)m->B * Tc * sizeof(int));
    to_device(m->ctx_cond, ctx, (size_t)m->B * c->n_q * c->d_t * sizeof(float));
    for (int pos = 1; pos < Tc; pos++) {
        capdec_forward(&m->a.capdec, m->ctx_cond, m->greedy_tokens, &m->p.capdec, c, m->B);
        greedy_next_kernel<<<ceil_div(m->B, BLOCK / 32), BLOCK>>>(m->greedy_tokens, m->a.capdec.logits, m->B, Tc, V, pos);
        cudaCheckLaunch();
    }
    to_host(tokens, m->greedy_tokens, (size_t)m->B * Tc * sizeof(int));
}

// Beam search for one image's context ctx [N_q,d_t] (host), with the model's batch rows as the
// beams (beams <= B). Writes the best finished caption (or, if none finished, the best one) to
// best [T_c] (host). beams = 1 is greedy decoding. The bookkeeping is the host's (vlvc/beams.h);
// each position runs the caption decoder on the device and brings its
// logits [B,T_c,V] back.
void beam_caption(Model* m, int* best, const float* ctx, int beams) {
    const Config* c = &m->config;
    int Tc = c->cap_len, V = c->vocab, B = m->B;
    size_t ctx_row = (size_t)c->n_q * c->d_t;
    Beams s;
    beams_start(&s, beams, B, Tc, V);
    for (int b = 0; b < B; b++) { to_device(m->ctx_cond + b * ctx_row, ctx, ctx_row * sizeof(float)); }
    float* logits = (float*)mallocCheck((size_t)B * Tc * V * sizeof(float));
    for (int pos = 1; pos < Tc; pos++) {
        to_device(m->greedy_tokens, s.seqs, (size_t)B * Tc * sizeof(int));
        capdec_forward(&m->a.capdec, m->ctx_cond, m->greedy_tokens, &m->p.capdec, c, B);
        to_host(logits, m->a.capdec.logits, (size_t)B * Tc * V * sizeof(float));
        beams_extend(&s, pos, logits);
    }
    beams_finish(&s, best);
    free(logits);
}

// ----------------------------------------------------------------------------
#ifndef VLV_NO_MAIN // test_vlv.cu includes this file for its functions

// ./train_vlvcu --model-check [-b batch] [-n steps]: the GPU's speed check without data or
// pipeline: build a model of the full preset's widths from scratch, train each objective a few steps
// on one fixed random batch, printing the loss (which must fall), ms/step and images/s; then
// one summary line per objective, averaged over the steps after the first (which pays for
// warm-up): dev/gpu/gpu_check.sh's speed benchmark.
static int model_check(int argc, char** argv) {
    Config c = { .img_size = 32, .patch = 4, .n_q = 16, .vocab = 64, .cap_len = 24,
                 .d_v = 128, .L_v = 4, .nh_v = 4, .L_a = 2, .nh_a = 4,
                 .d_t = 128, .L_t = 2, .nh_t = 4, .d_d = 128, .L_d = 6, .nh_d = 4, .d_freq = 64,
                 .d_g = 128, .L_g = 4, .nh_g = 4, .prediction = PREDICT_EPS, .n_timesteps = 1000, .n_z = 16 };
    int B = 16, steps = 10;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) fail("flag %s needs a value (see -h)", argv[i]);
        char* end;
        long v = strtol(argv[i + 1], &end, 10);
        if (*end != '\0' || v < 1 || v > 1000000) fail("flag %s: '%s' is not a positive integer", argv[i], argv[i + 1]);
        if (strcmp(argv[i], "-b") == 0) { B = (int)v; }
        else if (strcmp(argv[i], "-n") == 0) { steps = (int)v; }
        else { fail("unknown flag %s\nusage: train_vlvcu --model-check [-b batch (16)] [-n steps per objective (10)]", argv[i]); }
    }
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    Model m;
    model_build(&m, &c, B);
    model_init(&m, 1337);
    printf("vlv.cu model check: %zu parameters, %.1f MiB of activations, batch %d, %s (%d SMs), %s\n",
           m.num_params, m.num_acts * 4.0 / (1 << 20), B, prop.name, prop.multiProcessorCount, matmul_kind);
    // one fixed random batch: images in [-1, 1], captions of random words (as train_vlv.c)
    size_t img = image_numel(&m);
    float* images = (float*)mallocCheck(img * sizeof(float));
    float* noise = (float*)mallocCheck(img * sizeof(float));
    int* text = (int*)mallocCheck((size_t)B * c.n_q * sizeof(int));
    int* caption = (int*)mallocCheck((size_t)B * c.cap_len * sizeof(int));
    int* timesteps = (int*)mallocCheck(B * sizeof(int));
    uint64_t rng = 42;
    for (size_t i = 0; i < img; i++) { images[i] = 2.0f * random_uniform(&rng) - 1.0f; noise[i] = random_normal(&rng); }
    for (int b = 0; b < B; b++) {
        timesteps[b] = random_u32(&rng) % c.n_timesteps;
        int words = 1 + random_u32(&rng) % 8;
        for (int j = 0; j < c.n_q; j++) { text[b * c.n_q + j] = j == 0 ? (int)TOKEN_BOS : j <= words ? TOKEN_FIRST_WORD + (int)(random_u32(&rng) % (c.vocab - TOKEN_FIRST_WORD)) : j == words + 1 ? (int)TOKEN_EOS : (int)TOKEN_PAD; }
        for (int j = 0; j < c.cap_len; j++) { caption[b * c.cap_len + j] = j < c.n_q ? text[b * c.n_q + j] : TOKEN_PAD; }
    }
    Batch batch = { images, text, caption, noise, timesteps };
    AdamW opt = { .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.0f, .grad_clip = 1.0f, .clip_z = 0.0f };
    int failed = 0;
    double mean_ms[NUM_OBJECTIVES];
    for (int o = 0; o < NUM_OBJECTIVES; o++) {
        int groups = objective_groups((Objective)o);
        vlv_reset_optimizer(&m);
        float first = 0.0f, last = 0.0f;
        double total_ms = 0.0;
        for (int step = 0; step < steps; step++) {
            cudaCheck(cudaDeviceSynchronize());
            double t0 = wall_seconds();
            float loss = vlv_train_step(&m, (Objective)o, &batch, groups, &opt);
            cudaCheck(cudaDeviceSynchronize());
            double ms = (wall_seconds() - t0) * 1e3;
            if (!is_finite_float(loss)) fail("%s step %d: the loss is not finite", objective_name[o], step);
            if (step == 0) { first = loss; }
            else { total_ms += ms; }
            last = loss;
            printf("%-7s step %3d/%d | loss %.5f | %7.2f ms/step | %8.1f images/s | ETA %.1f s\n", objective_name[o],
                   step + 1, steps, loss, ms, B / (ms * 1e-3), ms * 1e-3 * (steps - step - 1));
        }
        mean_ms[o] = steps > 1 ? total_ms / (steps - 1) : 0.0;
        int fell = last < first;
        printf("%-7s loss %.5f -> %.5f: %s\n", objective_name[o], first, last, fell ? "falling" : "NOT FALLING");
        failed |= !fell;
    }
    for (int o = 0; o < NUM_OBJECTIVES && steps > 1; o++) {
        printf("summary %-7s batch %d | %.3f ms/step | %.1f images/s (mean of steps 2..%d)\n", objective_name[o], B,
               mean_ms[o], B / (mean_ms[o] * 1e-3), steps);
    }
    free(images); free(noise); free(text); free(caption); free(timesteps);
    model_free(&m);
    cuda_scratch_free();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

// what the pipeline runs on, in words, and its fp32 peak in GFLOP/s (for the "% of peak"):
// SMs x FP32 lanes per SM x 2 (FMA) x the SM clock. 128 lanes from compute capability 8.6 on
// (and 6.1), 64 on 8.0 (A100), 7.x and 6.0. An estimate; --peak gives the right one. The
// host threads only prepare data.
float device_describe(int threads, char* desc, size_t cap, char* peak_how, size_t how_cap) {
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    int khz = 0;
    cudaCheck(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0));
    snprintf(desc, cap, "%s (%d SMs, %s; %d host thread%s)", prop.name, prop.multiProcessorCount, matmul_kind, threads,
             threads == 1 ? "" : "s");
    bool narrow = prop.major == 7 || (prop.major == 8 && prop.minor == 0) || (prop.major == 6 && prop.minor == 0);
    snprintf(peak_how, how_cap, "estimated: %d SMs x %d FP32 lanes x 2 x %.2f GHz", prop.multiProcessorCount,
             narrow ? 64 : 128, khz / 1e6);
    return (float)prop.multiProcessorCount * (narrow ? 64 : 128) * 2 * (khz / 1e6f);
}

// the pipeline (command line, data, the stages, checkpoints, evaluation) is host code shared
// with train_vlv.c: vlvc/pipeline.h, on the interface vlvc/vlv.h. It needs stb_image and zlib
// (link -lstb -lz; on a GPU machine without libstb-dev, dev/gpu/gpu_deps.sh brings them).
#include "vlvc/pipeline.h"
int main(int argc, char** argv) {
    if (argc > 1 && strcmp(argv[1], "--model-check") == 0) { return model_check(argc - 1, argv + 1); }
    dist_init(&argc, &argv); // one rank unless built with USE_NCCL=1 and started as several (doc/distributed.md)
    int status = vlv_main(argc, argv);
    if (status == 0) { dist_finish(); }
    return status;
}
#endif
