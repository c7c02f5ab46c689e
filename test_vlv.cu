/*
test_vlv.cu — checks train_vlv.cu tensor by tensor against the PyTorch twin (dev/vlv.py),
with the same checks, tolerances and reports as test_vlv.c.

  ./test_vlvcu CHECKPOINT DEBUG_STATE [--save-trained PATH]   every check below; exits 1 on any failure
  ./test_vlvcu --compare A B                                   two checkpoints hold the same config and bits
  ./test_vlvcu --readers CHECKPOINT DEBUG_STATE                bad files are rejected with a message, never a crash

The twin computes its reference in float64 from the float32 weights, so every difference
printed here is the CUDA code's own float32 error (or a bug). The checks are test_vlv.c's,
from dev/test/model_checks.h (activations, losses, every gradient, the gradient norm, AdamW steps,
DDIM, greedy and beam decoding, determinism); the model lives on the device, and each check
copies what it compares to the host. Only here: the clip at z's kernels against the host's.
*/
#define VLV_NO_MAIN
#include "train_vlv.cu"
#include "dev/test/debug_state.h"
#include "dev/test/checks.h"
#include "dev/test/host_checks.h"
#include "dev/test/model_checks.h"

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
        float* out = model_floats_to_host(dz, B * N);
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

int main(int argc, char** argv) {
    if (argc == 4 && strcmp(argv[1], "--compare") == 0) {
        run_compare(argv[2], argv[3]);
    } else if (argc == 4 && strcmp(argv[1], "--readers") == 0) {
        run_reader_checks(argv[2], argv[3], "cubroken");
    } else if (argc == 3 || (argc == 5 && strcmp(argv[3], "--save-trained") == 0)) {
        cudaDeviceProp prop;
        cudaCheck(cudaGetDeviceProperties(&prop, 0));
#ifdef USE_CUBLAS
        printf("device: %s (%d SMs), cuBLAS matmuls\n", prop.name, prop.multiProcessorCount);
#else
        printf("device: %s (%d SMs), hand-written matmuls\n", prop.name, prop.multiProcessorCount);
#endif
        run_model_checks(argv[1], argv[2], argc == 5 ? argv[4] : NULL);
        check_clip_rows_device();
        cuda_scratch_free();
    } else {
        fprintf(stderr, "usage: %s CHECKPOINT DEBUG_STATE [--save-trained PATH]\n"
                        "       %s --compare A B\n       %s --readers CHECKPOINT DEBUG_STATE\n", argv[0], argv[0], argv[0]);
        return 2;
    }
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
