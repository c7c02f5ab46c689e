/*
The VLV pipeline: the command line, the data, the four training stages, checkpoints and
resumption, and the evaluation. Host-side code shared by train_vlv.c and train_vlv.cu: it
drives the model only through the interface vlvc/vlv.h, which both of them implement,
always with host arrays.

  stage 0   text-to-image: text encoder + DiT learn to draw captions (EMA kept for sampling)
  stage 0b  language model: the caption GPT learns caption text
  stage 1   VLV: vision encoder + adapter learn z, through the frozen decoder, from images only
  stage 2   captions: prefix MLP + GPT learn to write captions from TextEnc(z), K pairs only
  eval      caption accuracy, round trip, text-to-image accuracy, as exact numbers
*/
#ifndef VLVC_PIPELINE_H
#define VLVC_PIPELINE_H

#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "vlv.h"
#include "model.h" // checkpoint_open: a checkpoint's config
#include "sources.h"

#define TRAIN_STATE_MAGIC 20261129
#define TRAIN_STATE_VERSION 1
#define CAPTION_MAX 256

// ----------------------------------------------------------------------------
// settings: every one is a flag; presets set a consistent group of them

typedef struct {
    Config model;
    int batch;
    int steps[NUM_OBJECTIVES];   // per stage
    float lr[NUM_OBJECTIVES];
    float warmup;                // fraction of a stage's steps with a linear warm-up, then cosine to lr/10
    float weight_decay, beta1;
    float grad_clip[NUM_OBJECTIVES]; // per stage: the global gradient-norm clip
    float beta2[NUM_OBJECTIVES];     // per stage: AdamW's second-moment decay
    float clip_z;                // stage 1: each image's gradient at z to at most clip_z x the batch median (0: off)
    float ema_decay;             // stage 0's EMA of the decoder
    float caption_dropout;       // stage 0: probability of the empty caption
    int K;                       // captioned pairs for stage 2
    int unfreeze_encoder;        // stage 2 also trains the vision encoder and the adapter
    int max_objects;             // shapes per image (1..3)
    uint64_t seed;               // weights, noise and the shapes world
    int eval_n;                  // held-out images in the evaluation
    int sample_steps;            // DDIM steps
    float guidance;              // classifier-free guidance w
    int log_every, eval_every, ckpt_every;
    int baseline;                // also train the no-stage-1 captioner
    int threads;
    int fresh;
    int stop_after;              // stop (resumably) after this many steps of this invocation; 0: never
    float peak_gflops;           // the machine's fp32 peak for the "% of peak" figure; 0: estimate
    int export_n;                // write the world's splits as dataset files and stop; 0: train
    int bench;                   // N: time N repeats of each stage's step and of inference, and stop; 0: train
    char data[1024];             // the examples: shapes, fashion-mnist[:DIR] or folder:DIR (vlvc/sources.h)
    char eval_model[1024];       // only evaluate this checkpoint (e.g. one the PyTorch twin trained)
    char from_stage[1024];       // "0b", "1" or "2": retrain from this stage on, from the previous stage's checkpoint
    char out_dir[1024];
    char preset[32];
} Settings;

static void settings_preset(Settings* s, const char* name) {
    memset(s, 0, sizeof *s);
    snprintf(s->preset, sizeof s->preset, "%s", name);
    Config m = { .img_size = 32, .patch = 4, .n_q = 16, .vocab = 0, .cap_len = 16,
                 .d_v = 96, .L_v = 3, .nh_v = 3, .L_a = 2, .nh_a = 3,
                 .d_t = 96, .L_t = 2, .nh_t = 3, .d_d = 96, .L_d = 4, .nh_d = 3, .d_freq = 64,
                 .d_g = 96, .L_g = 2, .nh_g = 3, .prediction = PREDICT_EPS, .n_timesteps = 1000 };
    s->model = m;
    s->batch = 32;
    int steps[NUM_OBJECTIVES] = { 5000, 500, 2000, 1000 };
    // stage 1 at 3e-4: at 1e-3 z grew to 6x the token embeddings' norm (v-prediction) and the
    // captioner learned less (doc/results.md: 15.6% vs 57.0% exact with the same decoder)
    float lr[NUM_OBJECTIVES] = { 1e-3f, 1e-3f, 3e-4f, 1e-3f };
    memcpy(s->steps, steps, sizeof steps);
    memcpy(s->lr, lr, sizeof lr);
    s->warmup = 0.05f;
    s->weight_decay = 0.0f;
    s->beta1 = 0.9f;
    for (int o = 0; o < NUM_OBJECTIVES; o++) {
        s->grad_clip[o] = 1.0f;
        s->beta2[o] = 0.999f;
    }
    s->ema_decay = 0.995f;
    s->caption_dropout = 0.1f;
    s->K = 500;
    s->max_objects = 1;
    snprintf(s->data, sizeof s->data, "shapes");
    s->seed = 1337;
    s->eval_n = 128;
    s->sample_steps = 25;
    s->guidance = 1.0f; // w = 2 (the paper's) turns this decoder's shapes into speckled blobs: results.md, measurement 6
    s->log_every = 50;
    s->eval_every = 1000;
    s->ckpt_every = 500;
    s->threads = 0;
    if (strcmp(name, "demo") == 0) {
        Config d = m;
        d.d_v = d.d_t = d.d_d = d.d_g = 48;
        d.L_v = 2; d.L_a = 1; d.L_t = 1; d.L_d = 2; d.L_g = 1;
        d.nh_v = d.nh_a = d.nh_t = d.nh_d = d.nh_g = 2;
        d.d_freq = 32;
        s->model = d;
        s->batch = 16;
        int ds[NUM_OBJECTIVES] = { 150, 60, 60, 60 };
        memcpy(s->steps, ds, sizeof ds);
        s->eval_n = 32;
        s->sample_steps = 10;
        s->log_every = 10;
        s->eval_every = 75;
        s->ckpt_every = 50;
    } else if (strcmp(name, "full") == 0) {
        Config f = m;
        f.d_v = f.d_t = f.d_d = f.d_g = 128;
        f.L_v = 4; f.L_d = 6; f.L_g = 4;
        f.nh_v = f.nh_a = f.nh_t = f.nh_d = f.nh_g = 4;
        s->model = f;
        int fs[NUM_OBJECTIVES] = { 30000, 3000, 20000, 3000 };
        float fl[NUM_OBJECTIVES] = { 1e-3f, 1e-3f, 3e-4f, 3e-4f };
        memcpy(s->steps, fs, sizeof fs);
        memcpy(s->lr, fl, sizeof fl);
        // stage 1 (and 2) against gradient spikes: single images whose gradient at z the frozen
        // text encoder amplifies ~2000x (--clip_z clips them), a global clip at ~8x the usual
        // norm, and a second moment with a 20-step memory instead of 1,000, so that a spike
        // stops damping the steps after a few hundred; without them stage 1 collapsed
        // (doc/results.md, measurements 8-10)
        float fc[NUM_OBJECTIVES] = { 1.0f, 1.0f, 0.05f, 0.05f }, fb[NUM_OBJECTIVES] = { 0.999f, 0.999f, 0.95f, 0.95f };
        memcpy(s->grad_clip, fc, sizeof fc);
        memcpy(s->beta2, fb, sizeof fb);
        s->clip_z = 10.0f;
        s->ema_decay = 0.999f;
        s->eval_n = 512;
        s->sample_steps = 50;
        s->eval_every = 2500;
        s->ckpt_every = 500;
        s->baseline = 1;
    } else if (strcmp(name, "default") != 0) {
        fail("unknown preset '%s': choose default, demo or full", name);
    }
    snprintf(s->out_dir, sizeof s->out_dir, "runs/%s", name);
}

// the flag table: name, kind, where, help
enum { FLAG_INT, FLAG_FLOAT, FLAG_STAGES, FLAG_U64, FLAG_STR, FLAG_PRED }; // FLAG_STAGES: float[NUM_OBJECTIVES]
typedef struct { const char* name; int kind; void* ptr; const char* help; } Flag;

static int settings_flags(Settings* s, Flag* f) {
    Config* m = &s->model;
    int n = 0;
#define FLAG(nm, kind, ptr, help) f[n++] = (Flag){ nm, kind, ptr, help }
    FLAG("--out", FLAG_STR, s->out_dir, "run folder: log, checkpoints, vocabulary, PNG grids");
    FLAG("--fresh", FLAG_INT, &s->fresh, "1: start over even if the run folder holds a run");
    FLAG("--from", FLAG_STR, s->from_stage, "0b, 1 or 2: train again from this stage on, starting from the run folder's checkpoint of the stage before");
    FLAG("--stop_after", FLAG_INT, &s->stop_after, "stop after this many training steps (0: never); rerun to resume");
    FLAG("--eval_model", FLAG_STR, s->eval_model, "only evaluate this checkpoint (its config; vocab.txt of the shapes world)");
    FLAG("--export", FLAG_INT, &s->export_n, "N: write the splits (N stage-0 and N stage-1 images, the K pairs, the test set) as dataset files (doc/data.md) and stop");
    FLAG("--bench", FLAG_INT, &s->bench, "N: time N training steps of each stage and N one-image inferences (median), write bench.bin for dev/bench/bench_torch.py, and stop");
    FLAG("--threads", FLAG_INT, &s->threads, "OpenMP threads (0: all cores)");
    FLAG("--peak", FLAG_FLOAT, &s->peak_gflops, "fp32 peak GFLOP/s for the % of peak (0: estimate it: CPU threads x 8 lanes x 2 FMA x 2 x clock; GPU SMs x FP32 lanes x 2 x clock)");
    FLAG("--seed", FLAG_U64, &s->seed, "seed of the weights, the noise and the shapes world");
    FLAG("--data", FLAG_STR, s->data, "the examples: shapes (the embedded world), fashion-mnist[:DIR] or folder:DIR (PNG/JPEG + captions.tsv)");
    FLAG("--objects", FLAG_INT, &s->max_objects, "shapes per image, 1 to 3 (the shapes world)");
    FLAG("--batch", FLAG_INT, &s->batch, "images per step");
    FLAG("--steps0", FLAG_INT, &s->steps[STAGE0], "stage 0 (text-to-image) steps");
    FLAG("--steps0b", FLAG_INT, &s->steps[STAGE0B], "stage 0b (language model) steps");
    FLAG("--steps1", FLAG_INT, &s->steps[STAGE1], "stage 1 (VLV, images only) steps");
    FLAG("--steps2", FLAG_INT, &s->steps[STAGE2], "stage 2 (captions) steps");
    FLAG("--lr0", FLAG_FLOAT, &s->lr[STAGE0], "stage 0 peak learning rate");
    FLAG("--lr0b", FLAG_FLOAT, &s->lr[STAGE0B], "stage 0b peak learning rate");
    FLAG("--lr1", FLAG_FLOAT, &s->lr[STAGE1], "stage 1 peak learning rate");
    FLAG("--lr2", FLAG_FLOAT, &s->lr[STAGE2], "stage 2 peak learning rate");
    FLAG("--warmup", FLAG_FLOAT, &s->warmup, "warm-up fraction of each stage (then cosine to lr/10)");
    FLAG("--wd", FLAG_FLOAT, &s->weight_decay, "AdamW weight decay (matrices only)");
    FLAG("--clip", FLAG_STAGES, s->grad_clip, "gradient-norm clipping: one value for every stage, or one per stage (0,0b,1,2)");
    FLAG("--beta2", FLAG_STAGES, s->beta2, "AdamW's second-moment decay: one value for every stage, or one per stage (0,0b,1,2)");
    FLAG("--clip_z", FLAG_FLOAT, &s->clip_z, "stage 1: scale each image's gradient at z to at most this many times the batch's median (0: off; else at least 1)");
    FLAG("--ema", FLAG_FLOAT, &s->ema_decay, "EMA decay of the stage-0 decoder");
    FLAG("--dropout", FLAG_FLOAT, &s->caption_dropout, "stage 0 caption dropout");
    FLAG("--K", FLAG_INT, &s->K, "captioned pairs for stage 2");
    FLAG("--unfreeze", FLAG_INT, &s->unfreeze_encoder, "1: stage 2 also trains the vision encoder and adapter");
    FLAG("--baseline", FLAG_INT, &s->baseline, "1: also train and score the no-stage-1 captioner");
    FLAG("--eval_n", FLAG_INT, &s->eval_n, "held-out images in the evaluation");
    FLAG("--sample_steps", FLAG_INT, &s->sample_steps, "DDIM steps when sampling");
    FLAG("--guidance", FLAG_FLOAT, &s->guidance, "classifier-free guidance w of the round trips and T2I samples (1: the caption's prediction alone)");
    FLAG("--log_every", FLAG_INT, &s->log_every, "steps between progress lines");
    FLAG("--eval_every", FLAG_INT, &s->eval_every, "stage-0 steps between health checks (gap, samples)");
    FLAG("--ckpt_every", FLAG_INT, &s->ckpt_every, "steps between checkpoints");
    FLAG("--img", FLAG_INT, &m->img_size, "image size");
    FLAG("--patch", FLAG_INT, &m->patch, "patch size");
    FLAG("--n_q", FLAG_INT, &m->n_q, "learned queries = text-encoder length");
    FLAG("--cap_len", FLAG_INT, &m->cap_len, "caption-decoder length");
    FLAG("--d_v", FLAG_INT, &m->d_v, "vision encoder and adapter width");
    FLAG("--L_v", FLAG_INT, &m->L_v, "vision encoder blocks");
    FLAG("--nh_v", FLAG_INT, &m->nh_v, "vision encoder heads");
    FLAG("--L_a", FLAG_INT, &m->L_a, "adapter blocks");
    FLAG("--nh_a", FLAG_INT, &m->nh_a, "adapter heads");
    FLAG("--d_t", FLAG_INT, &m->d_t, "text encoder width");
    FLAG("--L_t", FLAG_INT, &m->L_t, "text encoder blocks");
    FLAG("--nh_t", FLAG_INT, &m->nh_t, "text encoder heads");
    FLAG("--d_d", FLAG_INT, &m->d_d, "DiT width");
    FLAG("--L_d", FLAG_INT, &m->L_d, "DiT blocks");
    FLAG("--nh_d", FLAG_INT, &m->nh_d, "DiT heads");
    FLAG("--d_freq", FLAG_INT, &m->d_freq, "timestep features");
    FLAG("--d_g", FLAG_INT, &m->d_g, "caption decoder width");
    FLAG("--L_g", FLAG_INT, &m->L_g, "caption decoder blocks");
    FLAG("--nh_g", FLAG_INT, &m->nh_g, "caption decoder heads");
    FLAG("--prediction", FLAG_PRED, &m->prediction, "eps or v");
#undef FLAG
    return n;
}

static void usage(const char* prog, Settings* s) {
    Flag flags[64];
    int n = settings_flags(s, flags);
    printf("usage: %s [--preset default|demo|full] [flags]\n\n"
           "Trains the miniature VLV on the shapes world, stage by stage, into the run folder,\n"
           "resuming an interrupted run, then evaluates it. Flags (default preset's value):\n", prog);
    for (int i = 0; i < n; i++) {
        char value[64];
        switch (flags[i].kind) {
            case FLAG_INT: snprintf(value, sizeof value, "%d", *(int*)flags[i].ptr); break;
            case FLAG_FLOAT: snprintf(value, sizeof value, "%g", *(float*)flags[i].ptr); break;
            case FLAG_STAGES: {
                const float* x = (const float*)flags[i].ptr;
                int same = 1;
                for (int o = 1; o < NUM_OBJECTIVES; o++) { same &= x[o] == x[0]; }
                if (same) { snprintf(value, sizeof value, "%g", x[0]); }
                else { snprintf(value, sizeof value, "%g,%g,%g,%g", x[STAGE0], x[STAGE0B], x[STAGE1], x[STAGE2]); }
                break;
            }
            case FLAG_U64: snprintf(value, sizeof value, "%llu", (unsigned long long)*(uint64_t*)flags[i].ptr); break;
            case FLAG_PRED: snprintf(value, sizeof value, "%s", *(int*)flags[i].ptr ? "v" : "eps"); break;
            default: snprintf(value, sizeof value, "%s", (char*)flags[i].ptr);
        }
        printf("  %-15s %-12s %s\n", flags[i].name, value, flags[i].help);
    }
}

// parses the command line into s; a bad flag or value exits with a message
static void settings_parse(Settings* s, int argc, char** argv) {
    const char* preset = "default";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { settings_preset(s, preset); usage(argv[0], s); exit(0); }
        if (strcmp(argv[i], "--preset") == 0) {
            if (i + 1 >= argc) fail("--preset needs a value: default, demo or full");
            preset = argv[++i];
        }
    }
    settings_preset(s, preset);
    Flag flags[64];
    int n = settings_flags(s, flags);
    for (int i = 1; i < argc; i += 2) {
        if (strcmp(argv[i], "--preset") == 0) { continue; }
        int k = 0;
        while (k < n && strcmp(flags[k].name, argv[i]) != 0) { k++; }
        if (k == n) fail("unknown flag '%s' (%s -h lists them)", argv[i], argv[0]);
        if (i + 1 >= argc) fail("flag %s needs a value", argv[i]);
        const char* v = argv[i + 1];
        char* end = NULL;
        errno = 0;
        switch (flags[k].kind) {
            case FLAG_INT: {
                long x = strtol(v, &end, 10);
                if (*v == '\0' || *end != '\0' || errno || x < 0 || x > 100000000) fail("flag %s: '%s' is not a whole number in [0, 1e8]", argv[i], v);
                *(int*)flags[k].ptr = (int)x;
                break;
            }
            case FLAG_U64: {
                unsigned long long x = strtoull(v, &end, 10);
                if (*v == '\0' || *end != '\0' || errno || v[0] == '-') fail("flag %s: '%s' is not a non-negative whole number", argv[i], v);
                *(uint64_t*)flags[k].ptr = x;
                break;
            }
            case FLAG_FLOAT: {
                float x = strtof(v, &end);
                if (*v == '\0' || *end != '\0' || errno || !is_finite_float(x) || x < 0.0f) fail("flag %s: '%s' is not a finite non-negative number", argv[i], v);
                *(float*)flags[k].ptr = x;
                break;
            }
            case FLAG_STAGES: { // "0.05" for every stage, or "1,1,0.05,0.05" for stages 0, 0b, 1, 2
                float x[NUM_OBJECTIVES];
                int got = 0, ok = 1;
                for (const char* p = v; ok; p = end + 1) {
                    x[got] = strtof(p, &end);
                    ok = end != p && !errno && is_finite_float(x[got]) && x[got] >= 0.0f;
                    got += ok;
                    if (!ok || *end == '\0' || got == NUM_OBJECTIVES) break;
                    ok = *end == ',';
                }
                if (!ok || *end != '\0' || (got != 1 && got != NUM_OBJECTIVES)) {
                    fail("flag %s: '%s' is neither one finite non-negative number nor %d of them separated by commas (stages 0, 0b, 1, 2)",
                         argv[i], v, NUM_OBJECTIVES);
                }
                for (int o = 0; o < NUM_OBJECTIVES; o++) { ((float*)flags[k].ptr)[o] = x[got == 1 ? 0 : o]; }
                break;
            }
            case FLAG_PRED:
                if (strcmp(v, "eps") == 0) { *(int*)flags[k].ptr = PREDICT_EPS; }
                else if (strcmp(v, "v") == 0) { *(int*)flags[k].ptr = PREDICT_V; }
                else { fail("flag %s: '%s' is neither eps nor v", argv[i], v); }
                break;
            default:
                if (strlen(v) >= sizeof s->out_dir) fail("flag %s: the path is too long", argv[i]);
                snprintf((char*)flags[k].ptr, sizeof s->out_dir, "%s", v);
        }
    }
    if (s->batch < 1) fail("--batch must be at least 1");
    if (s->max_objects < 1 || s->max_objects > 3) fail("--objects must be 1, 2 or 3");
    int need = shapes_max_tokens(s->max_objects);
    if (strcmp(s->data, "shapes") == 0 && (s->model.n_q < need || s->model.cap_len < need)) {
        fail("captions of up to %d objects take up to %d tokens: use --n_q %d --cap_len %d (or more)", s->max_objects, need, need, need);
    }
    if (s->K < 1) fail("--K must be at least 1");
    if (s->sample_steps < 1 || s->sample_steps > s->model.n_timesteps) fail("--sample_steps must be in [1, %d]", s->model.n_timesteps);
    if (s->log_every < 1 || s->eval_every < 1 || s->ckpt_every < 1) fail("--log_every, --eval_every and --ckpt_every must be at least 1");
    for (int o = 0; o < NUM_OBJECTIVES; o++) {
        if (!(s->beta2[o] < 1.0f)) fail("--beta2 must be in [0, 1) (%s: %g)", objective_name[o], s->beta2[o]);
    }
    if (!(s->clip_z == 0.0f || s->clip_z >= 1.0f)) fail("--clip_z must be 0 (off) or at least 1");
    if (s->ema_decay >= 1.0f || s->caption_dropout > 1.0f || s->warmup > 1.0f) fail("--ema must be below 1, --dropout and --warmup at most 1");
}

// ----------------------------------------------------------------------------
// the run: model, data, buffers

typedef struct {
    Settings s;
    Model* model;
    Vocab vocab;
    DataSource src;               // where the examples come from (--data)
    int B, H;
    size_t img;                   // floats in a batch of images
    float *images, *noise, *ctx, *ctx_empty, *recon; // [B,H,W,3] and [B,N_q,d_t]
    int *text_tokens, *caption_tokens, *timesteps, *generated;
    Scene* truth;                 // [B]
    char (*captions)[CAPTION_MAX];// [B]
    FILE* log;
    int next_stage, next_step;    // where the run stands (resume)
    int steps_done;               // training steps of this invocation (--stop_after)
    float peak;                   // fp32 peak GFLOP/s
} Run;

// progress goes to stdout and to the run's log
static void say(Run* r, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    if (r->log) {
        va_start(ap, fmt);
        vfprintf(r->log, fmt, ap);
        va_end(ap);
        fflush(r->log);
    }
}

static double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// a file of the run folder
static void run_path(const Run* r, char* out, size_t cap, const char* name) {
    if (snprintf(out, cap, "%s/%s", r->s.out_dir, name) >= (int)cap) fail("the path %s/%s is too long", r->s.out_dir, name);
}

// a deterministic stream per (seed, stage, step): the same batch whenever a step is (re)run
static uint64_t stream_seed(uint64_t seed, int stage, uint64_t step) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + (uint64_t)stage * 0xBF58476D1CE4E5B9ull + step * 0x94D049BB133111EBull + 1;
    z ^= z >> 31;
    return z ? z : 1;
}

// B examples of a split: images, captions (text and tokens) and the true scenes (shapes world).
// index_of(b) picks the example: consecutive for streams, drawn from [0, K) for stage 2.
static void make_examples(Run* r, int split, uint64_t first, uint64_t modulo, uint64_t* rng) {
    const Config* c = model_config(r->model);
    for (int b = 0; b < r->B; b++) {
        uint64_t index = modulo ? random_u32(rng) % modulo : first + b;
        source_example(&r->src, split, index, r->images + (size_t)b * r->img / r->B, r->captions[b], CAPTION_MAX, &r->truth[b]);
        if (!vocab_encode(&r->vocab, r->captions[b], r->text_tokens + (size_t)b * c->n_q, c->n_q)) {
            fail("the caption '%s' does not fit in n_q = %d tokens: raise --n_q", r->captions[b], c->n_q);
        }
        if (!vocab_encode(&r->vocab, r->captions[b], r->caption_tokens + (size_t)b * c->cap_len, c->cap_len)) {
            fail("the caption '%s' does not fit in cap_len = %d tokens: raise --cap_len", r->captions[b], c->cap_len);
        }
    }
}

static void make_noise(Run* r, uint64_t* rng) {
    for (size_t i = 0; i < r->img; i++) { r->noise[i] = random_normal(rng); }
    for (int b = 0; b < r->B; b++) { r->timesteps[b] = (int)(random_u32(rng) % model_config(r->model)->n_timesteps); }
}

// the run's batch buffers as the model's input
static Batch run_batch(const Run* r) {
    Batch b = { r->images, r->text_tokens, r->caption_tokens, r->noise, r->timesteps };
    return b;
}

// the training batch of one step of a stage
static Batch stage_batch(Run* r, Objective o, int step) {
    uint64_t rng = stream_seed(r->s.seed, o, (uint64_t)step);
    uint64_t first = (uint64_t)step * r->B;
    switch (o) {
        case STAGE0:
        case STAGE0B: make_examples(r, SPLIT_T2I, first, 0, &rng); break;
        case STAGE1: make_examples(r, SPLIT_UNPAIRED, first, 0, &rng); break;
        default: make_examples(r, SPLIT_CAPTIONED, 0, (uint64_t)r->s.K, &rng); // the K pairs, over and over
    }
    if (o == STAGE0) { caption_dropout(r->text_tokens, r->B, model_config(r->model)->n_q, r->s.caption_dropout, &rng); }
    make_noise(r, &rng);
    return run_batch(r);
}

// warm-up, then cosine from lr down to lr/10
static float stage_lr(const Run* r, Objective o, int step) {
    float peak = r->s.lr[o];
    int total = r->s.steps[o], warm = (int)(r->s.warmup * total);
    if (step < warm) { return peak * (step + 1) / warm; }
    float progress = total > warm ? (float)(step - warm) / (total - warm) : 1.0f;
    return peak * (0.1f + 0.9f * 0.5f * (1.0f + cosf(3.14159265f * progress)));
}

// the stages in the order they run; the training state counts them (BASELINE is optional)
enum { BASELINE = NUM_OBJECTIVES, ALL_DONE };
static const char* stage_title[ALL_DONE] = {
    "stage 0: text-to-image (text encoder + DiT learn to draw captions)",
    "stage 0b: language model (the caption GPT learns caption text)",
    "stage 1: VLV (vision encoder + adapter learn z through the frozen decoder, images only)",
    "stage 2: caption distillation (prefix MLP + GPT learn to caption TextEnc(z), K pairs)",
    "baseline: the same captioner without stage 1 (vision encoder, adapter, prefix MLP and GPT\n"
    "  trained end to end on the same K pairs, from the stage-0b weights)",
};
static const char* stage_name[ALL_DONE + 1] = { "stage0", "stage0b", "stage1", "stage2", "baseline", "evaluation" };
static const char* stage_checkpoint[ALL_DONE] = { "stage0.bin", "stage0b.bin", "stage1.bin", "model.bin", "baseline.bin" };

// ----------------------------------------------------------------------------
// checkpoints: finished stages as model checkpoints (doc/formats.md), and one training
// state (weights, AdamW moments, EMA, where the run stands) that a rerun resumes from.
// Both are written to a temporary file and renamed: an interruption never loses the last one.

static const char* train_state_buffers[] = { "params", "adam m", "adam v", "ema" };

static void train_state_save(Run* r) {
    char path[1100], tmp[1200];
    run_path(r, path, sizeof path, "train_state.bin");
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) fail("the path %s.tmp is too long", path);
    FILE* fp = fopenCheck(tmp, "wb");
    header_write(fp, tmp, TRAIN_STATE_MAGIC, TRAIN_STATE_VERSION, model_config(r->model), (int)model_num_params(r->model));
    int where[4] = { r->next_stage, r->next_step, model_adam_step(r->model), r->B };
    fwriteCheck(where, sizeof(int), 4, fp, tmp);
    float* buf = (float*)mallocCheck(model_num_params(r->model) * sizeof(float));
    for (int k = 0; k < 4; k++) {
        model_buffer_read(r->model, k, buf);
        fwriteCheck(buf, sizeof(float), model_num_params(r->model), fp, tmp);
    }
    free(buf);
    fcloseCheck(fp, tmp);
    if (rename(tmp, path) != 0) fail("could not rename '%s' to '%s': %s", tmp, path, strerror(errno));
}

// loads the training state if the run folder has one; returns 0 when there is none
static int train_state_load(Run* r) {
    char path[1100];
    run_path(r, path, sizeof path, "train_state.bin");
    FILE* fp = fopen(path, "rb");
    if (!fp) { return 0; }
    long size = file_size(fp, path);
    Config c;
    int n = header_read(fp, path, TRAIN_STATE_MAGIC, TRAIN_STATE_VERSION, "training state", &c);
    if (memcmp(&c, model_config(r->model), sizeof c) != 0 || (size_t)n != model_num_params(r->model)) {
        fail("'%s' holds a run of another model config; resume with the same flags, or start over with --fresh 1", path);
    }
    long want = HEADER_INTS * 4 + 4 * 4 + 4L * 4 * (long)model_num_params(r->model);
    if (size != want) fail("'%s' has %ld bytes, expected %ld (truncated or corrupt); start over with --fresh 1", path, size, want);
    int where[4];
    freadCheck(where, sizeof(int), 4, fp, path);
    if (where[0] < 0 || where[0] > ALL_DONE || where[1] < 0 || where[2] < 0 || where[3] != r->B) {
        fail("'%s' is corrupt or from another batch size (stage %d, step %d, batch %d); start over with --fresh 1", path, where[0], where[1], where[3]);
    }
    r->next_stage = where[0];
    r->next_step = where[1];
    model_set_adam_step(r->model, where[2]);
    float* buf = (float*)mallocCheck(model_num_params(r->model) * sizeof(float));
    for (int k = 0; k < 4; k++) {
        freadCheck(buf, sizeof(float), model_num_params(r->model), fp, path);
        for (size_t i = 0; i < model_num_params(r->model); i++) {
            if (!is_finite_float(buf[i])) fail("'%s' holds a NaN or infinity in its %s", path, train_state_buffers[k]);
        }
        model_buffer_write(r->model, k, buf);
    }
    free(buf);
    fclose(fp);
    return 1;
}

// ----------------------------------------------------------------------------
// evaluation

// exact scenes, and attributes (shape, colour, size, cell) right per true object
typedef struct { int n, exact, objects, attr[NUM_ATTRS]; double mse; } Score;

static void score_add(Score* sc, const Scene* truth, const Scene* guess) {
    int exact, attr[NUM_ATTRS];
    scene_compare(truth, guess, &exact, attr);
    sc->n++;
    sc->exact += exact;
    sc->objects += truth->n;
    for (int k = 0; k < NUM_ATTRS; k++) { sc->attr[k] += attr[k]; }
}
static float score_exact(const Score* sc) { return sc->n ? (float)sc->exact / sc->n : 0.0f; }
static float score_attr(const Score* sc) {
    int right = 0;
    for (int k = 0; k < NUM_ATTRS; k++) { right += sc->attr[k]; }
    return sc->objects ? right / (float)(NUM_ATTRS * sc->objects) : 0.0f;
}
// "shape 99.2%, colour 99.6%, size 100.0%, place 58.2%": which attribute a score loses on
static void score_attrs_text(const Score* sc, char* out, size_t cap) {
    static const char* names[NUM_ATTRS] = { "shape", "colour", "size", "place" };
    size_t used = 0;
    for (int k = 0; k < NUM_ATTRS && used < cap; k++) {
        used += (size_t)snprintf(out + used, cap - used, "%s%s %.1f%%", k ? ", " : "", names[k],
                                 sc->objects ? 100.0f * sc->attr[k] / sc->objects : 0.0f);
    }
}
// one row of the evaluation table: "| label | 57.4% (shape 99.2%, colour 99.6%, ...) |"
static void say_scored_row(Run* r, const char* label, float fraction, const Score* sc) {
    char attrs[128];
    score_attrs_text(sc, attrs, sizeof attrs);
    say(r, "| %s | %.1f%% (%s) |\n", label, 100 * fraction, attrs);
}

// guided DDIM from fresh noise on the contexts in r->ctx -> r->recon, against the empty
// caption's context (computed here: the decoder's weights change during stage 0)
static void sample_images(Run* r, uint64_t seed) {
    empty_context(r->model, r->ctx_empty);
    uint64_t rng = seed;
    for (size_t i = 0; i < r->img; i++) { r->recon[i] = random_normal(&rng); }
    ddim_sample(r->model, r->recon, r->ctx, r->ctx_empty, r->s.guidance, r->s.sample_steps, r->s.sample_steps);
}

// the conditioning gap of the decoder: its loss on a fixed held-out batch with the true
// captions and with the empty caption. A decoder that ignores its caption has no gap, and
// then stage 1 has nothing to learn from. With with_z, also the loss with the context
// TextEnc(z) of the images themselves (stage 1's loss on that batch): how much of the gap
// the encoder has recovered.
static void conditioning_gap(Run* r, float* with_caption, float* without, float* with_z) {
    uint64_t rng = stream_seed(r->s.seed, 99, 0);
    make_examples(r, SPLIT_TEST, 0, 0, &rng);
    make_noise(r, &rng);
    Batch b = { r->images, r->text_tokens, r->caption_tokens, r->noise, r->timesteps };
    *with_caption = vlv_forward(r->model, STAGE0, &b);
    if (with_z) { *with_z = vlv_forward(r->model, STAGE1, &b); }
    for (int i = 0; i < r->B; i++) { empty_caption(r->text_tokens + (size_t)i * model_config(r->model)->n_q, model_config(r->model)->n_q); }
    *without = vlv_forward(r->model, STAGE0, &b);
}

// text-to-image: draws the captions of held-out examples, and in the shapes world the oracle
// reads them back (other sources have no oracle: only the first batch is drawn, for the grid).
// With a tsv name, each prompt and what the oracle read go there, a line per example.
static Score eval_t2i(Run* r, const char* grid, const char* tsv) {
    Score sc;
    memset(&sc, 0, sizeof sc);
    int scored = r->src.kind == SOURCE_SHAPES;
    FILE* out = NULL;
    char tsv_path[1100];
    if (tsv && scored) {
        run_path(r, tsv_path, sizeof tsv_path, tsv);
        out = fopenCheck(tsv_path, "w");
        fprintf(out, "index\tprompt\toracle read\n");
    }
    for (int first = 0; first < (scored ? r->s.eval_n : 1); first += r->B) {
        uint64_t rng = 0;
        make_examples(r, SPLIT_TEST, (uint64_t)first, 0, &rng);
        text_context(r->model, r->text_tokens, r->ctx);
        sample_images(r, stream_seed(r->s.seed, 98, (uint64_t)first));
        for (int b = 0; b < r->B && first + b < r->s.eval_n && scored; b++) {
            Scene seen;
            oracle_parse(&seen, r->recon + (size_t)b * r->img / r->B, r->H);
            score_add(&sc, &r->truth[b], &seen);
            if (out) {
                char read[CAPTION_MAX];
                scene_caption(read, sizeof read, &seen);
                fprintf(out, "%d\t%s\t%s\n", first + b, r->captions[b], seen.n > 0 ? read : "(no shape read)");
            }
        }
        if (first == 0 && grid) {
            char path[1100], txt[1200];
            run_path(r, path, sizeof path, grid);
            if (snprintf(txt, sizeof txt, "%s.txt", path) >= (int)sizeof txt) fail("the path %s.txt is too long", path);
            png_write_grid(path, r->recon, r->B < 16 ? r->B : 16, r->H, 8, 4);
            FILE* fp = fopenCheck(txt, "w");
            for (int b = 0; b < r->B && b < 16; b++) { fprintf(fp, "%d\t%s\n", b, r->captions[b]); }
            fcloseCheck(fp, txt);
        }
    }
    if (out) { fcloseCheck(out, tsv_path); }
    return sc;
}

// captions (written to captions_file) and, unless roundtrip is NULL, round trips of held-out images
static void eval_vlv(Run* r, const char* captions_file, Score* captions, Score* roundtrip) {
    char path[1100];
    run_path(r, path, sizeof path, captions_file);
    FILE* out = fopenCheck(path, "w");
    fprintf(out, "index\ttruth\tcaption\n");
    memset(captions, 0, sizeof *captions);
    if (roundtrip) { memset(roundtrip, 0, sizeof *roundtrip); }
    const Config* c = model_config(r->model);
    size_t per = r->img / r->B;
    for (int first = 0; first < r->s.eval_n; first += r->B) {
        uint64_t rng = 0;
        make_examples(r, SPLIT_TEST, (uint64_t)first, 0, &rng);
        image_context(r->model, r->images, r->ctx);
        greedy_caption(r->model, r->generated, r->ctx);
        if (roundtrip) { sample_images(r, stream_seed(r->s.seed, 97, (uint64_t)first)); }
        for (int b = 0; b < r->B && first + b < r->s.eval_n; b++) {
            char text[CAPTION_MAX];
            vocab_decode(&r->vocab, r->generated + (size_t)b * c->cap_len, c->cap_len, text, sizeof text);
            Scene said, seen;
            memset(&said, 0, sizeof said);
            memset(&seen, 0, sizeof seen);
            if (r->src.kind == SOURCE_SHAPES) { // scene by scene, attribute by attribute
                if (!caption_parse(&said, text)) { said.n = -1; } // ungrammatical: scores as wrong
                score_add(captions, &r->truth[b], &said);
            } else { // right when it is the true caption
                captions->n++;
                captions->exact += strcmp(text, r->captions[b]) == 0;
            }
            fprintf(out, "%d\t%s\t%s\n", first + b, r->captions[b], text);
            if (!roundtrip) { continue; }
            if (r->src.kind == SOURCE_SHAPES) {
                oracle_parse(&seen, r->recon + b * per, r->H);
                score_add(roundtrip, &r->truth[b], &seen);
            } else {
                roundtrip->n++;
            }
            double se = 0.0;
            for (size_t i = 0; i < per; i++) { double d = r->recon[b * per + i] - r->images[b * per + i]; se += d * d; }
            roundtrip->mse += se / per;
        }
        if (first == 0 && roundtrip) { // originals | reconstructions, side by side
            int n = r->B < 8 ? r->B : 8;
            float* pairs = (float*)mallocCheck(2 * n * per * sizeof(float));
            for (int b = 0; b < n; b++) {
                memcpy(pairs + (2 * b) * per, r->images + b * per, per * sizeof(float));
                memcpy(pairs + (2 * b + 1) * per, r->recon + b * per, per * sizeof(float));
            }
            run_path(r, path, sizeof path, "roundtrip.png");
            png_write_grid(path, pairs, 2 * n, r->H, 4, 4);
            free(pairs);
        }
    }
    run_path(r, path, sizeof path, captions_file);
    fcloseCheck(out, path);
    if (roundtrip) { roundtrip->mse /= roundtrip->n ? roundtrip->n : 1; }
}

static void run_alloc(Run* r) {
    const Config* c = model_config(r->model);
    r->B = r->s.batch;
    r->H = c->img_size;
    r->img = (size_t)r->B * r->H * r->H * 3;
    size_t ctx = (size_t)r->B * c->n_q * c->d_t;
    r->images = (float*)mallocCheck(r->img * sizeof(float));
    r->noise = (float*)mallocCheck(r->img * sizeof(float));
    r->recon = (float*)mallocCheck(r->img * sizeof(float));
    r->ctx = (float*)mallocCheck(ctx * sizeof(float));
    r->ctx_empty = (float*)mallocCheck(ctx * sizeof(float));
    r->text_tokens = (int*)mallocCheck((size_t)r->B * c->n_q * sizeof(int));
    r->caption_tokens = (int*)mallocCheck((size_t)r->B * c->cap_len * sizeof(int));
    r->generated = (int*)mallocCheck((size_t)r->B * c->cap_len * sizeof(int));
    r->timesteps = (int*)mallocCheck(r->B * sizeof(int));
    r->truth = (Scene*)mallocCheck(r->B * sizeof(Scene));
    r->captions = (char(*)[CAPTION_MAX])mallocCheck((size_t)r->B * CAPTION_MAX);
}

static void run_free_buffers(Run* r) {
    free(r->images); free(r->noise); free(r->recon); free(r->ctx); free(r->ctx_empty);
    free(r->text_tokens); free(r->caption_tokens); free(r->generated); free(r->timesteps);
    free(r->truth); free(r->captions);
}

static void run_free(Run* r) {
    run_free_buffers(r);
    model_destroy(r->model);
    vocab_free(&r->vocab);
    source_free(&r->src);
    if (r->log) { fclose(r->log); }
}

// ----------------------------------------------------------------------------
// the stages


static void format_eta(char* out, size_t cap, double seconds) {
    int s = (int)(seconds + 0.5);
    if (s >= 3600) { snprintf(out, cap, "%dh%02dm", s / 3600, s % 3600 / 60); }
    else { snprintf(out, cap, "%dm%02ds", s / 60, s % 60); }
}

// the optimizer of objective o's steps (the baseline trains with stage 2's settings)
static AdamW stage_optimizer(const Settings* s, Objective o) {
    return (AdamW){ .lr = s->lr[o], .beta1 = s->beta1, .beta2 = s->beta2[o], .eps = 1e-8f,
                    .weight_decay = s->weight_decay, .grad_clip = s->grad_clip[o], .clip_z = s->clip_z };
}

// trains stage `stage` (objective o on `groups`) from r->next_step, checkpointing as it goes
static void run_stage(Run* r, int stage, Objective o, int groups) {
    Settings* s = &r->s;
    int total = s->steps[o];
    int clips_at_z = o == STAGE1 && s->clip_z > 0.0f; // vlv_backward clips in stage 1 only
    char clip_z[32] = "";
    if (clips_at_z) { snprintf(clip_z, sizeof clip_z, ", clip_z %g", s->clip_z); }
    say(r, "\n%s: %d steps of %d images, lr %g, clip %g, beta2 %g%s\n", stage_title[stage], total, r->B, s->lr[o],
        s->grad_clip[o], s->beta2[o], clip_z);
    if (r->next_step == 0) {
        vlv_reset_optimizer(r->model);
        if (o == STAGE0) { vlv_ema_update(r->model, groups, 0.0f); }
    } else {
        say(r, "resuming at step %d\n", r->next_step);
    }
    AdamW opt = stage_optimizer(s, o);
    double attention_flops, t_window = wall_seconds(), loss_sum = 0.0, norm_sum = 0.0;
    double flops_window = vlv_flops(&attention_flops);
    float norm_max = 0.0f;
    int window = 0, z_clipped = 0;
    for (int step = r->next_step; step < total; step++) {
        opt.lr = stage_lr(r, o, step);
        Batch batch = stage_batch(r, o, step);
        float loss = vlv_train_step(r->model, o, &batch, groups, &opt);
        if (!is_finite_float(loss)) {
            fail("%s step %d: the loss is %f. Stopped; the last good checkpoint in %s is kept.\n"
                 "  lower the learning rate (--lr%s) or the gradient clipping (--clip)", stage_name[stage], step, loss,
                 s->out_dir, o == STAGE0 ? "0" : o == STAGE0B ? "0b" : o == STAGE1 ? "1" : "2");
        }
        if (o == STAGE0) { vlv_ema_update(r->model, groups, s->ema_decay); }
        loss_sum += loss;
        norm_sum += model_grad_norm(r->model);
        if (model_grad_norm(r->model) > norm_max) { norm_max = model_grad_norm(r->model); }
        z_clipped += model_z_clipped(r->model);
        window++;
        if ((step + 1) % s->log_every == 0 || step + 1 == total) {
            double dt = wall_seconds() - t_window;
            double ms = 1e3 * dt / window, gflops = (vlv_flops(&attention_flops) - flops_window) / dt * 1e-9;
            char eta[32];
            format_eta(eta, sizeof eta, ms * 1e-3 * (total - step - 1));
            // the gradient norm (before the global clip; with --clip_z, after the clip at z): its
            // mean and largest value in the window, and how many images' gradients at z were scaled
            char clipped[48] = "";
            if (clips_at_z) { snprintf(clipped, sizeof clipped, ", %d clipped at z", z_clipped); }
            say(r, "%-8s step %6d/%d | loss %.5f | lr %.2e | norm %.3f (max %.3f%s) | %7.1f ms/step | %7.1f images/s | %5.1f GFLOP/s (%.0f%% of peak) | ETA %s\n",
                stage_name[stage], step + 1, total, loss_sum / window, opt.lr, norm_sum / window, norm_max, clipped, ms,
                r->B * 1e3 / ms, gflops, r->peak > 0 ? 100.0 * gflops / r->peak : 0.0, eta);
            t_window = wall_seconds();
            flops_window = vlv_flops(&attention_flops);
            loss_sum = norm_sum = 0.0;
            norm_max = 0.0f;
            window = z_clipped = 0;
        }
        if (o == STAGE0 && ((step + 1) % s->eval_every == 0 || step + 1 == total)) {
            vlv_ema_swap(r->model, groups); // health of the EMA decoder
            float with, without;
            conditioning_gap(r, &with, &without, NULL);
            char grid[64];
            snprintf(grid, sizeof grid, "t2i_step%06d.png", step + 1);
            Score t2i = eval_t2i(r, grid, NULL);
            vlv_ema_swap(r->model, groups);
            char oracle[200] = "", attrs[128]; // per attribute: a decoder blind to place words shows here
            if (r->src.kind == SOURCE_SHAPES) {
                score_attrs_text(&t2i, attrs, sizeof attrs);
                snprintf(oracle, sizeof oracle, "T2I oracle exact %.1f%% (%s) ", 100.0f * score_exact(&t2i), attrs);
            }
            say(r, "stage0  health at step %d (EMA weights): loss with caption %.5f, empty caption %.5f, "
                   "conditioning gap %.1f%%; %s(%s)\n", step + 1, with, without,
                100.0f * (without - with) / without, oracle, grid);
            t_window = wall_seconds();
            flops_window = vlv_flops(&attention_flops);
        }
        if (o == STAGE1 && ((step + 1) % s->eval_every == 0 || step + 1 == total)) {
            float with, without, with_z;
            conditioning_gap(r, &with, &without, &with_z);
            say(r, "stage1  health at step %d: decoder loss with TextEnc(z) %.5f, true caption %.5f, empty caption %.5f; "
                   "z recovers %.1f%% of the caption's gain\n", step + 1, with_z, with, without,
                100.0f * (without - with_z) / (without - with));
            t_window = wall_seconds();
            flops_window = vlv_flops(&attention_flops);
        }
        r->next_step = step + 1;
        if (r->next_step % s->ckpt_every == 0 && r->next_step < total) { train_state_save(r); }
        if (++r->steps_done == s->stop_after && r->next_step < total) {
            train_state_save(r);
            say(r, "stopped after %d steps as asked (--stop_after); run the same command again to resume\n", s->stop_after);
            run_free(r);
            exit(0);
        }
    }
    if (o == STAGE0) { vlv_ema_swap(r->model, groups); } // from here on, the decoder is its EMA
    r->next_stage = stage + 1;
    r->next_step = 0;
    char path[1100];
    run_path(r, path, sizeof path, stage_checkpoint[stage]);
    model_save(r->model, path);
    train_state_save(r);
    say(r, "%s done: wrote %s\n", stage_name[stage], path);
}

// ----------------------------------------------------------------------------
// --bench N: the speed of this build on the run's model config (dev/bench/bench_cpu.sh compares it
// with PyTorch on the same weights). Per stage, 2 untimed training steps, then N timed ones on
// the stage's real batches; then, with a batch of 1, N captions (ViT, adapter, text encoder,
// T_c - 1 caption-decoder passes) and N round trips (the same context, then guided DDIM:
// 2 DiT passes per step). The clock runs from the ready inputs (as dev/bench/bench_torch.py's) to
// the end of the step; building the inputs on the host (rendering, tokenizing, the noise) is
// timed apart. Prints the median of each as
//   BENCH <stage0|stage0b|stage1|stage2|caption|roundtrip> <ms> ms <images/s> images/s <GFLOP/s> GFLOP/s <attention share> % attention <ms> ms inputs
// and writes the timed weights to bench.bin in the run folder.

static int double_cmp(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

static double median_of(double* x, int n) {
    qsort(x, n, sizeof(double), double_cmp);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

// times one item (a training step or an inference) `repeats` times; returns the median in ms,
// the GFLOP/s of the timed repeats and the share of their FLOPs that attention did. `inputs`
// builds each repeat's inputs (the batch or the image: host work) before the clock starts, as
// dev/bench/bench_torch.py times its steps on ready batches; *inputs_ms gets its median, reported apart.
typedef void (*BenchItem)(Run* r, int o, int repeat);
static double bench_median_ms(Run* r, BenchItem inputs, BenchItem item, int o, int warmup, int repeats, double* gflops,
                              double* attention, double* inputs_ms) {
    double* ms = (double*)mallocCheck(2 * repeats * sizeof(double));
    double* in_ms = ms + repeats;
    for (int i = 0; i < warmup; i++) { inputs(r, o, i); item(r, o, i); }
    double attention0, flops0 = vlv_flops(&attention0), timed = 0.0;
    for (int i = 0; i < repeats; i++) {
        double t0 = wall_seconds();
        inputs(r, o, warmup + i);
        double t1 = wall_seconds();
        item(r, o, warmup + i);
        double t2 = wall_seconds();
        in_ms[i] = 1e3 * (t1 - t0);
        ms[i] = 1e3 * (t2 - t1);
        timed += t2 - t1;
    }
    double attention1, flops1 = vlv_flops(&attention1);
    *gflops = (flops1 - flops0) / timed * 1e-9;
    *attention = (attention1 - attention0) / (flops1 - flops0);
    *inputs_ms = median_of(in_ms, repeats);
    double median = median_of(ms, repeats);
    free(ms);
    return median;
}

static void bench_train_batch(Run* r, int o, int step) { stage_batch(r, (Objective)o, step); }
static void bench_train_step(Run* r, int o, int step) {
    AdamW opt = stage_optimizer(&r->s, (Objective)o);
    Batch batch = run_batch(r);
    float loss = vlv_train_step(r->model, (Objective)o, &batch, objective_groups((Objective)o), &opt);
    if (!is_finite_float(loss)) fail("--bench: %s step %d: the loss is %f", objective_name[o], step, loss);
}

static void bench_test_image(Run* r, int roundtrip, int repeat) {
    (void)roundtrip;
    uint64_t rng = 0;
    make_examples(r, SPLIT_TEST, (uint64_t)repeat, 0, &rng);
}
static void bench_inference(Run* r, int roundtrip, int repeat) {
    image_context(r->model, r->images, r->ctx);
    if (roundtrip) { sample_images(r, stream_seed(r->s.seed, 97, (uint64_t)repeat)); }
    else { greedy_caption(r->model, r->generated, r->ctx); }
}

static void bench_report(Run* r, const char* name, double ms, int images, double gflops, double attention, double inputs_ms) {
    say(r, "BENCH %-9s %10.3f ms %10.1f images/s %7.1f GFLOP/s %5.1f %% attention %8.3f ms inputs\n", name, ms,
        images * 1e3 / ms, gflops, 100.0 * attention, inputs_ms);
}

static int run_bench(Run* r) {
    int repeats = r->s.bench;
    double gflops, attention, inputs_ms;
    say(r, "timing %d steps of each stage (after 2 untimed), batch %d; median per step\n", repeats, r->B);
    for (int o = 0; o < NUM_OBJECTIVES; o++) {
        vlv_reset_optimizer(r->model);
        double ms = bench_median_ms(r, bench_train_batch, bench_train_step, o, 2, repeats, &gflops, &attention, &inputs_ms);
        bench_report(r, stage_name[o], ms, r->B, gflops, attention, inputs_ms);
    }
    // inference on the freshly initialised weights, which bench.bin hands to PyTorch
    char path[1100];
    run_path(r, path, sizeof path, "bench.bin");
    model_init(r->model, r->s.seed);
    model_save(r->model, path);
    Config c = *model_config(r->model);
    run_free_buffers(r);
    model_destroy(r->model);
    r->s.batch = 1;
    r->model = model_create(&c, 1);
    model_load_weights(r->model, path);
    run_alloc(r);
    say(r, "timing %d one-image inferences of each kind (after 1 untimed), DDIM %d steps, guidance %g; median\n",
        repeats, r->s.sample_steps, r->s.guidance);
    const char* names[2] = { "caption", "roundtrip" };
    for (int k = 0; k < 2; k++) {
        double ms = bench_median_ms(r, bench_test_image, bench_inference, k, 1, repeats, &gflops, &attention, &inputs_ms);
        bench_report(r, names[k], ms, 1, gflops, attention, inputs_ms);
    }
    say(r, "wrote %s (the weights the inferences ran on)\n", path);
    return 0;
}

static void make_dir(const char* path) {
    char buf[1100];
    snprintf(buf, sizeof buf, "%s", path);
    for (char* p = buf + 1; *p; p++) { // mkdir -p
        if (*p == '/') { *p = '\0'; mkdir(buf, 0755); *p = '/'; }
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) fail("could not create the run folder '%s': %s", path, strerror(errno));
}

// the whole pipeline; returns the exit status
static int vlv_main(int argc, char** argv) {
    Run run;
    memset(&run, 0, sizeof run);
    Run* r = &run;
    settings_parse(&r->s, argc, argv);
    Settings* s = &r->s;
#ifdef _OPENMP
    if (s->threads > 0) { omp_set_num_threads(s->threads); }
    int threads = omp_get_max_threads();
#else
    int threads = 1;
#endif
    double t_start = wall_seconds();
    make_dir(s->out_dir);
    char path[1100];
    if (s->fresh) {
        run_path(r, path, sizeof path, "train_state.bin");
        remove(path);
    }
    run_path(r, path, sizeof path, "log.txt");
    r->log = fopenCheck(path, "a");
    // the examples, and the vocabulary of their captions
    source_open(&r->src, s->data, s->model.img_size, s->max_objects, s->seed);
    source_vocab(&r->src, &r->vocab);
    int n_captioned = source_split_size(&r->src, SPLIT_CAPTIONED), n_test = source_split_size(&r->src, SPLIT_TEST);
    if (n_captioned > 0 && s->K > n_captioned) {
        say(r, "--data %s has %d captioned training items: K = %d instead of %d\n", s->data, n_captioned, n_captioned, s->K);
        s->K = n_captioned;
    }
    if (n_test > 0 && s->eval_n > n_test) {
        say(r, "--data %s has %d test items: evaluating %d instead of %d\n", s->data, n_test, n_test, s->eval_n);
        s->eval_n = n_test;
    }
    run_path(r, path, sizeof path, "vocab.txt");
    vocab_save(&r->vocab, path);
    s->model.vocab = r->vocab.size;
    if (s->export_n > 0) { // the exact data of this run, for the PyTorch twin (doc/data.md)
        if (r->src.kind != SOURCE_SHAPES) fail("--export writes the shapes world's splits; --data %s is already files", s->data);
        const char* names[NUM_SPLITS] = { "shapes_t2i.bin", "shapes_unpaired.bin", "shapes_captioned.bin", "shapes_test.bin" };
        int counts[NUM_SPLITS] = { s->export_n, s->export_n, s->K, s->eval_n };
        for (int split = 0; split < NUM_SPLITS; split++) {
            run_path(r, path, sizeof path, names[split]);
            shapes_export(path, split, counts[split], s->model.img_size, s->max_objects, s->seed);
            say(r, "wrote %s: %d items\n", path, counts[split]);
        }
        vocab_free(&r->vocab);
        source_free(&r->src);
        fclose(r->log);
        return 0;
    }
    if (s->eval_model[0]) { // the model is the checkpoint's, e.g. trained by dev/vlv.py train
        size_t n;
        fclose(checkpoint_open(s->eval_model, &s->model, &n));
        if (s->model.vocab != r->vocab.size) fail("'%s' has a vocabulary of %d words, --data %s %d", s->eval_model, s->model.vocab, s->data, r->vocab.size);
        s->baseline = 0;
    }
    r->model = model_create(&s->model, s->batch);
    model_init(r->model, s->seed);
    run_alloc(r);
    char device[400]; // a GPU's name alone may take 256
    float estimate = device_describe(threads, device, sizeof device);
    r->peak = s->peak_gflops > 0 ? s->peak_gflops : estimate;
    say(r, "vlv.c: preset %s, %zu parameters, batch %d, on %s (fp32 peak %.0f GFLOP/s%s), run folder %s\n", s->preset,
        model_num_params(r->model), r->B, device, r->peak, s->peak_gflops > 0 ? "" : ", estimated", s->out_dir);
    fprintf(r->log, "config: ");
    config_print(model_config(r->model), r->log);
    if (s->bench > 0) {
        int status = run_bench(r);
        run_free(r);
        return status;
    }
    if (s->eval_model[0]) {
        r->next_stage = ALL_DONE;
    } else if (s->from_stage[0]) { // e.g. another stage-1 recipe on the same frozen decoder
        int from = strcmp(s->from_stage, "0b") == 0 ? STAGE0B : strcmp(s->from_stage, "1") == 0 ? STAGE1
                 : strcmp(s->from_stage, "2") == 0 ? STAGE2 : -1;
        if (from < 0) fail("--from: '%s' is not 0b, 1 or 2", s->from_stage);
        run_path(r, path, sizeof path, stage_checkpoint[from - 1]);
        model_load_weights(r->model, path);
        r->next_stage = from;
        say(r, "starting again at %s from %s\n", stage_name[from], path);
    } else if (train_state_load(r)) {
        say(r, "resuming from %s/train_state.bin: %s, step %d\n", s->out_dir,
            stage_name[r->next_stage], r->next_step);
    }
    int groups[NUM_OBJECTIVES] = { objective_groups(STAGE0), objective_groups(STAGE0B), objective_groups(STAGE1),
                                   objective_groups(STAGE2) | (s->unfreeze_encoder ? ENCODER_GROUPS : 0) };
    for (int o = r->next_stage; o < NUM_OBJECTIVES; o++) { run_stage(r, o, (Objective)o, groups[o]); }

    // evaluation of the VLV model (reloaded: the run may resume in the baseline)
    say(r, "\nevaluation on %d held-out examples (DDIM %d steps, guidance %g)\n", s->eval_n, s->sample_steps, s->guidance);
    if (s->eval_model[0]) { snprintf(path, sizeof path, "%s", s->eval_model); }
    else { run_path(r, path, sizeof path, stage_checkpoint[STAGE2]); }
    model_load_weights(r->model, path);
    Score t2i = eval_t2i(r, "t2i.png", "t2i.tsv"), captions, roundtrip, baseline;
    eval_vlv(r, "captions.tsv", &captions, &roundtrip);
    if (s->baseline) {
        if (r->next_stage == BASELINE && r->next_step == 0) { // start from the stage-0b weights
            run_path(r, path, sizeof path, stage_checkpoint[STAGE0B]);
            model_load_weights(r->model, path);
        }
        if (r->next_stage == BASELINE) { run_stage(r, BASELINE, STAGE2, objective_groups(STAGE2) | ENCODER_GROUPS); }
        run_path(r, path, sizeof path, stage_checkpoint[BASELINE]);
        model_load_weights(r->model, path);
        eval_vlv(r, "captions_baseline.tsv", &baseline, NULL);
    }
    float minutes = (float)(wall_seconds() - t_start) / 60.0f;
    int shapes = r->src.kind == SOURCE_SHAPES; // only the shapes world has an oracle and attributes
    say(r, "\n| measure (%d held-out %s) | value |\n|---|---|\n", s->eval_n, shapes ? "scenes" : "images");
    say(r, "| caption exact%s | %.1f%% |\n", shapes ? " scene" : " (the true caption)", 100 * score_exact(&captions));
    if (shapes) { say_scored_row(r, "caption attributes", score_attr(&captions), &captions); }
    if (s->baseline) {
        say(r, "| baseline (no stage 1) caption exact | %.1f%% |\n", 100 * score_exact(&baseline));
        if (shapes) { say_scored_row(r, "baseline caption attributes", score_attr(&baseline), &baseline); }
    }
    if (shapes) { say_scored_row(r, "round trip exact (oracle)", score_exact(&roundtrip), &roundtrip); }
    say(r, "| round trip pixel MSE | %.4f |\n", roundtrip.mse);
    if (shapes) { say_scored_row(r, "text-to-image exact (oracle)", score_exact(&t2i), &t2i); }
    say(r, "pictures: %s/t2i.png (prompts in t2i.png.txt), %s/roundtrip.png (original | reconstruction); captions in %s/captions.tsv%s\n",
        s->out_dir, s->out_dir, s->out_dir, shapes ? "; what the oracle read of each T2I sample in t2i.tsv" : "");
    char extra[64] = "";
    if (s->baseline) { snprintf(extra, sizeof extra, " baseline_exact=%.4f", score_exact(&baseline)); }
    if (shapes) {
        say(r, "RESULT caption_exact=%.4f caption_attr=%.4f roundtrip_exact=%.4f t2i_exact=%.4f%s minutes=%.1f\n",
            score_exact(&captions), score_attr(&captions), score_exact(&roundtrip), score_exact(&t2i), extra, minutes);
    } else {
        say(r, "RESULT caption_exact=%.4f roundtrip_mse=%.4f%s minutes=%.1f\n", score_exact(&captions), roundtrip.mse, extra, minutes);
    }
    run_free(r);
    return 0;
}

#endif
