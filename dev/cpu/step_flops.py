#!/usr/bin/env python3
"""FLOP and time accounting of one training step of each objective.

Builds an instrumented copy of train_vlv.c in a temporary folder (train_vlv.c itself is not
touched): every matmul_forward / matmul_backward / attention_forward / attention_backward
call adds its FLOPs, counted analytically from its arguments, and its wall time to a
counter. A small driver builds the model from scratch, trains each objective for a few steps
on one fixed random batch and prints, per objective and step, the FLOPs and time of each class
and the rest of the step.
It measures train_vlv.c's kernels as they are.

  FLOPs, counted as 2 per multiply-add:
    matmul forward         2 N C OC
    matmul backward-input  2 N C OC   (when dinp != NULL)
    matmul backward-weight 2 N C OC   (when dweight != NULL; the bias column sum, N OC, is not counted)
    attention forward      4 hs * (number of (query, key) pairs) per head: q.k and a.v
    attention backward     8 hs * pairs per head: da = do.v, dv, dq, dk
  (softmax, layernorm, GELU, residuals, AdamW: elementwise, O(N C), not counted)

usage: dev/cpu/step_flops.py [--preset full|default] [-b 32] [-n 3] [--threads 2]
  full:    d 128, 4 heads, L_v 4, L_d 6, L_g 4 (the config train_vlv.c's model check used; the issue's shapes)
  default: d 96, 3 heads, L_v 3, L_d 4, L_g 2 (vlvc/settings.h's default preset)
"""
import argparse, os, re, subprocess, sys, tempfile

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ap = argparse.ArgumentParser()
ap.add_argument("--preset", default="full", choices=["full", "default"])
ap.add_argument("-b", type=int, default=32)
ap.add_argument("-n", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--vocab", type=int, default=64)
ap.add_argument("--cc", default="gcc")
args = ap.parse_args()

work = tempfile.mkdtemp(prefix="vlv_flops_")
src = open(os.path.join(root, "train_vlv.c")).read()
os.symlink(os.path.join(root, "vlvc"), os.path.join(work, "vlvc"))

counters = """
// ---- instrumentation (dev/cpu/step_flops.py) ----
static double prof_flops[4], prof_secs[4]; // matmul fwd, matmul bwd, attention fwd, attention bwd
static double prof_now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec * 1e-9; }
static double attn_pairs(int B, int Tq, int Tk, int NH, int causal) {
    return (double)B * NH * (causal ? (double)Tq * (Tq + 1) / 2 : (double)Tq * Tk);
}
"""
# rename the four kernels to *_impl and add counting wrappers with the original names
for n in ["matmul_forward", "matmul_backward", "attention_forward", "attention_backward"]:
    src, k = re.subn(r"\bvoid %s\(" % n, "static void %s_impl(" % n, src, count=1)
    assert k == 1, n
wrappers = r"""
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC) {
    double t0 = prof_now(); matmul_forward_impl(out, inp, weight, bias, N, C, OC);
    prof_secs[0] += prof_now() - t0; prof_flops[0] += 2.0 * N * C * OC;
}
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC) {
    double t0 = prof_now(); matmul_backward_impl(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
    prof_secs[1] += prof_now() - t0; prof_flops[1] += 2.0 * N * C * OC * ((dinp != NULL) + (dweight != NULL));
}
void attention_forward(float* out, float* att, const float* q, int q_stride, const float* k,
                       const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    double t0 = prof_now(); attention_forward_impl(out, att, q, q_stride, k, v, kv_stride, B, Tq, Tk, C, NH, causal);
    prof_secs[2] += prof_now() - t0; prof_flops[2] += 4.0 * (C / NH) * attn_pairs(B, Tq, Tk, NH, causal);
}
void attention_backward(float* dq, float* dk, float* dv, float* datt, const float* dout,
                        const float* att, const float* q, int q_stride, const float* k,
                        const float* v, int kv_stride, int B, int Tq, int Tk, int C, int NH, int causal) {
    double t0 = prof_now(); attention_backward_impl(dq, dk, dv, datt, dout, att, q, q_stride, k, v, kv_stride, B, Tq, Tk, C, NH, causal);
    prof_secs[3] += prof_now() - t0; prof_flops[3] += 8.0 * (C / NH) * attn_pairs(B, Tq, Tk, NH, causal);
}
"""
anchor = "// Input embeddings with positions"
assert anchor in src
src = src.replace(anchor, wrappers + "\n" + anchor, 1)
inc = re.search(r'#include "vlvc/model.h"[^\n]*\n', src)
assert inc, "train_vlv.c no longer includes vlvc/model.h"
src = src.replace(inc[0], inc[0] + counters, 1)
open(os.path.join(work, "train_prof.c"), "w").write(src)

if args.preset == "full":
    cfg = ".d_v = 128, .L_v = 4, .nh_v = 4, .L_a = 2, .nh_a = 4, .d_t = 128, .L_t = 2, .nh_t = 4, " \
          ".d_d = 128, .L_d = 6, .nh_d = 4, .d_freq = 64, .d_g = 128, .L_g = 4, .nh_g = 4, .cap_len = 24"
else:
    cfg = ".d_v = 96, .L_v = 3, .nh_v = 3, .L_a = 2, .nh_a = 3, .d_t = 96, .L_t = 2, .nh_t = 3, " \
          ".d_d = 96, .L_d = 4, .nh_d = 3, .d_freq = 64, .d_g = 96, .L_g = 2, .nh_g = 3, .cap_len = 16"
driver = r"""
#define VLV_NO_MAIN
#include "train_prof.c"
int main(int argc, char** argv) {
    int B = atoi(argv[1]), steps = atoi(argv[2]);
    Config c = { .img_size = 32, .patch = 4, .n_q = 16, .vocab = VOCAB, CFG,
                 .prediction = PREDICT_EPS, .n_timesteps = 1000, .n_z = 16 };
    Model m;
    model_build(&m, &c, B);
    model_init(&m, 1337);
    size_t img = (size_t)B * c.img_size * c.img_size * 3;
    float* images = (float*)mallocCheck(img * sizeof(float));
    float* noise = (float*)mallocCheck(img * sizeof(float));
    int* text = (int*)mallocCheck((size_t)B * c.n_q * sizeof(int));
    int* caption = (int*)mallocCheck((size_t)B * c.cap_len * sizeof(int));
    int* timesteps = (int*)mallocCheck(B * sizeof(int));
    uint64_t rng = 42;
    for (size_t i = 0; i < img; i++) { images[i] = 2.0f * random_uniform(&rng) - 1.0f; noise[i] = random_normal(&rng); }
    for (int b = 0; b < B; b++) {
        timesteps[b] = random_u32(&rng) % c.n_timesteps;
        int words = 1 + random_u32(&rng) % 8;
        for (int j = 0; j < c.n_q; j++) { text[b * c.n_q + j] = j == 0 ? TOKEN_BOS : j <= words ? TOKEN_FIRST_WORD + random_u32(&rng) % (c.vocab - TOKEN_FIRST_WORD) : j == words + 1 ? TOKEN_EOS : TOKEN_PAD; }
        for (int j = 0; j < c.cap_len; j++) { caption[b * c.cap_len + j] = j < c.n_q ? text[b * c.n_q + j] : TOKEN_PAD; }
    }
    Batch batch = { images, text, caption, noise, timesteps };
    AdamW opt = { .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.0f, .grad_clip = 1.0f };
    static const char* names[] = { "stage0", "stage0b", "stage1", "stage2" };
    printf("%zu parameters, batch %d, %d thread(s)\n", m.num_params, B, omp_get_max_threads());
    for (int o = 0; o < NUM_OBJECTIVES; o++) {
        int groups = objective_groups((Objective)o);
        vlv_reset_optimizer(&m);
        for (int step = 0; step < steps; step++) {
            memset(prof_flops, 0, sizeof prof_flops); memset(prof_secs, 0, sizeof prof_secs);
            double t0 = prof_now();
            float loss = vlv_train_step(&m, (Objective)o, &batch, groups, &opt);
            double ms = (prof_now() - t0) * 1e3;
            double tf = prof_flops[0] + prof_flops[1] + prof_flops[2] + prof_flops[3];
            double ts = prof_secs[0] + prof_secs[1] + prof_secs[2] + prof_secs[3];
            printf("%-7s step %d: loss %.4f | %7.1f ms | %.2f GFLOP, %5.1f GFLOP/s | matmul fwd %.2f GFLOP %6.1f ms (%5.1f GFLOP/s)"
                   " | matmul bwd %.2f GFLOP %6.1f ms (%5.1f GFLOP/s) | attn fwd %.3f GFLOP %5.1f ms | attn bwd %.3f GFLOP %5.1f ms"
                   " | rest %6.1f ms | attention %.1f%% of FLOPs\n",
                   names[o], step + 1, loss, ms, tf / 1e9, tf / ms / 1e6,
                   prof_flops[0] / 1e9, prof_secs[0] * 1e3, prof_flops[0] / prof_secs[0] / 1e9,
                   prof_flops[1] / 1e9, prof_secs[1] * 1e3, prof_flops[1] / (prof_secs[1] + 1e-12) / 1e9,
                   prof_flops[2] / 1e9, prof_secs[2] * 1e3, prof_flops[3] / 1e9, prof_secs[3] * 1e3,
                   ms - ts * 1e3, 100.0 * (prof_flops[2] + prof_flops[3]) / tf);
        }
    }
    free(images); free(noise); free(text); free(caption); free(timesteps);
    model_free(&m);
    (void)argc;
    return 0;
}
""".replace("CFG", cfg).replace("VOCAB", str(args.vocab))
open(os.path.join(work, "driver.c"), "w").write(driver)
exe = os.path.join(work, "driver")
# the Makefile's flags (-march=native, its vector width, -fopenmp, ...), less the commit stamp
cflags = subprocess.run(["make", "-s", "--no-print-directory", "print-cflags"], cwd=root, check=True,
                        capture_output=True, text=True).stdout.strip().splitlines()[-1].split()
cflags = [f for f in cflags if not f.startswith("-DVLV_COMMIT")]
subprocess.run([args.cc] + cflags + ["-o", exe, os.path.join(work, "driver.c"), "-lz", "-lm"], check=True, cwd=work)
env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
r = subprocess.run([exe, str(args.b), str(args.n)], env=env, capture_output=True, text=True, cwd=work)
print(r.stdout, end="")
print(r.stderr, end="", file=sys.stderr)
sys.exit(r.returncode)
