/*
The run: the settings, the model (through vlvc/vlv.h), the data source and its vocabulary,
the host buffers of a batch, the log; and where each stage's batches come from. A stage's
batch at step s depends only on the seed, the stage and s, so that a resumed run draws
exactly what an uninterrupted one would.
*/
#ifndef VLVC_RUN_H
#define VLVC_RUN_H

#include <time.h>
#include "settings.h"
#include "random.h"
#include "sources.h"
#include "dist.h"

#define CAPTION_MAX 256

typedef struct {
    Settings s;
    Model* model;
    Vocab vocab;
    DataSource src;               // where the examples come from (--data)
    int B, H;                     // B: the global batch, over every rank (--batch)
    int rows, first;              // this rank's rows of it: first .. first + rows - 1 (the model's batch)
    int root;                     // rank 0: the one that writes the run folder and prints
    size_t img;                   // floats in a batch of images (the global batch)
    float *images, *noise, *recon; // [B,H,W,3]
    float *ctx, *ctx_empty;       // [rows,N_q,d_t]: this rank's contexts
    int *text_tokens, *caption_tokens, *timesteps, *generated;
    Scene* truth;                 // [B]
    uint64_t* items;              // [B] the item behind each example of the batch (source_item_id)
    uint64_t* test_items;         // the items the evaluation uses, sorted: no training batch may hold one
    int n_test_items;
    int batch_dropped;            // captions the last stage-0 batch emptied (caption dropout)
    long captions_seen, captions_dropped; // over this invocation's stage-0 steps: the dropout rate observed
    char (*captions)[CAPTION_MAX];// [B]
    FILE* out;                    // where say() prints: stdout (NULL), or memory while the command is checked (pipeline.h)
    char *held_out, *held_log;    // what was said and logged meanwhile
    size_t held_out_len, held_log_len;
    FILE* log;
    FILE* metrics;                // metrics.jsonl: a record per progress window and health check
    int next_stage, next_step;    // where the run stands (resume)
    int steps_done;               // training steps of this invocation (--stop_after)
    float peak;                   // fp32 peak GFLOP/s
    char command[4096];           // the command line, as the log and a pretrained file's provenance record it
    char device[400];             // the machine in words (a GPU's name alone may take 256)
    char pretrained_sha[65];      // SHA-256 of the --pretrained file the run started from; "" if it pretrained itself
    double stage_seconds[ALL_DONE]; // wall time spent in each stage, summed over invocations (training state)
    int invocations;              // how many invocations this run has taken, this one included
    double est_ms[ALL_DONE];      // estimated ms per step of each stage still to run, for the run's ETA
    double est_eval_s;            // and of the evaluation
} Run;

// progress goes to stdout and to the run's log
static void say(Run* r, const char* fmt, ...) {
    FILE* out = r->out ? r->out : stdout;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fflush(out);
    if (r->log) {
        va_start(ap, fmt);
        vfprintf(r->log, fmt, ap);
        va_end(ap);
        fflush(r->log);
    }
}

// details that go to the log only (the progress on stdout stays within 120 columns)
static void note(Run* r, const char* fmt, ...) {
    if (!r->log) { return; }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->log, fmt, ap);
    va_end(ap);
    fflush(r->log);
}

// a file of the run folder
static void run_path(const Run* r, char* out, size_t cap, const char* name) {
    if (snprintf(out, cap, "%s/%s", r->s.out_dir, name) >= (int)cap) fail("the path %s/%s is too long", r->s.out_dir, name);
}

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

// a deterministic stream per (seed, stage, step): the same batch whenever a step is (re)run
static uint64_t stream_seed(uint64_t seed, int stage, uint64_t step) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + (uint64_t)stage * 0xBF58476D1CE4E5B9ull + step * 0x94D049BB133111EBull + 1;
    z ^= z >> 31;
    return z ? z : 1;
}

// B examples of a split: images, captions (text and tokens) and the true scenes (shapes world).
// index_of(b) picks the example: consecutive for streams, drawn from [0, K) for stage 2. The
// images of other ranks' rows are drawn only with every_image (the evaluation shows them).
static void make_examples(Run* r, int split, uint64_t first, uint64_t modulo, uint64_t* rng, int every_image) {
    const Config* c = model_config(r->model);
    for (int b = 0; b < r->B; b++) {
        uint64_t index = modulo ? random_u32(rng) % modulo : first + b;
        int drawn = every_image || (b >= r->first && b < r->first + r->rows);
        source_example(&r->src, split, index, drawn ? r->images + (size_t)b * r->img / r->B : NULL, r->captions[b], CAPTION_MAX,
                       &r->truth[b]);
        r->items[b] = source_item_id(&r->src, split, index);
        if (!vocab_encode(&r->vocab, r->captions[b], r->text_tokens + (size_t)b * c->n_q, c->n_q)) {
            fail("the caption '%s' does not fit in n_q = %d tokens: raise --n_q", r->captions[b], c->n_q);
        }
        if (!vocab_encode(&r->vocab, r->captions[b], r->caption_tokens + (size_t)b * c->cap_len, c->cap_len)) {
            fail("the caption '%s' does not fit in cap_len = %d tokens: raise --cap_len", r->captions[b], c->cap_len);
        }
    }
}

// the noise and each image's timestep t: the largest of `draws` uniform draws from [0, T), so
// that P(t <= x) = ((x + 1) / T)^draws, a density rising as t^(draws - 1); 1: uniform
static void make_noise(Run* r, int draws, uint64_t* rng) {
    int T = model_config(r->model)->n_timesteps;
    for (size_t i = 0; i < r->img; i++) { r->noise[i] = random_normal(rng); }
    for (int b = 0; b < r->B; b++) {
        int t = (int)(random_u32(rng) % T);
        for (int k = 1; k < draws; k++) {
            int u = (int)(random_u32(rng) % T);
            t = u > t ? u : t;
        }
        r->timesteps[b] = t;
    }
}

// this rank's rows of a [B, H, W, 3] run buffer
static float* own_images(const Run* r, float* buf) { return buf + (size_t)r->first * (r->img / r->B); }

// this rank's rows of the run's batch buffers, as the model's input
static Batch run_batch(const Run* r) {
    const Config* c = model_config(r->model);
    Batch b = { own_images(r, r->images), r->text_tokens + (size_t)r->first * c->n_q, r->caption_tokens + (size_t)r->first * c->cap_len,
                own_images(r, r->noise), r->timesteps + r->first };
    return b;
}

static int compare_u64(const void* a, const void* b) {
    uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
    return (x > y) - (x < y);
}

// the training batch of one step of a stage; it holds no item of the test set (else the splits
// overlap, and the scores would measure memory)
static Batch stage_batch(Run* r, Objective o, int step) {
    uint64_t rng = stream_seed(r->s.seed, o, (uint64_t)step);
    uint64_t first = (uint64_t)step * r->B;
    switch (o) {
        case STAGE0:
        case STAGE0B: make_examples(r, SPLIT_T2I, first, 0, &rng, 0); break;
        case STAGE1: make_examples(r, SPLIT_UNPAIRED, first, 0, &rng, 0); break;
        default: make_examples(r, SPLIT_CAPTIONED, 0, (uint64_t)r->s.K, &rng, 0); // the K pairs, over and over
    }
    for (int b = 0; b < r->B; b++) {
        if (bsearch(&r->items[b], r->test_items, (size_t)r->n_test_items, sizeof(uint64_t), compare_u64)) {
            fail("%s step %d drew item %llu, which the evaluation uses: the training and test splits overlap",
                 stage_name[o], step, (unsigned long long)r->items[b]);
        }
    }
    r->batch_dropped = 0;
    if (o == STAGE0) {
        r->batch_dropped = caption_dropout(r->text_tokens, r->B, model_config(r->model)->n_q, r->s.caption_dropout, &rng);
    }
    make_noise(r, o == STAGE1 ? r->s.t_draws : 1, &rng);
    return run_batch(r);
}

// warm-up, then cosine from lr down to lr/10, over the stage (or its phase: stage2_phase)
static float stage_lr(const Run* r, int stage, int step) {
    float peak = stage_peak_lr(&r->s, stage);
    int total = stage_steps(&r->s, stage);
    Phase phase;
    if (stage == STAGE2 && stage2_phase(&r->s, step, &phase)) {
        peak = phase.lr;
        total = phase.steps;
        step -= phase.first;
    }
    int warm = (int)(r->s.warmup * total);
    if (step < warm) { return peak * (step + 1) / warm; }
    float progress = total > warm ? (float)(step - warm) / (total - warm) : 1.0f;
    return peak * (0.1f + 0.9f * 0.5f * (1.0f + cosf(3.14159265f * progress)));
}


// the run's buffers for the global batch B = --batch; the model (model_create) is sized for
// this rank's rows of it, B / ranks (vlv_main checks that they divide)
static void run_alloc(Run* r) {
    const Config* c = model_config(r->model);
    r->B = r->s.batch;
    r->rows = r->B / dist_ranks();
    r->first = dist_rank() * r->rows;
    r->root = dist_rank() == 0;
    r->H = c->img_size;
    r->img = (size_t)r->B * r->H * r->H * 3;
    size_t ctx = (size_t)r->rows * c->n_q * c->d_t;
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
    r->items = (uint64_t*)mallocCheck(r->B * sizeof(uint64_t));
    r->captions = (char(*)[CAPTION_MAX])mallocCheck((size_t)r->B * CAPTION_MAX);
    // the evaluation reads the test split in batches from item 0: eval_n rounded up to batches
    // (at least one, the health checks' fixed batch)
    int n = r->s.eval_n > r->B ? r->s.eval_n : r->B;
    r->n_test_items = (n + r->B - 1) / r->B * r->B;
    r->test_items = (uint64_t*)mallocCheck((size_t)r->n_test_items * sizeof(uint64_t));
    for (int i = 0; i < r->n_test_items; i++) { r->test_items[i] = source_item_id(&r->src, SPLIT_TEST, (uint64_t)i); }
    qsort(r->test_items, (size_t)r->n_test_items, sizeof(uint64_t), compare_u64);
}

static void run_free_buffers(Run* r) {
    free(r->images); free(r->noise); free(r->recon); free(r->ctx); free(r->ctx_empty);
    free(r->text_tokens); free(r->caption_tokens); free(r->generated); free(r->timesteps);
    free(r->truth); free(r->items); free(r->test_items); free(r->captions);
}

static void run_free(Run* r) {
    run_free_buffers(r);
    model_destroy(r->model);
    vocab_free(&r->vocab);
    source_free(&r->src);
    if (r->log) { fclose(r->log); }
    if (r->metrics) { fclose(r->metrics); }
}

#endif
