#!/usr/bin/env python3
"""
What the stage-1 encoder's z says about an image's place: linear probes on z and on the
context TextEnc(z), for the row (top / middle / bottom) and the column (left / centre / right)
of the object (doc/results/history.md, measurement 9: the captions swap top and bottom).

    ./train_vlv --preset full --seed S --export 2000 --out DATA     # the run's world
    /usr/bin/python3 dev/probes/probe_z.py RUN/model.bin DATA

A ridge-regression probe to the one-hot class is fitted on the 2,000 unpaired images (and on the
K = 500 captioned ones, what stage 2 learns from) and scored on the 512 test images, on z
flattened and on each of its positions alone. If z separates the
rows linearly, the row is in z and the decoder or the captioner fails to read it; if not, the
encoder has not learned it.

It also prints what stage 1's objective pays for a wrong place: the frozen decoder's denoising
loss on the test images (the same noise, t uniform as in training) with the true caption, with
the row mirrored (top <-> bottom) and with the column mirrored (left <-> right). The more a
mirror costs, the stronger the gradient that teaches z that part of the place.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vlv  # noqa: E402  (dev/vlv.py: the PyTorch twin)


def row_and_column(caption):
    place = caption.split(' ', 4)[4]  # "a SIZE COLOUR SHAPE <place phrase>"
    row = 0 if 'top' in place else 2 if 'bottom' in place else 1
    col = 0 if 'left' in place else 2 if 'right' in place else 1
    return row, col


def features(model, images, batch=256):
    zs, cs = [], []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch):
            z = model.adapter(model.vit(images[i:i + batch]))
            zs.append(z)
            cs.append(model.textenc(z=z))
    return torch.cat(zs), torch.cat(cs)


def probe(train_x, train_y, test_x, test_y, ridge=1e-2):
    """Accuracy of a ridge-regression probe (standardised features, one-hot targets, 3 classes)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    a = torch.cat([a, torch.ones(a.shape[0], 1)], 1).double()
    b = torch.cat([b, torch.ones(b.shape[0], 1)], 1).double()
    target = torch.nn.functional.one_hot(train_y, 3).double()
    w = torch.linalg.solve(a.T @ a + ridge * a.shape[0] * torch.eye(a.shape[1], dtype=a.dtype), a.T @ target)
    return ((b @ w).argmax(1) == test_y).float().mean().item()


def mirror(caption, a, b):
    words = caption.split(' ')
    return ' '.join(b if w == a else a if w == b else w for w in words)


def mirror_costs(model, vocab, images, captions, draws=4):
    """Mean denoising loss per image with the true, row-mirrored and column-mirrored captions."""
    cfg, g = model.cfg, torch.Generator().manual_seed(0)
    rows = [i for i, c in enumerate(captions) if row_and_column(c)[0] != 1]
    cols = [i for i, c in enumerate(captions) if row_and_column(c)[1] != 1]
    out = {}
    with torch.no_grad():
        for name, idx, a, b in (('row', rows, 'top', 'bottom'), ('column', cols, 'left', 'right')):
            x0 = images[idx]
            true = vlv.encode(vocab, [captions[i] for i in idx], cfg.n_q)
            flip = vlv.encode(vocab, [mirror(captions[i], a, b) for i in idx], cfg.n_q)
            c_true, c_flip = model.textenc(tokens=true), model.textenc(tokens=flip)
            lt = lf = 0.0
            for _ in range(draws):
                noise = torch.randn(x0.shape, generator=g)
                t = torch.randint(0, cfg.n_timesteps, (x0.shape[0],), generator=g)
                lt += model.diffusion_loss(x0, noise, t, c_true)[0].item() / draws
                lf += model.diffusion_loss(x0, noise, t, c_flip)[0].item() / draws
            out[name] = (len(idx), lt, lf)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model = vlv.load_model(sys.argv[1])
    model.eval()
    sets, data = {}, {}
    for split in ('unpaired', 'captioned', 'test'):
        images, captions = data[split] = vlv.load_shapes(f'{sys.argv[2]}/shapes_{split}.bin')
        labels = torch.tensor([row_and_column(c) for c in captions])
        sets[split] = features(model, images) + (labels,)
    costs = mirror_costs(model, vlv.load_vocab(f'{sys.argv[2]}/vocab.txt'), *data['test'])
    print('| the decoder, test images | images | loss, true caption | loss, mirrored | mirrored / true |')
    print('|---|---|---|---|---|')
    for name, (n, lt, lf) in costs.items():
        print(f'| {name} mirrored | {n} | {lt:.5f} | {lf:.5f} | {lf / lt:.3f} |')
    (z_tr, c_tr, y_tr), (z_te, c_te, y_te) = sets['unpaired'], sets['test']
    print(f'probes scored on {z_te.shape[0]} test images; chance about 33%')
    print('| features | fitted on | row (top/middle/bottom) | column (left/centre/right) |')
    print('|---|---|---|---|')
    for split in ('unpaired', 'captioned'):
        zs, cs, ys = sets[split]
        for name, tr, te in (('z, all positions', zs, z_te), ('TextEnc(z), all positions', cs, c_te)):
            tr, te = tr.flatten(1), te.flatten(1)
            print(f'| {name} | {tr.shape[0]} {split} | {probe(tr, ys[:, 0], te, y_te[:, 0]):.1%} '
                  f'| {probe(tr, ys[:, 1], te, y_te[:, 1]):.1%} |')
    for p in range(z_tr.shape[1]):
        print(f'| z position {p} | {z_tr.shape[0]} unpaired | {probe(z_tr[:, p], y_tr[:, 0], z_te[:, p], y_te[:, 0]):.1%} '
              f'| {probe(z_tr[:, p], y_tr[:, 1], z_te[:, p], y_te[:, 1]):.1%} |')


if __name__ == '__main__':
    try:
        main()
    except (vlv.FormatError, OSError) as e:
        sys.exit(f'error: {e}')
