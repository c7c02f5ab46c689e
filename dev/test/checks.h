/*
The reporting side of the tests, shared by test_vlv.c and test_vlv.cu: one line per check
("ok"/"FAIL", the name, the worst errors), the tolerances with their justification, and the
comparisons against records of the PyTorch twin's debug state (host arrays).
*/
#ifndef VLVC_CHECKS_H
#define VLVC_CHECKS_H

#include <math.h>
#include <sys/wait.h>
#include <unistd.h>
#include "debug_state.h"

// Tolerances on max|c - ref| / max|ref| per tensor (a norm-wise relative error: robust for
// entries that are zero in exact arithmetic, such as the key bias's gradient). float32 rounds
// at u = 6e-8; a dot product of length K errs by ~sqrt(K) u, and every layer adds its own
// rounding to what it inherits. Each tolerance is ~10-20x the worst error measured over both
// test configs (doc/testing.md has the figures) and far below what a real bug gives (a sign
// flip or a missing term is an O(1e-2..1) relative error; dev/test/mutants.sh shows they fail).
#define TOL_ACT 5e-6f    // activations, a few blocks deep: worst measured 3.0e-7
#define TOL_LOSS 1e-6f   // losses, accumulated in double: worst measured 9.6e-8 (1.6 ulps)
#define TOL_GRAD 3e-5f   // gradients: the backward doubles the chain, and shared tensors (wte,
                         // positions, adaLN) sum many rows: worst measured 9.8e-7
#define TOL_STEPS 2e-6f  // losses over 5 AdamW steps: worst measured 9.6e-8
#define TOL_DDIM 2e-5f   // all 10 guided DDIM steps, the last onto t = 0 (guidance amplifies the DiT's error;
                         // x0 is clipped): worst measured 1.8e-6 (3 steps: 7.5e-7)
#define TOL_EMA 1e-2f    // the EMA's move from the initial weights over 5 AdamW steps (decay 0.8): the move is
                         // ~1e-3 of the weights, which float32 rounds to 6e-8 of their size at each of the 5
                         // steps, so the move errs by ~5 x 6e-8 / 1e-3 = 3e-4 of itself: worst measured 8.9e-4 (-Ofast)
#define TOL_ADAMW 3e-5f  // 3 AdamW steps of every weight alone (lr 1e-2, wd 1): the move, against its own
                         // size (float32 rounds the weights at 6e-8 of theirs), and the moments: worst measured
                         // 3.5e-6 (the move; the moments 2.9e-7)
#define TOL_GELU 5e-6f   // GELU and its derivative on [-8, 8], elementwise in float32 with tanh_vec: worst
                         // measured 5.0e-7
#define TOL_VIT_FROM_DIT 1e-6f // the ViT from the DiT: copies and the adaLN at t = 0 (3 one-row matmuls): worst measured 9.3e-8
#define TOL_FIT 1e-2f    // 60 AdamW steps at lr 3e-3: Adam amplifies the float32/float64 difference
                         // step by step, and how much depends on the order of the float sums: worst
                         // measured 5.8e-4 on AMD Zen 3 (-Ofast, doc/testing.md), 9.5e-4 on Intel Xeon AVX-512 (-Ofast)
#define TOL_GREEDY_MARGIN (2.0f * TOL_ACT) // greedy decisions compared (model_checks.h): a token can flip
                         // only if the two logits' errors differ by more than their gap, and each errs
                         // by at most TOL_ACT x the row's largest |logit| (worst measured 2.3e-7)

static int checks = 0, failures = 0; // counted by report()

static inline void report(const char* name, int ok, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s %-44s ", ok ? "ok  " : "FAIL", name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    checks++;
    failures += !ok;
}

// compares n floats; returns the relative error
static inline float compare(const char* name, const float* got, const float* ref, size_t n, float tol) {
    float max_ref = 0.0f, max_err = 0.0f;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        if (!is_finite_float(got[i])) { finite = 0; }
        float e = fabsf(got[i] - ref[i]);
        if (e > max_err) { max_err = e; }
        if (fabsf(ref[i]) > max_ref) { max_ref = fabsf(ref[i]); }
    }
    float rel = max_ref > 0.0f ? max_err / max_ref : max_err;
    report(name, finite && rel <= tol && max_ref > 0.0f, "n=%-7zu max|ref| %.3e  abs err %.2e  rel err %.2e (tol %.0e)%s",
           n, max_ref, max_err, rel, tol, max_ref > 0.0f ? (finite ? "" : "  NOT FINITE") : "  REFERENCE IS ALL ZERO");
    return rel;
}

static inline float compare_record(const DebugState* ds, const char* record, const float* got, size_t n, float tol) {
    return compare(record, got, debug_state_floats(ds, record, n), n, tol);
}

static inline void compare_scalar(const DebugState* ds, const char* record, float got, float tol) {
    float ref = debug_state_floats(ds, record, 1)[0];
    float rel = fabsf(got - ref) / fabsf(ref);
    report(record, is_finite_float(got) && rel <= tol, "C %.8f  ref %.8f  rel err %.2e (tol %.0e)", got, ref, rel, tol);
}

// Runs fn(a, b) in a child process, which must exit with status 1 and print (on stderr) a
// message holding need1 and need2 (NULL: anything); a crash or an accepted input fails the
// check. The readers exit on a bad file, so a child process per try is what lets one test
// program try them all.
typedef void (*ChildFn)(const char* a, const char* b);
static inline void expect_exit_1(const char* what, ChildFn fn, const char* a, const char* b, const char* need1,
                                 const char* need2) {
    int pipefd[2];
    if (pipe(pipefd) != 0) fail("pipe failed");
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) fail("fork failed");
    if (pid == 0) {
        dup2(pipefd[1], STDERR_FILENO);
        close(pipefd[0]);
        fn(a, b);
        _exit(0); // accepted: the check below fails
    }
    close(pipefd[1]);
    char msg[2048] = {0};
    size_t len = 0;
    ssize_t r;
    while (len < sizeof msg - 1 && (r = read(pipefd[0], msg + len, sizeof msg - 1 - len)) > 0) { len += (size_t)r; }
    close(pipefd[0]);
    int status;
    waitpid(pid, &status, 0);
    int exited_1 = WIFEXITED(status) && WEXITSTATUS(status) == 1;
    int says = strstr(msg, need1) != NULL && (need2 == NULL || strstr(msg, need2) != NULL);
    char* nl = strchr(msg, '\n');
    if (nl) { *nl = '\0'; }
    report(what, exited_1 && says, "%s", exited_1 ? msg : WIFSIGNALED(status) ? "CRASHED" : "ACCEPTED");
}

// names the records of the debug state the C code did not look at (a twin that dumps
// something new must get a check here)
static inline void check_all_records_used(const DebugState* ds, const char** used_prefixes, int n) {
    int unused = 0;
    for (int i = 0; i < ds->count; i++) {
        int hit = 0;
        for (int j = 0; j < n; j++) { hit |= strncmp(ds->records[i].name, used_prefixes[j], strlen(used_prefixes[j])) == 0; }
        if (!hit) { printf("     record '%s' is not checked\n", ds->records[i].name); unused++; }
    }
    report("every record of the debug state checked", unused == 0, "%d unchecked", unused);
}

#endif
