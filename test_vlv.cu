/*
test_vlv.cu — checks train_vlv.cu tensor by tensor against the PyTorch twin (dev/vlv.py),
with the same checks, tolerances and reports as test_vlv.c, plus determinism.

  ./test_vlvcu CHECKPOINT DEBUG_STATE [--save-trained PATH]   every check below; exits 1 on any failure
  ./test_vlvcu --compare A B                                   two checkpoints hold the same config and bits
  ./test_vlvcu --readers CHECKPOINT DEBUG_STATE                bad files are rejected with a message, never a crash

The twin computes its reference in float64 from the float32 weights, so every difference
printed here is the CUDA code's own float32 error (or a bug). The model lives on the device;
each check copies what it compares to the host. Beyond test_vlv.c's checks:
  * determinism: each objective's forward and backward run twice must give bit-identical
    activations, loss and gradients, and the AdamW steps run twice bit-identical weights;
  * inference runs through the host-array functions vlvc/pipeline.h calls (image_context,
    empty_context, ddim_sample, greedy_caption, beam_caption), as in test_vlv.c.
*/
#define VLV_NO_MAIN
#include "train_vlv.cu"
#include "vlvc/debug_state.h"
#include "vlvc/checks.h"
#include "vlvc/host_checks.h"

// a host copy of n device floats (the caller frees it)
static float* host_floats(const float* device, size_t n) {
    float* h = (float*)mallocCheck(n * sizeof(float));
    to_host(h, device, n * sizeof(float));
    return h;
}
// compare_record on a device tensor
static float compare_device(const DebugState* ds, const char* record, const float* device, size_t n, float tol) {
    float* h = host_floats(device, n);
    float rel = compare_record(ds, record, h, n, tol);
    free(h);
    return rel;
}

// stage 1's per-image clip at z on the GPU against the host's clip_rows_to_median: 9 rows of
// 1,000 floats, two of them outliers (norms about 30x and 300x the others), k = 3 and k = 1.
// The row norms are double sums in another order, so a scaled row may differ by a few ulp
// (relative 1e-6 bound); unscaled rows must keep their bits.
static void check_clip_rows_device(void) {
    enum { B = 9, N = 1000 };
    float* host = (float*)mallocCheck(B * N * sizeof(float));
    float* orig = (float*)mallocCheck(B * N * sizeof(float));
    float norms[B], norms_host[B];
    uint64_t rng = 5;
    for (int i = 0; i < B * N; i++) { orig[i] = random_normal(&rng) * (i / N == 2 ? 30.0f : i / N == 6 ? 300.0f : 1.0f); }
    float* dz = device_floats(B * N, "the clip check");
    float* dnorms = device_floats(B, "the clip check's norms");
    float ks[2] = { 3.0f, 1.0f };
    for (int c = 0; c < 2; c++) {
        memcpy(host, orig, B * N * sizeof(float));
        int want = clip_rows_to_median(host, norms, B, N, ks[c]);
        to_device(dz, orig, B * N * sizeof(float));
        int got = clip_rows_to_median_device(dz, dnorms, norms_host, B, N, ks[c]);
        float* out = host_floats(dz, B * N);
        float worst = 0.0f;
        int same_bits = 1;
        for (int i = 0; i < B * N; i++) {
            float err = fabsf(out[i] - host[i]) / (fabsf(host[i]) + 1e-30f);
            worst = err > worst ? err : worst;
            if (norms[i / N] <= ks[c] * lower_median(norms, B)) { same_bits &= out[i] == orig[i]; }
        }
        report("clip at z (GPU)", got == want && worst <= 1e-6f && same_bits,
               "k=%.0f: %d of %d rows scaled (host %d), worst relative error %.1e", ks[c], got, B, want, worst);
        free(out);
    }
    cudaCheck(cudaFree(dz));
    cudaCheck(cudaFree(dnorms));
    free(host);
    free(orig);
}

// every trainable tensor of the groups against grad.<objective>.<name>; also checks that the
// file holds no gradient the CUDA code does not compute, and that frozen gradients stayed zero.
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

static int run_model_checks(const char* ckpt, const char* state_path, const char* save_trained) {
    DebugState ds;
    debug_state_load(&ds, state_path);
    const Record* images = debug_state_get(&ds, "batch.images", DTYPE_F32, 0);
    int B = images->dims[0];
    Model m;
    model_load(&m, ckpt, B);
    const Config* c = &m.config;
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
#ifdef USE_CUBLAS
    printf("device: %s (%d SMs), cuBLAS matmuls\n", prop.name, prop.multiProcessorCount);
#else
    printf("device: %s (%d SMs), hand-written matmuls\n", prop.name, prop.multiProcessorCount);
#endif
    printf("config: B=%d ", B);
    config_print(c, stdout);
    report("debug state and checkpoint share a config", memcmp(&ds.config, c, sizeof *c) == 0, "");
    size_t img = image_numel(&m), Nq = c->n_q, Tc = c->cap_len;
    int Np = config_num_patches(c);
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
    float* initial = host_floats(m.params, m.num_params);
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
        switch (o) {
            case STAGE0:
                compare_device(&ds, "act.c_text", m.a.textenc.ln_f.out, B * Nq * c->d_t, TOL_ACT);
                compare_device(&ds, "act.dit.out_text", m.a.dit.out, img, TOL_ACT);
                break;
            case STAGE0B:
                compare_device(&ds, "act.capdec.logits_lm", m.a.capdec.logits, B * Tc * c->vocab, TOL_ACT);
                break;
            case STAGE1:
                compare_device(&ds, "act.vit.out", m.a.vit.ln_f.out, (size_t)B * Np * c->d_v, TOL_ACT);
                compare_device(&ds, "act.z", m.a.adapter.z, B * Nq * c->d_t, TOL_ACT);
                compare_device(&ds, "act.c_z", m.a.textenc.ln_f.out, B * Nq * c->d_t, TOL_ACT);
                compare_device(&ds, "act.dit.out_z", m.a.dit.out, img, TOL_ACT);
                break;
            default:
                compare_device(&ds, "act.capdec.logits", m.a.capdec.logits, B * Tc * c->vocab, TOL_ACT);
        }
        char name[64];
        snprintf(name, sizeof name, "loss.%s", objective_name[o]);
        compare_scalar(&ds, name, loss, TOL_LOSS);
        vlv_backward(&m, (Objective)o, batches[o], grad_groups[o], 0.0f);
        to_host(grads1, m.grads, m.num_params * sizeof(float));
        to_host(acts1, m.acts_memory, m.num_acts * sizeof(float));
        compare_grads(&ds, &m, grads1, objective_name[o], grad_groups[o]);
        // determinism: the same forward and backward again
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
    float* losses = (float*)mallocCheck(steps * sizeof(float));
    float* losses2 = (float*)mallocCheck(steps * sizeof(float));
    float* params = (float*)mallocCheck(m.num_params * sizeof(float));
    float* params2 = (float*)mallocCheck(m.num_params * sizeof(float));
    for (int o = 0; o < NUM_OBJECTIVES; o++) {
        printf("--- %s: %d AdamW steps\n", objective_name[o], steps);
        int groups = objective_groups((Objective)o);
        for (int run = 0; run < 2; run++) {
            to_device(m.params, initial, m.num_params * sizeof(float));
            vlv_reset_optimizer(&m);
            float* l = run ? losses2 : losses;
            for (int s = 0; s < steps; s++) { l[s] = vlv_train_step(&m, (Objective)o, batches[o], groups, &opt); }
            to_host(run ? params2 : params, m.params, m.num_params * sizeof(float));
            if (run == 0 && o == STAGE2 && save_trained) { model_save(&m, save_trained); }
        }
        char name[64];
        snprintf(name, sizeof name, "steps.%s", objective_name[o]);
        compare_record(&ds, name, losses, steps, TOL_STEPS);
        size_t moved_frozen = 0, moved_trained = 0, trained = 0;
        for (int i = 0; i < m.num_tensors; i++) {
            const TensorInfo* t = &m.tensors[i];
            int is_trained = groups & 1 << t->group;
            size_t moved = bits_differ(params + t->offset, initial + t->offset, t->numel);
            if (is_trained) { moved_trained += moved; trained += t->numel; }
            else { moved_frozen += moved; }
        }
        report("frozen weights bit-identical", moved_frozen == 0, "%s: %zu frozen weights changed", objective_name[o], moved_frozen);
        report("trained weights moved", moved_trained > trained / 2, "%s: %zu of %zu trained weights changed",
               objective_name[o], moved_trained, trained);
        size_t dp = bits_differ(params, params2, m.num_params), dl = bits_differ(losses, losses2, steps);
        report("determinism: AdamW steps twice", dp == 0 && dl == 0, "%s: %zu of %d losses and %zu of %zu weights differ in their bits",
               objective_name[o], dl, steps, dp, m.num_params);
    }
    free(losses); free(losses2); free(params); free(params2);

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
    greedy_caption(&m, tokens, ctx_cond);
    const int* ref = debug_state_ints(&ds, "greedy.tokens", B * Tc);
    int same = 0, eos = 0, n = B * (int)Tc;
    for (int i = 0; i < n; i++) { same += tokens[i] == ref[i]; eos += ref[i] == TOKEN_EOS; }
    report("greedy.tokens", same == n, "%d of %d tokens identical; %d of %d captions end with EOS", same, n, eos, B);
    // beam search: one beam is greedy decoding; more beams give well-formed captions
    int* beam = (int*)mallocCheck(Tc * sizeof(int));
    int beam1_same = 0, wellformed = 0, beams = B < 3 ? B : 3;
    size_t ctx_row = Nq * c->d_t;
    for (int b = 0; b < B; b++) {
        const float* ctx_b = ctx_cond + b * ctx_row;
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
    free(fit_losses);

    check_caption_dropout((int)Nq);
    check_clip_rows();
    check_clip_rows_device();

    const char* checked[] = { "hp.", "batch.", "act.", "loss.", "grad.", "steps.", "ddim.", "greedy.", "end" };
    check_all_records_used(&ds, checked, sizeof checked / sizeof checked[0]);
    free(tokens); free(initial); free(grads1); free(grads2); free(acts1); free(acts2);
    free(x); free(ctx_cond); free(ctx_empty);
    model_free(&m);
    cuda_scratch_free();
    debug_state_free(&ds);
    return 0;
}

// ----------------------------------------------------------------------------
// Host-only checks, as in test_vlv.c (copies: they belong in vlvc/checks.h, see doc/cuda.md).
// They run here too because model_load differs: it validates the weights on the host before
// touching the device, and must reject the same broken files with the same messages.

int main(int argc, char** argv) {
    if (argc == 4 && strcmp(argv[1], "--compare") == 0) {
        run_compare(argv[2], argv[3]);
    } else if (argc == 4 && strcmp(argv[1], "--readers") == 0) {
        run_reader_checks(argv[2], argv[3], "cubroken");
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
