/*
dev/cuda/gelu_silu.cu — the pointwise activations GELU (tanh approximation) and SiLU, forward
and backward (backward accumulates: dinp += f'(x) dout), several ways (a lab; its harness is common.h).

  gelu(x) = 0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi)
  gelu'(x) = 0.5 (1 + th) + 0.5 x (1 - th^2) k (1 + 3 * 0.044715 x^2)
  silu(x) = x sigmoid(x),  silu'(x) = s (1 + x (1 - s)), s = sigmoid(x)

Versions (each of the four kernels):
  1 one/thread    one element per thread, grid ceil(n / bs)
  2 grid-stride   min(ceil(n / bs), 8192) blocks looping over the elements (train_vlv.cu's)
  3 float4        grid-stride over groups of 4 elements with 16-byte loads and stores, the
                  tail (n % 4) by scalar code; needs 16-byte-aligned buffers (cudaMalloc's are)
Block sizes 64 ... 1024.
  ./gelu_silu          correctness over sizes and block sizes, then GB/s
  ./gelu_silu --check  correctness only
Build: nvcc -O3 -std=c++17 -arch=sm_90 dev/cuda/gelu_silu.cu -o gelu_silu
*/
#include "common.h"


#define GELU_K 0.7978845608028654f
// the four functions, one element each: out = f(x) (forward) or dinp += f'(x) dout (backward)
struct GeluF { __device__ static void fwd(float& out, float x) { out = 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x))); }
               __device__ static void bwd(float& dinp, float x, float d) {
                   float th = tanhf(GELU_K * (x + 0.044715f * x * x * x));
                   dinp += (0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * 0.044715f * x * x)) * d; } };
struct SiluF { __device__ static void fwd(float& out, float x) { out = x / (1.0f + expf(-x)); }
               __device__ static void bwd(float& dinp, float x, float d) { float s = 1.0f / (1.0f + expf(-x)); dinp += d * s * (1.0f + x * (1.0f - s)); } };

// 1: threads: one element each
template <class F>
__global__ void fwd_one(float* out, const float* inp, size_t n) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) F::fwd(out[i], inp[i]);
}
template <class F>
__global__ void bwd_one(float* dinp, const float* inp, const float* dout, size_t n) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) F::bwd(dinp[i], inp[i], dout[i]);
}
// 2: threads: grid-stride
template <class F>
__global__ void fwd_stride(float* out, const float* inp, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) F::fwd(out[i], inp[i]);
}
template <class F>
__global__ void bwd_stride(float* dinp, const float* inp, const float* dout, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) F::bwd(dinp[i], inp[i], dout[i]);
}
// 3: threads: grid-stride over float4 groups; thread 0 of block 0 also does the tail
template <class F>
__global__ void fwd_vec4(float* out, const float* inp, size_t n) {
    size_t n4 = n / 4;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) {
        float4 x = reinterpret_cast<const float4*>(inp)[i], y;
        F::fwd(y.x, x.x); F::fwd(y.y, x.y); F::fwd(y.z, x.z); F::fwd(y.w, x.w);
        reinterpret_cast<float4*>(out)[i] = y;
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) { for (size_t i = n4 * 4; i < n; i++) F::fwd(out[i], inp[i]); }
}
template <class F>
__global__ void bwd_vec4(float* dinp, const float* inp, const float* dout, size_t n) {
    size_t n4 = n / 4;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) {
        float4 x = reinterpret_cast<const float4*>(inp)[i], d = reinterpret_cast<const float4*>(dout)[i];
        float4 g = reinterpret_cast<float4*>(dinp)[i];
        F::bwd(g.x, x.x, d.x); F::bwd(g.y, x.y, d.y); F::bwd(g.z, x.z, d.z); F::bwd(g.w, x.w, d.w);
        reinterpret_cast<float4*>(dinp)[i] = g;
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) { for (size_t i = n4 * 4; i < n; i++) F::bwd(dinp[i], inp[i], dout[i]); }
}

static const char* version_name[4] = { "", "one/thread", "grid-stride", "float4" };
static unsigned int grid(int version, size_t n, int bs) {
    size_t work = version == 3 ? std::max<size_t>(n / 4, 1) : n;
    unsigned int g = ceil_div((long)work, bs);
    return version == 1 ? g : std::min(g, 8192u);
}
template <class F>
static void forward(int version, float* out, const float* inp, size_t n, int bs) {
    if (n == 0) return;
    if (version == 1) fwd_one<F><<<grid(1, n, bs), bs>>>(out, inp, n);
    else if (version == 2) fwd_stride<F><<<grid(2, n, bs), bs>>>(out, inp, n);
    else fwd_vec4<F><<<grid(3, n, bs), bs>>>(out, inp, n);
    cudaCheckLaunch();
}
template <class F>
static void backward(int version, float* dinp, const float* inp, const float* dout, size_t n, int bs) {
    if (n == 0) return;
    if (version == 1) bwd_one<F><<<grid(1, n, bs), bs>>>(dinp, inp, dout, n);
    else if (version == 2) bwd_stride<F><<<grid(2, n, bs), bs>>>(dinp, inp, dout, n);
    else bwd_vec4<F><<<grid(3, n, bs), bs>>>(dinp, inp, dout, n);
    cudaCheckLaunch();
}

static double rel_error(const float* dev, const std::vector<double>& ref) {
    std::vector<float> got(ref.size());
    cudaCheck(cudaMemcpy(got.data(), dev, got.size() * 4, cudaMemcpyDeviceToHost));
    double max_err = 0, max_ref = 0;
    for (size_t i = 0; i < got.size(); i++) {
        if (!std::isfinite(got[i])) return INFINITY;
        max_err = std::max(max_err, fabs(got[i] - ref[i]));
        max_ref = std::max(max_ref, fabs(ref[i]));
    }
    return max_ref > 0 ? max_err / max_ref : max_err;
}

// the reference in double
static double gelu_ref(double x) { return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_grad(double x) {
    double th = tanh(0.7978845608028654 * (x + 0.044715 * x * x * x));
    return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * 0.7978845608028654 * (1 + 3 * 0.044715 * x * x);
}
static double silu_ref(double x) { return x / (1 + exp(-x)); }
static double silu_grad(double x) { double s = 1 / (1 + exp(-x)); return s * (1 + x * (1 - s)); }

template <class F>
static int check(const char* name, double (*f)(double), double (*df)(double), size_t n) {
    std::vector<float> x(n), d(n), g0(n);
    for (size_t i = 0; i < n; i++) { x[i] = 6.0f * uniform(); d[i] = uniform(); g0[i] = uniform(); }
    if (n > 2) { x[0] = -30.0f; x[1] = 30.0f; } // saturated tails
    std::vector<double> y_ref(n), g_ref(n);
    for (size_t i = 0; i < n; i++) { y_ref[i] = f(x[i]); g_ref[i] = g0[i] + df(x[i]) * d[i]; }
    float *dx = upload(x), *dd = upload(d), *dy = upload(std::vector<float>(n, NAN)), *dg = upload(g0);
    int failures = 0, sizes[] = { 64, 128, 256, 512, 1024 };
    for (int version = 1; version <= 3; version++) {
        for (int bs : sizes) {
            cudaCheck(cudaMemcpy(dy, std::vector<float>(n, NAN).data(), n * 4, cudaMemcpyHostToDevice));
            cudaCheck(cudaMemcpy(dg, g0.data(), n * 4, cudaMemcpyHostToDevice));
            forward<F>(version, dy, dx, n, bs);
            backward<F>(version, dg, dx, dd, n, bs);
            double ef = rel_error(dy, y_ref), eb = rel_error(dg, g_ref);
            bool ok = ef <= 2e-6 && eb <= 2e-6;
            failures += !ok;
            if (!ok || getenv("VERBOSE")) printf("%s %s n=%zu %-11s bs=%-4d forward rel err %.2e, backward %.2e\n", ok ? "ok  " : "FAIL", name, n,
                                                version_name[version], bs, ef, eb);
        }
    }
    cudaCheck(cudaFree(dx)); cudaCheck(cudaFree(dd)); cudaCheck(cudaFree(dy)); cudaCheck(cudaFree(dg));
    return failures;
}

template <class F>
static void timing(const char* name, size_t n) {
    float *x = upload(std::vector<float>(n, 0.5f)), *y = upload(std::vector<float>(n, 0.0f));
    float *d = upload(std::vector<float>(n, 0.25f)), *g = upload(std::vector<float>(n, 0.0f));
    cudaEvent_t a, b;
    cudaCheck(cudaEventCreate(&a));
    cudaCheck(cudaEventCreate(&b));
    for (int version = 1; version <= 3; version++) {
        for (int bs : { 128, 256, 1024 }) {
            float best[2];
            for (int pass = 0; pass < 2; pass++) {
                std::vector<float> ms(30);
                for (int r = 0; r < 33; r++) {
                    cudaCheck(cudaEventRecord(a));
                    if (pass == 0) forward<F>(version, y, x, n, bs); else backward<F>(version, g, x, d, n, bs);
                    cudaCheck(cudaEventRecord(b));
                    cudaCheck(cudaEventSynchronize(b));
                    if (r >= 3) cudaCheck(cudaEventElapsedTime(&ms[r - 3], a, b));
                }
                std::sort(ms.begin(), ms.end());
                best[pass] = ms[15];
            }
            printf("%-5s n=%-9zu %-11s bs=%-4d forward %6.0f GB/s   backward %6.0f GB/s\n", name, n, version_name[version], bs,
                   8.0 * n / (best[0] * 1e-3) / 1e9, 16.0 * n / (best[1] * 1e-3) / 1e9);
        }
    }
    cudaCheck(cudaEventDestroy(a)); cudaCheck(cudaEventDestroy(b));
    cudaCheck(cudaFree(x)); cudaCheck(cudaFree(y)); cudaCheck(cudaFree(d)); cudaCheck(cudaFree(g));
}

int main(int argc, char** argv) {
    bool check_only = argc > 1 && strcmp(argv[1], "--check") == 0;
    if (argc > 1 && !check_only) { fprintf(stderr, "usage: %s [--check]\n", argv[0]); return 2; }
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("gelu/silu lab on %s: 3 versions x 5 block sizes\n", prop.name);
    int failures = 0;
    for (size_t n : { (size_t)1, (size_t)3, (size_t)4, (size_t)1001, (size_t)4096, (size_t)70001 }) {
        int f = check<GeluF>("gelu", gelu_ref, gelu_grad, n) + check<SiluF>("silu", silu_ref, silu_grad, n);
        printf("%s n=%-6zu gelu and silu, forward and backward\n", f ? "FAIL" : "ok  ", n);
        failures += f;
    }
    printf("correctness: %d failures\n", failures);
    if (check_only || failures) return failures ? 1 : 0;
    size_t n = (size_t)32 * 64 * 512; // the DiT MLP's hidden activations at batch 32
    printf("\nGB/s moved (forward: read x, write y; backward: read x, dout, dinp, write dinp); median of 30\n");
    timing<GeluF>("gelu", n);
    timing<SiluF>("silu", n);
    timing<GeluF>("gelu", (size_t)1 << 26);
    return 0;
}
