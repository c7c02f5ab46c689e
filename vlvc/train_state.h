/*
Checkpoints: finished stages as model checkpoints (doc/formats.md), and one training
state (weights, AdamW moments, EMA, where the run stands) that a rerun resumes from.
Both are written to a temporary file and renamed: an interruption never loses the last one.
*/
#ifndef VLVC_TRAIN_STATE_H
#define VLVC_TRAIN_STATE_H

#include "run.h"

#define TRAIN_STATE_MAGIC 20261129
#define TRAIN_STATE_VERSION 6

static const char* train_state_buffers[] = { "weights", "AdamW first moments", "AdamW second moments", "EMA weights" };

// The settings that shape what a run trains, stored in its training state: a rerun with other
// values would go on training the stored run under new rules and end as neither, so it is
// refused with the setting's stored and given values. Floats are compared bit for bit; the
// data source by a hash (FNV-1a) of its spec.
#define RUN_SETTINGS 38
typedef struct { const char* name; int is_float; int64_t value; } RunSetting;
static int64_t float_bits(float x) { uint32_t u; memcpy(&u, &x, sizeof u); return u; }
static void run_settings(const Settings* s, RunSetting* out) {
    uint64_t hash = 14695981039346656037ull;
    for (const char* c = s->data; *c; c++) { hash = (hash ^ (uint8_t)*c) * 1099511628211ull; }
    static const char* const per_stage[4][NUM_OBJECTIVES] = {
        { "--steps0", "--steps0b", "--steps1", "--steps2" }, { "--lr0", "--lr0b", "--lr1", "--lr2" },
        { "--clip (stage 0)", "--clip (stage 0b)", "--clip (stage 1)", "--clip (stage 2)" },
        { "--beta2 (stage 0)", "--beta2 (stage 0b)", "--beta2 (stage 1)", "--beta2 (stage 2)" } };
    int n = 0;
    out[n++] = (RunSetting){ "--seed", 0, (int64_t)s->seed };
    out[n++] = (RunSetting){ "--data (its hash)", 0, (int64_t)hash };
    out[n++] = (RunSetting){ "--batch", 0, s->batch };
    out[n++] = (RunSetting){ "--K", 0, s->K };
    out[n++] = (RunSetting){ "--objects", 0, s->max_objects };
    out[n++] = (RunSetting){ "--unfreeze", 0, s->unfreeze_encoder };
    out[n++] = (RunSetting){ "--vit_from_dit", 0, s->vit_from_dit };
    out[n++] = (RunSetting){ "--warmup", 1, float_bits(s->warmup) };
    out[n++] = (RunSetting){ "--wd", 1, float_bits(s->weight_decay) };
    out[n++] = (RunSetting){ "--clip_z", 1, float_bits(s->clip_z) };
    out[n++] = (RunSetting){ "--t_draws", 0, s->t_draws };
    out[n++] = (RunSetting){ "--ema", 1, float_bits(s->ema_decay) };
    out[n++] = (RunSetting){ "--dropout", 1, float_bits(s->caption_dropout) };
    out[n++] = (RunSetting){ "beta1", 1, float_bits(s->beta1) };
    out[n++] = (RunSetting){ "--steps_base", 0, s->baseline_steps };
    out[n++] = (RunSetting){ "--lr_base", 1, float_bits(s->baseline_lr) };
    static const char* const phase_flags[2][3] = { { "--steps2_prefix", "--steps2_llm", "--steps2_encoder" },
                                                   { "--lr2_prefix", "--lr2_llm", "--lr2_encoder" } };
    for (int k = 0; k < 3; k++) {
        out[n++] = (RunSetting){ phase_flags[0][k], 0, s->phase_steps[k] };
        out[n++] = (RunSetting){ phase_flags[1][k], 1, float_bits(s->phase_lr[k]) };
    }
    for (int o = 0; o < NUM_OBJECTIVES; o++) {
        out[n++] = (RunSetting){ per_stage[0][o], 0, s->steps[o] };
        out[n++] = (RunSetting){ per_stage[1][o], 1, float_bits(s->lr[o]) };
        out[n++] = (RunSetting){ per_stage[2][o], 1, float_bits(s->grad_clip[o]) };
        out[n++] = (RunSetting){ per_stage[3][o], 1, float_bits(s->beta2[o]) };
    }
    if (n != RUN_SETTINGS) fail("run_settings: %d settings, RUN_SETTINGS says %d", n, RUN_SETTINGS);
}

// the training state: between its header and its four buffers of num_params floats lie where the
// run stands (4 int32), its settings (int64), the SHA-256 of its pretrained parts (64 bytes), the
// seconds per stage (float64) and the invocations (2 int32)
static const FileFormat TRAIN_STATE_FORMAT = { TRAIN_STATE_MAGIC, TRAIN_STATE_VERSION, "training state", "start over with --fresh 1",
                                               4 * 4 + 8 * RUN_SETTINGS + 64 + 8 * ALL_DONE + 2 * 4, 4 * sizeof(float) };

static void setting_text(const RunSetting* v, char* out, size_t cap) {
    if (v->is_float) { uint32_t u = (uint32_t)v->value; float x; memcpy(&x, &u, sizeof x); snprintf(out, cap, "%g", x); }
    else { snprintf(out, cap, "%lld", (long long)v->value); }
}

// Non-finite numbers are never checkpointed: a learning rate far too large can send the weights
// to infinity while the loss stays finite for a while, and a rerun would resume from them.
static void check_finite(Run* r, const float* x, size_t n, const char* what) {
    for (size_t i = 0; i < n; i++) {
        if (is_finite_float(x[i])) { continue; }
        fail("%s step %d: the %s are no longer finite (entry %zu is %g). Stopped; the last good checkpoint in %s is kept.\n"
             "  lower the learning rate (--lr), the weight decay (--wd) or the gradient clipping (--clip)",
             stage_name[r->next_stage], r->next_step, what, i, x[i], r->s.out_dir);
    }
}

// the weights, checked for finiteness before a stage's checkpoint is written from them
static void check_weights_finite(Run* r) {
    size_t n = model_num_params(r->model);
    float* w = (float*)mallocCheck(n * sizeof(float));
    model_buffer_read(r->model, 0, w);
    check_finite(r, w, n, "weights");
    free(w);
}

// (every rank reads the buffers, which under ZeRO-1 gathers the moments; rank 0 writes)
static void train_state_save(Run* r) {
    char path[1100];
    run_path(r, path, sizeof path, "train_state.bin");
    size_t n = model_num_params(r->model);
    float* buf = (float*)mallocCheck(4 * n * sizeof(float));
    for (int k = 0; k < 4; k++) {
        model_buffer_read(r->model, k, buf + k * n);
        check_finite(r, buf + k * n, n, train_state_buffers[k]);
    }
    if (!r->root) { free(buf); return; }
    FILE* fp = atomic_open(path);
    header_write(fp, path, &TRAIN_STATE_FORMAT, model_config(r->model), (int)n);
    int where[4] = { r->next_stage, r->next_step, model_adam_step(r->model), r->B };
    fwriteCheck(where, sizeof(int), 4, fp, path);
    RunSetting settings[RUN_SETTINGS];
    int64_t values[RUN_SETTINGS];
    run_settings(&r->s, settings);
    for (int i = 0; i < RUN_SETTINGS; i++) { values[i] = settings[i].value; }
    fwriteCheck(values, sizeof(int64_t), RUN_SETTINGS, fp, path);
    char sha[64] = { 0 }; // the pretrained parts the run started from (zeros: none)
    memcpy(sha, r->pretrained_sha, strlen(r->pretrained_sha));
    fwriteCheck(sha, 1, sizeof sha, fp, path);
    fwriteCheck(r->stage_seconds, sizeof(double), ALL_DONE, fp, path);
    int invocations[2] = { r->invocations, 0 };
    fwriteCheck(invocations, sizeof(int), 2, fp, path);
    fwriteCheck(buf, sizeof(float), 4 * n, fp, path);
    free(buf);
    crc_append(fp, path);
    atomic_commit(fp, path);
}

// Loads the training state if the run folder has one; returns 0 when there is none. Past its
// CRC32 a file can still hold what no run writes (a file crafted, or written by a broken
// program): every field is checked against what the writer can store.
static int train_state_load(Run* r) {
    char path[1100];
    run_path(r, path, sizeof path, "train_state.bin");
    char err[4400];
    FILE* fp = regular_open(path, format_max_bytes(&TRAIN_STATE_FORMAT), err, sizeof err);
    if (!fp && errno == ENOENT) { return 0; }
    if (!fp) fail("%s\n  a run folder's training state is a file that ./train_vlv writes: remove it to start over", err);
    Config c;
    int n = header_read_crc(fp, path, &TRAIN_STATE_FORMAT, &c);
    char differs[256];
    if (config_difference(&c, model_config(r->model), differs, sizeof differs)) {
        fail("'%s' holds a run of a model with %s.\n  resume with the run's flags, or start over with --fresh 1", path, differs);
    }
    if ((size_t)n != model_num_params(r->model)) {
        fail("'%s' holds %d parameters, where this run's model has %zu; start over with --fresh 1", path, n, model_num_params(r->model));
    }
    int where[4];
    freadCheck(where, sizeof(int), 4, fp, path);
    RunSetting given[RUN_SETTINGS];
    int64_t stored[RUN_SETTINGS];
    run_settings(&r->s, given);
    freadCheck(stored, sizeof(int64_t), RUN_SETTINGS, fp, path);
    for (int i = 0; i < RUN_SETTINGS; i++) {
        if (stored[i] == given[i].value) { continue; }
        char was[32], now[32];
        RunSetting old_value = given[i];
        old_value.value = stored[i];
        setting_text(&old_value, was, sizeof was);
        setting_text(&given[i], now, sizeof now);
        fail("'%s' holds a run trained with %s %s; this command gives %s %s.\n"
             "  rerun with the run's settings to resume it, train again from a stage with --from, or start over with --fresh 1",
             path, given[i].name, was, given[i].name, now);
    }
    char sha[65] = { 0 };
    freadCheck(sha, 1, 64, fp, path);
    int zeros = 0, hex = 0; // SHA-256 as sha256_file writes it (lowercase hex), or zeros: none
    for (int i = 0; i < 64; i++) { zeros += sha[i] == 0; hex += (sha[i] >= '0' && sha[i] <= '9') || (sha[i] >= 'a' && sha[i] <= 'f'); }
    if (zeros != 64 && hex != 64) fail("'%s' is corrupt: its pretrained parts' SHA-256 is neither 64 hex digits nor zeros; start over with --fresh 1", path);
    if (strcmp(sha, r->pretrained_sha) != 0) {
        fail("'%s' holds a run that started from %s%s; this command gives %s%s.\n"
             "  rerun with the run's --pretrained to resume it, or start over with --fresh 1", path,
             sha[0] ? "the pretrained parts of SHA-256 " : "no pretrained parts (it pretrained its own)", sha,
             r->pretrained_sha[0] ? "pretrained parts of SHA-256 " : "none (--pretrained is not set)", r->pretrained_sha);
    }
    double seconds[ALL_DONE];
    int invocations[2];
    freadCheck(seconds, sizeof(double), ALL_DONE, fp, path);
    freadCheck(invocations, sizeof(int), 2, fp, path);
    for (int k = 0; k < ALL_DONE; k++) {
        if (!(seconds[k] >= 0.0 && seconds[k] < 1e9)) fail("'%s' is corrupt: %s took %g s; start over with --fresh 1", path, stage_name[k], seconds[k]);
    }
    // at most 1e8 invocations: this one adds 1 to the count, an int
    if (invocations[0] < 1 || invocations[0] >= 100000000) fail("'%s' is corrupt: %d invocations; start over with --fresh 1", path, invocations[0]);
    if (invocations[1] != 0) fail("'%s' is corrupt: the int32 after its invocation count is %d, not 0; start over with --fresh 1", path, invocations[1]);
    // Where the run stands. A stage is saved at its steps 1..total-1, AdamW having taken as many
    // steps, or, finished, as the next stage's step 0 with the finished stage's AdamW count (0 when
    // none was trained: a run from pretrained parts is saved at stage 1's step 0 untrained).
    int stage = where[0], step = where[1], adam = where[2];
    if (stage < 0 || stage > ALL_DONE) fail("'%s' is corrupt: its next stage is %d, not 0 to %d; start over with --fresh 1", path, stage, ALL_DONE);
    int total = stage < ALL_DONE ? stage_steps(&r->s, stage) : 0, before = stage > 0 ? stage_steps(&r->s, stage - 1) : 0;
    if (step < 0 || (step > 0 && step >= total)) {
        fail("'%s' is corrupt: its next step, %s step %d, is outside the stage's %d steps; start over with --fresh 1", path, stage_name[stage], step, total);
    }
    // (a progressive stage 2 starts AdamW again with each phase: its count is the steps since the
    // phase of the last step taken began)
    int since = step;
    Phase phase;
    if (stage == STAGE2 && step > 0 && stage2_phase(&r->s, step - 1, &phase)) { since = step - phase.first; }
    if (step > 0 ? adam != since : adam != 0 && adam != before) {
        char expected[96];
        if (step > 0) { snprintf(expected, sizeof expected, "%d, the steps since the %s began", since, since == step ? "stage" : "phase"); }
        else if (stage > 0) { snprintf(expected, sizeof expected, "0, or %d: the steps of %s", before, stage_name[stage - 1]); }
        else { snprintf(expected, sizeof expected, "0"); }
        fail("'%s' is corrupt: its AdamW step count is %d at %s step %d (expected %s); start over with --fresh 1", path, adam,
             stage_name[stage], step, expected);
    }
    if (where[3] != r->B) fail("'%s' is corrupt: its batch size is %d, its --batch %d; start over with --fresh 1", path, where[3], r->B);
    memcpy(r->stage_seconds, seconds, sizeof seconds);
    r->invocations = invocations[0] + 1;
    r->next_stage = stage;
    r->next_step = step;
    model_set_adam_step(r->model, adam);
    // the buffers: finite; AdamW's moments zero before its first step, its second moments (means
    // of squared gradients) never negative
    float* buf = (float*)mallocCheck(model_num_params(r->model) * sizeof(float));
    for (int k = 0; k < 4; k++) {
        freadCheck(buf, sizeof(float), model_num_params(r->model), fp, path);
        for (size_t i = 0; i < model_num_params(r->model); i++) {
            if (!is_finite_float(buf[i])) fail("'%s' holds a NaN or infinity in its %s", path, train_state_buffers[k]);
            if ((k == 1 || k == 2) && adam == 0 && buf[i] != 0.0f) {
                fail("'%s' is corrupt: its %s are not zero (entry %zu is %g) before AdamW's first step; start over with --fresh 1",
                     path, train_state_buffers[k], i, buf[i]);
            }
            if (k == 2 && buf[i] < 0.0f) {
                fail("'%s' is corrupt: its %s hold a negative number (entry %zu is %g); start over with --fresh 1", path,
                     train_state_buffers[k], i, buf[i]);
            }
        }
        model_buffer_write(r->model, k, buf);
    }
    free(buf);
    fclose(fp);
    return 1;
}

#endif
