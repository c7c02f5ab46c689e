#!/usr/bin/env python3
"""FLOP and time accounting of one training step of each objective of the default model.

Builds an instrumented copy of train_vlv.c in a temporary folder (train_vlv.c itself is not
touched): every matmul_forward / matmul_backward / attention_forward / attention_backward
call adds its FLOPs, counted analytically from its arguments, and its wall time to a
counter; ./train_vlv then prints, per objective and step, the FLOPs and the time of each
class and the rest of the step. Optionally splices the proposed kernels in first.

  FLOPs, counted as 2 per multiply-add:
    matmul forward         2 N C OC
    matmul backward-input  2 N C OC   (when dinp != NULL)
    matmul backward-weight 2 N C OC   (when dweight != NULL; the bias column sum, N OC, is not counted)
    attention forward      4 hs * (number of (query, key) pairs) per head: q.k and a.v
    attention backward     8 hs * pairs per head: da = do.v, dv, dq, dk
  (softmax, layernorm, GELU, residuals, AdamW: elementwise, O(N C), not counted)

usage: dev/cpu/step_flops.py [--proposal] [-b 32] [-n 3] [--threads 2]
"""
import argparse, os, re, subprocess, sys, tempfile

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ap = argparse.ArgumentParser()
ap.add_argument("--proposal", action="store_true", help="splice dev/cpu/matmul_kernels.h in first")
ap.add_argument("-b", type=int, default=32)
ap.add_argument("-n", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--cc", default="gcc")
args = ap.parse_args()

work = tempfile.mkdtemp(prefix="vlv_flops_")
if args.proposal:
    subprocess.run([sys.executable, os.path.join(root, "dev", "cpu", "splice.py"), work], check=True, stdout=subprocess.DEVNULL)
    src = open(os.path.join(work, "train_vlv.c")).read()
else:
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
names = ["matmul_forward", "matmul_backward", "attention_forward", "attention_backward"]
for n in names:
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
# the wrappers go right after the last of the four definitions' end: before "// Input embeddings"
anchor = "// Input embeddings with positions"
assert anchor in src
src = src.replace(anchor, wrappers + "\n" + anchor, 1)
# counters after the includes
inc = '#include "vlvc/model.h"\n'
assert inc in src
src = src.replace(inc, inc + counters, 1)
# print per step: reset before, print after each vlv_train_step in main
step = "float loss = vlv_train_step(&m, (Objective)o, &batch, groups, &opt);"
assert step in src
src = src.replace(step, "memset(prof_flops, 0, sizeof prof_flops); memset(prof_secs, 0, sizeof prof_secs);\n"
                  "            " + step, 1)
pr = 'printf("%-7s step %3d/%d | loss %.5f'
assert pr in src
src = src.replace(pr, r"""{ double tf = prof_flops[0] + prof_flops[1] + prof_flops[2] + prof_flops[3], ts = prof_secs[0] + prof_secs[1] + prof_secs[2] + prof_secs[3];
              printf("FLOPS %-7s step %d: total %.2f GFLOP | matmul fwd %.2f GFLOP %.1f ms (%.1f GFLOP/s) | matmul bwd %.2f GFLOP %.1f ms (%.1f GFLOP/s) | attn fwd %.3f GFLOP %.1f ms | attn bwd %.3f GFLOP %.1f ms | rest %.1f ms of %.1f ms | attention %.1f%% of FLOPs\n",
                     objective_name[o], step + 1, tf / 1e9, prof_flops[0] / 1e9, prof_secs[0] * 1e3, prof_flops[0] / prof_secs[0] / 1e9,
                     prof_flops[1] / 1e9, prof_secs[1] * 1e3, prof_flops[1] / (prof_secs[1] + 1e-12) / 1e9,
                     prof_flops[2] / 1e9, prof_secs[2] * 1e3, prof_flops[3] / 1e9, prof_secs[3] * 1e3, ms - ts * 1e3, ms,
                     100.0 * (prof_flops[2] + prof_flops[3]) / tf); }
            """ + pr, 1)
open(os.path.join(work, "train_prof.c"), "w").write(src)
exe = os.path.join(work, "train_prof")
subprocess.run([args.cc, "-O3", "-march=native", "-fopenmp", "-std=gnu11", "-o", exe, os.path.join(work, "train_prof.c"), "-lm"],
               check=True, cwd=work)
env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
r = subprocess.run([exe, "-b", str(args.b), "-n", str(args.n)], env=env, capture_output=True, text=True, cwd=work)
print(r.stdout, end="")
print(r.stderr, end="", file=sys.stderr)
sys.exit(r.returncode)
