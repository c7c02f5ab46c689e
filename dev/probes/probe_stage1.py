#!/usr/bin/env python3
"""
What stage 1 faces on a frozen decoder (doc/results/history.md, measurement 12): where in t the caption
helps the decoder, how far the context of an untrained encoder lies from anything the decoder
was trained on, and how fast a z optimised freely per image (no encoder) recovers the caption's
gain, which bounds what the encoder has to learn from.

    ./train_vlv --export 2000 --out DATA                 # the run's world (same --seed)
    /usr/bin/python3 dev/probes/probe_stage1.py RUN/stage0b.bin DATA [free_steps]

It prints
  * per timestep t: the decoder's ε-loss with the true caption, with the empty caption and
    with z = 0, on the same images and noise, and the caption's gain (empty − caption);
  * per timestep t: how much that loss rises when one attribute of the caption is wrong (the
    next size, colour or shape; the place mirrored), on one-object images off the center:
    where in t stage 1's loss tells a z with that attribute wrong from the right one;
  * the loss (t uniform, and t < 50) with the contexts TextEnc(z) of candidate starting
    points of z: 0, an untrained encoder's z (this seed's initialization), wte[PAD] at every
    position, the empty caption's token embeddings, and those plus the untrained z;
  * Adam on z itself, one z [N_q, d_t] per image for 64 images, starting from the empty
    caption's embeddings (lr 1e-2, a fresh noise and t per image and step), and the share of
    the caption's gain that z recovers every 25 steps, as the stage-1 health line measures it.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vlv  # noqa: E402  (dev/vlv.py: the PyTorch twin)


def loss_with(model, x0, noise, t, ctx):
    with torch.no_grad():
        return model.diffusion_loss(x0, noise, t, ctx)[0].item()


def gain_per_timestep(model, x0, tokens, g):
    n, empty = x0.shape[0], vlv.empty_caption(x0.shape[0], model.cfg.n_q)
    with torch.no_grad():
        c_true, c_empty = model.textenc(tokens=tokens), model.textenc(tokens=empty)
        c_zero = model.textenc(z=torch.zeros(n, model.cfg.n_q, model.cfg.d_t))
    print('    t | loss: caption   empty   z = 0 | gain (empty - caption)')
    for t in (1, 10, 50, 100, 200, 300, 500, 700, 900, 999):
        noise, tt = torch.randn(x0.shape, generator=g), torch.full((n,), t, dtype=torch.long)
        lc, le, lz = (loss_with(model, x0, noise, tt, c) for c in (c_true, c_empty, c_zero))
        print(f' {t:4d} |        {lc:.5f} {le:.5f} {lz:.5f} | {le - lc:.5f} ({(le - lc) / le:.0%} of the empty loss)')


SIZES, COLOURS = ('small', 'large'), ('red', 'green', 'blue', 'yellow', 'magenta', 'cyan', 'white', 'orange')
SHAPES = ('circle', 'square', 'triangle', 'diamond')
MIRROR = {'at the top left': 'at the bottom left', 'at the top': 'at the bottom', 'at the top right': 'at the bottom right',
          'on the left': 'on the right', 'in the center': 'in the center', 'on the right': 'on the left'}
MIRROR.update({v: k for k, v in list(MIRROR.items())})


def swapped(caption, attribute):
    """the one-object caption with one attribute changed: the next size, colour or shape in the
    grammar's lists, or the place mirrored (top <-> bottom, else left <-> right)"""
    words = caption.split(' ')
    size, colour, shape, place = words[1], words[2], words[3], ' '.join(words[4:])
    if attribute == 'size':
        size = SIZES[(SIZES.index(size) + 1) % len(SIZES)]
    elif attribute == 'colour':
        colour = COLOURS[(COLOURS.index(colour) + 1) % len(COLOURS)]
    elif attribute == 'shape':
        shape = SHAPES[(SHAPES.index(shape) + 1) % len(SHAPES)]
    else:
        place = MIRROR[place]
    return f'a {size} {colour} {shape} {place}'


def attribute_gain_per_timestep(model, x0, captions, vocab, g):
    """per t, how much the decoder's loss rises when one attribute of the caption is wrong: the
    signal a z that has that attribute wrong gets, in the stage-1 loss, at that t"""
    cfg = model.cfg
    keep = [i for i, c in enumerate(captions) if ' and ' not in c and 'center' not in c]
    x0, captions = x0[keep], [captions[i] for i in keep]
    attributes = ('size', 'colour', 'shape', 'place')
    with torch.no_grad():
        c_true = model.textenc(tokens=vlv.encode(vocab, captions, cfg.n_q))
        c_wrong = {a: model.textenc(tokens=vlv.encode(vocab, [swapped(c, a) for c in captions], cfg.n_q))
                   for a in attributes}
    print(f'\n{len(captions)} one-object images off the center: loss rise with one attribute wrong (place: mirrored)')
    print('    t | caption | ' + ' '.join(f'{a:>8s}' for a in attributes))
    for t in (1, 10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 950, 999):
        noise, tt = torch.randn(x0.shape, generator=g), torch.full((x0.shape[0],), t, dtype=torch.long)
        lc = loss_with(model, x0, noise, tt, c_true)
        rises = [loss_with(model, x0, noise, tt, c_wrong[a]) - lc for a in attributes]
        print(f' {t:4d} | {lc:.5f} | ' + ' '.join(f'{r:8.5f}' for r in rises))


def starting_points(model, x0, g):
    cfg, n = model.cfg, x0.shape[0]
    wte, empty = model.textenc.wte.detach(), vlv.empty_caption(n, cfg.n_q)
    with torch.no_grad():
        fresh = vlv.VLV(cfg)  # this seed's initialization of the encoder, as stage 1 starts from
        z_init = fresh.adapter(fresh.vit(x0))
    points = {
        'the empty caption (tokens)': None,
        'z = 0': torch.zeros(n, cfg.n_q, cfg.d_t),
        "an untrained encoder's z": z_init,
        'wte[PAD] at every position': wte[vlv.PAD].expand(n, cfg.n_q, cfg.d_t),
        "the empty caption's embeddings": wte[empty],
        "the empty caption's embeddings + untrained z": wte[empty] + z_init,
    }
    noise = torch.randn(x0.shape, generator=g)
    t_all, t_small = torch.randint(0, cfg.n_timesteps, (n,), generator=g), torch.randint(0, 50, (n,), generator=g)
    print('\nz to start from                              | loss, t uniform | loss, t < 50')
    for name, z in points.items():
        with torch.no_grad():
            ctx = model.textenc(tokens=empty) if z is None else model.textenc(z=z)
        print(f'{name:44s} | {loss_with(model, x0, noise, t_all, ctx):.5f}         '
              f'| {loss_with(model, x0, noise, t_small, ctx):.5f}')


def free_z(model, x0, tokens, steps, g):
    cfg, n = model.cfg, x0.shape[0]
    empty = vlv.empty_caption(n, cfg.n_q)
    draws = [(torch.randn(x0.shape, generator=g), torch.randint(0, cfg.n_timesteps, (n,), generator=g)) for _ in range(4)]

    def held_out(ctx):  # the same 4 draws of noise and t for every context
        return sum(loss_with(model, x0, noise, t, ctx) for noise, t in draws) / len(draws)

    with torch.no_grad():
        l_true, l_empty = held_out(model.textenc(tokens=tokens)), held_out(model.textenc(tokens=empty))
    z = model.textenc.wte.detach()[empty].clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=1e-2)
    print(f'\nAdam on z per image ({n} images, from the empty caption, lr 1e-2): z recovers of the caption\'s gain')
    for step in range(steps + 1):
        if step % 25 == 0:
            with torch.no_grad():
                l_z = held_out(model.textenc(z=z))
            print(f'  step {step:4d}: {(l_empty - l_z) / (l_empty - l_true):6.1%}', flush=True)
        if step == steps:
            break
        noise, t = torch.randn(x0.shape, generator=g), torch.randint(0, cfg.n_timesteps, (n,), generator=g)
        loss = model.diffusion_loss(x0, noise, t, model.textenc(z=z))[0]
        opt.zero_grad()
        loss.backward()
        opt.step()


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    torch.manual_seed(0)
    model = vlv.load_model(sys.argv[1]).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    images, captions = vlv.load_shapes(f'{sys.argv[2]}/shapes_t2i.bin')
    vocab = vlv.load_vocab(f'{sys.argv[2]}/vocab.txt')
    tokens = vlv.encode(vocab, captions, model.cfg.n_q)
    g = torch.Generator().manual_seed(1)
    gain_per_timestep(model, images[:256], tokens[:256], g)
    attribute_gain_per_timestep(model, images[:512], captions[:512], vocab, g)
    starting_points(model, images[:256], g)
    free_z(model, images[:64], tokens[:64], int(sys.argv[3]) if len(sys.argv) == 4 else 100, g)


if __name__ == '__main__':
    main()
