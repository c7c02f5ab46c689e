/*
dev/cuda/matmul.cu — the three matrix products of a Linear layer, several ways (a lab,
not linked into the model; its harness is common.h).

  forward  out[N, OC]   = inp[N, C] . W[OC, C]^T (+ b)
  dinp     dinp[N, C]  += dout[N, OC] . W[OC, C]
  dweight  dW[OC, C]   += dout^T . inp

All three are one general product C[M, N] (+)= A(m, k) B(k, n) (+ bias[n]) whose operands are
read in the layout they have in memory (A_MK: A is [M][K], else [K][M]; B_NK: B is [N][K],
else [K][N]), exactly as in train_vlv.cu.

Versions:
  1 naive       one thread per output, both operands straight from global memory;
                block (bx, by) of threads over (n, m)
  2 smem tiled  block TILE x TILE, one output per thread; TILE x TILE tiles of A and B staged
                through shared memory (TILE = 8, 16, 32)
  3 regblock    train_vlv.cu's kernel: 64 x 64 outputs per block of 256 threads, 4 x 4 per
                thread from registers, K in slices of 16 through shared memory
  4 regblock+splitK  version 3 with K cut into S slices whose partial tiles a second kernel
                adds in order (train_vlv.cu's path for thin products such as dweight); the
                correctness sweep forces S = 2, 3, 7 on every size
  5 cuBLAS      cublasSgemm, fp32 (build with -DUSE_CUBLAS -lcublas)

  ./matmul            correctness over sizes, block sizes and split counts, then the timing
                      table on the default model's shapes (batch 32) and one large square
  ./matmul --check    correctness only (small sizes; also what the CPU emulator runs)
Exit status 1 if any result is wrong. Build:
  nvcc -O3 -std=c++17 -arch=sm_90 dev/cuda/matmul.cu -o matmul [-DUSE_CUBLAS -lcublas]
*/
#include "common.h"
#ifdef USE_CUBLAS
#include <cublas_v2.h>
#endif


// ----------------------------------------------------------------------------
// the problem: C[M, N] = (accumulate ? C : 0) + bias[n] + sum_k A(m, k) B(k, n)

struct Gemm {
    float* C; int ldc;
    const float* A; int lda; bool a_mk;
    const float* B; int ldb; bool b_nk;
    const float* bias;
    int M, N, K, accumulate;
};
__host__ __device__ inline float load_a(const float* A, int lda, bool a_mk, int m, int k) {
    return a_mk ? A[(size_t)m * lda + k] : A[(size_t)k * lda + m];
}
__host__ __device__ inline float load_b(const float* B, int ldb, bool b_nk, int k, int n) {
    return b_nk ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n];
}

// ----------------------------------------------------------------------------
// version 1: naive. threads: one per output (m, n); block (bx, by), grid over (N, M)
template <bool A_MK, bool B_NK>
__global__ void matmul_naive_kernel(float* C, int ldc, const float* A, int lda, const float* B, int ldb,
                                    const float* bias, int M, int N, int K, int accumulate) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    int m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) return;
    float acc = bias ? bias[n] : 0.0f;
    for (int k = 0; k < K; k++) { acc += load_a(A, lda, A_MK, m, k) * load_b(B, ldb, B_NK, k, n); }
    float* c = C + (size_t)m * ldc + n;
    *c = accumulate ? *c + acc : acc;
}

// version 2: shared-memory tiles. threads: block TILE x TILE, thread (ty, tx) owns output
// (m0 + ty, n0 + tx). Each step copies a TILE x TILE tile of A (rows m0.., columns k0..) and of
// B (rows k0.., columns n0..) into shared memory, zeros outside the matrices; each thread then
// runs TILE multiply-adds from shared memory. The +1 column avoids bank conflicts when the
// copy walks down a column.
template <int TILE, bool A_MK, bool B_NK>
__global__ void matmul_smem_kernel(float* C, int ldc, const float* A, int lda, const float* B, int ldb,
                                   const float* bias, int M, int N, int K, int accumulate) {
    __shared__ float As[TILE][TILE + 1]; // As[m][k]
    __shared__ float Bs[TILE][TILE + 1]; // Bs[k][n]
    int tx = threadIdx.x, ty = threadIdx.y;
    int m0 = blockIdx.y * TILE, n0 = blockIdx.x * TILE;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        // the copies: consecutive threads (tx) read consecutive addresses in either layout
        {
            int m = A_MK ? m0 + ty : m0 + tx, k = A_MK ? k0 + tx : k0 + ty;
            float a = (m < M && k < K) ? load_a(A, lda, A_MK, m, k) : 0.0f;
            if (A_MK) { As[ty][tx] = a; } else { As[tx][ty] = a; }
        }
        {
            int n = B_NK ? n0 + ty : n0 + tx, k = B_NK ? k0 + tx : k0 + ty;
            float b = (n < N && k < K) ? load_b(B, ldb, B_NK, k, n) : 0.0f;
            if (B_NK) { Bs[tx][ty] = b; } else { Bs[ty][tx] = b; }
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < TILE; kk++) { acc += As[ty][kk] * Bs[kk][tx]; }
        __syncthreads();
    }
    int m = m0 + ty, n = n0 + tx;
    if (m < M && n < N) {
        if (bias) { acc += bias[n]; }
        float* c = C + (size_t)m * ldc + n;
        *c = accumulate ? *c + acc : acc;
    }
}

// versions 3 and 4: register blocking (the kernel of train_vlv.cu, same text). A block of 256 =
// 16 x 16 threads computes a 64 x 64 tile; thread (ty, tx) owns rows ty + 16 i and columns
// tx + 16 j (i, j < 4); K is walked in slices of 16 through shared memory. blockIdx.z picks a
// K range [z k_chunk, (z+1) k_chunk) whose partial tile goes to C + z split_stride.
#define MM_BM 64
#define MM_BN 64
#define MM_BK 16
#define MM_THREADS 256
template <bool A_MK, bool B_NK>
__global__ void __launch_bounds__(MM_THREADS)
matmul_tiled_kernel(float* C, int ldc, const float* __restrict__ A, int lda, const float* __restrict__ Bm, int ldb,
                    const float* __restrict__ bias, int M, int N, int K, int k_chunk, size_t split_stride, int accumulate) {
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
            acc[i][j] = (bias != NULL && n < N) ? bias[n] : 0.0f;
        }
    }
    for (int k0 = kb; k0 < ke; k0 += MM_BK) {
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
        __syncthreads();
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
        __syncthreads();
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
// threads: one per output element (grid-stride); adds the split partial tiles in z order
__global__ void matmul_split_reduce_kernel(float* C, int ldc, const float* part, int splits, const float* bias,
                                           int M, int N, int accumulate) {
    size_t MN = (size_t)M * N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < MN; i += (size_t)gridDim.x * blockDim.x) {
        int n = (int)(i % N);
        size_t m = i / N;
        float s = bias ? bias[n] : 0.0f;
        for (int z = 0; z < splits; z++) { s += part[z * MN + i]; }
        float* c = C + m * ldc + n;
        *c = accumulate ? *c + s : s;
    }
}
// train_vlv.cu's choice of the split count
static int matmul_splits(int M, int N, int K) {
    int tiles = (int)(ceil_div(M, MM_BM) * ceil_div(N, MM_BN));
    int want = (int)ceil_div(256, tiles), by_k = (int)ceil_div(K, 128);
    int s = want < by_k ? want : by_k;
    return s < 1 ? 1 : s > 32 ? 32 : s;
}

// ----------------------------------------------------------------------------
// launchers: dispatch on the layouts (each a template argument, so the inner loops know them)

#define DISPATCH_LAYOUT(g, CALL)                                      \
    do {                                                              \
        if (g.a_mk && g.b_nk) { CALL(true, true); }                   \
        else if (g.a_mk) { CALL(true, false); }                       \
        else if (g.b_nk) { CALL(false, true); }                       \
        else { CALL(false, false); }                                  \
    } while (0)

static void run_naive(const Gemm& g, int bx, int by) {
    dim3 block(bx, by), grid(ceil_div(g.N, bx), ceil_div(g.M, by));
#define NAIVE(AM, BN) matmul_naive_kernel<AM, BN><<<grid, block>>>(g.C, g.ldc, g.A, g.lda, g.B, g.ldb, g.bias, g.M, g.N, g.K, g.accumulate)
    DISPATCH_LAYOUT(g, NAIVE);
#undef NAIVE
    cudaCheckLaunch();
}
template <int TILE>
static void run_smem(const Gemm& g) {
    dim3 block(TILE, TILE), grid(ceil_div(g.N, TILE), ceil_div(g.M, TILE));
#define SMEM(AM, BN) matmul_smem_kernel<TILE, AM, BN><<<grid, block>>>(g.C, g.ldc, g.A, g.lda, g.B, g.ldb, g.bias, g.M, g.N, g.K, g.accumulate)
    DISPATCH_LAYOUT(g, SMEM);
#undef SMEM
    cudaCheckLaunch();
}
// splits: 0 = train_vlv.cu's choice; the partial tiles go to part (splits * M * N floats)
static void run_regblock(const Gemm& g, int splits, float* part) {
    if (splits == 0) splits = matmul_splits(g.M, g.N, g.K);
    dim3 block(MM_THREADS);
    unsigned gx = ceil_div(g.N, MM_BN), gy = ceil_div(g.M, MM_BM);
    if (splits <= 1) {
#define REG1(AM, BN) matmul_tiled_kernel<AM, BN><<<dim3(gx, gy, 1), block>>>(g.C, g.ldc, g.A, g.lda, g.B, g.ldb, g.bias, g.M, g.N, g.K, g.K, 0, g.accumulate)
        DISPATCH_LAYOUT(g, REG1);
#undef REG1
        cudaCheckLaunch();
        return;
    }
    int k_chunk = (int)ceil_div(ceil_div(g.K, splits), MM_BK) * MM_BK;
    splits = (int)ceil_div(g.K, k_chunk);
    size_t MN = (size_t)g.M * g.N;
#define REGS(AM, BN) matmul_tiled_kernel<AM, BN><<<dim3(gx, gy, splits), block>>>(part, g.N, g.A, g.lda, g.B, g.ldb, NULL, g.M, g.N, g.K, k_chunk, MN, 0)
    DISPATCH_LAYOUT(g, REGS);
#undef REGS
    cudaCheckLaunch();
    unsigned rg = ceil_div((long)MN, 256);
    matmul_split_reduce_kernel<<<rg < 8192 ? rg : 8192, 256>>>(g.C, g.ldc, part, splits, g.bias, g.M, g.N, g.accumulate);
    cudaCheckLaunch();
}
#ifdef USE_CUBLAS
static cublasHandle_t handle;
__global__ void add_bias_kernel(float* C, int ldc, const float* bias, int M, int N) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)M * N; i += (size_t)gridDim.x * blockDim.x) {
        C[(i / N) * ldc + i % N] += bias[i % N];
    }
}
// row-major C[M, N] is column-major C^T [N, M] = op(B)^T op(A)^T
static void run_cublas(const Gemm& g) {
    const float one = 1.0f, beta = g.accumulate ? 1.0f : 0.0f;
    // column-major B^T [N, K]: B stored [N][K] is column-major [K, N] (needs OP_T); [K][N] is [N, K] (OP_N)
    cublasOperation_t opb = g.b_nk ? CUBLAS_OP_T : CUBLAS_OP_N;
    // column-major A^T [K, M]: A stored [M][K] is column-major [K, M] (OP_N); [K][M] is [M, K] (OP_T)
    cublasOperation_t opa = g.a_mk ? CUBLAS_OP_N : CUBLAS_OP_T;
    cublasStatus_t s = cublasSgemm(handle, opb, opa, g.N, g.M, g.K, &one, g.B, g.ldb, g.A, g.lda, &beta, g.C, g.ldc);
    if (s != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "cublasSgemm failed: %d\n", (int)s); exit(1); }
    if (g.bias) {
        add_bias_kernel<<<256, 256>>>(g.C, g.ldc, g.bias, g.M, g.N);
        cudaCheckLaunch();
    }
}
#endif

// ----------------------------------------------------------------------------
// the versions, by name

struct Version { const char* name; int kind, a, b; }; // kind: 1 naive (a x b), 2 smem (TILE a), 3 regblock (splits a), 5 cuBLAS
static const Version versions[] = {
    { "naive 8x8", 1, 8, 8 }, { "naive 16x16", 1, 16, 16 }, { "naive 32x8", 1, 32, 8 }, { "naive 32x32", 1, 32, 32 },
    { "smem 8", 2, 8, 0 }, { "smem 16", 2, 16, 0 }, { "smem 32", 2, 32, 0 },
    { "regblock", 3, 1, 0 }, { "regblock+splitK auto", 3, 0, 0 },
    { "regblock+splitK 2", 3, 2, 0 }, { "regblock+splitK 3", 3, 3, 0 }, { "regblock+splitK 7", 3, 7, 0 },
#ifdef USE_CUBLAS
    { "cuBLAS", 5, 0, 0 },
#endif
};
static const int num_versions = sizeof versions / sizeof versions[0];
static float* part = NULL; // split-K partial tiles
static size_t part_floats = 0;

static void run(const Version& v, const Gemm& g) {
    switch (v.kind) {
        case 1: run_naive(g, v.a, v.b); break;
        case 2: if (v.a == 8) run_smem<8>(g); else if (v.a == 16) run_smem<16>(g); else run_smem<32>(g); break;
        case 3: {
            int s = v.a ? v.a : matmul_splits(g.M, g.N, g.K);
            size_t need = (size_t)(s > 1 ? s : 0) * g.M * g.N;
            if (need > part_floats) {
                if (part) cudaCheck(cudaFree(part));
                cudaCheck(cudaMalloc((void**)&part, need * sizeof(float)));
                part_floats = need;
            }
            run_regblock(g, s, part);
            break;
        }
#ifdef USE_CUBLAS
        case 5: run_cublas(g); break;
#endif
        default: fprintf(stderr, "unknown version\n"); exit(1);
    }
}

// ----------------------------------------------------------------------------
// the three products of a Linear layer as Gemm problems, on device buffers

enum { FORWARD, DINP, DWEIGHT };
static const char* product_name[3] = { "forward", "dinp", "dweight" };
struct Linear { int N, C, OC; };
struct Buffers { float *inp, *weight, *bias, *dout, *out; }; // out: big enough for every product's output

static Gemm product(int which, const Linear& l, const Buffers& d) {
    switch (which) {
        case FORWARD: return { d.out, l.OC, d.inp, l.C, true, d.weight, l.C, true, d.bias, l.N, l.OC, l.C, 0 };
        case DINP: return { d.out, l.C, d.dout, l.OC, true, d.weight, l.C, false, NULL, l.N, l.C, l.OC, 1 };
        default: return { d.out, l.C, d.dout, l.OC, false, d.inp, l.C, false, NULL, l.OC, l.C, l.N, 1 };
    }
}

static std::vector<float> random_vector(size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = uniform();
    return v;
}

// checks every version on one layer's three products; returns the number of failures
static int check_layer(const Linear& l) {
    std::vector<float> inp = random_vector((size_t)l.N * l.C), weight = random_vector((size_t)l.OC * l.C);
    std::vector<float> bias = random_vector(l.OC), dout = random_vector((size_t)l.N * l.OC);
    size_t out_n = std::max({ (size_t)l.N * l.OC, (size_t)l.N * l.C, (size_t)l.OC * l.C });
    Buffers d = { upload(inp), upload(weight), upload(bias), upload(dout), NULL };
    cudaCheck(cudaMalloc((void**)&d.out, out_n * sizeof(float)));
    Buffers h = { inp.data(), weight.data(), bias.data(), dout.data(), NULL };
    int failures = 0;
    for (int which = 0; which < 3; which++) {
        Gemm hg = product(which, l, h), dg = product(which, l, d);
        // the reference in double; accumulating products start from random values
        std::vector<float> init = random_vector((size_t)hg.M * hg.N);
        std::vector<double> ref((size_t)hg.M * hg.N);
        double max_ref = 0.0;
        for (int m = 0; m < hg.M; m++) {
            for (int n = 0; n < hg.N; n++) {
                double acc = hg.accumulate ? init[(size_t)m * hg.N + n] : 0.0;
                if (hg.bias) acc += hg.bias[n];
                for (int k = 0; k < hg.K; k++) { acc += (double)load_a(hg.A, hg.lda, hg.a_mk, m, k) * load_b(hg.B, hg.ldb, hg.b_nk, k, n); }
                ref[(size_t)m * hg.N + n] = acc;
                max_ref = std::max(max_ref, fabs(acc));
            }
        }
        std::vector<float> got((size_t)hg.M * hg.N), poison((size_t)hg.M * hg.N, NAN);
        for (int vi = 0; vi < num_versions; vi++) {
            // an assigning product starts from NaN, so an output nobody wrote fails
            const std::vector<float>& start = hg.accumulate ? init : poison;
            cudaCheck(cudaMemcpy(d.out, start.data(), start.size() * sizeof(float), cudaMemcpyHostToDevice));
            run(versions[vi], dg);
            cudaCheck(cudaDeviceSynchronize());
            cudaCheck(cudaMemcpy(got.data(), d.out, got.size() * sizeof(float), cudaMemcpyDeviceToHost));
            double max_err = 0.0;
            bool finite = true;
            for (size_t i = 0; i < got.size(); i++) {
                if (!std::isfinite(got[i])) finite = false;
                max_err = std::max(max_err, fabs(got[i] - ref[i]));
            }
            double rel = max_ref > 0 ? max_err / max_ref : max_err;
            bool ok = finite && rel <= 2e-5;
            failures += !ok;
            if (!ok || getenv("VERBOSE")) {
                printf("%s N=%d C=%d OC=%d %-8s %-22s rel err %.2e%s\n", ok ? "ok  " : "FAIL", l.N, l.C, l.OC,
                       product_name[which], versions[vi].name, rel, finite ? "" : " (not finite: an output was not written)");
            }
        }
    }
    cudaCheck(cudaFree(d.inp)); cudaCheck(cudaFree(d.weight)); cudaCheck(cudaFree(d.bias));
    cudaCheck(cudaFree(d.dout)); cudaCheck(cudaFree(d.out));
    return failures;
}

// median time in ms of reps runs of a version on a product (after 3 warm-up runs)
static float time_version(const Version& v, const Gemm& g, int reps) {
    cudaEvent_t start, stop;
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&stop));
    for (int i = 0; i < 3; i++) run(v, g);
    std::vector<float> ms(reps);
    for (int i = 0; i < reps; i++) {
        cudaCheck(cudaEventRecord(start));
        run(v, g);
        cudaCheck(cudaEventRecord(stop));
        cudaCheck(cudaEventSynchronize(stop));
        cudaCheck(cudaEventElapsedTime(&ms[i], start, stop));
    }
    cudaCheck(cudaEventDestroy(start));
    cudaCheck(cudaEventDestroy(stop));
    std::sort(ms.begin(), ms.end());
    return ms[reps / 2];
}

int main(int argc, char** argv) {
    bool check_only = argc > 1 && strcmp(argv[1], "--check") == 0;
    if (argc > 1 && !check_only) { fprintf(stderr, "usage: %s [--check]\n", argv[0]); return 2; }
#ifdef USE_CUBLAS
    if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "cublasCreate failed\n"); return 1; }
#endif
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("matmul lab on %s (%d SMs); %d versions\n", prop.name, prop.multiProcessorCount, num_versions);
    // odd sizes (partial tiles everywhere, K not a multiple of any slice), tiny ones, and the
    // shapes of the test configs and of the default model
    std::vector<Linear> sizes = { { 1, 1, 1 }, { 7, 13, 5 }, { 3, 16, 48 }, { 33, 65, 17 }, { 64, 64, 64 },
                                  { 65, 16, 64 }, { 100, 48, 300 }, { 257, 129, 63 }, { 405, 96, 288 } };
    if (!check_only) { sizes.push_back({ 2048, 128, 512 }); sizes.push_back({ 1280, 512, 128 }); }
    int failures = 0;
    for (const Linear& l : sizes) {
        int f = check_layer(l);
        printf("%s N=%-5d C=%-4d OC=%-4d: 3 products x %d versions\n", f ? "FAIL" : "ok  ", l.N, l.C, l.OC, num_versions);
        failures += f;
    }
    printf("correctness: %d failures\n", failures);
    if (check_only || failures) return failures ? 1 : 0;

    // timing: the default model's Linear layers at batch 32 (rows = 32 x tokens), and a square
    struct Named { const char* name; Linear l; };
    std::vector<Named> shapes = {
        { "dit qkv   2048x128->384", { 2048, 128, 384 } }, { "dit fc    2048x128->512", { 2048, 128, 512 } },
        { "dit proj  2048x512->128", { 2048, 512, 128 } }, { "gpt fc    1280x128->512", { 1280, 128, 512 } },
        { "lm head     24x128->64", { 24, 128, 64 } }, { "square 4096x4096->4096", { 4096, 4096, 4096 } },
    };
    std::vector<int> timed;
    for (int vi = 0; vi < num_versions; vi++) {
        const char* n = versions[vi].name;
        if (strcmp(n, "naive 16x16") == 0 || strcmp(n, "smem 32") == 0 || strcmp(n, "regblock") == 0 ||
            strcmp(n, "regblock+splitK auto") == 0 || strcmp(n, "cuBLAS") == 0) timed.push_back(vi);
    }
    printf("\nGFLOP/s (median of 20 runs; cudaEvent timing)\n%-26s %-8s", "shape", "product");
    for (int vi : timed) printf(" %20s", versions[vi].name);
    printf("\n");
    for (const Named& s : shapes) {
        std::vector<float> inp = random_vector((size_t)s.l.N * s.l.C), weight = random_vector((size_t)s.l.OC * s.l.C);
        std::vector<float> bias = random_vector(s.l.OC), dout = random_vector((size_t)s.l.N * s.l.OC);
        size_t out_n = std::max({ (size_t)s.l.N * s.l.OC, (size_t)s.l.N * s.l.C, (size_t)s.l.OC * s.l.C });
        Buffers d = { upload(inp), upload(weight), upload(bias), upload(dout), NULL };
        cudaCheck(cudaMalloc((void**)&d.out, out_n * sizeof(float)));
        cudaCheck(cudaMemset(d.out, 0, out_n * sizeof(float)));
        for (int which = 0; which < 3; which++) {
            Gemm g = product(which, s.l, d);
            double flops = 2.0 * g.M * g.N * g.K;
            printf("%-26s %-8s", s.name, product_name[which]);
            for (int vi : timed) {
                bool slow = versions[vi].kind == 1 && flops > 1e10; // the naive kernel on the square: skip
                if (slow) { printf(" %20s", "-"); continue; }
                float ms = time_version(versions[vi], g, 20);
                printf(" %13.0f (%4.0fus)", flops / (ms * 1e-3) / 1e9, ms * 1e3);
            }
            printf("\n");
        }
        cudaCheck(cudaFree(d.inp)); cudaCheck(cudaFree(d.weight)); cudaCheck(cudaFree(d.bias));
        cudaCheck(cudaFree(d.dout)); cudaCheck(cudaFree(d.out));
    }
    if (part) cudaCheck(cudaFree(part));
    return 0;
}
