/*
The run that the training-state and pretrained-parts targets load into, and that
dev/fuzz/make_corpus.c writes their seeds from: the demo preset's settings with a model of
757 parameters (every width 1, except the DiT's 4, the least its 2D positions allow), so that a
valid training state is 12 KB and a valid pretrained.bin 3 KB. A seed must be written by the
same run its target reads into, or every one is refused as another config or other settings.
Include after train_vlv.c (VLV_NO_MAIN) and vlvc/train_state.h.
*/
#ifndef VLV_FUZZ_RUN_H
#define VLV_FUZZ_RUN_H

static const Config FUZZ_CONFIG = {
    .img_size = 2, .patch = 2, .n_q = 2, .vocab = 6, .cap_len = 3,
    .d_v = 1, .L_v = 1, .nh_v = 1, .L_a = 1, .nh_a = 1, .d_t = 1, .L_t = 1, .nh_t = 1,
    .d_d = 4, .L_d = 1, .nh_d = 1, .d_freq = 2, .d_g = 1, .L_g = 1, .nh_g = 1,
    .prediction = PREDICT_EPS, .n_timesteps = 10, .n_z = 2 };

// the run folder dir; 4 steps per stage, so that a mid-stage state has a small step
static void fuzz_run_init(Run* r, const char* dir) {
    memset(r, 0, sizeof *r);
    settings_preset(&r->s, "demo");
    r->s.model = FUZZ_CONFIG;
    r->s.batch = 2;
    for (int o = 0; o < NUM_OBJECTIVES; o++) { r->s.steps[o] = 4; }
    snprintf(r->s.out_dir, sizeof r->s.out_dir, "%s", dir);
    r->B = r->s.batch;
    r->model = model_create(&FUZZ_CONFIG, r->B);
    model_init(r->model, r->s.seed);
    static const char* const captions[] = { "a red circle", "a blue square" };
    vocab_build(&r->vocab, captions, 2);
    r->invocations = 1;
}

#endif
