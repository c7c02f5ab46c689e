#!/usr/bin/env python3
"""
Fashion-MNIST class accuracy without captions, beside VLV's (issue "The paper's experiments in
miniature", real images): what a plain supervised classifier learns from the same K labelled
images that stage 2 captions, and what a linear read-out of stage 1's z knows.

    ./train_vlv --preset scratch --data fashion-mnist --out RUN        # VLV and its baseline
    /usr/bin/python3 dev/probes/probe_classifier.py RUN --K 100,500 --seeds 1,2,3

RUN is a finished `--data fashion-mnist` run folder: its stage0b.bin (the frozen decoder) and
stage1.bin (stage 1's encoder). The items are the C pipeline's (vlvc/sources.h): the K labelled
pairs are train items 55000 .. 55000+K-1, the test items the first --eval of t10k (the ones
train_vlv scores; --eval 10000 takes them all). Images as vlvc/datasets.h's idx_image: the
28 x 28 digit centred on black in the model's S x S, byte v -> v / 127.5 - 1, grey as RGB.

  supervised   the vision encoder started from the DiT (as the no-stage-1 baseline's is,
               train_vlv.c vlv_vit_from_dit), its tokens averaged, a linear head to the 10
               classes; encoder and head trained on the K labelled images by cross-entropy
               (AdamW, batch 32, --steps, each of --lrs; with several, the best one on the
               test items is an upper bound of a tuned classifier)
  probe z      ridge regression from stage 1's z (frozen, trained on unlabelled images only,
               flattened) to the one-hot class, fitted on the same K images
  probe DiT    the same read-out of the DiT-started encoder's averaged tokens, untrained

One line per case and seed, then a table of the mean and standard deviation over the seeds
(the probes are deterministic: one figure) and `CLASSIFIER case K=.. mean=.. sd=.. n=..` lines.
"""
import argparse
import gzip
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vlv  # noqa: E402  (dev/vlv.py: the PyTorch twin)

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
CAPTIONED_FIRST = 55000  # vlvc/sources.h: SPLIT_CAPTIONED is train items 55000..59999


def read_idx(path):
    """An IDX file (gzip or plain) -> uint8 array of its dimensions."""
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        sys.exit(f"{path}: not an IDX file of unsigned bytes")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(data[3])]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims))
    if body.size != int(np.prod(dims)):
        sys.exit(f"{path}: {body.size} bytes after the header, the header says {int(np.prod(dims))}")
    return body.reshape(dims)


def load_split(folder, name):
    def path(kind):
        p = os.path.join(folder, f'{name}-{kind}-idx{3 if kind == "images" else 1}-ubyte')
        return p + '.gz' if os.path.exists(p + '.gz') else p
    return read_idx(path('images')), read_idx(path('labels')).astype(np.int64)


def model_images(raw, S):
    """uint8 [N, 28, 28] -> float [N, S, S, 3] as idx_image (S >= 28: centred, unscaled)."""
    if S < 28:
        sys.exit(f"the model's images are {S} x {S}: this probe places 28 x 28 images unscaled (S >= 28)")
    off = (S - 28) // 2
    out = -torch.ones(raw.shape[0], S, S, 3)
    x = torch.from_numpy(raw.astype(np.float32)) / 127.5 - 1.0
    out[:, off:off + 28, off:off + 28, :] = x[..., None]
    return out


@torch.no_grad()
def features(fn, images, batch=500):
    return torch.cat([fn(images[i:i + batch]) for i in range(0, images.shape[0], batch)])


def ridge_probe(train_x, train_y, test_x, test_y, ridge=1e-2):
    """Accuracy of ridge regression to the one-hot class (standardised features, 10 classes)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    a = torch.cat([a, torch.ones(a.shape[0], 1)], 1).double()
    b = torch.cat([b, torch.ones(b.shape[0], 1)], 1).double()
    target = F.one_hot(train_y, 10).double()
    w = torch.linalg.solve(a.T @ a + ridge * a.shape[0] * torch.eye(a.shape[1], dtype=a.dtype), a.T @ target)
    return ((b @ w).argmax(1) == test_y).float().mean().item()


def supervised(decoder_path, train_x, train_y, test_x, test_y, lr, steps, seed):
    """Test accuracy of the DiT-started encoder + a linear head trained on (train_x, train_y)."""
    torch.manual_seed(seed)
    model = vlv.load_model(decoder_path)
    vlv.vit_from_dit(model)
    vit = model.vit
    head = torch.nn.Linear(model.cfg.d_v, 10)
    torch.nn.init.normal_(head.weight, 0.0, 0.02)
    torch.nn.init.zeros_(head.bias)
    params = list(vit.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, train_x.shape[0], (min(32, train_x.shape[0]),), generator=g)
        loss = F.cross_entropy(head(vit(train_x[idx]).mean(1)), train_y[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    with torch.no_grad():
        pred = features(lambda x: head(vit(x).mean(1)), test_x).argmax(1)
    return (pred == test_y).float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('run', help='a finished --data fashion-mnist run folder (stage0b.bin, stage1.bin)')
    ap.add_argument('--data', default=FASHION_MNIST_DIR)
    ap.add_argument('--K', default='100,500', help='labelled images, comma-separated')
    ap.add_argument('--seeds', default='1,2,3')
    ap.add_argument('--lrs', default='3e-4', help="the supervised classifier's learning rates")
    ap.add_argument('--steps', type=int, default=1000, help="the supervised classifier's steps (batch 32)")
    ap.add_argument('--eval', type=int, default=512, help='test items: the first EVAL of t10k')
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ks, seeds = [int(k) for k in a.K.split(',')], [int(s) for s in a.seeds.split(',')]
    lrs = [float(x) for x in a.lrs.split(',')]
    decoder_path, stage1_path = os.path.join(a.run, 'stage0b.bin'), os.path.join(a.run, 'stage1.bin')
    for p in (decoder_path, stage1_path):
        if not os.path.exists(p):
            sys.exit(f"{p} is missing: give a finished `./train_vlv --data fashion-mnist` run folder")
    stage1 = vlv.load_model(stage1_path)
    S = stage1.cfg.img_size
    train_raw, train_labels = load_split(a.data, 'train')
    test_raw, test_labels = load_split(a.data, 't10k')
    if max(ks) > 60000 - CAPTIONED_FIRST or not 0 < a.eval <= test_raw.shape[0]:
        sys.exit(f"--K at most {60000 - CAPTIONED_FIRST}, --eval 1..{test_raw.shape[0]}")
    test_x, test_y = model_images(test_raw[:a.eval], S), torch.from_numpy(test_labels[:a.eval])
    labelled = model_images(train_raw[CAPTIONED_FIRST:CAPTIONED_FIRST + max(ks)], S)
    labels = torch.from_numpy(train_labels[CAPTIONED_FIRST:CAPTIONED_FIRST + max(ks)])
    print(f"run {a.run}: S {S}, d_v {stage1.cfg.d_v}, n_z {stage1.cfg.n_z}; {a.eval} test items; torch {torch.__version__}")

    z_of = lambda x: stage1.adapter(stage1.vit(x)).flatten(1)  # noqa: E731
    dit_start = vlv.load_model(decoder_path)
    vlv.vit_from_dit(dit_start)
    pooled_of = lambda x: dit_start.vit(x).mean(1)  # noqa: E731
    z_test, z_lab = features(z_of, test_x), features(z_of, labelled)
    p_test, p_lab = features(pooled_of, test_x), features(pooled_of, labelled)

    scores = {}
    for K in ks:
        x, y = labelled[:K], labels[:K]
        scores[('probe_z', K)] = [ridge_probe(z_lab[:K], y, z_test, test_y)]
        scores[('probe_dit', K)] = [ridge_probe(p_lab[:K], y, p_test, test_y)]
        print(f"K {K}: probe z {100 * scores[('probe_z', K)][0]:.1f}%, probe DiT {100 * scores[('probe_dit', K)][0]:.1f}%", flush=True)
        for lr in lrs:
            accs = []
            for seed in seeds:
                t0 = time.time()
                accs.append(supervised(decoder_path, x, y, test_x, test_y, lr, a.steps, seed))
                print(f"K {K}: supervised lr {lr:g} seed {seed}: {100 * accs[-1]:.1f}% ({time.time() - t0:.0f} s)", flush=True)
            scores[(f'supervised_lr{lr:g}', K)] = accs
    def cell(accs):
        if len(accs) == 1:
            return f"{100 * accs[0]:.1f}%"
        return f"{100 * statistics.mean(accs):.1f} ± {100 * statistics.stdev(accs):.1f}% ({len(accs)} seeds)"
    names = {'probe_z': "ridge read-out of stage 1's z (frozen)", 'probe_dit': "ridge read-out of the DiT-started encoder (frozen)"}
    names.update({f'supervised_lr{lr:g}': f'supervised: DiT-started encoder + linear head, lr {lr:g}, {a.steps} steps' for lr in lrs})
    print(f"\n| classifier ({a.eval} test items) | " + " | ".join(f"K = {K}" for K in ks) + " |")
    print("|---" * (len(ks) + 1) + "|")
    for case, title in names.items():
        print(f"| {title} | " + " | ".join(cell(scores[(case, K)]) for K in ks) + " |")
    print()
    for (case, K), accs in scores.items():
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"CLASSIFIER {case} K={K} mean={100 * statistics.mean(accs):.1f} sd={100 * sd:.1f} n={len(accs)}")


if __name__ == '__main__':
    main()
