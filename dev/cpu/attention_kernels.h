// ----------------------------------------------------------------------------
// dev/cpu/attention_kernels.h — proposed attention_forward / attention_backward for
// train_vlv.c: same signatures and semantics; paste in place of the current two, after the
// matmul kernels of dev/cpu/matmul_kernels.h (it uses their matmul_units). dev/cpu/attention.c
// checks and times exactly this code (its v4).
//
// Per (b, h) attention is four small matmuls and a row softmax: S = Q K^T, A = softmax(S),
// O = A V forward; dV += A^T dO, dA = dO V^T, dS = A (dA - rowsum(A dA)), dQ += dS K,
// dK += dS^T Q backward. Each runs on the matmul register tile (strided rows of the packed
// qkv buffer are just other strides), serially inside the (b, h) loop that the threads
// share: each (b, h) owns its rows of att / datt, its output rows and its head's channels,
// so there are no races, and results do not depend on the thread count. The causal mask is
// applied in the softmax (A is 0 above the diagonal, so the masked entries add nothing to
// the other products); the full square is computed, which costs T^2 / 2 wasted FLOPs per
// causal layer but keeps every product on the full-speed tile.

// Multi-head attention, self or cross, with one code path. Queries are rows of q_stride floats
// ([B, Tq, q_stride], the C query channels first), keys and values rows of kv_stride floats
// ([B, Tk, kv_stride]), so a packed qkv buffer and separate q / kv buffers both work.
// att [B, NH, Tq, Tk] keeps the softmax probabilities (0 where masked) for the backward;
// out [B, Tq, C]. causal: query i sees keys j <= i (then Tq == Tk).
void attention_forward(float* out, float* att, const float* q, int q_stride, const float* k,
                       const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    long tq_tiles = (Tq + MM_MR - 1) / MM_MR;
    long s_units = tq_tiles * ((Tk + MM_NR - 1) / MM_NR), o_units = tq_tiles * ((hs + MM_NR - 1) / MM_NR);
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float* qh = q + (size_t)b * Tq * q_stride + h * hs;
            const float* kh = k + (size_t)b * Tk * kv_stride + h * hs;
            const float* vh = v + (size_t)b * Tk * kv_stride + h * hs;
            float* s = att + ((size_t)b * NH + h) * Tq * Tk;
            // S[Tq, Tk] = Q K^T: A(i, c) = q_i[c], B(c, j) = k_j[c]
            matmul_units(s, Tk, qh, q_stride, 1, kh, 1, kv_stride, NULL, 1, Tq, hs, Tk, 0, s_units);
            // a numerically safe softmax of each row (-FLT_MAX, not -INFINITY: -Ofast
            // assumes there are no infinities)
            for (int i = 0; i < Tq; i++) {
                float* a = s + (size_t)i * Tk;
                int jend = causal ? i + 1 : Tk;
                float maxv = -FLT_MAX;
                for (int j = 0; j < jend; j++) { a[j] *= scale; maxv = a[j] > maxv ? a[j] : maxv; }
                float sum = 0.0f;
                for (int j = 0; j < jend; j++) { a[j] = expf(a[j] - maxv); sum += a[j]; }
                float inv = 1.0f / sum;
                for (int j = 0; j < jend; j++) { a[j] *= inv; }
                for (int j = jend; j < Tk; j++) { a[j] = 0.0f; }
            }
            // O[Tq, hs] = A V: B(j, c) = v_j[c]
            matmul_units(out + (size_t)b * Tq * C + h * hs, C, s, Tk, 1, vh, kv_stride, 1, NULL, 1, Tq, Tk, hs, 0, o_units);
        }
    }
}

// Backward of attention_forward. With o_i = sum_j a_ij v_j and a_i = softmax(s_i),
// s_ij = scale q_i.k_j: dv_j += a_ij do_i; da_ij = do_i.v_j; ds_ij = a_ij (da_ij - sum_k a_ik da_ik);
// dq_i += scale sum_j ds_ij k_j; dk_j += scale ds_ij q_i. datt [B, NH, Tq, Tk] is scratch
// (holds da, then ds). Each (b, h) touches only its own rows and head channels, so (b, h)
// runs in parallel.
void attention_backward(float* dq, float* dk, float* dv, float* datt, const float* dout,
                        const float* att, const float* q, int q_stride, const float* k,
                        const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    long tq_tiles = (Tq + MM_MR - 1) / MM_MR, tk_tiles = (Tk + MM_MR - 1) / MM_MR;
    long hs_panels = (hs + MM_NR - 1) / MM_NR, tk_panels = (Tk + MM_NR - 1) / MM_NR;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float* qh = q + (size_t)b * Tq * q_stride + h * hs;
            const float* kh = k + (size_t)b * Tk * kv_stride + h * hs;
            const float* vh = v + (size_t)b * Tk * kv_stride + h * hs;
            const float* doh = dout + (size_t)b * Tq * C + h * hs;
            const float* ah = att + ((size_t)b * NH + h) * Tq * Tk;
            float* dsh = datt + ((size_t)b * NH + h) * Tq * Tk;
            // dV[Tk, hs] += A^T dO: A(j, i) = a_ij, B(i, c) = do_i[c]
            matmul_units(dv + (size_t)b * Tk * kv_stride + h * hs, kv_stride, ah, 1, Tk, doh, C, 1, NULL, 0,
                         Tk, Tq, hs, 0, tk_tiles * hs_panels);
            // dA[Tq, Tk] = dO V^T: A(i, c) = do_i[c], B(c, j) = v_j[c]
            matmul_units(dsh, Tk, doh, C, 1, vh, 1, kv_stride, NULL, 1, Tq, hs, Tk, 0, tq_tiles * tk_panels);
            // dS = A (dA - rowsum(A dA)) scale, in place (0 where masked: a_ij = 0 there)
            for (int i = 0; i < Tq; i++) {
                const float* a = ah + (size_t)i * Tk;
                float* da = dsh + (size_t)i * Tk;
                float a_da = 0.0f;
                for (int j = 0; j < Tk; j++) { a_da += a[j] * da[j]; }
                for (int j = 0; j < Tk; j++) {
                    float ds = a[j] * (da[j] - a_da) * scale;
                    da[j] = ds;
                }
            }
            // dQ[Tq, hs] += dS K: B(j, c) = k_j[c]
            matmul_units(dq + (size_t)b * Tq * q_stride + h * hs, q_stride, dsh, Tk, 1, kh, kv_stride, 1, NULL, 0,
                         Tq, Tk, hs, 0, tq_tiles * hs_panels);
            // dK[Tk, hs] += dS^T Q: A(j, i) = ds_ij, B(i, c) = q_i[c]
            matmul_units(dk + (size_t)b * Tk * kv_stride + h * hs, kv_stride, dsh, 1, Tk, qh, q_stride, 1, NULL, 0,
                         Tk, Tq, hs, 0, tk_tiles * hs_panels);
        }
    }
    (void)causal; // the mask is in att: a_ij = 0 above the diagonal
}
