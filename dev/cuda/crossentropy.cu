/*
dev/cuda/crossentropy.cu — softmax cross-entropy over V classes for N rows, rows whose target is
PAD (0) ignored, forward (probabilities, mean loss over the counted rows, their count) and
backward (dlogits += (p - onehot(target)) / count on the counted rows), several ways (a lab;
its harness is common.h).

Versions of the forward (the mean is always train_vlv.cu's deterministic double sum of the
per-row losses: per-block partial sums in a fixed tree, then one block adds them):
  1 thread/row   one thread per row: max, sum of exponentials, probabilities, loss
  2 warp/row     one warp per row, lanes over classes, shuffles (train_vlv.cu's), 8 rows/block
  3 block/row    one block of bs threads per row, reductions through shared memory (for large V)
Versions of the backward:
  1 element      one thread per logit (train_vlv.cu's)
  2 warp/row     one warp per row; skips PAD rows as a whole
  ./crossentropy          correctness over sizes (V from 5 to 50257, all-PAD rows), then timing
  ./crossentropy --check  correctness only
Build: nvcc -O3 -std=c++17 -arch=sm_90 dev/cuda/crossentropy.cu -o crossentropy
*/
#include "common.h"
#include <float.h>

#define PAD 0

__device__ inline float warp_sum(float v) { for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o); return v; }
__device__ inline float warp_max(float v) { for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o)); return v; }

// 1: threads: one per row
__global__ void ce_forward_thread(float* probs, float* row_loss, const float* logits, const int* targets, int N, int V) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float* z = logits + (size_t)n * V;
    float* p = probs + (size_t)n * V;
    float maxv = -FLT_MAX, sum = 0.0f;
    for (int i = 0; i < V; i++) maxv = fmaxf(maxv, z[i]);
    for (int i = 0; i < V; i++) { p[i] = expf(z[i] - maxv); sum += p[i]; }
    for (int i = 0; i < V; i++) p[i] /= sum;
    row_loss[n] = targets[n] != PAD ? logf(sum) - (z[targets[n]] - maxv) : 0.0f;
}
// 2: threads: one warp per row (train_vlv.cu's crossentropy_forward_kernel)
__global__ void ce_forward_warp(float* probs, float* row_loss, const float* logits, const int* targets, int N, int V) {
    int lane = threadIdx.x % 32;
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (n >= N) return;
    const float* z = logits + (size_t)n * V;
    float* p = probs + (size_t)n * V;
    float maxv = -FLT_MAX;
    for (int i = lane; i < V; i += 32) maxv = fmaxf(maxv, z[i]);
    maxv = warp_max(maxv);
    float sum = 0.0f;
    for (int i = lane; i < V; i += 32) { p[i] = expf(z[i] - maxv); sum += p[i]; }
    sum = warp_sum(sum);
    for (int i = lane; i < V; i += 32) p[i] /= sum;
    if (lane == 0) row_loss[n] = targets[n] != PAD ? logf(sum) - (z[targets[n]] - maxv) : 0.0f;
}
// 3: threads: one block per row; warp results meet in shared memory (warp 0 combines them)
__global__ void ce_forward_block(float* probs, float* row_loss, const float* logits, const int* targets, int N, int V) {
    __shared__ float shared[33];
    int n = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    if (n >= N) return;
    const float* z = logits + (size_t)n * V;
    float* p = probs + (size_t)n * V;
    float maxv = -FLT_MAX;
    for (int i = threadIdx.x; i < V; i += blockDim.x) maxv = fmaxf(maxv, z[i]);
    maxv = warp_max(maxv);
    if (lane == 0) shared[warp] = maxv;
    __syncthreads();
    if (warp == 0) { float m = lane < warps ? shared[lane] : -FLT_MAX; m = warp_max(m); if (lane == 0) shared[32] = m; }
    __syncthreads();
    maxv = shared[32];
    __syncthreads(); // everyone has read shared[32] before it is reused
    float sum = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) { p[i] = expf(z[i] - maxv); sum += p[i]; }
    sum = warp_sum(sum);
    if (lane == 0) shared[warp] = sum;
    __syncthreads();
    if (warp == 0) { float s = lane < warps ? shared[lane] : 0.0f; s = warp_sum(s); if (lane == 0) shared[32] = s; }
    __syncthreads();
    sum = shared[32];
    for (int i = threadIdx.x; i < V; i += blockDim.x) p[i] /= sum;
    if (threadIdx.x == 0) row_loss[n] = targets[n] != PAD ? logf(sum) - (z[targets[n]] - maxv) : 0.0f;
}

// the mean: deterministic double sums of the counted rows' losses and of their number
// threads: pass 1 G = min(256, ceil(N/256)) blocks of 256, grid-stride, fixed tree; pass 2 one block
__global__ void loss_partials(double* partial, const float* row_loss, const int* targets, int N) {
    __shared__ double s[256], c[256];
    double acc = 0.0, cnt = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)N; i += (size_t)gridDim.x * blockDim.x) {
        if (targets[i] != PAD) { acc += row_loss[i]; cnt += 1.0; }
    }
    s[threadIdx.x] = acc;
    c[threadIdx.x] = cnt;
    __syncthreads();
    for (int k = 128; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) { s[threadIdx.x] += s[threadIdx.x + k]; c[threadIdx.x] += c[threadIdx.x + k]; }
        __syncthreads();
    }
    if (threadIdx.x == 0) { partial[2 * blockIdx.x] = s[0]; partial[2 * blockIdx.x + 1] = c[0]; }
}
__global__ void loss_total(double* partial, int G) {
    __shared__ double s[256], c[256];
    double acc = 0.0, cnt = 0.0;
    for (int i = threadIdx.x; i < G; i += 256) { acc += partial[2 * i]; cnt += partial[2 * i + 1]; }
    s[threadIdx.x] = acc;
    c[threadIdx.x] = cnt;
    __syncthreads();
    for (int k = 128; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) { s[threadIdx.x] += s[threadIdx.x + k]; c[threadIdx.x] += c[threadIdx.x + k]; }
        __syncthreads();
    }
    if (threadIdx.x == 0) { partial[512] = s[0]; partial[513] = c[0]; }
}

// backward 1: threads: one per logit
__global__ void ce_backward_element(float* dlogits, const float* probs, const int* targets, int N, int V, float inv) {
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < (size_t)N * V; e += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(e % V), t = targets[e / V];
        if (t == PAD) continue;
        dlogits[e] += (probs[e] - (i == t ? 1.0f : 0.0f)) * inv;
    }
}
// backward 2: threads: one warp per row, lanes over classes
__global__ void ce_backward_warp(float* dlogits, const float* probs, const int* targets, int N, int V, float inv) {
    int lane = threadIdx.x % 32;
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (n >= N || targets[n] == PAD) return;
    int t = targets[n];
    for (int i = lane; i < V; i += 32) dlogits[(size_t)n * V + i] += (probs[(size_t)n * V + i] - (i == t ? 1.0f : 0.0f)) * inv;
}

static double* partial = NULL; // 514 doubles
// returns the mean loss, and the count in *count
static float forward(int version, int bs, float* probs, float* row_loss, const float* logits, const int* targets, int N, int V, int* count) {
    if (version == 1) ce_forward_thread<<<ceil_div(N, bs), bs>>>(probs, row_loss, logits, targets, N, V);
    else if (version == 2) ce_forward_warp<<<ceil_div(N, bs / 32), bs>>>(probs, row_loss, logits, targets, N, V);
    else ce_forward_block<<<N, bs>>>(probs, row_loss, logits, targets, N, V);
    cudaCheckLaunch();
    unsigned int G = std::min(ceil_div(N, 256), 256u);
    loss_partials<<<G, 256>>>(partial, row_loss, targets, N);
    cudaCheckLaunch();
    loss_total<<<1, 256>>>(partial, (int)G);
    cudaCheckLaunch();
    double h[2];
    cudaCheck(cudaMemcpy(h, partial + 512, sizeof h, cudaMemcpyDeviceToHost));
    *count = (int)h[1];
    return *count ? (float)(h[0] / *count) : 0.0f;
}
static void backward(int version, float* dlogits, const float* probs, const int* targets, int N, int V, int count) {
    if (count == 0) return;
    float inv = 1.0f / count;
    if (version == 1) ce_backward_element<<<std::min(ceil_div((long)N * V, 256), 8192u), 256>>>(dlogits, probs, targets, N, V, inv);
    else ce_backward_warp<<<ceil_div(N, 8), 256>>>(dlogits, probs, targets, N, V, inv);
    cudaCheckLaunch();
}

// ----------------------------------------------------------------------------
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

static int check(int N, int V, float pad_fraction) {
    std::vector<float> z((size_t)N * V), d0((size_t)N * V);
    std::vector<int> t(N);
    for (auto& x : z) x = 8.0f * uniform();
    for (auto& x : d0) x = uniform();
    for (auto& x : t) x = (rnd() % 1000) < pad_fraction * 1000 ? PAD : (V > 1 ? 1 + (int)(rnd() % (V - 1)) : PAD);
    std::vector<double> p_ref((size_t)N * V), d_ref(d0.begin(), d0.end());
    double loss = 0;
    int count = 0;
    for (int n = 0; n < N; n++) {
        double mx = -1e300, s = 0;
        for (int i = 0; i < V; i++) mx = std::max(mx, (double)z[(size_t)n * V + i]);
        for (int i = 0; i < V; i++) s += exp(z[(size_t)n * V + i] - mx);
        for (int i = 0; i < V; i++) p_ref[(size_t)n * V + i] = exp(z[(size_t)n * V + i] - mx) / s;
        if (t[n] != PAD) { loss += log(s) - (z[(size_t)n * V + t[n]] - mx); count++; }
    }
    if (count) loss /= count;
    for (int n = 0; n < N && count; n++) {
        if (t[n] == PAD) continue;
        for (int i = 0; i < V; i++) d_ref[(size_t)n * V + i] += (p_ref[(size_t)n * V + i] - (i == t[n])) / count;
    }
    float *dz = upload(z), *dp = upload(std::vector<float>(z.size(), NAN)), *drow = upload(std::vector<float>(N, NAN));
    float* dd = upload(d0);
    int* dt = upload(t);
    int failures = 0;
    struct { int version, bs; const char* name; } fwd[] = { { 1, 64, "thread/row" }, { 2, 256, "warp/row" }, { 3, 32, "block/row 32" },
                                                             { 3, 256, "block/row 256" }, { 3, 1024, "block/row 1024" } };
    for (auto& f : fwd) {
        int got_count = -1;
        float got = forward(f.version, f.bs, dp, drow, dz, dt, N, V, &got_count);
        double ep = rel_error(dp, p_ref), el = count ? fabs(got - loss) / std::max(fabs(loss), 1e-30) : fabs(got);
        // a float sum of V terms in one thread's order errs by up to ~V u (u = 6e-8): the
        // tolerance grows with V (the warp and block versions stay near 1e-6 even at V = 50257)
        double tol = std::max(2e-6, 2e-9 * V);
        bool ok = ep <= tol && el <= tol && got_count == count;
        failures += !ok;
        if (!ok || getenv("VERBOSE")) printf("%s N=%d V=%d %-14s probs rel err %.2e, loss %.7f vs %.7f (rel %.1e), count %d vs %d\n",
                                            ok ? "ok  " : "FAIL", N, V, f.name, ep, got, loss, el, got_count, count);
    }
    for (int version = 1; version <= 2; version++) {
        cudaCheck(cudaMemcpy(dd, d0.data(), d0.size() * 4, cudaMemcpyHostToDevice));
        backward(version, dd, dp, dt, N, V, count);
        double e = rel_error(dd, d_ref);
        bool ok = e <= 2e-6;
        failures += !ok;
        if (!ok || getenv("VERBOSE")) printf("%s N=%d V=%d backward %-8s rel err %.2e\n", ok ? "ok  " : "FAIL", N, V, version == 1 ? "element" : "warp/row", e);
    }
    cudaCheck(cudaFree(dz)); cudaCheck(cudaFree(dp)); cudaCheck(cudaFree(drow)); cudaCheck(cudaFree(dd)); cudaCheck(cudaFree(dt));
    return failures;
}

int main(int argc, char** argv) {
    bool check_only = argc > 1 && strcmp(argv[1], "--check") == 0;
    if (argc > 1 && !check_only) { fprintf(stderr, "usage: %s [--check]\n", argv[0]); return 2; }
    cudaCheck(cudaMalloc((void**)&partial, 514 * sizeof(double)));
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("cross-entropy lab on %s: 5 forward versions, 2 backward\n", prop.name);
    struct { int N, V; float pad; } cases[] = { { 1, 5, 0.0f }, { 7, 13, 0.3f }, { 5, 12, 1.0f }, { 33, 64, 0.2f }, { 100, 150, 0.1f },
                                                { 20, 1000, 0.5f }, { 3, 50257, 0.0f } };
    int failures = 0;
    for (auto& k : cases) {
        int f = check(k.N, k.V, k.pad);
        printf("%s N=%-4d V=%-6d PAD fraction %.1f: forward, loss, count, backward\n", f ? "FAIL" : "ok  ", k.N, k.V, k.pad);
        failures += f;
    }
    printf("correctness: %d failures\n", failures);
    if (check_only || failures) return failures ? 1 : 0;

    struct { int N, V; const char* name; } shapes[] = { { 768, 64, "caption rows, batch 32" }, { 8192, 50257, "GPT-2-sized vocabulary" } };
    printf("\nmicroseconds per call (forward includes the loss reduction and its copy to the host; median of 30)\n");
    cudaEvent_t a, b;
    cudaCheck(cudaEventCreate(&a));
    cudaCheck(cudaEventCreate(&b));
    for (auto& s : shapes) {
        std::vector<float> z((size_t)s.N * s.V);
        for (auto& x : z) x = uniform();
        std::vector<int> t(s.N);
        for (auto& x : t) x = 1 + (int)(rnd() % (s.V - 1));
        float *dz = upload(z), *dp = upload(z), *drow = upload(std::vector<float>(s.N, 0.0f)), *dd = upload(z);
        int* dt = upload(t);
        struct { int version, bs; const char* name; } fwd[] = { { 1, 64, "thread/row" }, { 2, 256, "warp/row" }, { 3, 256, "block/row 256" }, { 3, 1024, "block/row 1024" } };
        for (auto& f : fwd) {
            if (f.version == 1 && s.V > 1000) continue; // one thread per 50257-wide row: skip
            for (int bwd = 1; bwd <= 2; bwd++) {
                std::vector<float> ms(30);
                int count = 0;
                for (int r = 0; r < 33; r++) {
                    cudaCheck(cudaEventRecord(a));
                    if (bwd == 1) forward(f.version, f.bs, dp, drow, dz, dt, s.N, s.V, &count);
                    else backward(f.version == 1 ? 1 : 2, dd, dp, dt, s.N, s.V, s.N);
                    cudaCheck(cudaEventRecord(b));
                    cudaCheck(cudaEventSynchronize(b));
                    if (r >= 3) cudaCheck(cudaEventElapsedTime(&ms[r - 3], a, b));
                }
                std::sort(ms.begin(), ms.end());
                if (bwd == 1) printf("%-24s N=%-5d V=%-6d forward  %-14s %9.1f us\n", s.name, s.N, s.V, f.name, ms[15] * 1e3);
                else if (f.version <= 2) printf("%-24s N=%-5d V=%-6d backward %-14s %9.1f us\n", s.name, s.N, s.V, f.version == 1 ? "element" : "warp/row", ms[15] * 1e3);
            }
        }
        cudaCheck(cudaFree(dz)); cudaCheck(cudaFree(dp)); cudaCheck(cudaFree(drow)); cudaCheck(cudaFree(dd)); cudaCheck(cudaFree(dt));
    }
    cudaCheck(cudaFree(partial));
    return 0;
}
