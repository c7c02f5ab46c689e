/*
The CPU's fp32 peak, measured instead of assumed: every thread runs independent chains of
vector multiply-adds, as wide as the build's widest vectors (16 floats with AVX-512, 8 with
AVX, else 4), and the best of a few short repeats gives the FLOP rate. Clock-and-width
arithmetic gets this wrong both ways: AMD Zen 4 splits a 512-bit FMA into two 256-bit halves,
while an Intel Xeon with two 512-bit FMA ports does 64 FLOP per cycle per core. What the
loop reaches is what the matmul kernels could reach at best.
*/
#ifndef VLVC_FMA_PEAK_H
#define VLVC_FMA_PEAK_H

#include "utils.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__)
#define PEAK_LANES 16
#elif defined(__AVX__)
#define PEAK_LANES 8
#else
#define PEAK_LANES 4
#endif
typedef float peak_vec __attribute__((vector_size(PEAK_LANES * sizeof(float))));

// enough independent chains to hide an FMA's latency (4-5 cycles) on two ports, and few
// enough to stay in registers (16 vector registers without AVX-512)
#define PEAK_CHAINS 10
#define PEAK_ITERS 200000
// a repeat lasts well under a millisecond on a fast core, and a shared host can keep the threads
// from running at once for several: the repeats go on for at least this long, so that one of
// them finds every thread on a core of its own
#define PEAK_MIN_SECONDS 0.05

// one thread's chains: x = x * m + a, PEAK_ITERS times each (a fixed point near 1: no
// overflow, no denormals); the sum is returned so that the compiler keeps the work
static float peak_chains(float seed) {
    peak_vec x[PEAK_CHAINS], m, a;
    for (int l = 0; l < PEAK_LANES; l++) { m[l] = 0.999f; a[l] = 0.001f * seed; }
    for (int c = 0; c < PEAK_CHAINS; c++) {
        for (int l = 0; l < PEAK_LANES; l++) { x[c][l] = seed + 0.01f * (c + l); }
    }
    for (int i = 0; i < PEAK_ITERS; i++) {
        for (int c = 0; c < PEAK_CHAINS; c++) { x[c] = x[c] * m + a; }
    }
    float sum = 0.0f;
    for (int c = 0; c < PEAK_CHAINS; c++) {
        for (int l = 0; l < PEAK_LANES; l++) { sum += x[c][l]; }
    }
    return sum;
}

// GFLOP/s of `threads` threads running the chains at once (2 FLOP per lane and multiply-add),
// best of at least `repeats` over at least PEAK_MIN_SECONDS; `how` says what was measured, for
// the start-up line
static double fma_peak_gflops(int threads, int repeats, char* how, size_t cap) {
    double best = 0.0, start = wall_seconds();
    volatile float sink = 0.0f;
    int r = 0;
    for (; r < repeats || (wall_seconds() - start < PEAK_MIN_SECONDS && r < 100 * repeats); r++) {
        double t0 = wall_seconds();
        float total = 0.0f;
        #pragma omp parallel for num_threads(threads) reduction(+ : total) schedule(static, 1)
        for (int t = 0; t < threads; t++) { total += peak_chains(1.0f + t); }
        double dt = wall_seconds() - t0;
        sink += total;
        double flops = 2.0 * PEAK_LANES * PEAK_CHAINS * (double)PEAK_ITERS * threads;
        if (dt > 0.0 && flops / dt > best) { best = flops / dt; }
    }
#if defined(__FMA__) || defined(__AVX512F__)
    const char* op = "FMA";
#else
    const char* op = "multiply+add (this build has no FMA)";
#endif
    snprintf(how, cap, "measured: %d thread%s of %d-lane %s chains, best of %d in %.0f ms", threads,
             threads == 1 ? "" : "s", PEAK_LANES, op, r, 1e3 * (wall_seconds() - start));
    return best * 1e-9;
}

#endif
