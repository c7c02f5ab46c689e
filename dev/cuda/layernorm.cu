/*
dev/cuda/layernorm.cu — LayerNorm forward and backward, with and without affine, several ways
(a lab, not linked into the model; its harness is common.h).

  forward   y = (x - mean) * rstd * w + b   (w, b NULL: no affine, the DiT's LN0),
            rstd = 1 / sqrt(var + 1e-5), biased variance; mean and rstd [N] kept
  backward  dx += rstd * (g - mean(g) - n * mean(g * n)),  g = dy * w (dy without affine),
            n = (x - mean) * rstd;  dw += sum over rows of dy * n;  db += sum over rows of dy

Versions (forward; the dx part of the backward has the same three):
  1 thread/row   one thread per row, the CPU's loops (blocks of bs threads)
  2 warp/row     one warp per row, lanes over channels, butterfly shuffles (train_vlv.cu's),
                 bs/32 rows per block
  3 block/row    one block of bs threads per row, partial sums through shared memory
                 (for wide rows)
Parameter gradients dw, db:
  1 thread/col   one thread per channel, serial over the rows
  2 reduce_rows  block (32, 32): 32 channels x 32 row-strides, then a fixed tree in shared
                 memory (train_vlv.cu's)

  ./layernorm          correctness over sizes, block sizes and affine / no affine, then timing
  ./layernorm --check  correctness only
Build: nvcc -O3 -std=c++17 -arch=sm_90 dev/cuda/layernorm.cu -o layernorm
*/
#include "common.h"


__device__ inline float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) { v += __shfl_xor_sync(0xffffffffu, v, offset); }
    return v;
}
// sum over the block (blockDim.x a multiple of 32, at most 1024): every thread gets the same
// value. Warp sums, then warp 0 adds the (at most 32) warp sums in a fixed order.
__device__ inline float block_sum(float v, float* shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads(); // shared may still be read from a previous call
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < warps ? shared[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0) shared[32] = s;
    }
    __syncthreads();
    return shared[32];
}

// ----------------------------------------------------------------------------
// forward

// 1: threads: one per row
__global__ void ln_forward_thread(float* out, float* mean, float* rstd, const float* inp, const float* w,
                                  const float* b, int N, int C) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float* x = inp + (size_t)n * C;
    float* y = out + (size_t)n * C;
    float m = 0.0f;
    for (int c = 0; c < C; c++) m += x[c];
    m /= C;
    float v = 0.0f;
    for (int c = 0; c < C; c++) { float xm = x[c] - m; v += xm * xm; }
    v /= C;
    float s = 1.0f / sqrtf(v + 1e-5f);
    for (int c = 0; c < C; c++) { float nrm = (x[c] - m) * s; y[c] = w ? nrm * w[c] + b[c] : nrm; }
    mean[n] = m;
    rstd[n] = s;
}
// 2: threads: one warp per row, lanes over channels (train_vlv.cu's layernorm_forward_kernel)
__global__ void ln_forward_warp(float* out, float* mean, float* rstd, const float* inp, const float* w,
                                const float* b, int N, int C) {
    int lane = threadIdx.x % 32;
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (n >= N) return;
    const float* x = inp + (size_t)n * C;
    float* y = out + (size_t)n * C;
    float m = 0.0f;
    for (int c = lane; c < C; c += 32) m += x[c];
    m = warp_sum(m) / C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) { float xm = x[c] - m; v += xm * xm; }
    v = warp_sum(v) / C;
    float s = 1.0f / sqrtf(v + 1e-5f);
    for (int c = lane; c < C; c += 32) { float nrm = (x[c] - m) * s; y[c] = w ? nrm * w[c] + b[c] : nrm; }
    if (lane == 0) { mean[n] = m; rstd[n] = s; }
}
// 3: threads: one block per row, threads over channels
__global__ void ln_forward_block(float* out, float* mean, float* rstd, const float* inp, const float* w,
                                 const float* b, int N, int C) {
    __shared__ float shared[33];
    int n = blockIdx.x;
    if (n >= N) return; // the whole block leaves together
    const float* x = inp + (size_t)n * C;
    float* y = out + (size_t)n * C;
    float m = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) m += x[c];
    m = block_sum(m, shared) / C;
    float v = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { float xm = x[c] - m; v += xm * xm; }
    v = block_sum(v, shared) / C;
    float s = 1.0f / sqrtf(v + 1e-5f);
    for (int c = threadIdx.x; c < C; c += blockDim.x) { float nrm = (x[c] - m) * s; y[c] = w ? nrm * w[c] + b[c] : nrm; }
    if (threadIdx.x == 0) { mean[n] = m; rstd[n] = s; }
}

// ----------------------------------------------------------------------------
// backward: dx

// 1: threads: one per row
__global__ void ln_backward_thread(float* dinp, const float* dout, const float* inp, const float* w,
                                   const float* mean, const float* rstd, int N, int C) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float* dy = dout + (size_t)n * C;
    const float* x = inp + (size_t)n * C;
    float* dx = dinp + (size_t)n * C;
    float m = mean[n], s = rstd[n], g_mean = 0.0f, gn_mean = 0.0f;
    for (int c = 0; c < C; c++) { float g = w ? dy[c] * w[c] : dy[c]; g_mean += g; gn_mean += g * (x[c] - m) * s; }
    g_mean /= C;
    gn_mean /= C;
    for (int c = 0; c < C; c++) { float g = w ? dy[c] * w[c] : dy[c]; dx[c] += s * (g - g_mean - (x[c] - m) * s * gn_mean); }
}
// 2: threads: one warp per row (train_vlv.cu's layernorm_backward_kernel)
__global__ void ln_backward_warp(float* dinp, const float* dout, const float* inp, const float* w,
                                 const float* mean, const float* rstd, int N, int C) {
    int lane = threadIdx.x % 32;
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (n >= N) return;
    const float* dy = dout + (size_t)n * C;
    const float* x = inp + (size_t)n * C;
    float* dx = dinp + (size_t)n * C;
    float m = mean[n], s = rstd[n], g_mean = 0.0f, gn_mean = 0.0f;
    for (int c = lane; c < C; c += 32) { float g = w ? dy[c] * w[c] : dy[c]; g_mean += g; gn_mean += g * (x[c] - m) * s; }
    g_mean = warp_sum(g_mean) / C;
    gn_mean = warp_sum(gn_mean) / C;
    for (int c = lane; c < C; c += 32) { float g = w ? dy[c] * w[c] : dy[c]; dx[c] += s * (g - g_mean - (x[c] - m) * s * gn_mean); }
}
// 3: threads: one block per row
__global__ void ln_backward_block(float* dinp, const float* dout, const float* inp, const float* w,
                                  const float* mean, const float* rstd, int N, int C) {
    __shared__ float shared[33];
    int n = blockIdx.x;
    if (n >= N) return;
    const float* dy = dout + (size_t)n * C;
    const float* x = inp + (size_t)n * C;
    float* dx = dinp + (size_t)n * C;
    float m = mean[n], s = rstd[n], g_mean = 0.0f, gn_mean = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { float g = w ? dy[c] * w[c] : dy[c]; g_mean += g; gn_mean += g * (x[c] - m) * s; }
    g_mean = block_sum(g_mean, shared) / C;
    gn_mean = block_sum(gn_mean, shared) / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { float g = w ? dy[c] * w[c] : dy[c]; dx[c] += s * (g - g_mean - (x[c] - m) * s * gn_mean); }
}

// ----------------------------------------------------------------------------
// backward: dw, db (either may be NULL)

// 1: threads: one per channel, serial over the rows
__global__ void ln_param_grads_thread(float* dw, float* db, const float* dout, const float* inp, const float* mean,
                                      const float* rstd, int N, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sw = 0.0f, sb = 0.0f;
    for (int n = 0; n < N; n++) {
        float dy = dout[(size_t)n * C + c];
        sw += dy * (inp[(size_t)n * C + c] - mean[n]) * rstd[n];
        sb += dy;
    }
    if (dw) dw[c] += sw;
    if (db) db[c] += sb;
}
// 2: threads: block (32, 32), grid ceil(C/32): x = channel, y strides over the rows; the 32
// partial sums of a channel meet in shared memory in a fixed tree (train_vlv.cu's reduce_rows)
__global__ void ln_param_grads_reduce(float* dw, float* db, const float* dout, const float* inp, const float* mean,
                                      const float* rstd, int N, int C) {
    __shared__ float pw[32][32], pb[32][32];
    int c = blockIdx.x * 32 + threadIdx.x;
    float sw = 0.0f, sb = 0.0f;
    if (c < C) {
        for (int n = threadIdx.y; n < N; n += 32) {
            float dy = dout[(size_t)n * C + c];
            sw += dy * (inp[(size_t)n * C + c] - mean[n]) * rstd[n];
            sb += dy;
        }
    }
    pw[threadIdx.y][threadIdx.x] = sw;
    pb[threadIdx.y][threadIdx.x] = sb;
    __syncthreads();
    for (int s = 16; s > 0; s >>= 1) {
        if ((int)threadIdx.y < s) {
            pw[threadIdx.y][threadIdx.x] += pw[threadIdx.y + s][threadIdx.x];
            pb[threadIdx.y][threadIdx.x] += pb[threadIdx.y + s][threadIdx.x];
        }
        __syncthreads();
    }
    if (threadIdx.y == 0 && c < C) {
        if (dw) dw[c] += pw[0][threadIdx.x];
        if (db) db[c] += pb[0][threadIdx.x];
    }
}

// ----------------------------------------------------------------------------
// launchers

struct Version { const char* name; int kind, bs; }; // kind 1 thread/row, 2 warp/row, 3 block/row
static const Version versions[] = {
    { "thread/row 64", 1, 64 }, { "thread/row 256", 1, 256 },
    { "warp/row 32", 2, 32 }, { "warp/row 128", 2, 128 }, { "warp/row 256", 2, 256 }, { "warp/row 1024", 2, 1024 },
    { "block/row 32", 3, 32 }, { "block/row 128", 3, 128 }, { "block/row 1024", 3, 1024 },
};
static const int num_versions = sizeof versions / sizeof versions[0];

static void forward(const Version& v, float* out, float* mean, float* rstd, const float* inp, const float* w,
                    const float* b, int N, int C) {
    if (v.kind == 1) ln_forward_thread<<<ceil_div(N, v.bs), v.bs>>>(out, mean, rstd, inp, w, b, N, C);
    else if (v.kind == 2) ln_forward_warp<<<ceil_div(N, v.bs / 32), v.bs>>>(out, mean, rstd, inp, w, b, N, C);
    else ln_forward_block<<<N, v.bs>>>(out, mean, rstd, inp, w, b, N, C);
    cudaCheckLaunch();
}
static void backward_dx(const Version& v, float* dinp, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, int N, int C) {
    if (v.kind == 1) ln_backward_thread<<<ceil_div(N, v.bs), v.bs>>>(dinp, dout, inp, w, mean, rstd, N, C);
    else if (v.kind == 2) ln_backward_warp<<<ceil_div(N, v.bs / 32), v.bs>>>(dinp, dout, inp, w, mean, rstd, N, C);
    else ln_backward_block<<<N, v.bs>>>(dinp, dout, inp, w, mean, rstd, N, C);
    cudaCheckLaunch();
}
static void param_grads(int kind, float* dw, float* db, const float* dout, const float* inp, const float* mean,
                        const float* rstd, int N, int C) {
    if (kind == 1) ln_param_grads_thread<<<ceil_div(C, 128), 128>>>(dw, db, dout, inp, mean, rstd, N, C);
    else ln_param_grads_reduce<<<ceil_div(C, 32), dim3(32, 32)>>>(dw, db, dout, inp, mean, rstd, N, C);
    cudaCheckLaunch();
}

// ----------------------------------------------------------------------------
// checks

static std::vector<float> random_vector(size_t n, float scale = 1.0f, float offset = 0.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = offset + scale * uniform();
    return v;
}
static std::vector<float> download(const float* d, size_t n) {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}
// max|got - ref| / max|ref|, NaN (unwritten outputs) counted as failure
static double rel_error(const std::vector<float>& got, const std::vector<double>& ref) {
    double max_err = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < got.size(); i++) {
        if (!std::isfinite(got[i])) return INFINITY;
        max_err = std::max(max_err, fabs(got[i] - ref[i]));
        max_ref = std::max(max_ref, fabs(ref[i]));
    }
    return max_ref > 0 ? max_err / max_ref : max_err;
}

static int check(int N, int C, bool affine) {
    // rows with an offset and a spread of their own, as activations have
    std::vector<float> x((size_t)N * C);
    for (int n = 0; n < N; n++) {
        float off = 3.0f * uniform(), sc = 0.1f + fabsf(uniform());
        for (int c = 0; c < C; c++) x[(size_t)n * C + c] = off + sc * uniform();
    }
    std::vector<float> w = random_vector(C, 0.5f, 1.0f), b = random_vector(C), dy = random_vector((size_t)N * C);
    std::vector<float> dx0 = random_vector((size_t)N * C), dw0 = random_vector(C), db0 = random_vector(C);
    // the reference in double
    std::vector<double> y_ref((size_t)N * C), mean_ref(N), rstd_ref(N), dx_ref((size_t)N * C), dw_ref(C), db_ref(C);
    double max_s_g = 0.0;   // max over rows of rstd * max|g|: what dx's rounding error scales with
    for (int c = 0; c < C; c++) { dw_ref[c] = dw0[c]; db_ref[c] = db0[c]; }
    for (int n = 0; n < N; n++) {
        const float* xr = &x[(size_t)n * C];
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += xr[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
        v /= C;
        double s = 1.0 / sqrt(v + 1e-5), gm = 0, gnm = 0;
        mean_ref[n] = m;
        rstd_ref[n] = s;
        for (int c = 0; c < C; c++) {
            double nrm = (xr[c] - m) * s, d = dy[(size_t)n * C + c], g = affine ? d * w[c] : d;
            y_ref[(size_t)n * C + c] = affine ? nrm * w[c] + b[c] : nrm;
            gm += g;
            gnm += g * nrm;
            dw_ref[c] += d * nrm;
            db_ref[c] += d;
        }
        gm /= C;
        gnm /= C;
        for (int c = 0; c < C; c++) {
            double nrm = (xr[c] - m) * s, d = dy[(size_t)n * C + c], g = affine ? d * w[c] : d;
            dx_ref[(size_t)n * C + c] = dx0[(size_t)n * C + c] + s * (g - gm - nrm * gnm);
            max_s_g = std::max(max_s_g, s * fabs(g));
        }
    }
    // dx = dx0 + rstd * (g - mean(g) - xhat * mean(g * xhat)): float rounds g - mean(g) to a few
    // ulps of |g|, and rstd multiplies that. Where a row has (almost) no spread, as every row
    // at C = 1 (rstd = 1/sqrt(1e-5) = 316), this swamps 1e-5 of |dx|, though each version is
    // as exact as float allows. So dx's bound is 1e-5 plus 8 float ulps of rstd * |g|, relative
    // to max|dx| (for ordinary rows the second term is below 1e-6 and the bound stays 1e-5).
    double max_dx = 0.0;
    for (double d : dx_ref) max_dx = std::max(max_dx, fabs(d));
    const double dx_tol = 1e-5 + 8.0 * 0x1p-24 * max_s_g / std::max(max_dx, 1e-30);
    float *d_x = upload(x), *d_w = upload(w), *d_b = upload(b), *d_dy = upload(dy);
    std::vector<float> nan((size_t)N * C, NAN);
    float *d_y = upload(nan), *d_mean = upload(std::vector<float>(N, NAN)), *d_rstd = upload(std::vector<float>(N, NAN));
    float* d_dx = upload(dx0);
    float *d_dw = upload(dw0), *d_db = upload(db0);
    int failures = 0;
    auto report = [&](const char* what, const char* version, double rel, double tol) {
        bool ok = rel <= tol;
        failures += !ok;
        if (!ok || getenv("VERBOSE")) {
            printf("%s N=%d C=%d %s %-10s %-16s rel err %.2e\n", ok ? "ok  " : "FAIL", N, C, affine ? "affine" : "no-affine",
                   what, version, rel);
        }
    };
    const float* W = affine ? d_w : NULL;
    const float* Bb = affine ? d_b : NULL;
    for (int vi = 0; vi < num_versions; vi++) {
        const Version& v = versions[vi];
        cudaCheck(cudaMemcpy(d_y, nan.data(), nan.size() * 4, cudaMemcpyHostToDevice));
        forward(v, d_y, d_mean, d_rstd, d_x, W, Bb, N, C);
        report("forward y", v.name, rel_error(download(d_y, (size_t)N * C), y_ref), 1e-5);
        report("mean", v.name, rel_error(download(d_mean, N), mean_ref), 1e-5);
        report("rstd", v.name, rel_error(download(d_rstd, N), rstd_ref), 1e-5);
        cudaCheck(cudaMemcpy(d_dx, dx0.data(), dx0.size() * 4, cudaMemcpyHostToDevice));
        backward_dx(v, d_dx, d_dy, d_x, W, d_mean, d_rstd, N, C);
        report("dx", v.name, rel_error(download(d_dx, (size_t)N * C), dx_ref), dx_tol);
    }
    for (int kind = 1; kind <= 2; kind++) {
        cudaCheck(cudaMemcpy(d_dw, dw0.data(), C * 4, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(d_db, db0.data(), C * 4, cudaMemcpyHostToDevice));
        param_grads(kind, d_dw, d_db, d_dy, d_x, d_mean, d_rstd, N, C);
        report("dw", kind == 1 ? "thread/col" : "reduce_rows", rel_error(download(d_dw, C), dw_ref), 1e-5);
        report("db", kind == 1 ? "thread/col" : "reduce_rows", rel_error(download(d_db, C), db_ref), 1e-5);
    }
    float* bufs[] = { d_x, d_w, d_b, d_dy, d_y, d_mean, d_rstd, d_dx, d_dw, d_db };
    for (float* p : bufs) cudaCheck(cudaFree(p));
    return failures;
}

static float time_ms(void (*fn)(void*), void* arg, int reps) {
    cudaEvent_t start, stop;
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&stop));
    for (int i = 0; i < 3; i++) fn(arg);
    std::vector<float> ms(reps);
    for (int i = 0; i < reps; i++) {
        cudaCheck(cudaEventRecord(start));
        fn(arg);
        cudaCheck(cudaEventRecord(stop));
        cudaCheck(cudaEventSynchronize(stop));
        cudaCheck(cudaEventElapsedTime(&ms[i], start, stop));
    }
    cudaCheck(cudaEventDestroy(start));
    cudaCheck(cudaEventDestroy(stop));
    std::sort(ms.begin(), ms.end());
    return ms[reps / 2];
}
struct Bench { const Version* v; int kind, N, C; float *x, *w, *b, *y, *mean, *rstd, *dy, *dx, *dw, *db; };
static void bench_forward(void* p) { Bench* b = (Bench*)p; forward(*b->v, b->y, b->mean, b->rstd, b->x, b->w, b->b, b->N, b->C); }
static void bench_dx(void* p) { Bench* b = (Bench*)p; backward_dx(*b->v, b->dx, b->dy, b->x, b->w, b->mean, b->rstd, b->N, b->C); }
static void bench_params(void* p) { Bench* b = (Bench*)p; param_grads(b->kind, b->dw, b->db, b->dy, b->x, b->mean, b->rstd, b->N, b->C); }

int main(int argc, char** argv) {
    bool check_only = argc > 1 && strcmp(argv[1], "--check") == 0;
    if (argc > 1 && !check_only) { fprintf(stderr, "usage: %s [--check]\n", argv[0]); return 2; }
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("layernorm lab on %s; %d versions of the forward and of dx, 2 of dw/db\n", prop.name, num_versions);
    int sizes[][2] = { { 1, 1 }, { 7, 3 }, { 33, 16 }, { 5, 31 }, { 40, 96 }, { 100, 128 }, { 3, 136 }, { 70, 1000 }, { 2, 2049 } };
    int failures = 0;
    for (auto& s : sizes) {
        for (int affine = 1; affine >= 0; affine--) {
            int f = check(s[0], s[1], affine);
            printf("%s N=%-4d C=%-5d %-9s: forward, dx (%d versions), dw/db (2 versions)\n", f ? "FAIL" : "ok  ", s[0], s[1],
                   affine ? "affine" : "no-affine", num_versions);
            failures += f;
        }
    }
    printf("correctness: %d failures\n", failures);
    if (check_only || failures) return failures ? 1 : 0;

    // timing: the default model's shapes at batch 32 (rows = 32 x tokens), and a wide one
    int shapes[][2] = { { 2048, 128 }, { 1280, 128 }, { 16384, 1024 } };
    printf("\nGB/s moved (each input read once, each output written once; median of 50 runs)\n");
    printf("%-12s %-16s %10s %10s %10s\n", "N x C", "version", "forward", "dx", "dw+db");
    for (auto& s : shapes) {
        int N = s[0], C = s[1];
        Bench b;
        memset(&b, 0, sizeof b);
        b.N = N;
        b.C = C;
        b.x = upload(random_vector((size_t)N * C)); b.w = upload(random_vector(C)); b.b = upload(random_vector(C));
        b.y = upload(random_vector((size_t)N * C)); b.mean = upload(random_vector(N)); b.rstd = upload(random_vector(N, 0.1f, 1.0f));
        b.dy = upload(random_vector((size_t)N * C)); b.dx = upload(random_vector((size_t)N * C));
        b.dw = upload(random_vector(C)); b.db = upload(random_vector(C));
        double fwd_bytes = 4.0 * (2.0 * N * C + 2.0 * C + 2.0 * N), dx_bytes = 4.0 * (4.0 * N * C + C + 2.0 * N);
        double p_bytes = 4.0 * (2.0 * N * C + 2.0 * N + 4.0 * C);
        for (int vi = 0; vi < num_versions; vi++) {
            b.v = &versions[vi];
            if (versions[vi].kind == 1 && (double)N * C > 1e7) continue; // thread/row on the wide shape: skip
            float f = time_ms(bench_forward, &b, 50), d = time_ms(bench_dx, &b, 50);
            printf("%5dx%-6d %-16s %10.0f %10.0f %10s\n", N, C, versions[vi].name, fwd_bytes / (f * 1e-3) / 1e9,
                   dx_bytes / (d * 1e-3) / 1e9, "");
        }
        for (int kind = 1; kind <= 2; kind++) {
            b.kind = kind;
            float p = time_ms(bench_params, &b, 50);
            printf("%5dx%-6d %-16s %10s %10s %10.0f\n", N, C, kind == 1 ? "thread/col" : "reduce_rows", "", "",
                   p_bytes / (p * 1e-3) / 1e9);
        }
        float* bufs[] = { b.x, b.w, b.b, b.y, b.mean, b.rstd, b.dy, b.dx, b.dw, b.db };
        for (float* p : bufs) cudaCheck(cudaFree(p));
    }
    return 0;
}
