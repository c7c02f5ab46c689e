/*
A run's settings: every one is a flag (./train_vlv -h lists them), and a preset (default,
scratch, demo, full) sets a consistent group of them before the flags given override it.
*/
#ifndef VLVC_SETTINGS_H
#define VLVC_SETTINGS_H

#include "vlv.h"
#include "shapes.h" // shapes_max_tokens: the caption length a world needs

// the stages in the order they run; the training state counts them (BASELINE is optional)
enum { BASELINE = NUM_OBJECTIVES, ALL_DONE };

// the suffix of each stage's flags (--steps0b, --lr1) and the values of --from
static const char* const stage_flag[NUM_OBJECTIVES] = { "0", "0b", "1", "2" };

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
    int t_draws;                 // stage 1: each image's timestep is the largest of this many uniform draws
    float ema_decay;             // stage 0's EMA of the decoder
    float caption_dropout;       // stage 0: probability of the empty caption
    int K;                       // captioned pairs for stage 2
    int unfreeze_encoder;        // stage 2 also trains the vision encoder and the adapter
    // stage 2 unfrozen in phases (the paper's progressive unfreezing), when any phase has steps:
    // the prefix MLP alone, then with the caption LLM, then with the vision encoder and adapter
    int phase_steps[3];
    float phase_lr[3];           // each phase's peak lr (0: --lr2)
    int vit_from_dit;            // stage 1 and the baseline start the vision encoder from the frozen DiT
    int max_objects;             // shapes per image (1..3)
    uint64_t seed;               // weights, noise and the shapes world
    int eval_n;                  // held-out images in the evaluation
    int regen;                   // also score each predicted caption's drawing (the regeneration score)
    int sample_steps;            // DDIM steps
    float guidance;              // classifier-free guidance w
    int log_every, eval_every, ckpt_every;
    int baseline;                // also train the no-stage-1 captioner
    int baseline_steps;          // its steps and peak lr (0: stage 2's); its other settings are stage 2's
    float baseline_lr;
    int threads;
    int zero;                    // ZeRO-1 over the ranks: AdamW's moments sharded (vlvc/dist.h)
    int fresh;
    int stop_after;              // stop (resumably) after this many steps of this invocation; 0: never
    float peak_gflops;           // the machine's fp32 peak for the "% of peak" figure; 0: measure (CPU) or estimate (GPU)
    int export_n;                // write the world's splits as dataset files and stop; 0: train
    int bench;                   // N: time N repeats of each stage's step and of inference, and stop; 0: train
    char data[1024];             // the examples: shapes, fashion-mnist[:DIR] or folder:DIR (vlvc/sources.h)
    char pretrained[1024];       // the pretrained decoder and LM (vlvc/pretrained.h) stage 1 starts from; "": train stages 0 and 0b
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
                 .d_g = 96, .L_g = 2, .nh_g = 3, .prediction = PREDICT_EPS, .n_timesteps = 1000, .n_z = 0 };
    s->model = m;
    s->batch = 32;
    // stages 0 and 0b: the recipe of the shipped data/pretrained.bin (T2I 83.0% on 512 prompts,
    // place 100%: results/history.md, measurement 13); stage 1: what fits the 15-minute default run;
    // stage 2: 2,000 steps caption 1.7 and 2.6 points more than 1,000 (seeds 1 and 2, measurement 14)
    int steps[NUM_OBJECTIVES] = { 36000, 3000, 4000, 2000 };
    // stage 1 at 3e-4: at 1e-3 z grew to 6x the token embeddings' norm (v-prediction) and the
    // captioner learned less (doc/results/history.md, measurement 2: 15.6% vs 57.0% exact with the same decoder)
    float lr[NUM_OBJECTIVES] = { 1e-3f, 1e-3f, 3e-4f, 1e-3f };
    memcpy(s->steps, steps, sizeof steps);
    memcpy(s->lr, lr, sizeof lr);
    s->warmup = 0.05f;
    s->weight_decay = 0.0f;
    s->beta1 = 0.9f;
    // stage 1 (and 2) against gradient spikes: single images whose gradient at z the frozen
    // text encoder amplifies ~2000x (--clip_z clips them), a global clip at ~8x the usual norm,
    // and a second moment with a 20-step memory instead of 1,000, so that a spike stops damping
    // the steps after a few hundred; without them stage 1 collapsed (doc/results/history.md, measurements 8-10)
    float clip[NUM_OBJECTIVES] = { 1.0f, 1.0f, 0.05f, 0.05f }, beta2[NUM_OBJECTIVES] = { 0.999f, 0.999f, 0.95f, 0.95f };
    memcpy(s->grad_clip, clip, sizeof clip);
    memcpy(s->beta2, beta2, sizeof beta2);
    s->clip_z = 10.0f;
    // stage 1's t drawn with a density rising as t (the largest of 2 uniform draws): with uniform
    // t, z read the place's axis but not its side (place 42%); with this, 99.6% (88.3% exact
    // captions against 36.5%, the same 3,000 steps: results/history.md, measurement 13)
    s->t_draws = 2;
    s->ema_decay = 0.999f;
    s->caption_dropout = 0.1f;
    s->K = 500;
    s->vit_from_dit = 1; // 5x more of the caption's gain recovered at 2,000 stage-1 steps (results/history.md, measurement 12)
    s->max_objects = 1;
    snprintf(s->data, sizeof s->data, "shapes");
    s->seed = 1337;
    s->eval_n = 512;
    s->sample_steps = 25;
    s->guidance = 1.0f; // w = 2 (the paper's) turns this decoder's shapes into speckled blobs: results/history.md, measurement 6
    s->log_every = 50;
    s->eval_every = 1000;
    s->ckpt_every = 500;
    s->threads = 0;
    s->baseline = 1;
    // the baseline's own best of lr {1e-4, 3e-4, 1e-3, 3e-3} x steps {1000, 2000} on the shipped
    // decoder (measurement 14); the demo and full presets give it stage 2's
    s->baseline_steps = 1000;
    s->baseline_lr = 3e-4f;
    // the default starts at stage 1 from the shipped decoder and caption LM (data/README.md: how
    // they were made); "scratch" pretrains them with the same recipe first, in the same invocation
    snprintf(s->pretrained, sizeof s->pretrained, "data/pretrained.bin");
    if (strcmp(name, "scratch") == 0) {
        s->pretrained[0] = '\0';
        s->eval_every = 4000; // each stage-0 health check draws eval_n prompts
        s->ckpt_every = 1000;
    } else if (strcmp(name, "demo") == 0) {
        s->pretrained[0] = '\0';
        s->baseline_steps = 0;
        s->baseline_lr = 0.0f;
        Config d = m;
        d.d_v = d.d_t = d.d_d = d.d_g = 48;
        d.L_v = 2; d.L_a = 1; d.L_t = 1; d.L_d = 2; d.L_g = 1;
        d.nh_v = d.nh_a = d.nh_t = d.nh_d = d.nh_g = 2;
        d.d_freq = 32;
        s->model = d;
        s->batch = 16;
        s->ema_decay = 0.995f; // a memory of about 200 steps suits its 150 stage-0 steps; 0.999 would keep mostly the init
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
        s->pretrained[0] = '\0';
        s->baseline_steps = 0;
        s->baseline_lr = 0.0f;
        int fs[NUM_OBJECTIVES] = { 30000, 3000, 20000, 3000 };
        float fl[NUM_OBJECTIVES] = { 1e-3f, 1e-3f, 3e-4f, 3e-4f };
        memcpy(s->steps, fs, sizeof fs);
        memcpy(s->lr, fl, sizeof fl);
        s->sample_steps = 50;
        s->eval_every = 2500;
        s->ckpt_every = 500;
    } else if (strcmp(name, "default") != 0) {
        fail("unknown preset '%s': choose default, scratch, demo or full", name);
    }
    snprintf(s->out_dir, sizeof s->out_dir, "runs/%s", name);
}

// a stage's steps and peak learning rate: the baseline's own, else stage 2's
static int stage_steps(const Settings* s, int stage) {
    if (stage == BASELINE) { return s->baseline_steps > 0 ? s->baseline_steps : s->steps[STAGE2]; }
    return s->steps[stage];
}
// Progressive stage 2: the phase of a stage-2 step, as its first step, its steps, its peak lr
// and the groups it trains; each phase starts a fresh AdamW with its own warm-up and cosine.
// Returns 0 when stage 2 is one phase.
typedef struct { int index, first, steps, groups; float lr; } Phase;
static int stage2_phase(const Settings* s, int step, Phase* p) {
    static const int groups[3] = { 1 << GROUP_PREFIX, 1 << GROUP_PREFIX | 1 << GROUP_GPT, 1 << GROUP_PREFIX | 1 << GROUP_GPT | ENCODER_GROUPS };
    if (s->phase_steps[0] + s->phase_steps[1] + s->phase_steps[2] == 0) { return 0; }
    int first = 0, k = 0;
    while (k < 2 && (s->phase_steps[k] == 0 || step >= first + s->phase_steps[k])) { first += s->phase_steps[k]; k++; }
    *p = (Phase){ k, first, s->phase_steps[k], groups[k], s->phase_lr[k] > 0.0f ? s->phase_lr[k] : s->lr[STAGE2] };
    return 1;
}
static float stage_peak_lr(const Settings* s, int stage) {
    if (stage == BASELINE) { return s->baseline_lr > 0.0f ? s->baseline_lr : s->lr[STAGE2]; }
    return s->lr[stage];
}

// the flag table: name, kind, where, help
enum { FLAG_INT, FLAG_BOOL, FLAG_FLOAT, FLAG_STAGES, FLAG_U64, FLAG_STR, FLAG_PRED }; // FLAG_STAGES: float[NUM_OBJECTIVES]
typedef struct { const char* name; int kind; void* ptr; const char* help; } Flag;
#define FLAGS_MAX 96

static int settings_flags(Settings* s, Flag* f) {
    Config* m = &s->model;
    int n = 0;
#define FLAG(nm, kind, ptr, help) do { if (n == FLAGS_MAX) fail("settings_flags: more than FLAGS_MAX = %d flags", FLAGS_MAX); f[n++] = (Flag){ nm, kind, ptr, help }; } while (0)
    FLAG("--out", FLAG_STR, s->out_dir, "run folder: log, checkpoints, vocabulary, PNG grids");
    FLAG("--fresh", FLAG_BOOL, &s->fresh, "1: start over even if the run folder holds a run");
    FLAG("--pretrained", FLAG_STR, s->pretrained, "a pretrained.bin (decoder + caption LM, with its provenance .txt beside it): start at stage 1 from it; none: pretrain them here (stages 0 and 0b)");
    FLAG("--from", FLAG_STR, s->from_stage, "0b, 1, 2 or baseline: train again from this stage on, starting from the run folder's checkpoint of the stage before (baseline: the stage-2 model is evaluated again, the baseline trains again from stage0b.bin)");
    FLAG("--stop_after", FLAG_INT, &s->stop_after, "stop after this many training steps (0: never); rerun to resume");
    FLAG("--eval_model", FLAG_STR, s->eval_model, "only evaluate this checkpoint (its config; vocab.txt of the shapes world)");
    FLAG("--export", FLAG_INT, &s->export_n, "N: write the splits (N stage-0 and N stage-1 images, the K pairs, the test set) as dataset files (doc/data.md) and stop");
    FLAG("--bench", FLAG_INT, &s->bench, "N: time N training steps of each stage and N one-image inferences (median), write bench.bin for dev/bench/bench_torch.py, and stop");
    FLAG("--threads", FLAG_INT, &s->threads, "OpenMP threads (0: all cores)");
    FLAG("--zero", FLAG_BOOL, &s->zero, "1: ZeRO-1 over the ranks (mpirun): each keeps AdamW's moments of 1/N of the weights");
    FLAG("--peak", FLAG_FLOAT, &s->peak_gflops, "fp32 peak GFLOP/s for the % of peak (0: CPU: measure it, FMA chains on every thread; GPU: SMs x FP32 lanes x 2 x clock)");
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
    FLAG("--t_draws", FLAG_INT, &s->t_draws, "stage 1: each image's timestep is the largest of this many uniform draws (density rising as t^(draws-1)); 1: uniform, as in the other stages");
    FLAG("--ema", FLAG_FLOAT, &s->ema_decay, "EMA decay of the stage-0 decoder");
    FLAG("--dropout", FLAG_FLOAT, &s->caption_dropout, "stage 0 caption dropout");
    FLAG("--K", FLAG_INT, &s->K, "captioned pairs for stage 2");
    FLAG("--unfreeze", FLAG_BOOL, &s->unfreeze_encoder, "1: stage 2 also trains the vision encoder and adapter");
    FLAG("--steps2_prefix", FLAG_INT, &s->phase_steps[0], "progressive stage 2, phase 1: steps of the prefix MLP alone (any phase > 0: stage 2 is the 3 phases)");
    FLAG("--steps2_llm", FLAG_INT, &s->phase_steps[1], "progressive stage 2, phase 2: steps of the prefix MLP and the caption LLM");
    FLAG("--steps2_encoder", FLAG_INT, &s->phase_steps[2], "progressive stage 2, phase 3: steps of those and the vision encoder and adapter");
    FLAG("--lr2_prefix", FLAG_FLOAT, &s->phase_lr[0], "progressive stage 2: phase 1's peak lr (0: --lr2)");
    FLAG("--lr2_llm", FLAG_FLOAT, &s->phase_lr[1], "progressive stage 2: phase 2's peak lr (0: --lr2)");
    FLAG("--lr2_encoder", FLAG_FLOAT, &s->phase_lr[2], "progressive stage 2: phase 3's peak lr (0: --lr2)");
    FLAG("--vit_from_dit", FLAG_BOOL, &s->vit_from_dit, "1: stage 1 and the baseline start the vision encoder from the frozen DiT (its patch embedding, positions and blocks at t = 0); 0: from random weights");
    FLAG("--baseline", FLAG_BOOL, &s->baseline, "1: also train and score the no-stage-1 captioner");
    FLAG("--steps_base", FLAG_INT, &s->baseline_steps, "baseline steps (0: stage 2's)");
    FLAG("--lr_base", FLAG_FLOAT, &s->baseline_lr, "baseline peak learning rate (0: stage 2's)");
    FLAG("--eval_n", FLAG_INT, &s->eval_n, "held-out images in the evaluation");
    FLAG("--regen", FLAG_BOOL, &s->regen, "1: also the regeneration score (each caption drawn by the decoder, read by the oracle)");
    FLAG("--sample_steps", FLAG_INT, &s->sample_steps, "DDIM steps when sampling");
    FLAG("--guidance", FLAG_FLOAT, &s->guidance, "classifier-free guidance w of the round trips and T2I samples (1: the caption's prediction alone)");
    FLAG("--log_every", FLAG_INT, &s->log_every, "steps between progress lines");
    FLAG("--eval_every", FLAG_INT, &s->eval_every, "stage-0 steps between health checks (gap, samples)");
    FLAG("--ckpt_every", FLAG_INT, &s->ckpt_every, "steps between checkpoints");
    FLAG("--img", FLAG_INT, &m->img_size, "image size");
    FLAG("--patch", FLAG_INT, &m->patch, "patch size");
    FLAG("--n_q", FLAG_INT, &m->n_q, "text-encoder length: the decoder's context rows");
    FLAG("--n_z", FLAG_INT, &m->n_z, "learned queries = z's rows (the paper's N_q), at most --n_q; 0: --n_q. z fills the text encoder's first n_z positions, the PAD token the rest");
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

// every flag with its value in s, one per line, with its help when `help`
static void settings_list(FILE* out, Settings* s, int help) {
    Flag flags[FLAGS_MAX];
    int n = settings_flags(s, flags);
    for (int i = 0; i < n; i++) {
        char value[1100];
        switch (flags[i].kind) {
            case FLAG_INT: case FLAG_BOOL: snprintf(value, sizeof value, "%d", *(int*)flags[i].ptr); break;
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
            default: snprintf(value, sizeof value, "%s", *(char*)flags[i].ptr ? (char*)flags[i].ptr : "none");
        }
        if (help) { fprintf(out, "  %-15s %-12s %s\n", flags[i].name, value, flags[i].help); }
        else { fprintf(out, "  %-15s %s\n", flags[i].name, value); }
    }
}

static void usage(const char* prog, Settings* s) {
    printf("usage: %s [--preset default|scratch|demo|full] [flags]\n\n"
           "Trains the miniature VLV on the shapes world, stage by stage, into the run folder,\n"
           "resuming an interrupted run, then evaluates it. Flags (the preset's value):\n", prog);
    settings_list(stdout, s, 1);
}

// the stage that --from names (0b, 1 or 2: the objective; baseline: BASELINE), -1 if none of them
static int from_stage_objective(const char* v) {
    for (int o = STAGE0B; o < NUM_OBJECTIVES; o++) { if (strcmp(v, stage_flag[o]) == 0) { return o; } }
    return strcmp(v, "baseline") == 0 ? BASELINE : -1;
}

// parses the command line into s; a bad flag or value exits with a message

static void settings_parse(Settings* s, int argc, char** argv) {
    const char* preset = "default";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { settings_preset(s, preset); usage(argv[0], s); exit(0); }
        if (strcmp(argv[i], "--preset") == 0) {
            if (i + 1 >= argc) fail("--preset needs a value: default, scratch, demo or full");
            preset = argv[++i];
        }
    }
    settings_preset(s, preset);
    Flag flags[FLAGS_MAX];
    int n = settings_flags(s, flags), steps2_given = 0;
    for (int i = 1; i < argc; i += 2) {
        if (strcmp(argv[i], "--preset") == 0) { continue; }
        steps2_given |= strcmp(argv[i], "--steps2") == 0;
        int k = 0;
        while (k < n && strcmp(flags[k].name, argv[i]) != 0) { k++; }
        if (k == n) fail("unknown flag '%s' (%s -h lists them)", argv[i], argv[0]);
        if (i + 1 >= argc) fail("flag %s needs a value", argv[i]);
        const char* v = argv[i + 1];
        char* end = NULL;
        errno = 0;
        switch (flags[k].kind) {
            case FLAG_INT: *(int*)flags[k].ptr = (int)parse_whole(argv[i], v, 0, 100000000); break;
            case FLAG_BOOL:
                if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0) fail("flag %s: '%s' is neither 0 nor 1", argv[i], v);
                *(int*)flags[k].ptr = v[0] == '1';
                break;
            case FLAG_U64: *(uint64_t*)flags[k].ptr = parse_whole(argv[i], v, 0, UINT64_MAX); break;
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
    if (strcmp(s->pretrained, "none") == 0) { s->pretrained[0] = '\0'; }
    if (s->from_stage[0] && from_stage_objective(s->from_stage) < 0) fail("--from: '%s' is not 0b, 1, 2 or baseline", s->from_stage);
    if (strcmp(s->from_stage, "baseline") == 0 && !s->baseline) fail("--from baseline trains the baseline again: not with --baseline 0");
    if (s->batch < 1) fail("--batch must be at least 1");
    if (s->threads > THREADS_MAX) fail("--threads %d: at most %d (0: all cores)", s->threads, THREADS_MAX);
    if (s->max_objects < 1 || s->max_objects > 3) fail("--objects must be 1, 2 or 3");
    int need = shapes_max_tokens(s->max_objects);
    if (strcmp(s->data, "shapes") == 0 && (s->model.n_q < need || s->model.cap_len < need)) {
        fail("captions of up to %d objects take up to %d tokens: use --n_q %d --cap_len %d (or more)", s->max_objects, need, need, need);
    }
    if (s->K < 1) fail("--K must be at least 1");
    int phased = s->phase_steps[0] + s->phase_steps[1] + s->phase_steps[2];
    if (phased && steps2_given) fail("--steps2 and --steps2_prefix/_llm/_encoder: stage 2's steps are its phases' sum; give one or the other");
    if (phased && s->unfreeze_encoder) fail("--unfreeze 1 and a progressive stage 2: its third phase (--steps2_encoder) trains the encoder");
    if (phased) { s->steps[STAGE2] = phased; }
    for (int k = 0; k < 3; k++) {
        if (s->phase_lr[k] > 1.0f) fail("--lr2 of phase %d: %g; a learning rate above 1 diverges with AdamW", k + 1, s->phase_lr[k]);
    }
    if (s->sample_steps < 1 || s->sample_steps > s->model.n_timesteps) fail("--sample_steps must be in [1, %d]", s->model.n_timesteps);
    if (s->log_every < 1 || s->eval_every < 1 || s->ckpt_every < 1) fail("--log_every, --eval_every and --ckpt_every must be at least 1");
    for (int o = 0; o < NUM_OBJECTIVES; o++) {
        if (!(s->beta2[o] < 1.0f)) fail("--beta2 must be in [0, 1) (%s: %g)", objective_name[o], s->beta2[o]);
    }
    if (!(s->clip_z == 0.0f || s->clip_z >= 1.0f)) fail("--clip_z must be 0 (off) or at least 1");
    if (s->t_draws < 1 || s->t_draws > 16) fail("--t_draws must be in [1, 16] (1: uniform timesteps)");
    if (s->ema_decay >= 1.0f || s->caption_dropout > 1.0f || s->warmup > 1.0f) fail("--ema must be below 1, --dropout and --warmup at most 1");
    if (s->baseline_lr > 1.0f) fail("--lr_base %g: a learning rate above 1 diverges with AdamW; use one in [0, 1]", s->baseline_lr);
    for (int o = 0; o < NUM_OBJECTIVES; o++) {
        if (s->lr[o] > 1.0f) fail("--lr%s %g: a learning rate above 1 diverges with AdamW; use one in [0, 1]", stage_flag[o], s->lr[o]);
    }
    if (s->eval_n < 1) fail("--eval_n must be at least 1 (held-out images to score)");
    if (s->guidance > 20.0f) fail("--guidance %g: classifier-free guidance above 20 only amplifies noise; use one in [0, 20]", s->guidance);
    // the model's flags, checked before any file is written (the vocabulary's size comes from the
    // data later, and model_build checks the whole config again then)
    if (s->model.n_z == 0) { s->model.n_z = s->model.n_q; }
    Config flags_only = s->model;
    if (flags_only.vocab == 0) { flags_only.vocab = TOKEN_FIRST_WORD + 1; }
    const char* problem = config_problem(&flags_only);
    if (!problem) { problem = config_batch_problem(&flags_only, s->batch); }
    if (problem) fail("bad model config: %s", problem);
    problem = vit_from_dit_problem(&s->model);
    if (s->vit_from_dit && problem && !s->eval_model[0]) { // training builds the model of these flags
        fail("--vit_from_dit 1 starts the vision encoder from the DiT, and %s: change the sizes or give --vit_from_dit 0", problem);
    }
}

#endif
