/*
dev/cuda/attention.cu — multi-head attention forward and backward, self / cross / causal, several
ways (a lab, not linked into the model; its harness is common.h).

As in train_vlv.cu, one code path serves all three kinds: queries are rows of q_stride floats
([B, Tq, q_stride], the C query channels first), keys and values rows of kv_stride floats
([B, Tk, kv_stride]), so a packed qkv buffer (self-attention: q_stride = kv_stride = 3C, k and v
at offsets C and 2C) and separate q / kv buffers (cross-attention: q_stride = C, kv_stride = 2C)
both work. causal: query i sees keys j <= i (Tq == Tk). head h owns channels [h hs, (h+1) hs).

  forward   s_ij = q_i.k_j / sqrt(hs), a_i = softmax(s_i) (att keeps it, 0 where masked),
            out_i = sum_j a_ij v_j
  backward  da_ij = do_i.v_j, ds_ij = a_ij (da_ij - sum_k a_ik da_ik) / sqrt(hs),
            dq_i += sum_j ds_ij k_j, dk_j += sum_i ds_ij q_i, dv_j += sum_i a_ij do_i

Versions of the forward:
  1 thread/row   one thread per (b, h, query row): the CPU's loops
  2 warp/row     one warp per row: lanes over keys for the scores, shuffles for max and sum,
                 __syncwarp, lanes over channels for the output (train_vlv.cu's), W warps/block
  3 smem         one block per (b, h) and group of W query rows (one per warp): the block first
                 copies the head's K and V ([Tk, hs] each) into shared memory, then each warp
                 works as version 2 reading K and V from there. Only when 2 Tk hs floats fit in
                 48 KB (else "n/a")
Versions of the backward:
  1 thread/row   one thread per query row (da, ds into datt, dq), then one thread per key row
                 (dk, dv summed over the queries that see it)
  2 warp/row     the same split with a warp per row, lanes over keys then channels (train_vlv.cu's)

  ./attention          correctness over shapes (self, causal, cross; heads narrower and wider
                       than a warp; rows longer than a warp) and block sizes, then timing
  ./attention --check  correctness only
Build: nvcc -O3 -std=c++17 -arch=sm_90 dev/cuda/attention.cu -o attention
*/
#include "common.h"
#include <float.h>


__device__ inline float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) { v += __shfl_xor_sync(0xffffffffu, v, offset); }
    return v;
}
__device__ inline float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) { v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset)); }
    return v;
}

struct Att { // one attention problem on device (or host) buffers
    float *out, *att; const float *q, *k, *v; int q_stride, kv_stride;
    float *dq, *dk, *dv, *datt; const float* dout;
    int B, Tq, Tk, C, NH, causal;
};

// ----------------------------------------------------------------------------
// forward

// 1: threads: one per (b, h, i) query row
__global__ void att_forward_thread(Att p) {
    size_t row = blockIdx.x * (size_t)blockDim.x + threadIdx.x; // (b * NH + h) * Tq + i
    if (row >= (size_t)p.B * p.NH * p.Tq) return;
    int i = (int)(row % p.Tq), h = (int)((row / p.Tq) % p.NH);
    size_t b = row / ((size_t)p.Tq * p.NH);
    int hs = p.C / p.NH, jend = p.causal ? i + 1 : p.Tk;
    float scale = 1.0f / sqrtf((float)hs);
    const float* qi = p.q + (b * p.Tq + i) * p.q_stride + h * hs;
    float* a = p.att + row * p.Tk;
    float maxv = -FLT_MAX;
    for (int j = 0; j < jend; j++) {
        const float* kj = p.k + (b * p.Tk + j) * p.kv_stride + h * hs;
        float dot = 0.0f;
        for (int c = 0; c < hs; c++) dot += qi[c] * kj[c];
        a[j] = dot * scale;
        maxv = fmaxf(maxv, a[j]);
    }
    float sum = 0.0f;
    for (int j = 0; j < jend; j++) { a[j] = expf(a[j] - maxv); sum += a[j]; }
    float inv = 1.0f / sum;
    for (int j = 0; j < jend; j++) a[j] *= inv;
    for (int j = jend; j < p.Tk; j++) a[j] = 0.0f;
    float* o = p.out + (b * p.Tq + i) * p.C + h * hs;
    for (int c = 0; c < hs; c++) {
        float acc = 0.0f;
        for (int j = 0; j < jend; j++) acc += a[j] * p.v[(b * p.Tk + j) * p.kv_stride + h * hs + c];
        o[c] = acc;
    }
}

// 2: threads: one warp per (b, h, i) row (train_vlv.cu's attention_forward_kernel)
__global__ void att_forward_warp(Att p) {
    int lane = threadIdx.x % 32;
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= (size_t)p.B * p.NH * p.Tq) return;
    int i = (int)(row % p.Tq), h = (int)((row / p.Tq) % p.NH);
    size_t b = row / ((size_t)p.Tq * p.NH);
    int hs = p.C / p.NH, jend = p.causal ? i + 1 : p.Tk;
    float scale = 1.0f / sqrtf((float)hs);
    const float* qi = p.q + (b * p.Tq + i) * p.q_stride + h * hs;
    float* a = p.att + row * p.Tk;
    float maxv = -FLT_MAX;
    for (int j = lane; j < jend; j += 32) {
        const float* kj = p.k + (b * p.Tk + j) * p.kv_stride + h * hs;
        float dot = 0.0f;
        for (int c = 0; c < hs; c++) dot += qi[c] * kj[c];
        a[j] = dot * scale;
        maxv = fmaxf(maxv, a[j]);
    }
    maxv = warp_max(maxv);
    float sum = 0.0f;
    for (int j = lane; j < jend; j += 32) { a[j] = expf(a[j] - maxv); sum += a[j]; }
    float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < jend; j += 32) a[j] *= inv;
    for (int j = jend + lane; j < p.Tk; j += 32) a[j] = 0.0f;
    __syncwarp();
    float* o = p.out + (b * p.Tq + i) * p.C + h * hs;
    for (int c = lane; c < hs; c += 32) {
        float acc = 0.0f;
        for (int j = 0; j < jend; j++) acc += a[j] * p.v[(b * p.Tk + j) * p.kv_stride + h * hs + c];
        o[c] = acc;
    }
}

// 3: threads: block of W warps per (b, h) and W query rows; grid (ceil(Tq / W), B * NH). The
// block copies K and V of head h of sample b into shared memory (row j of K at ks[j * hs]),
// __syncthreads, then warp w handles query row blockIdx.x * W + w as version 2.
#define SMEM_FLOATS 12288 // 48 KB: K and V of one head
__global__ void att_forward_smem(Att p) {
    __shared__ float kv[SMEM_FLOATS];
    int hs = p.C / p.NH, warps = blockDim.x / 32;
    size_t bh = blockIdx.y;
    int h = (int)(bh % p.NH);
    size_t b = bh / p.NH;
    float* ks = kv;
    float* vs = kv + (size_t)p.Tk * hs;
    for (int e = threadIdx.x; e < p.Tk * hs; e += blockDim.x) {
        int j = e / hs, c = e % hs;
        ks[e] = p.k[(b * p.Tk + j) * p.kv_stride + h * hs + c];
        vs[e] = p.v[(b * p.Tk + j) * p.kv_stride + h * hs + c];
    }
    __syncthreads();
    int lane = threadIdx.x % 32;
    int i = blockIdx.x * warps + threadIdx.x / 32;
    if (i >= p.Tq) return; // after the only __syncthreads: safe
    int jend = p.causal ? i + 1 : p.Tk;
    float scale = 1.0f / sqrtf((float)hs);
    const float* qi = p.q + (b * p.Tq + i) * p.q_stride + h * hs;
    float* a = p.att + (bh * p.Tq + i) * p.Tk;
    float maxv = -FLT_MAX;
    for (int j = lane; j < jend; j += 32) {
        float dot = 0.0f;
        for (int c = 0; c < hs; c++) dot += qi[c] * ks[j * hs + c];
        a[j] = dot * scale;
        maxv = fmaxf(maxv, a[j]);
    }
    maxv = warp_max(maxv);
    float sum = 0.0f;
    for (int j = lane; j < jend; j += 32) { a[j] = expf(a[j] - maxv); sum += a[j]; }
    float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < jend; j += 32) a[j] *= inv;
    for (int j = jend + lane; j < p.Tk; j += 32) a[j] = 0.0f;
    __syncwarp();
    float* o = p.out + (b * p.Tq + i) * p.C + h * hs;
    for (int c = lane; c < hs; c += 32) {
        float acc = 0.0f;
        for (int j = 0; j < jend; j++) acc += a[j] * vs[j * hs + c];
        o[c] = acc;
    }
}

// ----------------------------------------------------------------------------
// backward

// 1a: threads: one per query row: da, then ds into datt, then dq
__global__ void att_backward_query_thread(Att p) {
    size_t row = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (row >= (size_t)p.B * p.NH * p.Tq) return;
    int i = (int)(row % p.Tq), h = (int)((row / p.Tq) % p.NH);
    size_t b = row / ((size_t)p.Tq * p.NH);
    int hs = p.C / p.NH, jend = p.causal ? i + 1 : p.Tk;
    float scale = 1.0f / sqrtf((float)hs);
    const float* a = p.att + row * p.Tk;
    float* da = p.datt + row * p.Tk;
    const float* doi = p.dout + (b * p.Tq + i) * p.C + h * hs;
    float a_da = 0.0f;
    for (int j = 0; j < jend; j++) {
        const float* vj = p.v + (b * p.Tk + j) * p.kv_stride + h * hs;
        float dot = 0.0f;
        for (int c = 0; c < hs; c++) dot += doi[c] * vj[c];
        da[j] = dot;
        a_da += a[j] * dot;
    }
    for (int j = 0; j < jend; j++) da[j] = a[j] * (da[j] - a_da) * scale;
    for (int j = jend; j < p.Tk; j++) da[j] = 0.0f;
    float* dqi = p.dq + (b * p.Tq + i) * p.q_stride + h * hs;
    for (int c = 0; c < hs; c++) {
        float acc = 0.0f;
        for (int j = 0; j < jend; j++) acc += da[j] * p.k[(b * p.Tk + j) * p.kv_stride + h * hs + c];
        dqi[c] += acc;
    }
}
// 1b: threads: one per key row: dk, dv over the queries that see it
__global__ void att_backward_key_thread(Att p) {
    size_t row = blockIdx.x * (size_t)blockDim.x + threadIdx.x; // (b * NH + h) * Tk + j
    if (row >= (size_t)p.B * p.NH * p.Tk) return;
    int j = (int)(row % p.Tk), h = (int)((row / p.Tk) % p.NH);
    size_t b = row / ((size_t)p.Tk * p.NH), bh = b * p.NH + h;
    int hs = p.C / p.NH, ibeg = p.causal ? j : 0;
    float* dkj = p.dk + (b * p.Tk + j) * p.kv_stride + h * hs;
    float* dvj = p.dv + (b * p.Tk + j) * p.kv_stride + h * hs;
    for (int c = 0; c < hs; c++) {
        float acc_k = 0.0f, acc_v = 0.0f;
        for (int i = ibeg; i < p.Tq; i++) {
            size_t aij = (bh * p.Tq + i) * p.Tk + j;
            acc_v += p.att[aij] * p.dout[(b * p.Tq + i) * p.C + h * hs + c];
            acc_k += p.datt[aij] * p.q[(b * p.Tq + i) * p.q_stride + h * hs + c];
        }
        dvj[c] += acc_v;
        dkj[c] += acc_k;
    }
}
// 2a, 2b: a warp per row (train_vlv.cu's attention_backward_query_kernel / _key_kernel)
__global__ void att_backward_query_warp(Att p) {
    int lane = threadIdx.x % 32;
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= (size_t)p.B * p.NH * p.Tq) return;
    int i = (int)(row % p.Tq), h = (int)((row / p.Tq) % p.NH);
    size_t b = row / ((size_t)p.Tq * p.NH);
    int hs = p.C / p.NH, jend = p.causal ? i + 1 : p.Tk;
    float scale = 1.0f / sqrtf((float)hs);
    const float* a = p.att + row * p.Tk;
    float* da = p.datt + row * p.Tk;
    const float* doi = p.dout + (b * p.Tq + i) * p.C + h * hs;
    float a_da = 0.0f;
    for (int j = lane; j < jend; j += 32) {
        const float* vj = p.v + (b * p.Tk + j) * p.kv_stride + h * hs;
        float dot = 0.0f;
        for (int c = 0; c < hs; c++) dot += doi[c] * vj[c];
        da[j] = dot;
        a_da += a[j] * dot;
    }
    a_da = warp_sum(a_da);
    for (int j = lane; j < jend; j += 32) da[j] = a[j] * (da[j] - a_da) * scale;
    for (int j = jend + lane; j < p.Tk; j += 32) da[j] = 0.0f;
    __syncwarp();
    float* dqi = p.dq + (b * p.Tq + i) * p.q_stride + h * hs;
    for (int c = lane; c < hs; c += 32) {
        float acc = 0.0f;
        for (int j = 0; j < jend; j++) acc += da[j] * p.k[(b * p.Tk + j) * p.kv_stride + h * hs + c];
        dqi[c] += acc;
    }
}
__global__ void att_backward_key_warp(Att p) {
    int lane = threadIdx.x % 32;
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= (size_t)p.B * p.NH * p.Tk) return;
    int j = (int)(row % p.Tk), h = (int)((row / p.Tk) % p.NH);
    size_t b = row / ((size_t)p.Tk * p.NH), bh = b * p.NH + h;
    int hs = p.C / p.NH, ibeg = p.causal ? j : 0;
    float* dkj = p.dk + (b * p.Tk + j) * p.kv_stride + h * hs;
    float* dvj = p.dv + (b * p.Tk + j) * p.kv_stride + h * hs;
    for (int c = lane; c < hs; c += 32) {
        float acc_k = 0.0f, acc_v = 0.0f;
        for (int i = ibeg; i < p.Tq; i++) {
            size_t aij = (bh * p.Tq + i) * p.Tk + j;
            acc_v += p.att[aij] * p.dout[(b * p.Tq + i) * p.C + h * hs + c];
            acc_k += p.datt[aij] * p.q[(b * p.Tq + i) * p.q_stride + h * hs + c];
        }
        dvj[c] += acc_v;
        dkj[c] += acc_k;
    }
}

// ----------------------------------------------------------------------------
// launchers

struct Version { const char* name; int kind, warps; }; // kind 1 thread, 2 warp, 3 smem (forward only)
static const Version fwd_versions[] = {
    { "thread/row", 1, 0 }, { "warp/row x1", 2, 1 }, { "warp/row x4", 2, 4 }, { "warp/row x8", 2, 8 },
    { "smem x4", 3, 4 }, { "smem x8", 3, 8 },
};
static const Version bwd_versions[] = { { "thread/row", 1, 0 }, { "warp/row x1", 2, 1 }, { "warp/row x4", 2, 4 }, { "warp/row x8", 2, 8 } };
static const int num_fwd = sizeof fwd_versions / sizeof fwd_versions[0];
static const int num_bwd = sizeof bwd_versions / sizeof bwd_versions[0];

static bool smem_fits(const Att& p) { return 2L * p.Tk * (p.C / p.NH) <= SMEM_FLOATS; }
static bool forward(const Version& v, const Att& p) { // false: this version does not apply
    size_t rows = (size_t)p.B * p.NH * p.Tq;
    if (v.kind == 1) att_forward_thread<<<ceil_div(rows, 128), 128>>>(p);
    else if (v.kind == 2) att_forward_warp<<<ceil_div(rows, v.warps), 32 * v.warps>>>(p);
    else {
        if (!smem_fits(p) || (size_t)p.B * p.NH > 65535) return false;
        att_forward_smem<<<dim3(ceil_div(p.Tq, v.warps), p.B * p.NH), 32 * v.warps>>>(p);
    }
    cudaCheckLaunch();
    return true;
}
static void backward(const Version& v, const Att& p) {
    size_t qrows = (size_t)p.B * p.NH * p.Tq, krows = (size_t)p.B * p.NH * p.Tk;
    if (v.kind == 1) {
        att_backward_query_thread<<<ceil_div(qrows, 128), 128>>>(p);
        cudaCheckLaunch();
        att_backward_key_thread<<<ceil_div(krows, 128), 128>>>(p);
    } else {
        att_backward_query_warp<<<ceil_div(qrows, v.warps), 32 * v.warps>>>(p);
        cudaCheckLaunch();
        att_backward_key_warp<<<ceil_div(krows, v.warps), 32 * v.warps>>>(p);
    }
    cudaCheckLaunch();
}

// ----------------------------------------------------------------------------
// checks

static std::vector<float> random_vector(size_t n, float scale = 1.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = scale * uniform();
    return v;
}
static std::vector<float> download(const float* d, size_t n) {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}
// max |got - ref| / max |ref|; a NaN (an output nobody wrote) fails
static double rel_error(const std::vector<float>& got, const std::vector<double>& ref) {
    double max_err = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < got.size(); i++) {
        if (!std::isfinite(got[i])) return INFINITY;
        max_err = std::max(max_err, fabs(got[i] - ref[i]));
        max_ref = std::max(max_ref, fabs(ref[i]));
    }
    return max_ref > 0 ? max_err / max_ref : max_err;
}

struct Case { const char* what; int B, Tq, Tk, C, NH, causal, packed; };

// the whole problem in double on the host: out, att, and dq, dk, dv added to their start values
static void reference(const Case& k, const std::vector<float>& qb, const std::vector<float>& kvb, int q_stride, int kv_stride,
                      int k_off, int v_off, const std::vector<float>& dout, std::vector<double>& out, std::vector<double>& att,
                      std::vector<double>& dqb, std::vector<double>& dkvb) {
    int hs = k.C / k.NH;
    double scale = 1.0 / sqrt((double)hs);
    for (int b = 0; b < k.B; b++) {
        for (int h = 0; h < k.NH; h++) {
            std::vector<double> A((size_t)k.Tq * k.Tk, 0.0), dS((size_t)k.Tq * k.Tk, 0.0);
            auto Q = [&](int i, int c) { return (double)qb[((size_t)b * k.Tq + i) * q_stride + h * hs + c]; };
            auto K = [&](int j, int c) { return (double)kvb[((size_t)b * k.Tk + j) * kv_stride + k_off + h * hs + c]; };
            auto V = [&](int j, int c) { return (double)kvb[((size_t)b * k.Tk + j) * kv_stride + v_off + h * hs + c]; };
            auto DO = [&](int i, int c) { return (double)dout[((size_t)b * k.Tq + i) * k.C + h * hs + c]; };
            for (int i = 0; i < k.Tq; i++) {
                int jend = k.causal ? i + 1 : k.Tk;
                double mx = -1e300, sum = 0.0;
                for (int j = 0; j < jend; j++) {
                    double s = 0;
                    for (int c = 0; c < hs; c++) s += Q(i, c) * K(j, c);
                    A[(size_t)i * k.Tk + j] = s * scale;
                    mx = std::max(mx, s * scale);
                }
                for (int j = 0; j < jend; j++) { A[(size_t)i * k.Tk + j] = exp(A[(size_t)i * k.Tk + j] - mx); sum += A[(size_t)i * k.Tk + j]; }
                for (int j = 0; j < jend; j++) A[(size_t)i * k.Tk + j] /= sum;
                for (int c = 0; c < hs; c++) {
                    double o = 0;
                    for (int j = 0; j < jend; j++) o += A[(size_t)i * k.Tk + j] * V(j, c);
                    out[((size_t)b * k.Tq + i) * k.C + h * hs + c] = o;
                }
                double a_da = 0;
                std::vector<double> da(jend);
                for (int j = 0; j < jend; j++) {
                    double d = 0;
                    for (int c = 0; c < hs; c++) d += DO(i, c) * V(j, c);
                    da[j] = d;
                    a_da += A[(size_t)i * k.Tk + j] * d;
                }
                for (int j = 0; j < jend; j++) dS[(size_t)i * k.Tk + j] = A[(size_t)i * k.Tk + j] * (da[j] - a_da) * scale;
            }
            for (int i = 0; i < k.Tq; i++) {
                for (int j = 0; j < k.Tk; j++) att[(((size_t)b * k.NH + h) * k.Tq + i) * k.Tk + j] = A[(size_t)i * k.Tk + j];
                for (int c = 0; c < hs; c++) {
                    double s = 0;
                    for (int j = 0; j < k.Tk; j++) s += dS[(size_t)i * k.Tk + j] * K(j, c);
                    dqb[((size_t)b * k.Tq + i) * q_stride + h * hs + c] += s;
                }
            }
            for (int j = 0; j < k.Tk; j++) {
                for (int c = 0; c < hs; c++) {
                    double sk = 0, sv = 0;
                    for (int i = 0; i < k.Tq; i++) { sk += dS[(size_t)i * k.Tk + j] * Q(i, c); sv += A[(size_t)i * k.Tk + j] * DO(i, c); }
                    dkvb[((size_t)b * k.Tk + j) * kv_stride + k_off + h * hs + c] += sk;
                    dkvb[((size_t)b * k.Tk + j) * kv_stride + v_off + h * hs + c] += sv;
                }
            }
        }
    }
}

static int check(const Case& k) {
    // packed (self-attention): one [B, T, 3C] buffer for q, k, v and one for their gradients;
    // separate (cross): q [B, Tq, C] and kv [B, Tk, 2C]
    int C = k.C, q_stride = k.packed ? 3 * C : C, kv_stride = k.packed ? 3 * C : 2 * C;
    int k_off = k.packed ? C : 0, v_off = k.packed ? 2 * C : C;
    std::vector<float> qb = random_vector((size_t)k.B * k.Tq * q_stride, 2.0f);
    std::vector<float> kvb = k.packed ? qb : random_vector((size_t)k.B * k.Tk * kv_stride, 2.0f);
    std::vector<float> dout = random_vector((size_t)k.B * k.Tq * C);
    std::vector<float> dq0 = random_vector(qb.size()), dkv0 = k.packed ? dq0 : random_vector(kvb.size());
    size_t att_n = (size_t)k.B * k.NH * k.Tq * k.Tk;
    std::vector<double> out_ref((size_t)k.B * k.Tq * C), att_ref(att_n);
    std::vector<double> dq_ref(dq0.begin(), dq0.end()), dkv_ref(dkv0.begin(), dkv0.end());
    // packed: q, k, v and their gradients share one buffer, so the reference adds all into one
    reference(k, qb, kvb, q_stride, kv_stride, k_off, v_off, dout, out_ref, att_ref, dq_ref, k.packed ? dq_ref : dkv_ref);
    float *d_q = upload(qb), *d_kv = k.packed ? d_q : upload(kvb), *d_dout = upload(dout);
    float* d_out = upload(std::vector<float>(out_ref.size(), NAN));
    float* d_att = upload(std::vector<float>(att_n, NAN));
    float* d_datt = upload(std::vector<float>(att_n, NAN));
    float* d_dq = upload(dq0);
    float* d_dkv = k.packed ? d_dq : upload(dkv0);
    Att p = { d_out, d_att, d_q, d_kv + k_off, d_kv + v_off, q_stride, kv_stride,
              d_dq, d_dkv + k_off, d_dkv + v_off, d_datt, d_dout, k.B, k.Tq, k.Tk, C, k.NH, k.causal };
    int failures = 0;
    auto report = [&](const char* what, const char* version, double rel, double tol) {
        bool ok = rel <= tol;
        failures += !ok;
        if (!ok || getenv("VERBOSE")) printf("%s %-28s %-8s %-12s rel err %.2e\n", ok ? "ok  " : "FAIL", k.what, what, version, rel);
    };
    for (int vi = 0; vi < num_fwd; vi++) {
        cudaCheck(cudaMemcpy(d_out, std::vector<float>(out_ref.size(), NAN).data(), out_ref.size() * 4, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(d_att, std::vector<float>(att_n, NAN).data(), att_n * 4, cudaMemcpyHostToDevice));
        if (!forward(fwd_versions[vi], p)) continue;
        report("out", fwd_versions[vi].name, rel_error(download(d_out, out_ref.size()), out_ref), 5e-6);
        report("att", fwd_versions[vi].name, rel_error(download(d_att, att_n), att_ref), 5e-6);
    }
    forward(fwd_versions[0], p); // att for the backward
    for (int vi = 0; vi < num_bwd; vi++) {
        cudaCheck(cudaMemcpy(d_dq, dq0.data(), dq0.size() * 4, cudaMemcpyHostToDevice));
        if (!k.packed) cudaCheck(cudaMemcpy(d_dkv, dkv0.data(), dkv0.size() * 4, cudaMemcpyHostToDevice));
        backward(bwd_versions[vi], p);
        if (k.packed) {
            report("dqkv", bwd_versions[vi].name, rel_error(download(d_dq, dq0.size()), dq_ref), 1e-5);
        } else {
            report("dq", bwd_versions[vi].name, rel_error(download(d_dq, dq0.size()), dq_ref), 1e-5);
            report("dkv", bwd_versions[vi].name, rel_error(download(d_dkv, dkv0.size()), dkv_ref), 1e-5);
        }
    }
    cudaCheck(cudaFree(d_q)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_att));
    cudaCheck(cudaFree(d_datt)); cudaCheck(cudaFree(d_dq));
    if (!k.packed) { cudaCheck(cudaFree(d_kv)); cudaCheck(cudaFree(d_dkv)); }
    return failures;
}

static float time_ms(const Version& v, const Att& p, bool fwd, int reps) {
    cudaEvent_t start, stop;
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&stop));
    for (int i = 0; i < 3; i++) { if (fwd) forward(v, p); else backward(v, p); }
    std::vector<float> ms(reps);
    for (int i = 0; i < reps; i++) {
        cudaCheck(cudaEventRecord(start));
        if (fwd) forward(v, p); else backward(v, p);
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
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("attention lab on %s; %d forward and %d backward versions\n", prop.name, num_fwd, num_bwd);
    Case cases[] = {
        { "self B2 T5 C16 NH2", 2, 5, 5, 16, 2, 0, 1 },
        { "causal B3 T33 C24 NH3", 3, 33, 33, 24, 3, 1, 1 },
        { "causal T1", 2, 1, 1, 8, 1, 1, 1 },
        { "cross Tq7 Tk81 hs96", 2, 7, 81, 96, 1, 0, 0 },
        { "cross Tq1 Tk1", 3, 1, 1, 12, 3, 0, 0 },
        { "cross Tq40 Tk16 hs33", 2, 40, 16, 66, 2, 0, 0 },
        { "self B1 T64 C128 NH4 (DiT)", 1, 64, 64, 128, 4, 0, 1 },
        { "causal B2 T40 C128 NH4 (GPT)", 2, 40, 40, 128, 4, 1, 1 },
        { "self T70 hs160 (no smem fit)", 1, 70, 70, 160, 1, 0, 1 },
    };
    int failures = 0;
    for (const Case& k : cases) {
        int f = check(k);
        printf("%s %-30s forward (%d versions), backward (%d)\n", f ? "FAIL" : "ok  ", k.what, num_fwd, num_bwd);
        failures += f;
    }
    printf("correctness: %d failures\n", failures);
    if (check_only || failures) return failures ? 1 : 0;

    // timing: the default model's attentions at batch 32
    Case shapes[] = {
        { "DiT self   T64 C128 NH4", 32, 64, 64, 128, 4, 0, 1 }, { "DiT cross  Tq64 Tk16", 32, 64, 16, 128, 4, 0, 0 },
        { "adapter x  Tq16 Tk64", 32, 16, 64, 128, 4, 0, 0 }, { "GPT causal T40", 32, 40, 40, 128, 4, 1, 1 },
    };
    printf("\nmicroseconds per call (median of 50 runs)\n%-26s %-12s %10s %10s\n", "shape", "version", "forward", "backward");
    for (const Case& k : shapes) {
        int C = k.C, q_stride = k.packed ? 3 * C : C, kv_stride = k.packed ? 3 * C : 2 * C;
        float *q = upload(random_vector((size_t)k.B * k.Tq * q_stride)), *kv = k.packed ? q : upload(random_vector((size_t)k.B * k.Tk * kv_stride));
        float *dq = upload(random_vector((size_t)k.B * k.Tq * q_stride)), *dkv = k.packed ? dq : upload(random_vector((size_t)k.B * k.Tk * kv_stride));
        size_t att_n = (size_t)k.B * k.NH * k.Tq * k.Tk;
        float *out = upload(random_vector((size_t)k.B * k.Tq * C)), *dout = upload(random_vector((size_t)k.B * k.Tq * C));
        float *att = upload(random_vector(att_n)), *datt = upload(random_vector(att_n));
        int k_off = k.packed ? C : 0, v_off = k.packed ? 2 * C : C;
        Att p = { out, att, q, kv + k_off, kv + v_off, q_stride, kv_stride, dq, dkv + k_off, dkv + v_off, datt, dout,
                  k.B, k.Tq, k.Tk, C, k.NH, k.causal };
        for (int vi = 0; vi < num_fwd; vi++) {
            const Version& v = fwd_versions[vi];
            if (v.kind == 3 && !smem_fits(p)) continue;
            float f = time_ms(v, p, true, 50);
            const Version* bv = NULL;
            for (int b = 0; b < num_bwd; b++) if (strcmp(bwd_versions[b].name, v.name) == 0) bv = &bwd_versions[b];
            if (bv) printf("%-26s %-12s %10.1f %10.1f\n", k.what, v.name, f * 1e3, time_ms(*bv, p, false, 50) * 1e3);
            else printf("%-26s %-12s %10.1f %10s\n", k.what, v.name, f * 1e3, "-");
        }
        float* bufs[] = { q, dq, out, dout, att, datt };
        for (float* b : bufs) cudaCheck(cudaFree(b));
        if (!k.packed) { cudaCheck(cudaFree(kv)); cudaCheck(cudaFree(dkv)); }
    }
    return 0;
}
