#!/usr/bin/env python3
"""
The PyTorch side of the speed comparisons (dev/bench/bench_cpu.sh on the CPU, dev/gpu/gpu_check.sh on a
GPU): the median time of one training step of each objective, and of one-image inference
(a greedy caption; a round trip), for dev/vlv.py's model in float32.

    python3 dev/bench/bench_torch.py [--ckpt bench.bin] [--batch 32] [--steps 20] [--threads N]
                               [--device cpu|cuda] [--no_compile] [--sample_steps 25] [--guidance 1]

--ckpt takes the config and weights of a vlv.c checkpoint (./train_vlv --bench writes
bench.bin), so both sides time the same model; without it, the model is the config of
train_vlvcu --model-check (MODEL_CHECK below) with fresh weights.

A training step is what vlv_train_step does: zero the gradients, forward, backward, clip the
gradients to a global norm of 1, AdamW (PyTorch's default implementation for the device).
Each objective trains its own groups, the others frozen (doc/model.md). The caption is
ViT -> adapter -> text encoder -> T_c - 1 caption-decoder passes (no KV cache, as in C); the
round trip is the same context, the empty caption's context, then guided DDIM (2 DiT passes a
step). TF32 is off on a GPU (the CUDA code computes in plain fp32). Prints one line per item,
    RESULT <eager|compile> <stage0|stage0b|stage1|stage2|caption|roundtrip> <ms> <images/s>
(the median of --steps timed repeats after --warmup untimed ones; a skipped item prints SKIP
and why), then a table. torch.compile applies to the training steps only; when less than
--compile_s seconds of --budget_s remain, the remaining compiled objectives are skipped.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402
import vlv  # noqa: E402  (dev/vlv.py: the PyTorch twin)

# the config of train_vlvcu --model-check (train_vlv.cu)
MODEL_CHECK = dict(img_size=32, patch=4, n_q=16, vocab=64, cap_len=24, d_v=128, L_v=4, nh_v=4, L_a=2, nh_a=4,
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
        if not torch.isfinite(loss).item():  # also waits for the GPU
            raise RuntimeError('the loss is not finite')
    return step


def make_inference(model, kind, image, a):
    cfg = model.cfg
    empty = vlv.empty_caption(1, cfg.n_q).to(image.device)

    @torch.no_grad()
    def infer():
        c = model.textenc(z=model.adapter(model.vit(image)))
        if kind == 'caption':
            tokens, _ = vlv.greedy_caption(model, c, cfg.cap_len)
            return tokens
        x = torch.randn(image.shape, device=image.device)
        return vlv.ddim(model, x, c, model.textenc(tokens=empty), a.sample_steps, a.sample_steps, a.guidance)
    return infer


def median_ms(fn, steps, warmup, sync):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def blas_library():
    """What PyTorch's CPU matmuls run on: MKL where it is linked in (the PyPI wheel), else the
    BLAS shared libraries mapped after a matmul (Debian's torch calls whichever libblas.so.3 the
    system selects: the slow reference BLAS unless OpenBLAS is installed)."""
    config = torch.__config__.show()
    if 'BLAS_INFO=mkl' in config:
        return 'MKL (linked into libtorch)'
    torch.ones(64, 64) @ torch.ones(64, 64)
    try:
        with open('/proc/self/maps') as f:
            libs = {line.split()[-1] for line in f if '.so' in line}
    except OSError:
        return 'unknown (no /proc/self/maps)'
    found = sorted({os.path.basename(os.path.realpath(p)) for p in libs
                    if any(k in os.path.basename(p).lower() for k in ('libblas', 'openblas', 'blis'))})
    return ', '.join(found) if found else 'unknown'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--ckpt', help='a vlv.c checkpoint: its config and weights (./train_vlv --bench writes bench.bin)')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--steps', type=int, default=20, help='timed repeats per item')
    ap.add_argument('--warmup', type=int, default=3, help='untimed repeats first (compilation happens here)')
    ap.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: leave PyTorch\'s default)')
    ap.add_argument('--sample_steps', type=int, default=25, help='DDIM steps of a round trip')
    ap.add_argument('--guidance', type=float, default=1.0)
    ap.add_argument('--budget_s', type=float, default=300.0, help='stop starting compiled runs after this')
    ap.add_argument('--compile_s', type=float, default=75.0, help='time to reserve for one compiled objective')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--no_compile', action='store_true')
    ap.add_argument('--no_inference', action='store_true', help='time the training steps only')
    a = ap.parse_args()
    start = time.time()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if dev.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        name = torch.cuda.get_device_name(dev)
        sync = torch.cuda.synchronize
    else:
        name = f'cpu, {torch.get_num_threads()} threads'
        sync = lambda: None  # noqa: E731
    torch.set_float32_matmul_precision('highest')
    print(f'torch {torch.__version__} on {name}; batch {a.batch}, median of {a.steps} timed repeats after {a.warmup}',
          flush=True)
    if dev.type == 'cpu':
        print(f'  BLAS: {blas_library()}', flush=True)

    try:
        if a.ckpt:
            cfg, flat = vlv.read_checkpoint(a.ckpt)
        else:
            cfg, flat = vlv.Config(**MODEL_CHECK), None
    except (vlv.FormatError, OSError) as e:
        sys.exit(f'error: {e}')
    torch.manual_seed(1337)
    model = vlv.VLV(cfg)
    if flat is not None:
        vlv.load_weights(model, flat, a.ckpt)
    model = model.to(dev).float()
    g = torch.Generator().manual_seed(42)
    batch = {k: (v.float() if v.is_floating_point() else v).to(dev) for k, v in vlv.make_batch(cfg, a.batch, g).items()}
    print(f'{vlv.num_params(cfg)} parameters' + (f' from {a.ckpt}' if a.ckpt else ' (the --model-check config)'), flush=True)

    results = {}
    modes = ['eager'] + ([] if a.no_compile else ['compile'])
    items = list(vlv.STAGES) + ([] if a.no_inference else ['caption', 'roundtrip'])
    for mode in modes:
        for item in items:
            left = a.budget_s - (time.time() - start)
            if mode == 'compile' and item not in vlv.STAGES:
                continue
            if mode == 'compile' and left < a.compile_s:
                print(f'SKIP {mode} {item}: {left:.0f} s of the budget left, {a.compile_s:.0f} s reserved per compiled objective',
                      flush=True)
                continue
            try:
                t0 = time.time()
                if item in vlv.STAGES:
                    fn, images = make_step(model, item, batch, mode == 'compile'), a.batch
                else:
                    fn, images = make_inference(model, item, batch['images'][:1], a), 1
                ms = median_ms(fn, a.steps, a.warmup, sync)
                results[(mode, item)] = ms
                print(f'RESULT {mode} {item} {ms:.3f} {images / (ms * 1e-3):.1f}   ({time.time() - t0:.1f} s incl. warm-up)',
                      flush=True)
            except Exception as e:  # report and go on: one failing mode must not hide the others
                print(f'SKIP {mode} {item}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}', flush=True)
            if mode == 'compile' and hasattr(torch, '_dynamo'):
                torch._dynamo.reset()  # free the graphs of this objective

    print(f'\nmedian ms per item (training steps: batch {a.batch}; inference: one image) ({name})')
    print(f'{"item":10s}' + ''.join(f'{m:>14s}' for m in modes))
    for item in items:
        row = ''.join(f'{results[(m, item)]:14.3f}' if (m, item) in results else f'{"-":>14s}' for m in modes)
        print(f'{item:10s}{row}')
    print(f'total {time.time() - start:.1f} s')


if __name__ == '__main__':
    main()
