/*
dev/cuda/adamw.cu — AdamW with global-norm gradient clipping over the parameters of some groups,
several ways (a lab; its harness is common.h). As train_vlv.c: the norm is the L2 norm of the trained
groups' gradients, summed in double; clip = min(1, grad_clip / (norm + 1e-6)); then per parameter
  g = grad * clip;  p -= lr wd p (matrices and embeddings only);  m = b1 m + (1 - b1) g;
  v = b2 v + (1 - b2) g^2;  p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
Parameters outside the trained groups must not change by a single bit.

The parameters are a list of tensors (name-less here: offset, size, group, 1-D or not), laid
out back to back as in the model's buffer.
Versions of the update:
  1 info byte     one launch over the whole buffer; a byte per parameter holds its group and
                  whether it decays (train_vlv.cu's adamw_kernel)
  2 per tensor    one launch per trained tensor, as the CPU loops (many small launches)
  3 float4        one launch per run of consecutive trained tensors with the same decay,
                  16-byte loads and stores (scalar at unaligned ends)
Versions of the gradient norm (all deterministic, no atomics):
  1 two-pass      per-block double partial sums in a fixed tree, then one block adds them
                  (train_vlv.cu's), grid min(256, n/256)
  2 one block     a single block of 1024 threads strides over everything
  ./adamw          correctness (3 steps against a CPU reference; frozen bits; both norms), then GB/s
  ./adamw --check  correctness only
Build: nvcc -O3 -std=c++17 -arch=sm_90 dev/cuda/adamw.cu -o adamw
*/
#include "common.h"

#define GRID_STRIDE_LOOP(i, n) for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)
static unsigned int grid_for(size_t n) { return std::min(ceil_div((long)n, 256), 8192u); }

struct Tensor { size_t offset, numel; int group, decays; };
struct Hyper { float lr, beta1, beta2, eps, wd, clip, bc1, bc2; };

__device__ inline void adamw_one(float& p, float g, float& m, float& v, float decay, const Hyper& h) {
    g *= h.clip;
    p -= decay * p;
    m = h.beta1 * m + (1.0f - h.beta1) * g;
    v = h.beta2 * v + (1.0f - h.beta2) * g * g;
    p -= h.lr * (m / h.bc1) / (sqrtf(v / h.bc2) + h.eps);
}
// 1: threads: one per parameter over the whole buffer; info = group | 0x80 if it decays
__global__ void adamw_info(float* p, const float* g, float* m, float* v, const unsigned char* info, int groups, size_t n, Hyper h) {
    GRID_STRIDE_LOOP(j, n) {
        unsigned char f = info[j];
        if (!(groups >> (f & 0x7f) & 1)) continue;
        adamw_one(p[j], g[j], m[j], v[j], (f & 0x80) ? h.lr * h.wd : 0.0f, h);
    }
}
// 2: threads: one per parameter of one tensor
__global__ void adamw_range(float* p, const float* g, float* m, float* v, size_t n, float decay, Hyper h) {
    GRID_STRIDE_LOOP(j, n) { adamw_one(p[j], g[j], m[j], v[j], decay, h); }
}
// 3: threads: one per 4 parameters of a 16-byte-aligned range (the caller does the unaligned ends)
__global__ void adamw_range4(float4* p, const float4* g, float4* m, float4* v, size_t n4, float decay, Hyper h) {
    GRID_STRIDE_LOOP(j, n4) {
        float4 pp = p[j], gg = g[j], mm = m[j], vv = v[j];
        adamw_one(pp.x, gg.x, mm.x, vv.x, decay, h);
        adamw_one(pp.y, gg.y, mm.y, vv.y, decay, h);
        adamw_one(pp.z, gg.z, mm.z, vv.z, decay, h);
        adamw_one(pp.w, gg.w, mm.w, vv.w, decay, h);
        p[j] = pp; m[j] = mm; v[j] = vv;
    }
}

// gradient norm: sum of g^2 over the trained parameters, in double
__device__ inline double trained_sq(const float* g, const unsigned char* info, int groups, size_t j) {
    return (groups >> (info[j] & 0x7f) & 1) ? (double)g[j] * g[j] : 0.0;
}
// 1: threads: pass 1 G blocks of 256 (G a function of n), grid-stride, fixed tree; pass 2 one block
__global__ void sumsq_partials(double* partial, const float* g, const unsigned char* info, int groups, size_t n) {
    __shared__ double s[256];
    double acc = 0.0;
    GRID_STRIDE_LOOP(j, n) { acc += trained_sq(g, info, groups, j); }
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int k = 128; k > 0; k >>= 1) { if ((int)threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k]; __syncthreads(); }
    if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}
__global__ void sumsq_total(double* partial, int G) {
    __shared__ double s[256];
    double acc = 0.0;
    for (int i = threadIdx.x; i < G; i += 256) acc += partial[i];
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int k = 128; k > 0; k >>= 1) { if ((int)threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k]; __syncthreads(); }
    if (threadIdx.x == 0) partial[256] = s[0];
}
// 2: threads: one block of 1024
__global__ void sumsq_one_block(double* partial, const float* g, const unsigned char* info, int groups, size_t n) {
    __shared__ double s[1024];
    double acc = 0.0;
    for (size_t j = threadIdx.x; j < n; j += 1024) acc += trained_sq(g, info, groups, j);
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int k = 512; k > 0; k >>= 1) { if ((int)threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k]; __syncthreads(); }
    if (threadIdx.x == 0) partial[256] = s[0];
}

static double* partial = NULL; // 257 doubles
static double grad_sumsq(int version, const float* g, const unsigned char* info, int groups, size_t n) {
    if (version == 1) {
        unsigned int G = std::min(ceil_div((long)n, 256), 256u);
        sumsq_partials<<<G, 256>>>(partial, g, info, groups, n);
        cudaCheckLaunch();
        sumsq_total<<<1, 256>>>(partial, (int)G);
    } else {
        sumsq_one_block<<<1, 1024>>>(partial, g, info, groups, n);
    }
    cudaCheckLaunch();
    double r;
    cudaCheck(cudaMemcpy(&r, partial + 256, sizeof r, cudaMemcpyDeviceToHost));
    return r;
}

struct Model { float *p, *g, *m, *v; unsigned char* info; size_t n; std::vector<Tensor> tensors; };

// one AdamW step of the groups with a given version; returns the norm before clipping
static float step(int version, int norm_version, Model& d, int groups, float lr, float wd, int t) {
    const float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, grad_clip = 1.0f;
    float norm = (float)sqrt(grad_sumsq(norm_version, d.g, d.info, groups, d.n));
    float clip = grad_clip / (norm + 1e-6f);
    if (clip > 1.0f) clip = 1.0f;
    Hyper h = { lr, beta1, beta2, eps, wd, clip, 1.0f - powf(beta1, (float)t), 1.0f - powf(beta2, (float)t) };
    if (version == 1) {
        adamw_info<<<grid_for(d.n), 256>>>(d.p, d.g, d.m, d.v, d.info, groups, d.n, h);
        cudaCheckLaunch();
        return norm;
    }
    for (size_t i = 0; i < d.tensors.size();) {
        const Tensor& t0 = d.tensors[i];
        if (!(groups >> t0.group & 1)) { i++; continue; }
        size_t begin = t0.offset, end = t0.offset + t0.numel, j = i + 1;
        if (version == 3) { // merge the following trained tensors with the same decay
            while (j < d.tensors.size() && (groups >> d.tensors[j].group & 1) && d.tensors[j].decays == t0.decays) { end += d.tensors[j].numel; j++; }
        }
        float decay = t0.decays ? lr * wd : 0.0f;
        if (version == 2) {
            adamw_range<<<grid_for(end - begin), 256>>>(d.p + begin, d.g + begin, d.m + begin, d.v + begin, end - begin, decay, h);
            cudaCheckLaunch();
        } else {
            size_t a = (begin + 3) / 4 * 4, b = std::max(a, end / 4 * 4); // the aligned middle [a, b)
            if (a > end) a = b = end;
            if (a > begin) { adamw_range<<<1, 256>>>(d.p + begin, d.g + begin, d.m + begin, d.v + begin, a - begin, decay, h); cudaCheckLaunch(); }
            if (b > a) {
                adamw_range4<<<grid_for((b - a) / 4), 256>>>((float4*)(d.p + a), (const float4*)(d.g + a), (float4*)(d.m + a), (float4*)(d.v + a), (b - a) / 4, decay, h);
                cudaCheckLaunch();
            }
            if (end > b) { adamw_range<<<1, 256>>>(d.p + b, d.g + b, d.m + b, d.v + b, end - b, decay, h); cudaCheckLaunch(); }
        }
        i = j;
    }
    return norm;
}

// ----------------------------------------------------------------------------
// a random model: tensors of random sizes in 3 groups, about a third of them 1-D (not decayed)
static std::vector<Tensor> random_tensors(int count, int max_numel) {
    std::vector<Tensor> t;
    size_t offset = 0;
    for (int i = 0; i < count; i++) {
        Tensor x = { offset, 1 + rnd() % (unsigned)max_numel, (int)(i * 3 / count), (int)(rnd() % 3 != 0) };
        t.push_back(x);
        offset += x.numel;
    }
    return t;
}

static int check(int count, int max_numel, int groups) {
    std::vector<Tensor> tensors = random_tensors(count, max_numel);
    size_t n = tensors.back().offset + tensors.back().numel;
    std::vector<float> p(n), m0(n, 0.0f), v0(n, 0.0f);
    std::vector<unsigned char> info(n);
    for (auto& x : p) x = uniform();
    for (const Tensor& t : tensors) memset(&info[t.offset], t.group | (t.decays ? 0x80 : 0), t.numel);
    std::vector<std::vector<float>> grads(3, std::vector<float>(n));
    for (auto& g : grads) for (auto& x : g) x = 0.05f * uniform();
    const float lr = 1e-2f, wd = 0.1f;
    // the CPU reference: the same float expressions (train_vlv.c's vlv_update), 3 steps
    std::vector<float> pr = p, mr = m0, vr = v0;
    std::vector<float> norms_ref;
    for (int t = 1; t <= 3; t++) {
        double sumsq = 0;
        for (size_t j = 0; j < n; j++) if (groups >> (info[j] & 0x7f) & 1) sumsq += (double)grads[t - 1][j] * grads[t - 1][j];
        float norm = (float)sqrt(sumsq), clip = std::min(1.0f, 1.0f / (norm + 1e-6f));
        norms_ref.push_back(norm);
        float bc1 = 1.0f - powf(0.9f, (float)t), bc2 = 1.0f - powf(0.95f, (float)t);
        for (size_t j = 0; j < n; j++) {
            if (!(groups >> (info[j] & 0x7f) & 1)) continue;
            float decay = (info[j] & 0x80) ? lr * wd : 0.0f, g = grads[t - 1][j] * clip;
            pr[j] -= decay * pr[j];
            mr[j] = 0.9f * mr[j] + (1.0f - 0.9f) * g;
            vr[j] = 0.95f * vr[j] + (1.0f - 0.95f) * g * g;
            pr[j] -= lr * (mr[j] / bc1) / (sqrtf(vr[j] / bc2) + 1e-8f);
        }
    }
    int failures = 0;
    for (int version = 1; version <= 3; version++) {
        for (int norm_version = 1; norm_version <= 2; norm_version++) {
            Model d = { upload(p), upload(grads[0]), upload(m0), upload(v0), upload(info), n, tensors };
            double worst_norm = 0;
            for (int t = 1; t <= 3; t++) {
                cudaCheck(cudaMemcpy(d.g, grads[t - 1].data(), n * 4, cudaMemcpyHostToDevice));
                float norm = step(version, norm_version, d, groups, lr, wd, t);
                worst_norm = std::max(worst_norm, fabs((double)norm - norms_ref[t - 1]) / norms_ref[t - 1]);
            }
            std::vector<float> got(n);
            cudaCheck(cudaMemcpy(got.data(), d.p, n * 4, cudaMemcpyDeviceToHost));
            double max_err = 0, max_ref = 0;
            size_t frozen_moved = 0, trained_moved = 0;
            for (size_t j = 0; j < n; j++) {
                bool trained = groups >> (info[j] & 0x7f) & 1;
                if (!trained) { frozen_moved += memcmp(&got[j], &p[j], 4) != 0; continue; }
                trained_moved += got[j] != p[j];
                max_err = std::max(max_err, (double)fabsf(got[j] - pr[j]));
                max_ref = std::max(max_ref, (double)fabsf(pr[j]));
            }
            double rel = max_ref > 0 ? max_err / max_ref : max_err;
            // float results: FMA contraction on the GPU rounds a little differently from the CPU
            bool ok = std::isfinite(rel) && rel <= 1e-6 && worst_norm <= 1e-6 && frozen_moved == 0;
            failures += !ok;
            if (!ok || getenv("VERBOSE")) printf("%s %d tensors, n=%zu, groups %d: update %d, norm %d: rel err %.2e, norm rel err %.2e, %zu frozen moved, %zu trained moved\n",
                                                ok ? "ok  " : "FAIL", count, n, groups, version, norm_version, rel, worst_norm, frozen_moved, trained_moved);
            cudaCheck(cudaFree(d.p)); cudaCheck(cudaFree(d.g)); cudaCheck(cudaFree(d.m)); cudaCheck(cudaFree(d.v)); cudaCheck(cudaFree(d.info));
        }
    }
    return failures;
}

int main(int argc, char** argv) {
    bool check_only = argc > 1 && strcmp(argv[1], "--check") == 0;
    if (argc > 1 && !check_only) { fprintf(stderr, "usage: %s [--check]\n", argv[0]); return 2; }
    cudaCheck(cudaMalloc((void**)&partial, 257 * sizeof(double)));
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("AdamW lab on %s: 3 update versions x 2 norm versions\n", prop.name);
    int failures = 0;
    struct { int count, max_numel, groups; } cases[] = { { 1, 1, 1 }, { 7, 9, 1 | 4 }, { 40, 300, 2 }, { 100, 3000, 1 | 2 | 4 }, { 12, 70000, 1 | 4 } };
    for (auto& k : cases) {
        int f = check(k.count, k.max_numel, k.groups);
        printf("%s %3d tensors of up to %5d parameters, groups mask %d: 3 steps\n", f ? "FAIL" : "ok  ", k.count, k.max_numel, k.groups);
        failures += f;
    }
    printf("correctness: %d failures\n", failures);
    if (check_only || failures) return failures ? 1 : 0;

    // timing: the default model's size and tensor count, everything trained
    std::vector<Tensor> tensors = random_tensors(300, 32000);
    size_t n = tensors.back().offset + tensors.back().numel;
    std::vector<unsigned char> info(n);
    for (const Tensor& t : tensors) memset(&info[t.offset], t.group | (t.decays ? 0x80 : 0), t.numel);
    Model d = { upload(std::vector<float>(n, 0.5f)), upload(std::vector<float>(n, 0.01f)), upload(std::vector<float>(n, 0.0f)),
                upload(std::vector<float>(n, 0.0f)), upload(info), n, tensors };
    cudaEvent_t a, b;
    cudaCheck(cudaEventCreate(&a));
    cudaCheck(cudaEventCreate(&b));
    printf("\n%zu parameters in %zu tensors, all trained: microseconds per step (norm + update), median of 30\n", n, tensors.size());
    for (int version = 1; version <= 3; version++) {
        for (int norm_version = 1; norm_version <= 2; norm_version++) {
            std::vector<float> ms(30);
            for (int r = 0; r < 33; r++) {
                cudaCheck(cudaEventRecord(a));
                step(version, norm_version, d, 7, 1e-3f, 0.1f, r + 1);
                cudaCheck(cudaEventRecord(b));
                cudaCheck(cudaEventSynchronize(b));
                if (r >= 3) cudaCheck(cudaEventElapsedTime(&ms[r - 3], a, b));
            }
            std::sort(ms.begin(), ms.end());
            printf("  update %-12s norm %-9s %9.1f us  (%5.0f GB/s, counting 34 bytes per parameter: 29 for the update, 5 for the norm)\n",
                   version == 1 ? "info byte" : version == 2 ? "per tensor" : "float4", norm_version == 1 ? "two-pass" : "one block",
                   ms[15] * 1e3, 34.0 * n / (ms[15] * 1e-3) / 1e9);
        }
    }
    return 0;
}
