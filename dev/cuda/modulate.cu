/*
dev/cuda/modulate.cu — adaLN-Zero's two layers, modulate and gated residual, forward and
backward, several ways (a lab; its harness is common.h). Per-sample vectors shift, scale, gate [B, C]
are slices of a modulation buffer whose rows are `stride` floats apart (the DiT's
[B, 6C] buffer); they broadcast over the T tokens of each sample.

  modulate        out = x (1 + scale) + shift;   dx += dy (1 + scale),
                  dshift += sum_t dy,  dscale += sum_t dy x
  gated residual  out = x + gate y;   dx += d,  dy += d gate,  dgate += sum_t d y

The elementwise parts are one thread per element (grid-stride). The sums over tokens are
where the versions differ:
  1 thread/(b,c)  one thread per (sample, channel), serial over the T tokens
  2 reduce_rows   block (32, 32), grid (C/32, B): 32 channels x 32 token-strides, then a fixed
                  tree in shared memory (train_vlv.cu's)
  3 warp/(b,c)    one warp per (sample, channel): lanes over tokens, a butterfly sum (lanes
                  read addresses C floats apart: uncoalesced, there to be measured)
  ./modulate          correctness over sizes and strides, then timing
  ./modulate --check  correctness only
Build: nvcc -O3 -std=c++17 -arch=sm_90 dev/cuda/modulate.cu -o modulate
*/
#include "common.h"

#define GRID_STRIDE_LOOP(i, n) for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)
static unsigned int grid_for(size_t n) { return std::min(ceil_div((long)n, 256), 8192u); }

// ---- the elementwise kernels (threads: one per element, grid-stride) ----
__global__ void modulate_forward_kernel(float* out, const float* x, const float* shift, const float* scale, int stride,
                                        int B, int T, int C) {
    GRID_STRIDE_LOOP(i, (size_t)B * T * C) {
        int c = (int)(i % C);
        size_t b = i / ((size_t)T * C);
        out[i] = x[i] * (1.0f + scale[b * stride + c]) + shift[b * stride + c];
    }
}
__global__ void modulate_backward_dx_kernel(float* dx, const float* dout, const float* scale, int stride, int B, int T, int C) {
    GRID_STRIDE_LOOP(i, (size_t)B * T * C) {
        int c = (int)(i % C);
        size_t b = i / ((size_t)T * C);
        dx[i] += dout[i] * (1.0f + scale[b * stride + c]);
    }
}
__global__ void gated_forward_kernel(float* out, const float* x, const float* y, const float* gate, int stride, int B, int T, int C) {
    GRID_STRIDE_LOOP(i, (size_t)B * T * C) {
        int c = (int)(i % C);
        size_t b = i / ((size_t)T * C);
        out[i] = x[i] + gate[b * stride + c] * y[i];
    }
}
__global__ void gated_backward_kernel(float* dx, float* dy, const float* dout, const float* gate, int stride, int B, int T, int C) {
    GRID_STRIDE_LOOP(i, (size_t)B * T * C) {
        int c = (int)(i % C);
        size_t b = i / ((size_t)T * C);
        dx[i] += dout[i];
        dy[i] += dout[i] * gate[b * stride + c];
    }
}

// ---- the sums over tokens: out[b stride + c] += sum_t a[b, t, c] (* m[b, t, c] if m) ----
// 1: threads: one per (b, c), serial over t
__global__ void token_sum_thread(float* out, int stride, const float* a, const float* m, int B, int T, int C) {
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= (size_t)B * C) return;
    int c = (int)(e % C);
    size_t b = e / C;
    float s = 0.0f;
    for (int t = 0; t < T; t++) { size_t i = (b * T + t) * C + c; s += m ? a[i] * m[i] : a[i]; }
    out[b * stride + c] += s;
}
// 2: threads: block (32, 32), grid (ceil(C/32), B); x = channel, y strides over tokens; fixed tree
__global__ void token_sum_reduce(float* out, int stride, const float* a, const float* m, int B, int T, int C) {
    __shared__ float part[32][32];
    int c = blockIdx.x * 32 + threadIdx.x;
    size_t b = blockIdx.y;
    float s = 0.0f;
    if (c < C && b < (size_t)B) {
        for (int t = threadIdx.y; t < T; t += 32) { size_t i = (b * T + t) * C + c; s += m ? a[i] * m[i] : a[i]; }
    }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    for (int k = 16; k > 0; k >>= 1) {
        if ((int)threadIdx.y < k) part[threadIdx.y][threadIdx.x] += part[threadIdx.y + k][threadIdx.x];
        __syncthreads();
    }
    if (threadIdx.y == 0 && c < C && b < (size_t)B) out[b * stride + c] += part[0][threadIdx.x];
}
// 3: threads: one warp per (b, c), lanes over tokens, butterfly sum
__global__ void token_sum_warp(float* out, int stride, const float* a, const float* m, int B, int T, int C) {
    int lane = threadIdx.x % 32;
    size_t e = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (e >= (size_t)B * C) return;
    int c = (int)(e % C);
    size_t b = e / C;
    float s = 0.0f;
    for (int t = lane; t < T; t += 32) { size_t i = (b * T + t) * C + c; s += m ? a[i] * m[i] : a[i]; }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) out[b * stride + c] += s;
}
static const char* version_name[4] = { "", "thread/(b,c)", "reduce_rows", "warp/(b,c)" };
static void token_sum(int version, float* out, int stride, const float* a, const float* m, int B, int T, int C) {
    if (version == 1) token_sum_thread<<<ceil_div((long)B * C, 128), 128>>>(out, stride, a, m, B, T, C);
    else if (version == 2) token_sum_reduce<<<dim3(ceil_div(C, 32), B), dim3(32, 32)>>>(out, stride, a, m, B, T, C);
    else token_sum_warp<<<ceil_div((long)B * C, 8), 256>>>(out, stride, a, m, B, T, C);
    cudaCheckLaunch();
}
// the backward passes of the two layers with a given token-sum version
static void modulate_backward(int version, float* dx, float* dshift, float* dscale, const float* dout, const float* x,
                              const float* scale, int stride, int B, int T, int C) {
    modulate_backward_dx_kernel<<<grid_for((size_t)B * T * C), 256>>>(dx, dout, scale, stride, B, T, C);
    cudaCheckLaunch();
    token_sum(version, dshift, stride, dout, NULL, B, T, C);
    token_sum(version, dscale, stride, dout, x, B, T, C);
}
static void gated_backward(int version, float* dx, float* dy, float* dgate, const float* dout, const float* y,
                           const float* gate, int stride, int B, int T, int C) {
    gated_backward_kernel<<<grid_for((size_t)B * T * C), 256>>>(dx, dy, dout, gate, stride, B, T, C);
    cudaCheckLaunch();
    token_sum(version, dgate, stride, dout, y, B, T, C);
}

// ----------------------------------------------------------------------------
static std::vector<float> random_vector(size_t n) { std::vector<float> v(n); for (auto& x : v) x = uniform(); return v; }
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

// one (B, T, C, stride) case: both layers, forward and backward, every token-sum version. The
// modulation buffer is [B, stride] with shift, scale, gate at offsets 0, C, 2C (stride >= 3C).
static int check(int B, int T, int C, int stride) {
    if (stride < 3 * C) { fprintf(stderr, "bad case: stride %d < 3C = %d\n", stride, 3 * C); exit(2); }
    size_t n = (size_t)B * T * C;
    std::vector<float> x = random_vector(n), y = random_vector(n), d = random_vector(n), mod = random_vector((size_t)B * stride);
    std::vector<float> dx0 = random_vector(n), dy0 = random_vector(n), dmod0 = random_vector((size_t)B * stride);
    std::vector<double> mod_ref(n), gat_ref(n), mdx_ref(dx0.begin(), dx0.end()), gdx_ref(dx0.begin(), dx0.end()), gdy_ref(dy0.begin(), dy0.end());
    std::vector<double> mdmod_ref(dmod0.begin(), dmod0.end()), gdmod_ref(dmod0.begin(), dmod0.end());
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            for (int c = 0; c < C; c++) {
                size_t i = ((size_t)b * T + t) * C + c;
                double sh = mod[(size_t)b * stride + c], sc = mod[(size_t)b * stride + C + c], g = mod[(size_t)b * stride + 2 * C + c];
                mod_ref[i] = x[i] * (1 + sc) + sh;
                gat_ref[i] = x[i] + g * y[i];
                mdx_ref[i] += d[i] * (1 + sc);
                mdmod_ref[(size_t)b * stride + c] += d[i];
                mdmod_ref[(size_t)b * stride + C + c] += (double)d[i] * x[i];
                gdx_ref[i] += d[i];
                gdy_ref[i] += d[i] * g;
                gdmod_ref[(size_t)b * stride + 2 * C + c] += (double)d[i] * y[i];
            }
        }
    }
    float *dX = upload(x), *dY = upload(y), *dD = upload(d), *dMod = upload(mod), *dOut = upload(std::vector<float>(n, NAN));
    float *dDx = upload(dx0), *dDy = upload(dy0), *dDmod = upload(dmod0);
    int failures = 0;
    auto report = [&](const char* what, const char* version, double rel) {
        bool ok = rel <= 1e-5;
        failures += !ok;
        if (!ok || getenv("VERBOSE")) printf("%s B=%d T=%d C=%d stride=%d %-22s %-13s rel err %.2e\n", ok ? "ok  " : "FAIL", B, T, C, stride, what, version, rel);
    };
    modulate_forward_kernel<<<grid_for(n), 256>>>(dOut, dX, dMod, dMod + C, stride, B, T, C);
    cudaCheckLaunch();
    report("modulate forward", "", rel_error(dOut, mod_ref));
    gated_forward_kernel<<<grid_for(n), 256>>>(dOut, dX, dY, dMod + 2 * C, stride, B, T, C);
    cudaCheckLaunch();
    report("gated forward", "", rel_error(dOut, gat_ref));
    for (int version = 1; version <= 3; version++) {
        cudaCheck(cudaMemcpy(dDx, dx0.data(), n * 4, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(dDmod, dmod0.data(), dmod0.size() * 4, cudaMemcpyHostToDevice));
        modulate_backward(version, dDx, dDmod, dDmod + C, dD, dX, dMod + C, stride, B, T, C);
        report("modulate backward dx", version_name[version], rel_error(dDx, mdx_ref));
        report("modulate dshift,dscale", version_name[version], rel_error(dDmod, mdmod_ref));
        cudaCheck(cudaMemcpy(dDx, dx0.data(), n * 4, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(dDy, dy0.data(), n * 4, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(dDmod, dmod0.data(), dmod0.size() * 4, cudaMemcpyHostToDevice));
        gated_backward(version, dDx, dDy, dDmod + 2 * C, dD, dY, dMod + 2 * C, stride, B, T, C);
        report("gated backward dx", version_name[version], rel_error(dDx, gdx_ref));
        report("gated backward dy", version_name[version], rel_error(dDy, gdy_ref));
        report("gated dgate", version_name[version], rel_error(dDmod, gdmod_ref));
    }
    float* bufs[] = { dX, dY, dD, dMod, dOut, dDx, dDy, dDmod };
    for (float* p : bufs) cudaCheck(cudaFree(p));
    return failures;
}

int main(int argc, char** argv) {
    bool check_only = argc > 1 && strcmp(argv[1], "--check") == 0;
    if (argc > 1 && !check_only) { fprintf(stderr, "usage: %s [--check]\n", argv[0]); return 2; }
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("modulate / gated residual lab on %s: 3 versions of the sums over tokens\n", prop.name);
    int cases[][4] = { { 1, 1, 1, 3 }, { 3, 4, 16, 96 }, { 5, 9, 20, 120 }, { 2, 33, 40, 121 }, { 3, 81, 136, 816 }, { 2, 64, 128, 768 } };
    int failures = 0;
    for (auto& k : cases) {
        int f = check(k[0], k[1], k[2], k[3]);
        printf("%s B=%-2d T=%-3d C=%-4d stride=%-4d modulate and gated residual, forward and backward\n", f ? "FAIL" : "ok  ", k[0], k[1], k[2], k[3]);
        failures += f;
    }
    printf("correctness: %d failures\n", failures);
    if (check_only || failures) return failures ? 1 : 0;

    // timing: the DiT at batch 32 (T = 64 patches, C = 128, the [B, 6C] buffer)
    int B = 32, T = 64, C = 128, stride = 6 * C;
    size_t n = (size_t)B * T * C;
    float *d = upload(random_vector(n)), *x = upload(random_vector(n)), *dx = upload(random_vector(n));
    float *mod = upload(random_vector((size_t)B * stride)), *dmod = upload(random_vector((size_t)B * stride));
    cudaEvent_t a, b;
    cudaCheck(cudaEventCreate(&a));
    cudaCheck(cudaEventCreate(&b));
    printf("\nmodulate backward (dx + dshift + dscale), B=%d T=%d C=%d: microseconds, median of 50\n", B, T, C);
    for (int version = 1; version <= 3; version++) {
        std::vector<float> ms(50);
        for (int r = 0; r < 53; r++) {
            cudaCheck(cudaEventRecord(a));
            modulate_backward(version, dx, dmod, dmod + C, d, x, mod + C, stride, B, T, C);
            cudaCheck(cudaEventRecord(b));
            cudaCheck(cudaEventSynchronize(b));
            if (r >= 3) cudaCheck(cudaEventElapsedTime(&ms[r - 3], a, b));
        }
        std::sort(ms.begin(), ms.end());
        printf("  %-13s %8.1f us\n", version_name[version], ms[25] * 1e3);
    }
    return 0;
}
