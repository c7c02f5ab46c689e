/*
Checkpoints: finished stages as model checkpoints (doc/formats.md), and one training
state (weights, AdamW moments, EMA, where the run stands) that a rerun resumes from.
Both are written to a temporary file and renamed: an interruption never loses the last one.
*/
#ifndef VLVC_TRAIN_STATE_H
#define VLVC_TRAIN_STATE_H

#include "run.h"

#define TRAIN_STATE_MAGIC 20261129
#define TRAIN_STATE_VERSION 1

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

#endif
