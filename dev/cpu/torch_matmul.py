#!/usr/bin/env python3
"""PyTorch's side of dev/cpu/matmul.c's timing table: the same shapes, the same three
products (torch.nn.functional.linear forward; dinp = dout @ W; dW = dout^T @ inp plus
db = dout.sum(0)), float32, median and fastest of R runs, at 1 and 2 threads.

usage: python3 dev/cpu/torch_matmul.py [--reps 21] [--threads 1,2]
(the Debian torch here calls OpenBLAS (pthreads) for these; "threads" are OpenBLAS's, torch's
own OpenMP pool is kept at 1 thread: with both at 2 the spinning threads oversubscribe the
2 cores and torch ran 2-3x slower than with 1)
"""
import argparse, os, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--reps", type=int, default=21)
ap.add_argument("--threads", default="1,2")
args = ap.parse_args()
threads = [int(t) for t in args.threads.split(",")]

# one process per thread count: OpenBLAS reads its thread count when it is loaded
if os.environ.get("_TORCH_MATMUL_CHILD") is None:
    import subprocess
    for t in threads:
        # each product is one BLAS call, so the threads that matter are OpenBLAS's; torch's own
        # OpenMP pool stays at 1 (2 OpenMP + 2 OpenBLAS threads spinning on 2 cores ran 2-3x slower)
        env = dict(os.environ, _TORCH_MATMUL_CHILD="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS=str(t),
                   MKL_NUM_THREADS=str(t), TORCH_MATMUL_THREADS=str(t))
        subprocess.run([sys.executable, __file__, "--reps", str(args.reps), "--threads", str(t)], env=env, check=True)
    sys.exit(0)

import torch
torch.manual_seed(0)
t = threads[0]
torch.set_num_threads(1)
shapes = [  # name, N, C, OC, calls per step, has dinp
    ("qkv        2048x128->384", 2048, 128, 384, 1, 1),
    ("attn proj  2048x128->128", 2048, 128, 128, 1, 1),
    ("mlp fc     2048x128->512", 2048, 128, 512, 1, 1),
    ("mlp proj   2048x512->128", 2048, 512, 128, 1, 1),
    ("cross kv   2048x128->256", 2048, 128, 256, 1, 1),
    ("patch emb  2048x48->128 ", 2048, 48, 128, 1, 0),
    ("DiT final  2048x128->48 ", 2048, 128, 48, 1, 1),
    ("GPT qkv    1280x128->384", 1280, 128, 384, 1, 1),
    ("GPT proj   1280x128->128", 1280, 128, 128, 1, 1),
    ("GPT fc     1280x128->512", 1280, 128, 512, 1, 1),
    ("GPT mproj  1280x512->128", 1280, 512, 128, 1, 1),
    ("LM head    24x128->64 x32", 24, 128, 64, 32, 1),
    ("adaLN      32x128->768  ", 32, 128, 768, 1, 1),
]
print(f"\nPyTorch {torch.__version__}, OpenBLAS threads {os.environ.get('OPENBLAS_NUM_THREADS')} (torch intra-op threads {torch.get_num_threads()}); "
      f"median ms of {args.reps} runs of all the step's calls of each shape, GFLOP/s at the median and at the fastest run")
print(f"{'shape':26s} {'product':10s} |  med ms   GF/s   best")
total = [0.0, 0.0, 0.0]
for name, N, C, OC, calls, has_dinp in shapes:
    x = torch.randn(N, C)
    w = torch.randn(OC, C)
    b = torch.randn(OC)
    dy = torch.randn(N, OC)
    dx = torch.zeros(N, C)
    dw = torch.zeros(OC, C)
    db = torch.zeros(OC)
    prods = [
        ("forward", lambda: torch.nn.functional.linear(x, w, b)),
        ("bwd-input", lambda: dx.addmm_(dy, w)),
        ("bwd-weight", lambda: (dw.addmm_(dy.t(), x), db.add_(dy.sum(0)))),
    ]
    flops = 2.0 * N * C * OC * calls
    for pi, (pname, fn) in enumerate(prods):
        if pi == 1 and not has_dinp:
            continue
        ts = []
        for r in range(args.reps + 2):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            if r >= 2:
                ts.append(time.perf_counter() - t0)
        ts.sort()
        med = ts[len(ts) // 2]
        total[pi] += med
        print(f"{name:26s} {pname:10s} | {med * 1e3:7.3f} {flops / med / 1e9:6.1f} {flops / ts[0] / 1e9:6.1f}")
print(f"sum over the shapes: forward {total[0] * 1e3:.2f} ms, bwd-input {total[1] * 1e3:.2f} ms, "
      f"bwd-weight {total[2] * 1e3:.2f} ms, all {sum(total) * 1e3:.2f} ms")
