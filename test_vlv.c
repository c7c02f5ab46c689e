/*
test_vlv.c — checks train_vlv.c tensor by tensor against the PyTorch twin (dev/vlv.py).

  ./test_vlv CHECKPOINT DEBUG_STATE [--save-trained PATH]   every check below; exits 1 on any failure
  ./test_vlv --compare A B                                   two checkpoints hold the same config and bits
  ./test_vlv --readers CHECKPOINT DEBUG_STATE                bad files are rejected with a message, never a crash

The twin computes its reference in float64 from the float32 weights, so every difference
printed here is the C code's own float32 error (or a bug). Per tensor we print the worst
absolute error and the worst error relative to the tensor's largest magnitude, and compare
the latter with a tolerance chosen for that kind of tensor (see TOL_* below).
*/
#define VLV_NO_MAIN
#include "train_vlv.c"
#include "vlvc/debug_state.h"
#include "vlvc/checks.h"
#include "vlvc/host_checks.h"

// every trainable tensor of the groups against grad.<objective>.<name>; also checks that the
// file holds no gradient the C code does not compute, and that frozen gradients stayed zero
static void compare_grads(const DebugState* ds, const Model* m, const char* objective, int groups) {
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
        float rel = compare_record(ds, name, m->grads + t->offset, t->numel, TOL_GRAD);
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
        for (size_t j = 0; j < t->numel; j++) { nonzero += m->grads[t->offset + j] != 0.0f; }
    }
    report("frozen parts got no gradient", nonzero == 0, "%s: %zu nonzero gradient entries outside the trained groups", objective, nonzero);
}

static int run_model_checks(const char* ckpt, const char* state_path, const char* save_trained) {
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
    int Np = config_num_patches(c);
    Batch t2i = {
        .images = debug_state_floats(&ds, "batch.t2i_images", img),
        .text_tokens = debug_state_ints(&ds, "batch.text_tokens", B * Nq),
        .noise = debug_state_floats(&ds, "batch.noise", img),
        .timesteps = debug_state_ints(&ds, "batch.timesteps", B),
    };
    Batch vlv = t2i;
    vlv.images = debug_state_floats(&ds, "batch.images", img);
    vlv.caption_tokens = debug_state_ints(&ds, "batch.caption_tokens", B * Tc);
    float* initial = (float*)mallocCheck(m.num_params * sizeof(float));
    memcpy(initial, m.params, m.num_params * sizeof(float));

    // 1. one forward and backward per objective: activations, losses, every gradient
    int stage2_groups = objective_groups(STAGE2) | ENCODER_GROUPS; // the file's stage-2 grads include the encoder
    const Batch* batches[NUM_OBJECTIVES] = { &t2i, &vlv, &vlv, &vlv };
    int grad_groups[NUM_OBJECTIVES] = { objective_groups(STAGE0), objective_groups(STAGE0B), objective_groups(STAGE1), stage2_groups };
    for (int o = 0; o < NUM_OBJECTIVES; o++) {
        printf("--- %s: forward and backward\n", objective_name[o]);
        vlv_zero_grad(&m, (1 << NUM_GROUPS) - 1);
        float loss = vlv_forward(&m, (Objective)o, batches[o]);
        switch (o) {
            case STAGE0:
                compare_record(&ds, "act.c_text", m.a.textenc.ln_f.out, B * Nq * c->d_t, TOL_ACT);
                compare_record(&ds, "act.dit.out_text", m.a.dit.out, img, TOL_ACT);
                break;
            case STAGE0B:
                compare_record(&ds, "act.capdec.logits_lm", m.a.capdec.logits, B * Tc * c->vocab, TOL_ACT);
                break;
            case STAGE1:
                compare_record(&ds, "act.vit.out", m.a.vit.ln_f.out, (size_t)B * Np * c->d_v, TOL_ACT);
                compare_record(&ds, "act.z", m.a.adapter.z, B * Nq * c->d_t, TOL_ACT);
                compare_record(&ds, "act.c_z", m.a.textenc.ln_f.out, B * Nq * c->d_t, TOL_ACT);
                compare_record(&ds, "act.dit.out_z", m.a.dit.out, img, TOL_ACT);
                break;
            default:
                compare_record(&ds, "act.capdec.logits", m.a.capdec.logits, B * Tc * c->vocab, TOL_ACT);
        }
        char name[64];
        snprintf(name, sizeof name, "loss.%s", objective_name[o]);
        compare_scalar(&ds, name, loss, TOL_LOSS);
        vlv_backward(&m, (Objective)o, batches[o], grad_groups[o], 0.0f);
        compare_grads(&ds, &m, objective_name[o], grad_groups[o]);
        // the clipping norm: AdamW is nearly blind to the scale of its gradient, so the steps
        // below cannot see a slightly wrong norm; compare the chunked parallel sum with a
        // plain serial one: both are double sums of ~1e5 squares, measured 2e-15..1e-14 apart;
        // 1e-11 leaves 1000x, and one dropped square is typically ~1e-5 of the sum
        double serial = 0.0;
        for (int i = 0; i < m.num_tensors; i++) {
            const TensorInfo* t = &m.tensors[i];
            if (!(grad_groups[o] & 1 << t->group)) { continue; }
            for (size_t j = t->offset; j < t->offset + t->numel; j++) { serial += (double)m.grads[j] * m.grads[j]; }
        }
        double chunked = grad_sumsq(&m, grad_groups[o]), norm_err = fabs(chunked - serial) / serial;
        report("gradient norm: chunked sum = serial sum", norm_err < 1e-11, "%s: norm %.6g, rel diff %.1e",
               objective_name[o], sqrt(serial), norm_err);
    }

    // 2. a few AdamW steps per objective from the checkpoint's weights: the losses must
    //    follow PyTorch's, and nothing outside the trained groups may move by a single bit
    AdamW opt = {
        .lr = debug_state_floats(&ds, "hp.lr", 1)[0], .beta1 = debug_state_floats(&ds, "hp.beta1", 1)[0],
        .beta2 = debug_state_floats(&ds, "hp.beta2", 1)[0], .eps = debug_state_floats(&ds, "hp.eps", 1)[0],
        .weight_decay = debug_state_floats(&ds, "hp.weight_decay", 1)[0],
        .grad_clip = debug_state_floats(&ds, "hp.grad_clip", 1)[0],
        .clip_z = 0.0f, // the twin's steps (dev/vlv.py dump) do not clip at z
    };
    int steps = debug_state_ints(&ds, "hp.steps", 1)[0];
    float* losses = (float*)mallocCheck(steps * sizeof(float));
    for (int o = 0; o < NUM_OBJECTIVES; o++) {
        printf("--- %s: %d AdamW steps\n", objective_name[o], steps);
        int groups = objective_groups((Objective)o);
        memcpy(m.params, initial, m.num_params * sizeof(float));
        vlv_reset_optimizer(&m);
        for (int s = 0; s < steps; s++) { losses[s] = vlv_train_step(&m, (Objective)o, batches[o], groups, &opt); }
        char name[64];
        snprintf(name, sizeof name, "steps.%s", objective_name[o]);
        compare_record(&ds, name, losses, steps, TOL_STEPS);
        size_t moved_frozen = 0, moved_trained = 0, trained = 0;
        for (int i = 0; i < m.num_tensors; i++) {
            const TensorInfo* t = &m.tensors[i];
            int is_trained = groups & 1 << t->group;
            size_t moved = 0;
            for (size_t j = t->offset; j < t->offset + t->numel; j++) { moved += memcmp(&m.params[j], &initial[j], sizeof(float)) != 0; }
            if (is_trained) { moved_trained += moved; trained += t->numel; }
            else { moved_frozen += moved; }
        }
        report("frozen weights bit-identical", moved_frozen == 0, "%s: %zu frozen weights changed", objective_name[o], moved_frozen);
        report("trained weights moved", moved_trained > trained / 2, "%s: %zu of %zu trained weights changed",
               objective_name[o], moved_trained, trained);
        if (o == STAGE2 && save_trained) { model_save(&m, save_trained); }
    }
    free(losses);

    // 3. inference: guided DDIM from the image's context, and greedy captions
    printf("--- inference\n");
    memcpy(m.params, initial, m.num_params * sizeof(float));
    image_context(&m, vlv.images, m.ctx_cond); // c_z
    empty_context(&m, m.ctx_empty);
    float* x = (float*)mallocCheck(img * sizeof(float));
    memcpy(x, debug_state_floats(&ds, "ddim.x_init", img), img * sizeof(float));
    ddim_sample(&m, x, m.ctx_cond, m.ctx_empty, debug_state_floats(&ds, "ddim.guidance", 1)[0],
                debug_state_ints(&ds, "ddim.num_steps", 1)[0], debug_state_ints(&ds, "ddim.steps_run", 1)[0]);
    compare_record(&ds, "ddim.x_out", x, img, TOL_DDIM);
    // greedy captions from a caption decoder first fitted to the batch's captions (with random
    // weights every sample repeats one token and never reaches EOS; see dev/vlv.py)
    int fit_steps = debug_state_ints(&ds, "greedy.steps", 1)[0];
    AdamW fit = opt;
    fit.lr = debug_state_floats(&ds, "greedy.lr", 1)[0];
    float* fit_losses = (float*)mallocCheck(fit_steps * sizeof(float));
    vlv_reset_optimizer(&m);
    for (int s = 0; s < fit_steps; s++) { fit_losses[s] = vlv_train_step(&m, STAGE2, &vlv, objective_groups(STAGE2), &fit); }
    compare_record(&ds, "greedy.losses", fit_losses, fit_steps, TOL_FIT);
    int* tokens = (int*)mallocCheck(B * Tc * sizeof(int));
    greedy_caption(&m, tokens, m.ctx_cond);
    const int* ref = debug_state_ints(&ds, "greedy.tokens", B * Tc);
    int same = 0, eos = 0, n = B * (int)Tc;
    for (int i = 0; i < n; i++) { same += tokens[i] == ref[i]; eos += ref[i] == TOKEN_EOS; }
    report("greedy.tokens", same == n, "%d of %d tokens identical; %d of %d captions end with EOS", same, n, eos, B);
    // beam search: one beam is greedy decoding; more beams give well-formed captions
    int* beam = (int*)mallocCheck(Tc * sizeof(int));
    int beam1_same = 0, wellformed = 0, beams = B < 3 ? B : 3;
    size_t ctx_row = Nq * c->d_t;
    float* ctx_all = (float*)mallocCheck(B * ctx_row * sizeof(float)); // beam_caption overwrites ctx_cond
    memcpy(ctx_all, m.ctx_cond, B * ctx_row * sizeof(float));
    for (int b = 0; b < B; b++) {
        const float* ctx_b = ctx_all + b * ctx_row;
        beam_caption(&m, beam, ctx_b, 1);
        beam1_same += memcmp(beam, tokens + b * Tc, Tc * sizeof(int)) == 0;
        beam_caption(&m, beam, ctx_b, beams);
        int ok = beam[0] == TOKEN_BOS, ended = 0;
        for (size_t j = 1; j < Tc; j++) {
            if (ended) { ok &= beam[j] == TOKEN_PAD; }
            else if (beam[j] == TOKEN_EOS) { ended = 1; }
            else { ok &= beam[j] >= TOKEN_FIRST_WORD || beam[j] == TOKEN_UNK || beam[j] == TOKEN_BOS || beam[j] == TOKEN_PAD; }
        }
        wellformed += ok;
    }
    report("beam search, 1 beam = greedy", beam1_same == B, "%d of %d captions identical", beam1_same, B);
    report("beam search, several beams", wellformed == B, "%d beams: %d of %d captions well formed (BOS, ..., EOS, PAD...)", beams, wellformed, B);
    free(beam);
    free(ctx_all);
    free(fit_losses);

    check_caption_dropout((int)Nq);
    check_clip_rows();

    const char* checked[] = { "hp.", "batch.", "act.", "loss.", "grad.", "steps.", "ddim.", "greedy.", "end" };
    check_all_records_used(&ds, checked, sizeof checked / sizeof checked[0]);
    free(x); free(tokens); free(initial);
    model_free(&m);
    debug_state_free(&ds);
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 4 && strcmp(argv[1], "--compare") == 0) {
        run_compare(argv[2], argv[3]);
    } else if (argc == 4 && strcmp(argv[1], "--readers") == 0) {
        run_reader_checks(argv[2], argv[3], "broken");
    } else if (argc == 3 || (argc == 5 && strcmp(argv[3], "--save-trained") == 0)) {
        run_model_checks(argv[1], argv[2], argc == 5 ? argv[4] : NULL);
    } else {
        fprintf(stderr, "usage: %s CHECKPOINT DEBUG_STATE [--save-trained PATH]\n"
                        "       %s --compare A B\n       %s --readers CHECKPOINT DEBUG_STATE\n", argv[0], argv[0], argv[0]);
        return 2;
    }
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
