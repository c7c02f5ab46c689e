#!/usr/bin/env python3
"""
The PyTorch side of the speed comparison in dev/gpu_check.sh: one training step of each
objective of the default-size model (train_vlv.c's main: 32x32 images, widths 128, ...),
timed in PyTorch eager mode and under torch.compile, on the same GPU as train_vlvcu.

    python3 dev/bench_gpu.py [--batch 32] [--steps 20] [--budget_s 300] [--device cuda]

A step is what train_vlv.cu's vlv_train_step does: zero the gradients, forward, backward,
clip the gradients to a global norm of 1, AdamW (lr 1e-3, betas 0.9/0.95, no weight decay,
PyTorch's default implementation for the device). The model is dev/vlv.py's, in float32, with
TF32 off (the CUDA code computes in plain fp32). Each objective trains its own groups, the
others frozen, as in doc/model.md. Prints one line per measurement,
    RESULT <eager|compile> <stage> <ms per step> <images per second>
(skipped measurements print SKIP and why), then a table.

torch.compile compiles each objective's forward + backward graph once (tens of seconds
each); when less than --compile_s seconds of --budget_s remain, the remaining objectives are
skipped rather than overrunning dev/gpu_check.sh's limit.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import vlv  # noqa: E402  (dev/vlv.py: the PyTorch twin)

# the default model of train_vlv.c's main
DEFAULT = dict(img_size=32, patch=4, n_q=16, vocab=64, cap_len=24, d_v=128, L_v=4, nh_v=4, L_a=2, nh_a=4,
               d_t=128, L_t=2, nh_t=4, d_d=128, L_d=6, nh_d=4, d_freq=64, d_g=128, L_g=4, nh_g=4,
               prediction=0, n_timesteps=1000)


def make_step(model, stage, batch, compiled):
    params = vlv.set_trainable(model, stage)  # this objective's tensors; the rest frozen
    trainable = [p for _, p in params]
    groups = [{'params': [p for p in trainable if p.dim() >= 2], 'weight_decay': 0.0},
              {'params': [p for p in trainable if p.dim() < 2], 'weight_decay': 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8)

    def loss_fn(b):
        return model.objective(stage, b)[0]

    fn = torch.compile(loss_fn) if compiled else loss_fn

    def step():
        opt.zero_grad(set_to_none=True)
        loss = fn(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        return loss
    return step


def time_steps(step, steps, warmup, sync):
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    ms = (time.perf_counter() - t0) * 1e3 / steps
    if not torch.isfinite(loss).item():
        raise RuntimeError('the loss is not finite')
    return ms


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--steps', type=int, default=20, help='timed steps per measurement')
    ap.add_argument('--warmup', type=int, default=3, help='untimed steps first (compilation happens here)')
    ap.add_argument('--budget_s', type=float, default=300.0, help='stop starting compiled runs after this')
    ap.add_argument('--compile_s', type=float, default=75.0, help='time to reserve for one compiled objective')
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--no_compile', action='store_true')
    a = ap.parse_args()
    start = time.time()
    dev = torch.device(a.device)
    if dev.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        name = torch.cuda.get_device_name(dev)
        sync = torch.cuda.synchronize
    else:
        name = 'cpu'
        sync = lambda: None  # noqa: E731
    torch.set_float32_matmul_precision('highest')
    print(f'torch {torch.__version__} on {name}; batch {a.batch}, {a.steps} timed steps after {a.warmup}', flush=True)

    cfg = vlv.Config(**DEFAULT)
    torch.manual_seed(1337)
    model = vlv.VLV(cfg).to(dev).float()
    g = torch.Generator().manual_seed(42)
    batch = {k: (v.float() if v.is_floating_point() else v).to(dev) for k, v in vlv.make_batch(cfg, a.batch, g).items()}
    print(f'{vlv.num_params(cfg)} parameters', flush=True)

    results = {}
    modes = ['eager'] + ([] if a.no_compile else ['compile'])
    for mode in modes:
        for stage in vlv.STAGES:
            left = a.budget_s - (time.time() - start)
            if mode == 'compile' and left < a.compile_s:
                print(f'SKIP {mode} {stage}: {left:.0f} s of the budget left, {a.compile_s:.0f} s reserved per compiled objective',
                      flush=True)
                continue
            try:
                t0 = time.time()
                step = make_step(model, stage, batch, mode == 'compile')
                ms = time_steps(step, a.steps, a.warmup, sync)
                results[(mode, stage)] = ms
                print(f'RESULT {mode} {stage} {ms:.3f} {a.batch / (ms * 1e-3):.1f}   ({time.time() - t0:.1f} s incl. warm-up)',
                      flush=True)
            except Exception as e:  # report and go on: one failing mode must not hide the others
                print(f'SKIP {mode} {stage}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}', flush=True)
            if mode == 'compile' and hasattr(torch, '_dynamo'):
                torch._dynamo.reset()  # free the graphs of this objective

    print(f'\nimages/s per training step, batch {a.batch} ({name})')
    print(f'{"stage":8s}' + ''.join(f'{m:>14s}' for m in modes))
    for stage in vlv.STAGES:
        row = ''.join(f'{a.batch / (results[(m, stage)] * 1e-3):14.1f}' if (m, stage) in results else f'{"-":>14s}'
                      for m in modes)
        print(f'{stage:8s}{row}')
    print(f'total {time.time() - start:.1f} s')


if __name__ == '__main__':
    main()
