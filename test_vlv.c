/*
test_vlv.c — checks train_vlv.c tensor by tensor against the PyTorch twin (dev/vlv.py).

  ./test_vlv CHECKPOINT DEBUG_STATE [--save-trained PATH]   every check below; exits 1 on any failure
  ./test_vlv --compare A B                                   two checkpoints hold the same config and bits
  ./test_vlv --close A B START TOL                           two runs from START trained alike, to TOL (run_close)
  ./test_vlv --readers CHECKPOINT DEBUG_STATE                bad files are rejected with a message, never a crash

The twin computes its reference in float64 from the float32 weights, so every difference
printed here is the C code's own float32 error (or a bug). Per tensor we print the worst
absolute error and the worst error relative to the tensor's largest magnitude, and compare
the latter with a tolerance chosen for that kind of tensor (TOL_* in dev/test/checks.h). The
checks themselves (activations, losses, every gradient, AdamW steps, DDIM, greedy and beam
decoding, determinism) are dev/test/model_checks.h's, shared with test_vlv.cu.
*/
#define VLV_NO_MAIN
#include "train_vlv.c"
// the model's buffers are host memory here; dev/test/model_checks.h copies with these (the CUDA
// build's copy between host and device)
static void to_host(void* dst, const void* src, size_t bytes) { memcpy(dst, src, bytes); }
static void to_device(void* dst, const void* src, size_t bytes) { memcpy(dst, src, bytes); }
#include "dev/test/debug_state.h"
#include "dev/test/checks.h"
#include "dev/test/host_checks.h"
#include "dev/test/model_checks.h"

int main(int argc, char** argv) {
    if (argc == 4 && strcmp(argv[1], "--compare") == 0) {
        run_compare(argv[2], argv[3]);
    } else if (argc == 6 && strcmp(argv[1], "--close") == 0) {
        run_close(argv[2], argv[3], argv[4], atof(argv[5]));
    } else if (argc == 4 && strcmp(argv[1], "--readers") == 0) {
        run_reader_checks(argv[2], argv[3], "broken");
    } else if (argc == 3 || (argc == 5 && strcmp(argv[3], "--save-trained") == 0)) {
        run_model_checks(argv[1], argv[2], argc == 5 ? argv[4] : NULL);
    } else {
        fprintf(stderr, "usage: %s CHECKPOINT DEBUG_STATE [--save-trained PATH]\n"
                        "       %s --compare A B\n       %s --close A B START TOL\n       %s --readers CHECKPOINT DEBUG_STATE\n",
                argv[0], argv[0], argv[0], argv[0]);
        return 2;
    }
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
