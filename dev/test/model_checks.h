/*
The model checks of test_vlv.c and test_vlv.cu, written once: every activation at a part's
boundary, each objective's loss and every gradient against the PyTorch twin's debug state;
AdamW steps; guided DDIM, greedy captions and beam search; and determinism (the same forward,
backward and steps twice give the same bits).

Include after the model implementation (train_vlv.c or train_vlv.cu), dev/test/checks.h and
dev/test/host_checks.h. The model's buffers (params, grads, acts_memory, the activation views)
are device memory in the CUDA build, so every comparison copies what it reads to the host
with to_host, and weights go back with to_device: train_vlv.cu defines both as cudaMemcpy,
test_vlv.c as memcpy. Everything else here calls the functions both builds share with the
same signatures (vlv_forward, vlv_backward, vlv_train_step, image_context, ddim_sample, ...).
*/
#ifndef VLVC_MODEL_CHECKS_H
#define VLVC_MODEL_CHECKS_H

#include "checks.h"
#include "host_checks.h"

// a host copy of n of the model's floats (the caller frees it)
static float* model_floats_to_host(const float* model_floats, size_t n) {
    float* h = (float*)mallocCheck(n * sizeof(float));
    to_host(h, model_floats, n * sizeof(float));
    return h;
}
// compare_record on one of the model's buffers
static float compare_model_floats(const DebugState* ds, const char* record, const float* model_floats, size_t n, float tol) {
    float* h = model_floats_to_host(model_floats, n);
    float rel = compare_record(ds, record, h, n, tol);
    free(h);
    return rel;
}

// every trainable tensor of the groups against grad.<objective>.<name>; also checks that the
// file holds no gradient the model does not compute, and that frozen gradients stayed zero.
// grads is a host copy of the model's gradient buffer.
static void compare_grads(const DebugState* ds, const Model* m, const float* grads, const char* objective, int groups) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "grad.%s.", objective);
    int expected = 0;
    float worst = 0.0f;
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo* t = &m->tensors[i];
        if (!(groups & 1 << t->group)) { continue; }
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        if (!debug_state_find(ds, name)) {
            report(name, 0, "trained here, but the reference has no gradient for it");
            continue;
        }
        float rel = compare_record(ds, name, grads + t->offset, t->numel, TOL_GRAD);
        if (rel > worst) { worst = rel; }
        expected++;
    }
    int in_file = 0;
    for (int i = 0; i < ds->count; i++) { in_file += strncmp(ds->records[i].name, prefix, strlen(prefix)) == 0; }
    report(prefix, in_file == expected, "%d gradient tensors in the file, %d trainable here; worst rel err %.2e",
           in_file, expected, worst);
    size_t nonzero = 0;
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo* t = &m->tensors[i];
        if (groups & 1 << t->group) { continue; }
        for (size_t j = 0; j < t->numel; j++) { nonzero += grads[t->offset + j] != 0.0f; }
    }
    report("frozen parts got no gradient", nonzero == 0, "%s: %zu nonzero gradient entries outside the trained groups", objective, nonzero);
}

// the activations the debug state holds for objective o, after its forward
static void compare_objective_acts(const DebugState* ds, const Model* m, Objective o) {
    const Config* c = &m->config;
    size_t B = (size_t)m->B, img = image_numel(m), ctx = B * c->n_q * c->d_t, logits = B * c->cap_len * c->vocab;
    switch (o) {
        case STAGE0:
            compare_model_floats(ds, "act.c_text", m->a.textenc.ln_f.out, ctx, TOL_ACT);
            compare_model_floats(ds, "act.dit.out_text", m->a.dit.out, img, TOL_ACT);
            break;
        case STAGE0B:
            compare_model_floats(ds, "act.capdec.logits_lm", m->a.capdec.logits, logits, TOL_ACT);
            break;
        case STAGE1:
            compare_model_floats(ds, "act.vit.out", m->a.vit.ln_f.out, B * config_num_patches(c) * c->d_v, TOL_ACT);
            compare_model_floats(ds, "act.z", m->a.adapter.z, B * c->n_z * c->d_t, TOL_ACT);
            compare_model_floats(ds, "act.c_z", m->a.textenc.ln_f.out, ctx, TOL_ACT);
            compare_model_floats(ds, "act.dit.out_z", m->a.dit.out, img, TOL_ACT);
            break;
        default:
            compare_model_floats(ds, "act.capdec.logits", m->a.capdec.logits, logits, TOL_ACT);
    }
}

// the gradient norm AdamW clips by: AdamW is nearly blind to the scale of its gradient, so the
// steps cannot see a slightly wrong norm; compare the model's parallel sum with a plain serial
// one: both are double sums of ~1e5 squares, measured 2e-15..1e-14 apart; 1e-11 leaves 1000x,
// and one dropped square is typically ~1e-5 of the sum
static void check_grad_norm(Model* m, const float* grads, int groups, const char* objective) {
    double serial = 0.0;
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo* t = &m->tensors[i];
        if (!(groups & 1 << t->group)) { continue; }
        for (size_t j = t->offset; j < t->offset + t->numel; j++) { serial += (double)grads[j] * grads[j]; }
    }
    double parallel = grad_sumsq(m, groups), err = fabs(parallel - serial) / serial;
    report("gradient norm: parallel sum = serial sum", err < 1e-11, "%s: norm %.6g, rel diff %.1e", objective, sqrt(serial), err);
}

// greedy captions against the twin's tokens, and beam search (1 beam = greedy; more beams give
// well-formed captions) from the contexts ctx [B,N_q,d_t] (a host array), with the weights the
// twin fitted. A caption is compared token by token up to its first decision whose margin (the
// twin's top-two logit gap over the row's largest |logit|) is under TOL_GREEDY_MARGIN: there a
// legal reordering of float sums may pick the other token, and every later token follows from
// it. At least half of the decisions must be compared, or the check says nothing.
static void check_captions(const DebugState* ds, Model* m, const float* ctx) {
    const Config* c = &m->config;
    int B = m->B, Tc = c->cap_len;
    int* tokens = (int*)mallocCheck((size_t)B * Tc * sizeof(int));
    greedy_caption(m, tokens, ctx);
    const int* ref = debug_state_ints(ds, "greedy.tokens", (size_t)B * Tc);
    const float* margins = debug_state_floats(ds, "greedy.margins", (size_t)B * (Tc - 1));
    int same = 0, compared = 0, eos = 0, decisions = B * (Tc - 1);
    float smallest = INFINITY;
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < Tc; j++) { eos += ref[b * Tc + j] == TOKEN_EOS; }
        for (int j = 1; j < Tc; j++) {
            float margin = margins[b * (Tc - 1) + j - 1];
            if (margin < smallest) { smallest = margin; }
            if (margin < TOL_GREEDY_MARGIN) { break; }
            compared++;
            same += tokens[b * Tc + j] == ref[b * Tc + j];
        }
    }
    report("greedy.tokens", same == compared && 2 * compared >= decisions && eos == B,
           "%d of %d compared tokens identical (%d of %d decisions have a margin >= %.0e; smallest %.2e); "
           "%d of %d captions end with EOS", same, compared, compared, decisions, TOL_GREEDY_MARGIN, smallest, eos, B);
    int* beam = (int*)mallocCheck(Tc * sizeof(int));
    int beam1_same = 0, wellformed = 0, beams = B < 3 ? B : 3;
    size_t ctx_row = (size_t)c->n_q * c->d_t;
    for (int b = 0; b < B; b++) {
        const float* ctx_b = ctx + b * ctx_row;
        beam_caption(m, beam, ctx_b, 1);
        beam1_same += memcmp(beam, tokens + b * Tc, Tc * sizeof(int)) == 0;
        beam_caption(m, beam, ctx_b, beams);
        int ok = beam[0] == TOKEN_BOS, ended = 0;
        for (int j = 1; j < Tc; j++) {
            if (ended) { ok &= beam[j] == TOKEN_PAD; }
            else if (beam[j] == TOKEN_EOS) { ended = 1; }
            else { ok &= beam[j] >= TOKEN_FIRST_WORD || beam[j] == TOKEN_UNK || beam[j] == TOKEN_BOS || beam[j] == TOKEN_PAD; }
        }
        wellformed += ok;
    }
    report("beam search, 1 beam = greedy", beam1_same == B, "%d of %d captions identical", beam1_same, B);
    report("beam search, several beams", wellformed == B, "%d beams: %d of %d captions well formed (BOS, ..., EOS, PAD...)", beams, wellformed, B);
    free(beam);
    free(tokens);
}

// the vision encoder started from the DiT (vlv_vit_from_dit) from the checkpoint's weights: every
// ViT tensor against vit_from_dit.<name>, and nothing else changed by a bit. A config it does not
// fit gets no records from the twin.
static void check_vit_from_dit(const DebugState* ds, Model* m, const float* initial) {
    printf("--- the vision encoder from the DiT\n");
    const char* problem = vit_from_dit_problem(&m->config);
    int records = 0;
    for (int i = 0; i < ds->count; i++) { records += strncmp(ds->records[i].name, "vit_from_dit.", 13) == 0; }
    if (problem) {
        report("vit_from_dit: none for this config", records == 0, "%s; %d records in the file", problem, records);
        return;
    }
    to_device(m->params, initial, m->num_params * sizeof(float));
    vlv_vit_from_dit(m);
    float* params = model_floats_to_host(m->params, m->num_params);
    int compared = 0;
    size_t moved_outside = 0;
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo* t = &m->tensors[i];
        if (t->group != GROUP_VIT) {
            moved_outside += bits_differ(params + t->offset, initial + t->offset, t->numel);
            continue;
        }
        char name[256];
        snprintf(name, sizeof name, "vit_from_dit.%s", t->name);
        compare_record(ds, name, params + t->offset, t->numel, TOL_VIT_FROM_DIT);
        compared++;
    }
    report("vit_from_dit: every ViT tensor, nothing else", compared == records && moved_outside == 0,
           "%d ViT tensors compared, %d records; %zu weights outside the ViT changed", compared, records, moved_outside);
    free(params);
    to_device(m->params, initial, m->num_params * sizeof(float));
}

// stage 0's EMA after the AdamW steps (vlv_ema_update, started at the initial weights): its move
// from them against ema.stage0.moved (the move, not the weights: the weights are mostly the
// initial ones, which would hide an error in the average); then vlv_ema_swap must put exactly
// the EMA into the trained weights, leave the frozen ones alone, and keep the trained weights in
// the EMA's place. params is a host copy of the weights after the steps.
static void check_ema(const DebugState* ds, Model* m, const float* initial, const float* params, int groups) {
    float* ema = model_floats_to_host(m->ema, m->num_params);
    float* moved = (float*)callocCheck(m->num_params, sizeof(float));
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo* t = &m->tensors[i];
        if (!(groups & 1 << t->group)) { continue; }
        for (size_t j = t->offset; j < t->offset + t->numel; j++) { moved[j] = ema[j] - initial[j]; }
    }
    compare_record(ds, "ema.stage0.moved", moved, m->num_params, TOL_EMA);
    vlv_ema_swap(m, groups);
    float* swapped = model_floats_to_host(m->params, m->num_params);
    float* kept = model_floats_to_host(m->ema, m->num_params);
    size_t not_ema = 0, frozen_moved = 0, not_kept = 0;
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo* t = &m->tensors[i];
        if (groups & 1 << t->group) {
            not_ema += bits_differ(swapped + t->offset, ema + t->offset, t->numel);
            not_kept += bits_differ(kept + t->offset, params + t->offset, t->numel);
        } else {
            frozen_moved += bits_differ(swapped + t->offset, params + t->offset, t->numel);
        }
    }
    report("EMA swap: the trained weights become the EMA", not_ema == 0 && frozen_moved == 0 && not_kept == 0,
           "%zu trained weights differ from the EMA, %zu frozen weights changed, %zu weights not kept in the EMA",
           not_ema, frozen_moved, not_kept);
    free(ema); free(moved); free(swapped); free(kept);
}

// gelu_forward and gelu_backward on gelu.x (a grid over [-8, 8] and random points) against
// PyTorch's F.gelu(approximate='tanh') and its autograd. The model's gradient buffer holds the
// four arrays (device memory in the CUDA build) and is zeroed after.
static void check_gelu(const DebugState* ds, Model* m) {
    size_t n = debug_state_get(ds, "gelu.x", DTYPE_F32, 0)->numel;
    if (4 * n > m->num_params) fail("'%s': %zu GELU points do not fit in the gradient buffer", ds->path, n);
    float *x = m->grads, *dout = x + n, *out = dout + n, *dinp = out + n;
    vlv_zero_grad(m, (1 << NUM_GROUPS) - 1);
    to_device(x, debug_state_floats(ds, "gelu.x", n), n * sizeof(float));
    to_device(dout, debug_state_floats(ds, "gelu.dout", n), n * sizeof(float));
    gelu_forward(out, x, n);
    gelu_backward(dinp, x, dout, n);
    compare_model_floats(ds, "gelu.out", out, n, TOL_GELU);
    compare_model_floats(ds, "gelu.dinp", dinp, n, TOL_GELU);
    vlv_zero_grad(m, (1 << NUM_GROUPS) - 1);
}

// vlv_update alone: 3 AdamW steps of every weight from the initial ones with the recorded
// gradients (no clip: the bound is far above their norm), against torch.optim.AdamW's move of
// the weights and its two moments. Leaves the initial weights and a reset optimizer.
static void check_adamw(const DebugState* ds, Model* m, const float* initial, const AdamW* opt) {
    size_t n = m->num_params;
    AdamW alone = *opt;
    alone.lr = debug_state_floats(ds, "adamw.lr", 1)[0];
    alone.weight_decay = debug_state_floats(ds, "adamw.weight_decay", 1)[0];
    alone.grad_clip = 1e30f;
    to_device(m->params, initial, n * sizeof(float));
    vlv_reset_optimizer(m);
    for (int k = 0; k < 3; k++) {
        char name[32];
        snprintf(name, sizeof name, "adamw.grads%d", k);
        to_device(m->grads, debug_state_floats(ds, name, n), n * sizeof(float));
        vlv_update(m, (1 << NUM_GROUPS) - 1, &alone);
    }
    float* moved = model_floats_to_host(m->params, n);
    for (size_t j = 0; j < n; j++) { moved[j] -= initial[j]; }
    compare_record(ds, "adamw.moved", moved, n, TOL_ADAMW);
    compare_model_floats(ds, "adamw.m", m->m, n, TOL_ADAMW);
    compare_model_floats(ds, "adamw.v", m->v, n, TOL_ADAMW);
    free(moved);
    to_device(m->params, initial, n * sizeof(float));
    vlv_reset_optimizer(m);
    vlv_zero_grad(m, (1 << NUM_GROUPS) - 1);
}

// every check of the model against the debug state; with save_trained, also writes the
// weights after stage 2's AdamW steps there (the C -> PyTorch -> C round trip reads them)
static void run_model_checks(const char* ckpt, const char* state_path, const char* save_trained) {
    DebugState ds;
    debug_state_load(&ds, state_path);
    const Record* images = debug_state_get(&ds, "batch.images", DTYPE_F32, 0);
    int B = images->dims[0];
    Model m;
    model_load(&m, ckpt, B);
    const Config* c = &m.config;
    printf("config: B=%d ", B);
    config_print(c, stdout);
    report("debug state and checkpoint share a config", memcmp(&ds.config, c, sizeof *c) == 0, "");
    size_t img = image_numel(&m), Nq = c->n_q, Tc = c->cap_len;
    Batch t2i = {
        .images = debug_state_floats(&ds, "batch.t2i_images", img),
        .text_tokens = debug_state_ints(&ds, "batch.text_tokens", B * Nq),
        .caption_tokens = NULL,
        .noise = debug_state_floats(&ds, "batch.noise", img),
        .timesteps = debug_state_ints(&ds, "batch.timesteps", B),
    };
    Batch vlv = t2i;
    vlv.images = debug_state_floats(&ds, "batch.images", img);
    vlv.caption_tokens = debug_state_ints(&ds, "batch.caption_tokens", B * Tc);
    float* initial = model_floats_to_host(m.params, m.num_params);
    float* grads1 = (float*)mallocCheck(m.num_params * sizeof(float));
    float* grads2 = (float*)mallocCheck(m.num_params * sizeof(float));
    float* acts1 = (float*)mallocCheck(m.num_acts * sizeof(float));
    float* acts2 = (float*)mallocCheck(m.num_acts * sizeof(float));

    // 1. one forward and backward per objective: activations, losses, every gradient; then
    //    the same again, which must give the same bits
    int stage2_groups = objective_groups(STAGE2) | ENCODER_GROUPS; // the file's stage-2 grads include the encoder
    const Batch* batches[NUM_OBJECTIVES] = { &t2i, &vlv, &vlv, &vlv };
    int grad_groups[NUM_OBJECTIVES] = { objective_groups(STAGE0), objective_groups(STAGE0B), objective_groups(STAGE1), stage2_groups };
    for (int o = 0; o < NUM_OBJECTIVES; o++) {
        printf("--- %s: forward and backward\n", objective_name[o]);
        vlv_zero_grad(&m, (1 << NUM_GROUPS) - 1);
        float loss = vlv_forward(&m, (Objective)o, batches[o]);
        compare_objective_acts(&ds, &m, (Objective)o);
        char name[64];
        snprintf(name, sizeof name, "loss.%s", objective_name[o]);
        compare_scalar(&ds, name, loss, TOL_LOSS);
        vlv_backward(&m, (Objective)o, batches[o], grad_groups[o], 0.0f);
        to_host(grads1, m.grads, m.num_params * sizeof(float));
        to_host(acts1, m.acts_memory, m.num_acts * sizeof(float));
        compare_grads(&ds, &m, grads1, objective_name[o], grad_groups[o]);
        check_grad_norm(&m, grads1, grad_groups[o], objective_name[o]);
        vlv_zero_grad(&m, (1 << NUM_GROUPS) - 1);
        float loss2 = vlv_forward(&m, (Objective)o, batches[o]);
        vlv_backward(&m, (Objective)o, batches[o], grad_groups[o], 0.0f);
        to_host(grads2, m.grads, m.num_params * sizeof(float));
        to_host(acts2, m.acts_memory, m.num_acts * sizeof(float));
        size_t dg = bits_differ(grads1, grads2, m.num_params), da = bits_differ(acts1, acts2, m.num_acts);
        int same_loss = memcmp(&loss, &loss2, sizeof loss) == 0;
        report("determinism: forward + backward twice", dg == 0 && da == 0 && same_loss,
               "%s: loss %s, %zu of %zu activations and %zu of %zu gradients differ in their bits", objective_name[o],
               same_loss ? "identical" : "DIFFERS", da, m.num_acts, dg, m.num_params);
    }
    free(grads1); free(grads2); free(acts1); free(acts2);

    // 2. a few AdamW steps per objective from the checkpoint's weights: the losses must
    //    follow PyTorch's, nothing outside the trained groups may move by a single bit, and
    //    the same steps again must end in the same bits
    AdamW opt = {
        .lr = debug_state_floats(&ds, "hp.lr", 1)[0], .beta1 = debug_state_floats(&ds, "hp.beta1", 1)[0],
        .beta2 = debug_state_floats(&ds, "hp.beta2", 1)[0], .eps = debug_state_floats(&ds, "hp.eps", 1)[0],
        .weight_decay = debug_state_floats(&ds, "hp.weight_decay", 1)[0],
        .grad_clip = debug_state_floats(&ds, "hp.grad_clip", 1)[0],
        .clip_z = 0.0f, // the twin's steps (dev/vlv.py dump) do not clip at z
    };
    int steps = debug_state_ints(&ds, "hp.steps", 1)[0];
    float ema_decay = debug_state_floats(&ds, "hp.ema", 1)[0];
    float* losses[2] = { (float*)mallocCheck(steps * sizeof(float)), (float*)mallocCheck(steps * sizeof(float)) };
    float* params[2] = { (float*)mallocCheck(m.num_params * sizeof(float)), (float*)mallocCheck(m.num_params * sizeof(float)) };
    for (int o = 0; o < NUM_OBJECTIVES; o++) {
        printf("--- %s: %d AdamW steps\n", objective_name[o], steps);
        int groups = objective_groups((Objective)o);
        for (int run = 0; run < 2; run++) {
            to_device(m.params, initial, m.num_params * sizeof(float));
            vlv_reset_optimizer(&m);
            int ema = run == 0 && o == STAGE0; // stage 0 keeps the EMA that becomes the frozen decoder
            if (ema) { vlv_ema_update(&m, groups, 0.0f); }
            for (int s = 0; s < steps; s++) {
                losses[run][s] = vlv_train_step(&m, (Objective)o, batches[o], groups, &opt);
                if (ema) { vlv_ema_update(&m, groups, ema_decay); }
            }
            to_host(params[run], m.params, m.num_params * sizeof(float));
            if (ema) { check_ema(&ds, &m, initial, params[run], groups); }
            if (run == 0 && o == STAGE2 && save_trained) { model_save(&m, save_trained); }
        }
        char name[64];
        snprintf(name, sizeof name, "steps.%s", objective_name[o]);
        compare_record(&ds, name, losses[0], steps, TOL_STEPS);
        size_t moved_frozen = 0, moved_trained = 0, trained = 0;
        for (int i = 0; i < m.num_tensors; i++) {
            const TensorInfo* t = &m.tensors[i];
            size_t moved = bits_differ(params[0] + t->offset, initial + t->offset, t->numel);
            if (groups & 1 << t->group) { moved_trained += moved; trained += t->numel; }
            else { moved_frozen += moved; }
        }
        report("frozen weights bit-identical", moved_frozen == 0, "%s: %zu frozen weights changed", objective_name[o], moved_frozen);
        report("trained weights moved", moved_trained > trained / 2, "%s: %zu of %zu trained weights changed",
               objective_name[o], moved_trained, trained);
        size_t dp = bits_differ(params[0], params[1], m.num_params), dl = bits_differ(losses[0], losses[1], steps);
        report("determinism: AdamW steps twice", dp == 0 && dl == 0, "%s: %zu of %d losses and %zu of %zu weights differ in their bits",
               objective_name[o], dl, steps, dp, m.num_params);
    }
    for (int run = 0; run < 2; run++) { free(losses[run]); free(params[run]); }
    check_adamw(&ds, &m, initial, &opt);
    check_gelu(&ds, &m);

    // 3. inference: guided DDIM from the image's context, greedy captions and beam search,
    //    through the host-array functions that vlvc/pipeline.h calls
    printf("--- inference\n");
    to_device(m.params, initial, m.num_params * sizeof(float));
    size_t ctx_n = (size_t)B * Nq * c->d_t;
    float* ctx_cond = (float*)mallocCheck(ctx_n * sizeof(float));
    float* ctx_empty = (float*)mallocCheck(ctx_n * sizeof(float));
    image_context(&m, vlv.images, ctx_cond); // c_z
    empty_context(&m, ctx_empty);
    float* x = (float*)mallocCheck(img * sizeof(float));
    memcpy(x, debug_state_floats(&ds, "ddim.x_init", img), img * sizeof(float));
    ddim_sample(&m, x, ctx_cond, ctx_empty, debug_state_floats(&ds, "ddim.guidance", 1)[0],
                debug_state_ints(&ds, "ddim.num_steps", 1)[0], debug_state_ints(&ds, "ddim.steps_run", 1)[0]);
    compare_record(&ds, "ddim.x_out", x, img, TOL_DDIM);
    // the captions come from a caption decoder first fitted to the batch's captions (with
    // random weights every sample repeats one token and never reaches EOS; see dev/vlv.py)
    int fit_steps = debug_state_ints(&ds, "greedy.steps", 1)[0];
    AdamW fit = opt;
    fit.lr = debug_state_floats(&ds, "greedy.lr", 1)[0];
    float* fit_losses = (float*)mallocCheck(fit_steps * sizeof(float));
    vlv_reset_optimizer(&m);
    for (int s = 0; s < fit_steps; s++) { fit_losses[s] = vlv_train_step(&m, STAGE2, &vlv, objective_groups(STAGE2), &fit); }
    compare_record(&ds, "greedy.losses", fit_losses, fit_steps, TOL_FIT);
    to_device(m.params, debug_state_floats(&ds, "greedy.params", m.num_params), m.num_params * sizeof(float));
    check_captions(&ds, &m, ctx_cond);
    check_vit_from_dit(&ds, &m, initial);
    free(fit_losses); free(x); free(ctx_cond); free(ctx_empty); free(initial);

    check_caption_dropout((int)Nq);
    check_clip_rows();

    const char* checked[] = { "hp.", "batch.", "act.", "loss.", "grad.", "steps.", "ema.", "adamw.", "gelu.", "ddim.", "greedy.", "vit_from_dit.", "end" };
    check_all_records_used(&ds, checked, sizeof checked / sizeof checked[0]);
    model_free(&m);
    debug_state_free(&ds);
}

#endif
