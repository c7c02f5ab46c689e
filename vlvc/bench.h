/*
The benchmark, --bench N: the speed of this build on the run's model config (dev/bench/bench_cpu.sh compares it
with PyTorch on the same weights). Per stage, 2 untimed training steps, then N timed ones on
the stage's real batches; then, with a batch of 1, N captions (ViT, adapter, text encoder,
T_c - 1 caption-decoder passes) and N round trips (the same context, then guided DDIM:
2 DiT passes per step). The clock runs from the ready inputs (as dev/bench/bench_torch.py's) to
the end of the step; building the inputs on the host (rendering, tokenizing, the noise) is
timed apart. Prints the median of each as
  BENCH <stage0|stage0b|stage1|stage2|caption|roundtrip> <ms> ms <images/s> images/s <GFLOP/s> GFLOP/s <attention share> % attention <ms> ms inputs
and writes the timed weights to bench.bin in the run folder.
*/
#ifndef VLVC_BENCH_H
#define VLVC_BENCH_H

#include "stages.h"

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
    make_examples(r, SPLIT_TEST, (uint64_t)repeat, 0, &rng, 1);
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

#endif
