// ----------------------------------------------------------------------------
// dev/cpu/gelu_kernels.h — proposed gelu_forward / gelu_backward for train_vlv.c (same
// signatures and semantics; paste in place of the current GELU section, from its comment up
// to the SiLU comment; needs <math.h> and <string.h>, already included). dev/cpu/gelu.c
// checks and times it. Why: glibc's tanhf is a scalar call (~5-10 ns), so with the blocked
// matmuls GELU's forward and backward took about as long as all the matmuls of a step.

// min(y, 88) without a branch: a compare and bit operations. gcc vectorizes this, where it
// leaves a ?: that feeds the float-to-int conversion below as a branch (and then nothing).
static inline float gelu_min88(float y) {
    int32_t yb, cb = 0x42b00000; // 88.0f
    memcpy(&yb, &y, sizeof yb);
    int32_t keep = -(int32_t)(y < 88.0f);
    yb = (yb & keep) | (cb & ~keep);
    memcpy(&y, &yb, sizeof y);
    return y;
}

// tanh that gcc vectorizes: tanh(u) = sign(u) (1 - 2 / (e^y + 1)), y = 2|u|, with e^y by
// Cephes' expf polynomial (y = n ln2 + r, |r| <= ln2 / 2, degree 6; 2^n from the exponent
// bits) and y capped at 88 (tanh is 1 in float from |u| ~ 9 on). Absolute error ~1e-7, like
// tanhf's near |tanh| = 1; no infinities or NaNs on the way, so -Ofast keeps it. (No floorf:
// gcc vectorizes that only with -ffast-math.)
static inline float tanh_vec(float u) {
    float y = gelu_min88(2.0f * fabsf(u));
    int32_t ni = (int32_t)(y * 1.44269504088896341f + 0.5f); // round(y / ln2): y >= 0
    float n = (float)ni;
    float r = y - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = (ni + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return copysignf(1.0f - 2.0f / (p * two_n + 1.0f), u);
}

// GELU, tanh approximation: 0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi)
#define GELU_K 0.7978845608028654f
void gelu_forward(float* out, const float* inp, size_t N) {
    #pragma omp parallel for simd
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanh_vec(GELU_K * (x + 0.044715f * x * x * x)));
    }
}

// d/dx = 0.5 (1 + th) + 0.5 x (1 - th^2) k (1 + 3 * 0.044715 x^2), th = tanh(k (x + 0.044715 x^3))
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t N) {
    #pragma omp parallel for simd
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        float th = tanh_vec(GELU_K * (x + 0.044715f * x * x * x));
        float grad = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += grad * dout[i];
    }
}
