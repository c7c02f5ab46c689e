/*
Where every tensor of the model lives. Parameters, their gradients and the activations are
each one allocation; the structs below are named views into them, laid out by a bump
allocator (Arena) that hands out consecutive slices. Laying out the same struct over the
parameter buffer and over the gradient buffer gives params and grads with identical
offsets, as llm.c does; laying it out over no buffer at all (base NULL) gives views that are
all NULL, which the backward passes read as "this part is frozen: compute no parameter
gradients". The order of the take_* calls is the checkpoint order of doc/model.md.
Shared by train_vlv.c and train_vlv.cu (which lays the same views over device memory).
*/
#ifndef VLVC_MODEL_H
#define VLVC_MODEL_H

#include "config.h"

// ----------------------------------------------------------------------------
// the bump allocator

typedef struct {
    char name[128];
    int ndim, shape[2];   // ndim 1: [shape[0]], ndim 2: [shape[0], shape[1]]
    size_t offset, numel; // in floats from the start of the buffer
    int group;
} TensorInfo;

// the activations' parts, in layout order (acts_layout records where each starts)
enum { ACTS_VIT, ACTS_ADAPTER, ACTS_TEXTENC, ACTS_DIT, ACTS_CAPDEC, NUM_ACT_PARTS };

typedef struct {
    float* base;          // NULL: only count (and record names), hand out NULL views
    size_t used;          // floats handed out so far
    size_t part_start[NUM_ACT_PARTS + 1]; // acts_layout: where each part starts, and the end
    TensorInfo* table;    // when not NULL, every named tensor is recorded here
    int count, capacity;
    int group;            // group of the tensors being laid out now
} Arena;

static inline float* take(Arena* a, size_t n) {
    float* p = a->base ? a->base + a->used : NULL;
    a->used += n;
    return p;
}

// a named parameter tensor of shape [d0] (d1 == 0) or [d0, d1]
static inline float* take_tensor(Arena* a, const char* prefix, const char* name, int d0, int d1) {
    size_t numel = (size_t)d0 * (d1 ? d1 : 1);
    if (a->table) {
        if (a->count == a->capacity) {
            a->capacity = a->capacity ? 2 * a->capacity : 256;
            TensorInfo* t = (TensorInfo*)realloc(a->table, a->capacity * sizeof(TensorInfo));
            if (t == NULL) fail("out of memory for the tensor table");
            a->table = t;
        }
        TensorInfo* t = &a->table[a->count++];
        snprintf(t->name, sizeof t->name, "%s%s%s", prefix, name[0] ? "." : "", name);
        t->ndim = d1 ? 2 : 1;
        t->shape[0] = d0;
        t->shape[1] = d1;
        t->offset = a->used;
        t->numel = numel;
        t->group = a->group;
    }
    return take(a, numel);
}

// ----------------------------------------------------------------------------
// parameter views (doc/model.md has the math of each)

typedef struct { float *w, *b; } LinearP;               // w [out, in], b [out]
typedef struct { float *w, *b; } NormP;                 // LayerNorm affine, [C] each
typedef struct { LinearP qkv, proj; } SelfAttnP;        // qkv [3C, C], proj [C, C]
typedef struct { LinearP q, kv, proj; } CrossAttnP;     // q [C, C], kv [2C, C_ctx], proj [C, C]
typedef struct { LinearP fc, proj; } MLPP;              // fc [4C, C], proj [C, 4C]
typedef struct { NormP ln1; SelfAttnP attn; NormP ln2; MLPP mlp; } BlockP;
typedef struct { NormP ln1; SelfAttnP attn; NormP ln2; CrossAttnP cross; NormP ln3; MLPP mlp; } AdapterBlockP;
typedef struct { LinearP ada; SelfAttnP attn; NormP ln_c; CrossAttnP cross; MLPP mlp; } DiTBlockP;

typedef struct { LinearP patch; float* pos; BlockP* blocks; NormP ln_f; } ViTP;          // pos [Np, d_v]
typedef struct { float* queries; AdapterBlockP* blocks; NormP ln_f; LinearP out1, out2; } AdapterP; // queries [N_q, d_v]
typedef struct { float *wte, *wpe; BlockP* blocks; NormP ln_f; } TextEncP;                // wte [V, d_t], wpe [N_q, d_t]
typedef struct { LinearP patch, t_mlp1, t_mlp2; DiTBlockP* blocks; LinearP final_ada, final; } DiTP;
typedef struct { LinearP prefix1, prefix2; float *wte, *wpe; BlockP* blocks; NormP ln_f; } CapDecP; // wpe [N_q+T_c, d_g]

typedef struct { ViTP vit; AdapterP adapter; TextEncP textenc; DiTP dit; CapDecP capdec; } ParamViews;

static inline void take_linear(Arena* a, LinearP* l, const char* prefix, const char* name, int out, int in) {
    char full[96];
    snprintf(full, sizeof full, "%s.%s", prefix, name);
    l->w = take_tensor(a, full, "weight", out, in);
    l->b = take_tensor(a, full, "bias", out, 0);
}
static inline void take_norm(Arena* a, NormP* n, const char* prefix, const char* name, int C) {
    char full[96];
    snprintf(full, sizeof full, "%s.%s", prefix, name);
    n->w = take_tensor(a, full, "weight", C, 0);
    n->b = take_tensor(a, full, "bias", C, 0);
}
static inline void take_self_attn(Arena* a, SelfAttnP* p, const char* prefix, int C) {
    take_linear(a, &p->qkv, prefix, "attn.qkv", 3 * C, C);
    take_linear(a, &p->proj, prefix, "attn.proj", C, C);
}
static inline void take_cross_attn(Arena* a, CrossAttnP* p, const char* prefix, int C, int C_ctx) {
    take_linear(a, &p->q, prefix, "cross.q", C, C);
    take_linear(a, &p->kv, prefix, "cross.kv", 2 * C, C_ctx);
    take_linear(a, &p->proj, prefix, "cross.proj", C, C);
}
static inline void take_mlp(Arena* a, MLPP* p, const char* prefix, int C) {
    take_linear(a, &p->fc, prefix, "mlp.fc", 4 * C, C);
    take_linear(a, &p->proj, prefix, "mlp.proj", C, 4 * C);
}
static inline void* blocks_alloc(int L, size_t size) { return callocCheck((size_t)L, size); }

static inline BlockP* take_blocks(Arena* a, const char* part, int L, int C) {
    BlockP* blocks = (BlockP*)blocks_alloc(L, sizeof(BlockP));
    for (int l = 0; l < L; l++) {
        char prefix[48];
        snprintf(prefix, sizeof prefix, "%s.blocks.%d", part, l);
        BlockP* b = &blocks[l];
        take_norm(a, &b->ln1, prefix, "ln1", C);
        take_self_attn(a, &b->attn, prefix, C);
        take_norm(a, &b->ln2, prefix, "ln2", C);
        take_mlp(a, &b->mlp, prefix, C);
    }
    return blocks;
}

static inline void params_layout(ParamViews* p, Arena* a, const Config* c) {
    int Np = config_num_patches(c), PD = config_patch_dim(c);
    a->group = GROUP_VIT;
    take_linear(a, &p->vit.patch, "vit", "patch", c->d_v, PD);
    p->vit.pos = take_tensor(a, "vit", "pos", Np, c->d_v);
    p->vit.blocks = take_blocks(a, "vit", c->L_v, c->d_v);
    take_norm(a, &p->vit.ln_f, "vit", "ln_f", c->d_v);

    a->group = GROUP_ADAPTER;
    int C = c->d_v;
    p->adapter.queries = take_tensor(a, "adapter", "queries", c->n_z, C);
    p->adapter.blocks = (AdapterBlockP*)blocks_alloc(c->L_a, sizeof(AdapterBlockP));
    for (int l = 0; l < c->L_a; l++) {
        char prefix[48];
        snprintf(prefix, sizeof prefix, "adapter.blocks.%d", l);
        AdapterBlockP* b = &p->adapter.blocks[l];
        take_norm(a, &b->ln1, prefix, "ln1", C);
        take_self_attn(a, &b->attn, prefix, C);
        take_norm(a, &b->ln2, prefix, "ln2", C);
        take_cross_attn(a, &b->cross, prefix, C, C);
        take_norm(a, &b->ln3, prefix, "ln3", C);
        take_mlp(a, &b->mlp, prefix, C);
    }
    take_norm(a, &p->adapter.ln_f, "adapter", "ln_f", C);
    take_linear(a, &p->adapter.out1, "adapter", "out1", c->d_t, C);
    take_linear(a, &p->adapter.out2, "adapter", "out2", c->d_t, c->d_t);

    a->group = GROUP_TEXTENC;
    p->textenc.wte = take_tensor(a, "textenc", "wte", c->vocab, c->d_t);
    p->textenc.wpe = take_tensor(a, "textenc", "wpe", c->n_q, c->d_t);
    p->textenc.blocks = take_blocks(a, "textenc", c->L_t, c->d_t);
    take_norm(a, &p->textenc.ln_f, "textenc", "ln_f", c->d_t);

    a->group = GROUP_DIT;
    C = c->d_d;
    take_linear(a, &p->dit.patch, "dit", "patch", C, PD);
    take_linear(a, &p->dit.t_mlp1, "dit", "t_mlp1", C, c->d_freq);
    take_linear(a, &p->dit.t_mlp2, "dit", "t_mlp2", C, C);
    p->dit.blocks = (DiTBlockP*)blocks_alloc(c->L_d, sizeof(DiTBlockP));
    for (int l = 0; l < c->L_d; l++) {
        char prefix[48];
        snprintf(prefix, sizeof prefix, "dit.blocks.%d", l);
        DiTBlockP* b = &p->dit.blocks[l];
        take_linear(a, &b->ada, prefix, "ada", 6 * C, C);
        take_self_attn(a, &b->attn, prefix, C);
        take_norm(a, &b->ln_c, prefix, "ln_c", C);
        take_cross_attn(a, &b->cross, prefix, C, c->d_t);
        take_mlp(a, &b->mlp, prefix, C);
    }
    take_linear(a, &p->dit.final_ada, "dit", "final_ada", 2 * C, C);
    take_linear(a, &p->dit.final, "dit", "final", PD, C);

    a->group = GROUP_PREFIX;
    take_linear(a, &p->capdec.prefix1, "capdec", "prefix1", c->d_g, c->d_t);
    take_linear(a, &p->capdec.prefix2, "capdec", "prefix2", c->d_g, c->d_g);
    a->group = GROUP_GPT;
    p->capdec.wte = take_tensor(a, "capdec", "wte", c->vocab, c->d_g);
    p->capdec.wpe = take_tensor(a, "capdec", "wpe", c->n_q + c->cap_len, c->d_g);
    p->capdec.blocks = take_blocks(a, "capdec", c->L_g, c->d_g);
    take_norm(a, &p->capdec.ln_f, "capdec", "ln_f", c->d_g);
}

static inline void params_views_free(ParamViews* p) {
    free(p->vit.blocks);
    free(p->adapter.blocks);
    free(p->textenc.blocks);
    free(p->dit.blocks);
    free(p->capdec.blocks);
}

// ----------------------------------------------------------------------------
// activation views, for a batch of B. Each block keeps what its backward needs.

typedef struct { float *out, *mean, *rstd; } NormA;           // out [N, C], mean, rstd [N]
typedef struct { float *qkv, *att, *atty, *out; } SelfAttnA;  // qkv [B,T,3C], att [B,NH,T,T], atty, out [B,T,C]
typedef struct { float *q, *kv, *att, *atty, *out; } CrossAttnA; // q [B,T,C], kv [B,S,2C], att [B,NH,T,S], atty, out [B,T,C]
typedef struct { float *fc, *gelu, *out; } MLPA;              // fc, gelu [B,T,4C], out [B,T,C]
typedef struct { NormA ln1; SelfAttnA attn; float* res1; NormA ln2; MLPA mlp; float* res2; } BlockA;
typedef struct {
    NormA ln1; SelfAttnA attn; float* res1;
    NormA ln2; CrossAttnA cross; float* res2;
    NormA ln3; MLPA mlp; float* res3;
} AdapterBlockA;
typedef struct {
    float* mod;                                   // [B, 6C]: shift1 scale1 gate1 shift2 scale2 gate2
    NormA ln1; float* mod1; SelfAttnA attn; float* res1;   // mod1 [B,T,C] = LN0(x)*(1+scale1)+shift1
    NormA ln_c; CrossAttnA cross; float* res2;
    NormA ln2; float* mod2; MLPA mlp; float* res3;
} DiTBlockA;

typedef struct { float *patches, *patch_out, *x0; BlockA* blocks; NormA ln_f; } ViTA; // ln_f.out: visual tokens [B,Np,d_v]
typedef struct { float* x0; AdapterBlockA* blocks; NormA ln_f; float *h1, *h1_gelu, *z; } AdapterA; // z [B,N_q,d_t]
typedef struct { float* x0; BlockA* blocks; NormA ln_f; } TextEncA;  // ln_f.out: context c [B,N_q,d_t]
typedef struct {
    float *patches, *patch_out, *x0;              // [B,Np,PD], [B,Np,C], [B,Np,C]
    float *tfreq, *t1, *t1_silu, *temb, *s;       // [B,d_freq], then [B,C] each; s = SiLU(temb)
    DiTBlockA* blocks;
    float* fmod; NormA ln_f; float *fmodded, *fout, *out; // [B,2C], [B,Np,C], [B,Np,PD], out [B,H,W,3]
} DiTA;
typedef struct {
    float *p1, *p1_gelu, *prefix, *x0;            // [B,N_q,d_g] x3, x0 [B,N_q+T_c,d_g]
    BlockA* blocks; NormA ln_f;
    float *logits, *probs;                        // [B,T_c,V] on the caption rows only
} CapDecA;

typedef struct { ViTA vit; AdapterA adapter; TextEncA textenc; DiTA dit; CapDecA capdec; } ActViews;

static inline void take_normA(Arena* a, NormA* n, size_t N, int C) {
    n->out = take(a, N * C);
    n->mean = take(a, N);
    n->rstd = take(a, N);
}
static inline void take_self_attnA(Arena* a, SelfAttnA* s, int B, int T, int C, int NH) {
    s->qkv = take(a, (size_t)B * T * 3 * C);
    s->att = take(a, (size_t)B * NH * T * T);
    s->atty = take(a, (size_t)B * T * C);
    s->out = take(a, (size_t)B * T * C);
}
static inline void take_cross_attnA(Arena* a, CrossAttnA* s, int B, int T, int S, int C, int NH) {
    s->q = take(a, (size_t)B * T * C);
    s->kv = take(a, (size_t)B * S * 2 * C);
    s->att = take(a, (size_t)B * NH * T * S);
    s->atty = take(a, (size_t)B * T * C);
    s->out = take(a, (size_t)B * T * C);
}
static inline void take_mlpA(Arena* a, MLPA* m, size_t N, int C) {
    m->fc = take(a, N * 4 * C);
    m->gelu = take(a, N * 4 * C);
    m->out = take(a, N * C);
}
static inline BlockA* take_blocksA(Arena* a, int L, int B, int T, int C, int NH) {
    BlockA* blocks = (BlockA*)blocks_alloc(L, sizeof(BlockA));
    size_t N = (size_t)B * T;
    for (int l = 0; l < L; l++) {
        take_normA(a, &blocks[l].ln1, N, C);
        take_self_attnA(a, &blocks[l].attn, B, T, C, NH);
        blocks[l].res1 = take(a, N * C);
        take_normA(a, &blocks[l].ln2, N, C);
        take_mlpA(a, &blocks[l].mlp, N, C);
        blocks[l].res2 = take(a, N * C);
    }
    return blocks;
}

static inline void acts_layout(ActViews* v, Arena* a, const Config* c, int B) {
    int Np = config_num_patches(c), PD = config_patch_dim(c), Nq = c->n_q;
    size_t BNp = (size_t)B * Np, BNq = (size_t)B * Nq;
    // vision encoder
    a->part_start[ACTS_VIT] = a->used;
    v->vit.patches = take(a, BNp * PD);
    v->vit.patch_out = take(a, BNp * c->d_v);
    v->vit.x0 = take(a, BNp * c->d_v);
    v->vit.blocks = take_blocksA(a, c->L_v, B, Np, c->d_v, c->nh_v);
    take_normA(a, &v->vit.ln_f, BNp, c->d_v);
    // adapter
    a->part_start[ACTS_ADAPTER] = a->used;
    int C = c->d_v, Nz = c->n_z; // the adapter's rows: the learned queries
    size_t BNz = (size_t)B * Nz;
    v->adapter.x0 = take(a, BNz * C);
    v->adapter.blocks = (AdapterBlockA*)blocks_alloc(c->L_a, sizeof(AdapterBlockA));
    for (int l = 0; l < c->L_a; l++) {
        AdapterBlockA* b = &v->adapter.blocks[l];
        take_normA(a, &b->ln1, BNz, C);
        take_self_attnA(a, &b->attn, B, Nz, C, c->nh_a);
        b->res1 = take(a, BNz * C);
        take_normA(a, &b->ln2, BNz, C);
        take_cross_attnA(a, &b->cross, B, Nz, Np, C, c->nh_a);
        b->res2 = take(a, BNz * C);
        take_normA(a, &b->ln3, BNz, C);
        take_mlpA(a, &b->mlp, BNz, C);
        b->res3 = take(a, BNz * C);
    }
    take_normA(a, &v->adapter.ln_f, BNz, C);
    v->adapter.h1 = take(a, BNz * c->d_t);
    v->adapter.h1_gelu = take(a, BNz * c->d_t);
    v->adapter.z = take(a, BNz * c->d_t);
    // text encoder
    a->part_start[ACTS_TEXTENC] = a->used;
    v->textenc.x0 = take(a, BNq * c->d_t);
    v->textenc.blocks = take_blocksA(a, c->L_t, B, Nq, c->d_t, c->nh_t);
    take_normA(a, &v->textenc.ln_f, BNq, c->d_t);
    // DiT
    a->part_start[ACTS_DIT] = a->used;
    C = c->d_d;
    v->dit.patches = take(a, BNp * PD);
    v->dit.patch_out = take(a, BNp * C);
    v->dit.x0 = take(a, BNp * C);
    v->dit.tfreq = take(a, (size_t)B * c->d_freq);
    v->dit.t1 = take(a, (size_t)B * C);
    v->dit.t1_silu = take(a, (size_t)B * C);
    v->dit.temb = take(a, (size_t)B * C);
    v->dit.s = take(a, (size_t)B * C);
    v->dit.blocks = (DiTBlockA*)blocks_alloc(c->L_d, sizeof(DiTBlockA));
    for (int l = 0; l < c->L_d; l++) {
        DiTBlockA* b = &v->dit.blocks[l];
        b->mod = take(a, (size_t)B * 6 * C);
        take_normA(a, &b->ln1, BNp, C);
        b->mod1 = take(a, BNp * C);
        take_self_attnA(a, &b->attn, B, Np, C, c->nh_d);
        b->res1 = take(a, BNp * C);
        take_normA(a, &b->ln_c, BNp, C);
        take_cross_attnA(a, &b->cross, B, Np, Nq, C, c->nh_d);
        b->res2 = take(a, BNp * C);
        take_normA(a, &b->ln2, BNp, C);
        b->mod2 = take(a, BNp * C);
        take_mlpA(a, &b->mlp, BNp, C);
        b->res3 = take(a, BNp * C);
    }
    v->dit.fmod = take(a, (size_t)B * 2 * C);
    take_normA(a, &v->dit.ln_f, BNp, C);
    v->dit.fmodded = take(a, BNp * C);
    v->dit.fout = take(a, BNp * PD);
    v->dit.out = take(a, BNp * PD);
    // caption decoder: sized for the longest sequence, prefix + caption
    a->part_start[ACTS_CAPDEC] = a->used;
    int T = Nq + c->cap_len;
    C = c->d_g;
    v->capdec.p1 = take(a, BNq * C);
    v->capdec.p1_gelu = take(a, BNq * C);
    v->capdec.prefix = take(a, BNq * C);
    v->capdec.x0 = take(a, (size_t)B * T * C);
    v->capdec.blocks = take_blocksA(a, c->L_g, B, T, C, c->nh_g);
    take_normA(a, &v->capdec.ln_f, (size_t)B * T, C);
    v->capdec.logits = take(a, (size_t)B * c->cap_len * c->vocab);
    v->capdec.probs = take(a, (size_t)B * c->cap_len * c->vocab);
    a->part_start[NUM_ACT_PARTS] = a->used;
}

static inline void acts_views_free(ActViews* v) {
    free(v->vit.blocks);
    free(v->adapter.blocks);
    free(v->textenc.blocks);
    free(v->dit.blocks);
    free(v->capdec.blocks);
}

// ----------------------------------------------------------------------------
// checkpoints: header, all parameters in layout order, the CRC32 trailer (doc/formats.md)

// The tensors of some groups as runs of consecutive memory (the data-parallel sums go one run
// at a time): the next run at or after tensor *i, as its first float and its length; *i moves
// past it. Returns 0 when no tensor of the groups is left.
static inline int next_group_run(const TensorInfo* tensors, int num_tensors, int groups, int* i, size_t* start, size_t* len) {
    while (*i < num_tensors && !(groups & 1 << tensors[*i].group)) { (*i)++; }
    if (*i == num_tensors) { return 0; }
    int j = *i + 1;
    while (j < num_tensors && (groups & 1 << tensors[j].group) && tensors[j].offset == tensors[j - 1].offset + tensors[j - 1].numel) { j++; }
    *start = tensors[*i].offset;
    *len = tensors[j - 1].offset + tensors[j - 1].numel - *start;
    *i = j;
    return 1;
}

// number of parameters a config implies, and (optionally) the tensor table
static inline size_t count_params(const Config* c, TensorInfo** table, int* count) {
    Arena a;
    memset(&a, 0, sizeof a);
    a.table = NULL;
    ParamViews views;
    if (table) { a.table = (TensorInfo*)mallocCheck(sizeof(TensorInfo)); a.capacity = 1; }
    params_layout(&views, &a, c);
    params_views_free(&views);
    if (table) { *table = a.table; *count = a.count; }
    return a.used;
}

static inline void checkpoint_write(const char* path, const Config* c, const float* params, size_t num_params) {
    FILE* fp = atomic_open(path); // a crash never leaves a half-written checkpoint
    header_write(fp, path, &CHECKPOINT_FORMAT, c, (int)num_params);
    fwriteCheck(params, sizeof(float), num_params, fp, path);
    crc_append(fp, path);
    atomic_commit(fp, path);
}

// reads the config of a checkpoint and returns its open file, positioned at the parameters
static inline FILE* checkpoint_open(const char* path, Config* c, size_t* num_params) {
    FILE* fp = readOpenCheck(path, format_max_bytes(&CHECKPOINT_FORMAT));
    int stored = header_read_crc(fp, path, &CHECKPOINT_FORMAT, c);
    size_t expected = count_params(c, NULL, NULL);
    if ((size_t)stored != expected) {
        fail("'%s' says it holds %d parameters but its config implies %zu", path, stored, expected);
    }
    *num_params = expected;
    return fp;
}

#endif
