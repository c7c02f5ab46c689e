/*
The model assembled from its layers: sub-layers (self-attention, cross-attention, MLP,
norms), the three kinds of block, and the five parts, each with its forward and backward.
Host code shared by train_vlv.c and train_vlv.cu: each of them defines the layer functions
(matmul_forward, attention_backward, ...; CPU loops or CUDA kernel launches) with the same
signatures, and these functions only pass the (host or device) pointers on. The shapes and
the math are in doc/model.md and doc/layers.md.
*/
#ifndef VLVC_PARTS_H
#define VLVC_PARTS_H

#include "model.h"

// sub-layers and blocks. Each *_backward finds the gradient of its output in the output
// slot of its gradient-activation struct (d->out, d->res2, ...), filled by the caller.

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
// the five parts

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

// adapter: visual tokens vis [B,Np,d_v] -> z = a->z [B,N_q,d_t]
void adapter_forward(AdapterA* a, const float* vis, const AdapterP* p, const Config* c, int B) {
    int Np = config_num_patches(c), Nq = c->n_q, C = c->d_v;
    embed_forward(a->x0, NULL, NULL, NULL, p->queries, B, Nq, 0, C); // the same queries for every image
    const float* x = a->x0;
    for (int l = 0; l < c->L_a; l++) {
        adapter_block_forward(&a->blocks[l], x, vis, &p->blocks[l], B, Nq, Np, C, c->nh_a);
        x = a->blocks[l].res3;
    }
    norm_forward(&a->ln_f, x, &p->ln_f, B * Nq, C);
    matmul_forward(a->h1, a->ln_f.out, p->out1.w, p->out1.b, B * Nq, C, c->d_t);
    gelu_forward(a->h1_gelu, a->h1, (size_t)B * Nq * c->d_t);
    matmul_forward(a->z, a->h1_gelu, p->out2.w, p->out2.b, B * Nq, c->d_t, c->d_t);
}
// gradient of z in d->z; adds the visual tokens' gradient into dvis (NULL: not needed)
void adapter_backward(float* dvis, AdapterA* d, const AdapterP* g, const AdapterA* a, const float* vis,
                      const AdapterP* p, const Config* c, int B) {
    int Np = config_num_patches(c), Nq = c->n_q, C = c->d_v, L = c->L_a;
    matmul_backward(d->h1_gelu, g->out2.w, g->out2.b, d->z, a->h1_gelu, p->out2.w, B * Nq, c->d_t, c->d_t);
    gelu_backward(d->h1, a->h1, d->h1_gelu, (size_t)B * Nq * c->d_t);
    matmul_backward(d->ln_f.out, g->out1.w, g->out1.b, d->h1, a->ln_f.out, p->out1.w, B * Nq, C, c->d_t);
    float* dx = L ? d->blocks[L - 1].res3 : d->x0;
    norm_backward(dx, &d->ln_f, &g->ln_f, &a->ln_f, L ? a->blocks[L - 1].res3 : a->x0, &p->ln_f, B * Nq, C);
    for (int l = L - 1; l >= 0; l--) {
        adapter_block_backward(l ? d->blocks[l - 1].res3 : d->x0, dvis, &d->blocks[l], &g->blocks[l], &a->blocks[l],
                               l ? a->blocks[l - 1].res3 : a->x0, vis, &p->blocks[l], B, Nq, Np, C, c->nh_a);
    }
    embed_backward(NULL, NULL, g->queries, d->x0, NULL, B, Nq, 0, C, c->vocab);
}

// text encoder: token ids [B,N_q] or, when tokens is NULL, embeddings z [B,N_q,d_t]
// -> context c = a->ln_f.out [B,N_q,d_t]
void textenc_forward(TextEncA* a, const int* tokens, const float* z, const TextEncP* p, const Config* c, int B) {
    int Nq = c->n_q, C = c->d_t;
    if (tokens) { embed_forward(a->x0, NULL, tokens, p->wte, p->wpe, B, 0, Nq, C); }
    else { embed_forward(a->x0, z, NULL, NULL, p->wpe, B, Nq, 0, C); }
    const float* x = blocks_forward(a->blocks, a->x0, p->blocks, c->L_t, B, Nq, C, c->nh_t, 1);
    norm_forward(&a->ln_f, x, &p->ln_f, B * Nq, C);
}
// gradient of c in d->ln_f.out; adds into dz when the input was z
void textenc_backward(float* dz, TextEncA* d, const TextEncP* g, const TextEncA* a, const int* tokens,
                      const TextEncP* p, const Config* c, int B) {
    int Nq = c->n_q, C = c->d_t, L = c->L_t;
    float* dx = L ? d->blocks[L - 1].res2 : d->x0;
    norm_backward(dx, &d->ln_f, &g->ln_f, &a->ln_f, L ? a->blocks[L - 1].res2 : a->x0, &p->ln_f, B * Nq, C);
    blocks_backward(d->x0, d->blocks, g->blocks, a->blocks, a->x0, p->blocks, L, B, Nq, C, c->nh_t, 1);
    if (tokens) { embed_backward(NULL, g->wte, g->wpe, d->x0, tokens, B, 0, Nq, C, c->vocab); }
    else { embed_backward(dz, NULL, g->wpe, d->x0, NULL, B, Nq, 0, C, c->vocab); }
}

// DiT: noisy image xt [B,H,W,3], timesteps t [B], context ctx [B,N_q,d_t] -> a->out [B,H,W,3]
// (the prediction of eps, or of v). pos2d is the fixed sin-cos table [Np, d_d].
void dit_forward(DiTA* a, const float* xt, const int* t, const float* ctx, const DiTP* p, const float* pos2d,
                 const Config* c, int B) {
    int Np = config_num_patches(c), PD = config_patch_dim(c), C = c->d_d;
    patch_copy(a->patches, (float*)xt, B, c->img_size, c->patch, 1);
    matmul_forward(a->patch_out, a->patches, p->patch.w, p->patch.b, B * Np, PD, C);
    embed_forward(a->x0, a->patch_out, NULL, NULL, pos2d, B, Np, 0, C);
    // timestep embedding: features -> Linear -> SiLU -> Linear, then s = SiLU(temb) feeds every adaLN
    timestep_features(a->tfreq, t, B, c->d_freq);
    matmul_forward(a->t1, a->tfreq, p->t_mlp1.w, p->t_mlp1.b, B, c->d_freq, C);
    silu_forward(a->t1_silu, a->t1, (size_t)B * C);
    matmul_forward(a->temb, a->t1_silu, p->t_mlp2.w, p->t_mlp2.b, B, C, C);
    silu_forward(a->s, a->temb, (size_t)B * C);
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

#endif
