/*
dev/cpu/gelu.c — lab for train_vlv.c's GELU: v1 (the original: glibc tanhf, a scalar call
per element) against v2, train_vlv.c's own gelu_forward / gelu_backward (a polynomial tanh,
tanh_vec, that gcc vectorizes). The lab includes train_vlv.c itself (with VLV_NO_MAIN, so
without its main and pipeline): v2 is exactly the code the model runs. Checks both against
float64 over x in [-12, 12] (max absolute error of the output and of the gradient, and the
norm-wise relative error the tests use), then times N = 2048 x 512 (one MLP's hidden layer of
the full model at B = 32) at 1 and 2 threads.

  gcc -O3 -march=native -fopenmp -std=gnu11 -Wall -Wextra -o /tmp/gelu dev/cpu/gelu.c -lm -lz && /tmp/gelu
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

// the current kernels: gelu_forward, gelu_backward (and tanh_vec, GELU_K), straight from
// train_vlv.c without its main
#define VLV_NO_MAIN
#include "../../train_vlv.c"

// v1: train_vlv.c's original GELU (glibc tanhf), renamed
#define GELU_K1 0.7978845608028654f
void gelu_forward1(float* out, const float* inp, size_t N) {
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_K1 * (x + 0.044715f * x * x * x)));
    }
}
void gelu_backward1(float* dinp, const float* inp, const float* dout, size_t N) {
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        float th = tanhf(GELU_K1 * (x + 0.044715f * x * x * x));
        float grad = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_K1 * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += grad * dout[i];
    }
}

static int cmp_double(const void* a, const void* b) { double x = *(const double*)a, y = *(const double*)b; return (x > y) - (x < y); }

int main(void) {
    // accuracy on a fine grid of x in [-12, 12]
    size_t n = 2400001;
    float *x = malloc(n * 4), *y = malloc(n * 4), *g = malloc(n * 4), *ones = malloc(n * 4);
    for (size_t i = 0; i < n; i++) { x[i] = -12.0f + 24.0f * (float)i / (n - 1); ones[i] = 1.0f; }
    typedef void (*ffn)(float*, const float*, size_t);
    typedef void (*bfn)(float*, const float*, const float*, size_t);
    ffn fw[2] = { gelu_forward1, gelu_forward };
    bfn bw[2] = { gelu_backward1, gelu_backward };
    int fails = 0;
    for (int v = 0; v < 2; v++) {
        fw[v](y, x, n);
        memset(g, 0, n * 4);
        bw[v](g, x, ones, n);
        double ey = 0, eg = 0, my = 0, mg = 0;
        for (size_t i = 0; i < n; i++) {
            double xd = x[i], u = 0.7978845608028654 * (xd + 0.044715 * xd * xd * xd), th = tanh(u);
            double ry = 0.5 * xd * (1.0 + th);
            double rg = 0.5 * (1.0 + th) + 0.5 * xd * (1.0 - th * th) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * xd * xd);
            ey = fmax(ey, fabs(y[i] - ry)); eg = fmax(eg, fabs(g[i] - rg));
            my = fmax(my, fabs(ry)); mg = fmax(mg, fabs(rg));
        }
        // the tests' measure is max|err| / max|ref| (tolerance 5e-6 on activations, 3e-5 on gradients)
        int bad = !(ey / my < 1e-5 && eg / mg < 1e-5);
        fails += bad;
        printf("v%d %s: forward max abs err %.2e (norm-wise rel %.2e), gradient max abs err %.2e (rel %.2e)%s\n", v + 1,
               v ? "vectorized tanh (train_vlv.c)" : "tanhf (original)", ey, ey / my, eg, eg / mg, bad ? "  FAIL" : "");
    }
    free(x); free(y); free(g); free(ones);
    // timing: one MLP hidden layer of the full model, B = 32: 2048 rows x 512
    size_t N = 2048 * 512;
    float *in = malloc(N * 4), *out = malloc(N * 4), *din = calloc(N, 4), *dout = malloc(N * 4);
    for (size_t i = 0; i < N; i++) { in[i] = 3.0f * ((float)rand() / RAND_MAX - 0.5f); dout[i] = 1e-3f; }
    int reps = 21;
    for (int t = 1; t <= 2; t++) {
#ifdef _OPENMP
        omp_set_num_threads(t);
#endif
        for (int v = 0; v < 2; v++) {
            double tf[64], tb[64];
            for (int r = -2; r < reps; r++) {
                double t0 = wall_seconds();
                fw[v](out, in, N);
                double t1 = wall_seconds();
                bw[v](din, in, dout, N);
                double t2 = wall_seconds();
                if (r >= 0) { tf[r] = t1 - t0; tb[r] = t2 - t1; }
            }
            qsort(tf, reps, sizeof(double), cmp_double);
            qsort(tb, reps, sizeof(double), cmp_double);
            printf("%d thread%s v%d: forward %.3f ms (%.2f ns/elt), backward %.3f ms (%.2f ns/elt) [median of %d; fastest %.3f / %.3f ms]\n",
                   t, t > 1 ? "s" : " ", v + 1, tf[reps / 2] * 1e3, tf[reps / 2] / N * 1e9, tb[reps / 2] * 1e3, tb[reps / 2] / N * 1e9,
                   reps, tf[0] * 1e3, tb[0] * 1e3);
        }
    }
    free(in); free(out); free(din); free(dout);
    return fails ? 1 : 0;
}
