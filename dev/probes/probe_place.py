#!/usr/bin/env python3
"""
Which context positions the frozen decoder reads, and whether it tells the place words apart
(doc/results/history.md, measurement 7: the full preset's decoder mirrored places because it ignored
the first place word).

    /usr/bin/python3 dev/probes/probe_place.py RUN/model.bin RUN/vocab.txt

For the caption "a small yellow triangle at the top right" it prints
  * per context position p, how much the text encoder's output changes when "top" becomes
    "bottom" (the first place word) and when "right" becomes "left" (the second);
  * per position, how much the DiT's ε-prediction changes (relative norm) when that position's
    context vector is perturbed by noise of half its size, at t = 900, 500, 100;
  * how much the DiT's prediction changes when the whole context is that of the caption with
    "bottom right" and with "top left" instead.
A decoder that places objects by the caption changes its prediction for both swaps alike.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vlv  # noqa: E402  (dev/vlv.py: the PyTorch twin)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model = vlv.load_model(sys.argv[1])
    cfg = model.cfg
    vocab = vlv.load_vocab(sys.argv[2])
    captions = ['a small yellow triangle at the top right', 'a small yellow triangle at the bottom right',
                'a small yellow triangle at the top left']
    with torch.no_grad():
        c = model.textenc(tokens=vlv.encode(vocab, captions, cfg.n_q))
        print('context change per position, top -> bottom: ', [round(rel(c[1, p], c[0, p]), 3) for p in range(cfg.n_q)])
        print('context change per position, right -> left: ', [round(rel(c[2, p], c[0, p]), 3) for p in range(cfg.n_q)])
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, cfg.img_size, cfg.img_size, 3, generator=g)
        for t in (900, 500, 100):
            tt = torch.full((1,), t, dtype=torch.long)
            base = model.dit(x, tt, c[0:1])
            reads = []
            for p in range(cfg.n_q):
                c2 = c[0:1].clone()
                c2[0, p] += 0.5 * torch.randn(cfg.d_t, generator=g) * c2[0, p].norm() / cfg.d_t ** 0.5
                reads.append(round(rel(model.dit(x, tt, c2), base), 4))
            print(f't = {t}: prediction change per perturbed position {reads}')
            print(f'        whole context: top -> bottom {rel(model.dit(x, tt, c[1:2]), base):.4f}, '
                  f'right -> left {rel(model.dit(x, tt, c[2:3]), base):.4f}')


if __name__ == '__main__':
    main()
