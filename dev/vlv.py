#!/usr/bin/env python3
"""
The PyTorch twin of vlv.c: the miniature Vision-Language-Vision auto-encoder.

    image -> vit -> adapter -> z -> textenc -> c -> dit    (reconstruct the image by diffusion)
                                               c -> capdec (write the caption)

doc/model.md defines the model and doc/formats.md the files; this file follows them exactly,
down to the order of the parameter tensors. It writes the reference that test_vlv.c checks
the C code against:

    python3 dev/vlv.py dump --out_ckpt model.bin --out_state state.bin [config flags]
    python3 dev/vlv.py roundtrip IN.bin OUT.bin      # read a checkpoint, write it back
    python3 dev/vlv.py train --data DIR --out DIR    # train on ./train_vlv --export data
    python3 dev/vlv.py anchors                       # its formulas against definitions it did not write

The dump holds every activation, loss and gradient, computed in float64 from the float32
weights of the checkpoint it writes, so that the only rounding in the reference is the final
one to float32. Runs on torch 1.13 and 2.x.
"""
import argparse
import copy
import itertools
import math
import struct
import sys
import time
import zlib
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

CKPT_MAGIC, STATE_MAGIC = 20261126, 20261127
CKPT_VERSION, STATE_VERSION = 2, 1  # the checkpoint ends in a CRC32 trailer, the debug state does not
HEADER_INTS, CRC_BYTES = 64, 4
PAD, BOS, EOS, UNK, FIRST_WORD = 0, 1, 2, 3, 4
STAGES = ('stage0', 'stage0b', 'stage1', 'stage2')
assert sys.byteorder == 'little', 'the file formats are little-endian; this writer assumes a little-endian host'


# ----------------------------------------------------------------------------------------------
# Configuration: the fields in the order of header slots 2..23 (doc/formats.md), then n_z

@dataclass
class Config:
    img_size: int = 8
    patch: int = 4
    n_q: int = 5
    vocab: int = 12
    cap_len: int = 6
    d_v: int = 16
    L_v: int = 2
    nh_v: int = 2
    L_a: int = 2
    nh_a: int = 2
    d_t: int = 16
    L_t: int = 2
    nh_t: int = 2
    d_d: int = 16
    L_d: int = 2
    nh_d: int = 2
    d_freq: int = 8
    d_g: int = 16
    L_g: int = 2
    nh_g: int = 2
    prediction: int = 0  # 0 = ε, 1 = v
    n_timesteps: int = 1000
    n_z: int = 0  # the adapter's learned queries, z's rows (the paper's N_q), 1..n_q; 0 stands for n_q

    def __post_init__(self):
        self.n_z = self.n_z or self.n_q

    @property
    def n_patches(self):  # Np
        return (self.img_size // self.patch) ** 2

    @property
    def patch_dim(self):  # P·P·3
        return self.patch * self.patch * 3


# slot 24 holds num_params; slot 25 holds n_z when it is below n_q, else 0 (so that a model with
# n_z = n_q has the header it had without n_z); slots 26..63 are 0
HEADER_FIELDS = tuple(f.name for f in fields(Config) if f.name != 'n_z')  # slots 2..23
N_Z_SLOT = 3 + len(HEADER_FIELDS)


class FormatError(Exception):
    pass


# the largest value of each config field (config_problem in vlvc/config.h)
CONFIG_MOST = dict(img_size=4096, patch=4096, n_q=4096, vocab=1 << 20, cap_len=4096, d_v=8192, L_v=256, nh_v=256,
                   L_a=256, nh_a=256, d_t=8192, L_t=256, nh_t=256, d_d=8192, L_d=256, nh_d=256, d_freq=8192,
                   d_g=8192, L_g=256, nh_g=256, prediction=1, n_timesteps=10000)


def check_config(cfg, where):
    """The sanity checks every reader applies; raises FormatError naming `where`."""
    problems = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == 'prediction':
            if value not in (0, 1):
                problems.append(f'prediction = {value} (must be 0 or 1)')
        elif f.name == 'n_z':
            if not 1 <= value <= cfg.n_q:
                problems.append(f'n_z = {value} (the learned queries must be 1 to n_q = {cfg.n_q})')
        elif not 0 < value <= CONFIG_MOST[f.name]:
            problems.append(f'{f.name} = {value} (must be in [1, {CONFIG_MOST[f.name]}])')
    if not problems:
        for width, heads in (('d_v', 'nh_v'), ('d_v', 'nh_a'), ('d_t', 'nh_t'), ('d_d', 'nh_d'), ('d_g', 'nh_g')):
            if getattr(cfg, width) % getattr(cfg, heads):
                problems.append(f'{width} = {getattr(cfg, width)} not divisible by {heads} = {getattr(cfg, heads)}')
        if cfg.img_size % cfg.patch:
            problems.append(f'img_size = {cfg.img_size} not divisible by patch = {cfg.patch}')
        if cfg.d_d % 4:
            problems.append(f'd_d = {cfg.d_d} not divisible by 4 (2D sin-cos positions)')
        if cfg.d_freq % 2:
            problems.append(f'd_freq = {cfg.d_freq} is odd')
    if problems:
        raise FormatError(f'{where}: bad config: ' + '; '.join(problems))


def expected_params(cfg):
    """(name, shape) of every parameter tensor in checkpoint order, straight from doc/model.md."""
    c, out = cfg, []

    def linear(name, n_out, n_in):
        out.extend([(f'{name}.weight', (n_out, n_in)), (f'{name}.bias', (n_out,))])

    def norm(name, C):
        out.extend([(f'{name}.weight', (C,)), (f'{name}.bias', (C,))])

    def self_attn(name, C):
        linear(f'{name}.qkv', 3 * C, C)
        linear(f'{name}.proj', C, C)

    def cross_attn(name, C, C_ctx):
        linear(f'{name}.q', C, C)
        linear(f'{name}.kv', 2 * C, C_ctx)
        linear(f'{name}.proj', C, C)

    def mlp(name, C):
        linear(f'{name}.fc', 4 * C, C)
        linear(f'{name}.proj', C, 4 * C)

    def block(name, C):  # B(C)
        norm(f'{name}.ln1', C), self_attn(f'{name}.attn', C), norm(f'{name}.ln2', C), mlp(f'{name}.mlp', C)

    linear('vit.patch', c.d_v, c.patch_dim)
    out.append(('vit.pos', (c.n_patches, c.d_v)))
    for l in range(c.L_v):
        block(f'vit.blocks.{l}', c.d_v)
    norm('vit.ln_f', c.d_v)

    out.append(('adapter.queries', (c.n_z, c.d_v)))
    for l in range(c.L_a):
        b = f'adapter.blocks.{l}'
        norm(f'{b}.ln1', c.d_v), self_attn(f'{b}.attn', c.d_v), norm(f'{b}.ln2', c.d_v)
        cross_attn(f'{b}.cross', c.d_v, c.d_v), norm(f'{b}.ln3', c.d_v), mlp(f'{b}.mlp', c.d_v)
    norm('adapter.ln_f', c.d_v)
    linear('adapter.out1', c.d_t, c.d_v)
    linear('adapter.out2', c.d_t, c.d_t)

    out.extend([('textenc.wte', (c.vocab, c.d_t)), ('textenc.wpe', (c.n_q, c.d_t))])
    for l in range(c.L_t):
        block(f'textenc.blocks.{l}', c.d_t)
    norm('textenc.ln_f', c.d_t)

    linear('dit.patch', c.d_d, c.patch_dim)
    linear('dit.t_mlp1', c.d_d, c.d_freq)
    linear('dit.t_mlp2', c.d_d, c.d_d)
    for l in range(c.L_d):
        b = f'dit.blocks.{l}'
        linear(f'{b}.ada', 6 * c.d_d, c.d_d), self_attn(f'{b}.attn', c.d_d), norm(f'{b}.ln_c', c.d_d)
        cross_attn(f'{b}.cross', c.d_d, c.d_t), mlp(f'{b}.mlp', c.d_d)
    linear('dit.final_ada', 2 * c.d_d, c.d_d)
    linear('dit.final', c.patch_dim, c.d_d)

    linear('capdec.prefix1', c.d_g, c.d_t)
    linear('capdec.prefix2', c.d_g, c.d_g)
    out.extend([('capdec.wte', (c.vocab, c.d_g)), ('capdec.wpe', (c.n_q + c.cap_len, c.d_g))])
    for l in range(c.L_g):
        block(f'capdec.blocks.{l}', c.d_g)
    norm('capdec.ln_f', c.d_g)
    return out


def num_params(cfg):
    return sum(math.prod(shape) for _, shape in expected_params(cfg))


# ----------------------------------------------------------------------------------------------
# Building blocks

def gelu(x):  # tanh approximation
    return F.gelu(x, approximate='tanh')


def patchify(img, P):
    """[B, H, W, 3] -> [B, Np, P·P·3]: patch n = r·(W/P) + q, inside it index (py·P + px)·3 + ch."""
    B, H, W, _ = img.shape
    x = img.reshape(B, H // P, P, W // P, P, 3).permute(0, 1, 3, 2, 4, 5)  # [B, r, q, py, px, ch]
    return x.reshape(B, (H // P) * (W // P), P * P * 3)


def unpatchify(x, P, H, W):
    B = x.shape[0]
    x = x.reshape(B, H // P, W // P, P, P, 3).permute(0, 1, 3, 2, 4, 5)  # [B, r, py, q, px, ch]
    return x.reshape(B, H, W, 3)


def attention(q, k, v, n_head, causal):
    """softmax(q·kᵀ/√hs)·v per head. q [B, Tq, C]; k, v [B, Tk, C]; channel c is in head c // hs."""
    B, Tq, C = q.shape
    Tk, hs = k.shape[1], C // n_head
    q = q.reshape(B, Tq, n_head, hs).transpose(1, 2)  # [B, NH, Tq, hs]
    k = k.reshape(B, Tk, n_head, hs).transpose(1, 2)
    v = v.reshape(B, Tk, n_head, hs).transpose(1, 2)
    att = q @ k.transpose(-2, -1) / math.sqrt(hs)  # [B, NH, Tq, Tk]
    if causal:  # query i may not look at key j > i
        future = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).triu(1)
        att = att.masked_fill(future, float('-inf'))
    return (att.softmax(-1) @ v).transpose(1, 2).reshape(B, Tq, C)


class SelfAttention(nn.Module):
    def __init__(self, C, n_head, causal):
        super().__init__()
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.n_head, self.causal = n_head, causal

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(attention(q, k, v, self.n_head, self.causal))


class CrossAttention(nn.Module):
    """Queries from x (width C), keys and values from a context (width C_ctx); never masked."""

    def __init__(self, C, C_ctx, n_head):
        super().__init__()
        self.q = nn.Linear(C, C)
        self.kv = nn.Linear(C_ctx, 2 * C)
        self.proj = nn.Linear(C, C)
        self.n_head = n_head

    def forward(self, x, ctx):
        k, v = self.kv(ctx).chunk(2, dim=-1)
        return self.proj(attention(self.q(x), k, v, self.n_head, causal=False))


class MLP(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.fc = nn.Linear(C, 4 * C)
        self.proj = nn.Linear(4 * C, C)

    def forward(self, x):
        return self.proj(gelu(self.fc(x)))


class Block(nn.Module):
    """Standard pre-LN block (vit, textenc, capdec)."""

    def __init__(self, C, n_head, causal):
        super().__init__()
        self.ln1 = nn.LayerNorm(C)
        self.attn = SelfAttention(C, n_head, causal)
        self.ln2 = nn.LayerNorm(C)
        self.mlp = MLP(C)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class AdapterBlock(nn.Module):
    """Causal self-attention over the queries, cross-attention to the visual tokens, MLP."""

    def __init__(self, C, n_head):
        super().__init__()
        self.ln1 = nn.LayerNorm(C)
        self.attn = SelfAttention(C, n_head, causal=True)
        self.ln2 = nn.LayerNorm(C)
        self.cross = CrossAttention(C, C, n_head)
        self.ln3 = nn.LayerNorm(C)
        self.mlp = MLP(C)

    def forward(self, x, visual):
        x = x + self.attn(self.ln1(x))
        x = x + self.cross(self.ln2(x), visual)
        return x + self.mlp(self.ln3(x))


def modulate(x, shift, scale):
    """adaLN: LN₀(x)·(1 + scale) + shift, LN₀ without weight or bias; shift, scale [B, C]."""
    x = F.layer_norm(x, x.shape[-1:], eps=1e-5)
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class DiTBlock(nn.Module):
    """adaLN-Zero block: gated modulated self-attention, plain cross-attention, gated modulated MLP."""

    def __init__(self, C, C_ctx, n_head):
        super().__init__()
        self.ada = nn.Linear(C, 6 * C)
        self.attn = SelfAttention(C, n_head, causal=False)
        self.ln_c = nn.LayerNorm(C)
        self.cross = CrossAttention(C, C_ctx, n_head)
        self.mlp = MLP(C)

    def forward(self, x, s, c):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(s).chunk(6, dim=-1)
        x = x + gate1[:, None, :] * self.attn(modulate(x, shift1, scale1))
        x = x + self.cross(self.ln_c(x), c)
        return x + gate2[:, None, :] * self.mlp(modulate(x, shift2, scale2))


class InOrder(nn.Module):
    """nn.Module lists a module's own tensors before its children's; the checkpoint interleaves
    them (vit.patch before vit.pos, capdec.prefix1 before capdec.wte). `order` names the
    attributes, parameters or submodules, in checkpoint order."""
    order = ()

    def named_parameters(self, prefix='', recurse=True, **kwargs):
        if not recurse:
            yield from super().named_parameters(prefix, recurse, **kwargs)
            return
        for name in self.order:
            item, full = getattr(self, name), f'{prefix}.{name}' if prefix else name
            if isinstance(item, nn.Parameter):
                yield full, item
            else:
                yield from item.named_parameters(full, True, **kwargs)


# ----------------------------------------------------------------------------------------------
# The five parts

class ViT(InOrder):
    order = ('patch', 'pos', 'blocks', 'ln_f')

    def __init__(self, cfg):
        super().__init__()
        self.patch = nn.Linear(cfg.patch_dim, cfg.d_v)
        self.pos = nn.Parameter(torch.zeros(cfg.n_patches, cfg.d_v))
        self.blocks = nn.ModuleList(Block(cfg.d_v, cfg.nh_v, causal=False) for _ in range(cfg.L_v))
        self.ln_f = nn.LayerNorm(cfg.d_v)
        self.P = cfg.patch

    def forward(self, img):  # [B, H, W, 3] -> visual tokens [B, Np, d_v]
        x = self.patch(patchify(img, self.P)) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)


class Adapter(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(cfg.n_z, cfg.d_v))
        self.blocks = nn.ModuleList(AdapterBlock(cfg.d_v, cfg.nh_a) for _ in range(cfg.L_a))
        self.ln_f = nn.LayerNorm(cfg.d_v)
        self.out1 = nn.Linear(cfg.d_v, cfg.d_t)
        self.out2 = nn.Linear(cfg.d_t, cfg.d_t)

    def forward(self, visual):  # -> z [B, n_z, d_t], the continuous caption embeddings
        x = self.queries.expand(visual.shape[0], -1, -1)
        for block in self.blocks:
            x = block(x, visual)
        return self.out2(gelu(self.out1(self.ln_f(x))))


class TextEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.wte = nn.Parameter(torch.zeros(cfg.vocab, cfg.d_t))
        self.wpe = nn.Parameter(torch.zeros(cfg.n_q, cfg.d_t))
        self.blocks = nn.ModuleList(Block(cfg.d_t, cfg.nh_t, causal=True) for _ in range(cfg.L_t))
        self.ln_f = nn.LayerNorm(cfg.d_t)

    def forward(self, tokens=None, z=None):  # tokens [B, N_q] or z [B, n_z, d_t] -> c [B, N_q, d_t]
        if z is None:
            x = F.embedding(tokens, self.wte)
        else:  # z at the first n_z positions, the PAD token after, as a caption of n_z tokens is padded
            pad = self.wte[PAD].expand(z.shape[0], self.wpe.shape[0] - z.shape[1], -1)
            x = torch.cat([z, pad], dim=1)
        x = x + self.wpe
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)


def sincos_2d(grid, C):
    """Fixed [grid², C] table: row r·grid + q is [sin(qω), cos(qω), sin(rω), cos(rω)], ω_i = 10000^(-i/k)."""
    k = C // 4
    omega = 10000.0 ** (-torch.arange(k, dtype=torch.float64) / k)
    r, q = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                          indexing='ij')
    r, q = r.reshape(-1, 1) * omega, q.reshape(-1, 1) * omega
    return torch.cat([q.sin(), q.cos(), r.sin(), r.cos()], dim=1)


def timestep_frequencies(d_freq):
    """φ_i = exp(−ln(10000)·i/(d_freq/2)), i < d_freq/2, in float64."""
    half = d_freq // 2
    return torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)


def timestep_features(t, phi, dtype):
    """Sinusoidal timestep features [B, d_freq] = [cos(t·φ_i), sin(t·φ_i)] for integer t [B]."""
    tphi = t.to(dtype)[:, None] * phi.to(dtype)
    return torch.cat([tphi.cos(), tphi.sin()], dim=-1)


class DiT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.patch = nn.Linear(cfg.patch_dim, cfg.d_d)
        self.t_mlp1 = nn.Linear(cfg.d_freq, cfg.d_d)
        self.t_mlp2 = nn.Linear(cfg.d_d, cfg.d_d)
        self.blocks = nn.ModuleList(DiTBlock(cfg.d_d, cfg.d_t, cfg.nh_d) for _ in range(cfg.L_d))
        self.final_ada = nn.Linear(cfg.d_d, 2 * cfg.d_d)
        self.final = nn.Linear(cfg.d_d, cfg.patch_dim)
        self.P, self.H = cfg.patch, cfg.img_size
        # constants, built in float64 and cast to the model's dtype where used
        self.register_buffer('pos2d', sincos_2d(cfg.img_size // cfg.patch, cfg.d_d), persistent=False)
        self.register_buffer('phi', timestep_frequencies(cfg.d_freq), persistent=False)

    def forward(self, x_t, t, c):  # x_t [B, H, W, 3], t [B] integers, c [B, N_q, d_t] -> ε̂ or v̂
        x = self.patch(patchify(x_t, self.P)) + self.pos2d.to(x_t.dtype)
        f = timestep_features(t, self.phi, x_t.dtype)  # [B, d_freq]
        s = F.silu(self.t_mlp2(F.silu(self.t_mlp1(f))))  # SiLU(temb), drives all modulations
        for block in self.blocks:
            x = block(x, s, c)
        return unpatchify(self.final_layer(x, s), self.P, self.H, self.H)

    def final_layer(self, x, s):  # modulated LN₀ with (shift, scale) from s, then Linear -> [B, Np, P·P·3]
        shift, scale = self.final_ada(s).chunk(2, dim=-1)
        return self.final(modulate(x, shift, scale))


class CaptionDecoder(InOrder):
    order = ('prefix1', 'prefix2', 'wte', 'wpe', 'blocks', 'ln_f')

    def __init__(self, cfg):
        super().__init__()
        self.prefix1 = nn.Linear(cfg.d_t, cfg.d_g)
        self.prefix2 = nn.Linear(cfg.d_g, cfg.d_g)
        self.wte = nn.Parameter(torch.zeros(cfg.vocab, cfg.d_g))
        self.wpe = nn.Parameter(torch.zeros(cfg.n_q + cfg.cap_len, cfg.d_g))
        self.blocks = nn.ModuleList(Block(cfg.d_g, cfg.nh_g, causal=True) for _ in range(cfg.L_g))
        self.ln_f = nn.LayerNorm(cfg.d_g)
        self.n_q = cfg.n_q

    def forward(self, c, tokens):  # c [B, N_q, d_t] or None (no prefix), tokens [B, T_c] -> logits [B, T_c, V]
        T_c = tokens.shape[1]
        x = F.embedding(tokens, self.wte)
        if c is None:  # the token rows alone, still at positions N_q ... N_q+T_c-1
            x = x + self.wpe[self.n_q:self.n_q + T_c]
        else:
            prefix = self.prefix2(gelu(self.prefix1(c)))
            x = torch.cat([prefix, x], dim=1) + self.wpe[:self.n_q + T_c]
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x[:, -T_c:])  # only the caption rows matter
        return x @ self.wte.t()  # tied head


def caption_loss(logits, tokens):
    """Row j predicts token j+1; the last row and the rows whose target is PAD are not counted."""
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1), ignore_index=PAD)


def alphas_cumprod(T):
    """Scaled-linear schedule: √β linear from √0.00085 to √0.012; ᾱ_t = ∏_{s≤t} (1 − β_s), in double."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


def diffusion_inputs(ab, x0, noise, prediction):
    """x_t = √ᾱ·x₀ + √(1−ᾱ)·ε and the regression target: ε (prediction 0) or v = √ᾱ·ε − √(1−ᾱ)·x₀ (1)."""
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    target = noise if prediction == 0 else ab.sqrt() * noise - (1 - ab).sqrt() * x0
    return x_t, target


class VLV(InOrder):
    order = ('vit', 'adapter', 'textenc', 'dit', 'capdec')

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.vit, self.adapter, self.textenc = ViT(cfg), Adapter(cfg), TextEncoder(cfg)
        self.dit, self.capdec = DiT(cfg), CaptionDecoder(cfg)
        self.register_buffer('abar', alphas_cumprod(cfg.n_timesteps), persistent=False)
        got, want = [(n, tuple(p.shape)) for n, p in self.named_parameters()], expected_params(cfg)
        bad = [(i, g, w) for i, (g, w) in enumerate(itertools.zip_longest(got, want)) if g != w]
        assert not bad, f'parameters differ from doc/model.md (index, model, doc): {bad[:3]}'
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        """For training from scratch: N(0, 0.02) matrices and tables, zero biases, unit LN weights,
        and adaLN-Zero: the DiT's modulation and output linears start at zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in (self.vit.pos, self.adapter.queries, self.textenc.wte, self.textenc.wpe,
                  self.capdec.wte, self.capdec.wpe):
            nn.init.normal_(p, 0.0, 0.02)
        for m in [b.ada for b in self.dit.blocks] + [self.dit.final_ada, self.dit.final]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def ab(self, t, dtype):  # ᾱ_t for integer t [B], shaped to broadcast over [B, H, W, 3]
        return self.abar[t].to(dtype).view(-1, 1, 1, 1)

    def diffusion_loss(self, x0, noise, t, c):
        x_t, target = diffusion_inputs(self.ab(t, x0.dtype), x0, noise, self.cfg.prediction)
        out = self.dit(x_t, t, c)
        return ((out - target) ** 2).mean(), out

    def objective(self, stage, batch):
        """The loss of one training objective, and the activations the debug state records."""
        acts = {}
        if stage in ('stage1', 'stage2'):  # image -> visual tokens -> z -> c
            acts['act.vit.out'] = visual = self.vit(batch['images'])
            acts['act.z'] = z = self.adapter(visual)
            acts['act.c_z'] = c = self.textenc(z=z)
        if stage == 'stage0':
            acts['act.c_text'] = c = self.textenc(tokens=batch['text_tokens'])
            loss, acts['act.dit.out_text'] = self.diffusion_loss(batch['t2i_images'], batch['noise'],
                                                                 batch['timesteps'], c)
        elif stage == 'stage1':
            loss, acts['act.dit.out_z'] = self.diffusion_loss(batch['images'], batch['noise'], batch['timesteps'], c)
        else:
            key = 'act.capdec.logits' if stage == 'stage2' else 'act.capdec.logits_lm'
            acts[key] = logits = self.capdec(c if stage == 'stage2' else None, batch['caption_tokens'])
            loss = caption_loss(logits, batch['caption_tokens'])
        return loss, acts


def vit_from_dit_problem(cfg):
    """Why the vision encoder cannot start from the DiT, or None (vlvc/config.h)."""
    if cfg.d_v != cfg.d_d:
        return 'it needs d_v = d_d'
    if cfg.nh_v != cfg.nh_d:
        return 'it needs nh_v = nh_d'
    if cfg.L_v > cfg.L_d:
        return 'it needs L_v <= L_d'
    return None


@torch.no_grad()
def vit_from_dit(model):
    """The vision encoder started from the frozen DiT (train_vlv.c vlv_vit_from_dit): the DiT's patch
    embedding and 2D positions, and its first L_v blocks at t = 0 without the cross-attention, the
    constant adaLN modulation folded into the LayerNorms (gain 1 + scale, bias shift) and the
    output projections (rows scaled by the gates)."""
    vit, dit = model.vit, model.dit
    vit.patch.load_state_dict(dit.patch.state_dict())
    vit.pos.copy_(dit.pos2d.to(vit.pos.dtype))
    t0 = torch.zeros(1, dtype=torch.long, device=vit.pos.device)
    s = F.silu(dit.t_mlp2(F.silu(dit.t_mlp1(timestep_features(t0, dit.phi, vit.pos.dtype)))))
    for vb, db in zip(vit.blocks, dit.blocks):
        shift1, scale1, gate1, shift2, scale2, gate2 = db.ada(s)[0].chunk(6)
        vb.ln1.weight.copy_(1 + scale1)
        vb.ln1.bias.copy_(shift1)
        vb.ln2.weight.copy_(1 + scale2)
        vb.ln2.bias.copy_(shift2)
        vb.attn.qkv.load_state_dict(db.attn.qkv.state_dict())
        vb.mlp.fc.load_state_dict(db.mlp.fc.state_dict())
        vb.attn.proj.weight.copy_(gate1[:, None] * db.attn.proj.weight)
        vb.attn.proj.bias.copy_(gate1 * db.attn.proj.bias)
        vb.mlp.proj.weight.copy_(gate2[:, None] * db.mlp.proj.weight)
        vb.mlp.proj.bias.copy_(gate2 * db.mlp.proj.bias)


def trainable(name, stage, encoder_unfrozen=False):
    """doc/model.md "Objectives": which tensors an objective trains (the rest are frozen)."""
    part = name.split('.')[0]
    if stage == 'stage0':
        return part in ('textenc', 'dit')
    if stage == 'stage0b':
        return part == 'capdec' and not name.startswith('capdec.prefix')
    if stage == 'stage1':
        return part in ('vit', 'adapter')
    return part == 'capdec' or (encoder_unfrozen and part in ('vit', 'adapter'))


def adamw(params, lr, betas, eps, weight_decay):
    """doc/model.md "Optimizer": AdamW (decoupled decay) on (name, tensor) pairs, decay on tensors of 2+ dims only."""
    groups = [{'params': [p for _, p in params if p.dim() >= 2], 'weight_decay': weight_decay},
              {'params': [p for _, p in params if p.dim() < 2], 'weight_decay': 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def set_trainable(model, stage, encoder_unfrozen=False):
    """Freeze all but the objective's tensors (gradients still flow through frozen parts); clear grads."""
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(trainable(name, stage, encoder_unfrozen))
        p.grad = None
        if p.requires_grad:
            params.append((name, p))
    return params


# ----------------------------------------------------------------------------------------------
# Inference: guided DDIM and greedy captions

@torch.no_grad()
def ddim(model, x, c, c_empty, num_steps, steps_run, w):
    """The first `steps_run` of `num_steps` DDIM (η = 0) steps with classifier-free guidance w."""
    T, pred_v = model.cfg.n_timesteps, model.cfg.prediction == 1
    delta = T // num_steps
    for i in range(steps_run):
        t = (num_steps - 1 - i) * delta
        t_next = t - delta
        tt = torch.full((x.shape[0],), t, dtype=torch.long)
        ab = model.abar[t].item()
        ab_next = model.abar[t_next].item() if t_next >= 0 else 1.0
        out_empty = model.dit(x, tt, c_empty)
        out = out_empty + w * (model.dit(x, tt, c) - out_empty)
        if pred_v:
            x0 = math.sqrt(ab) * x - math.sqrt(1 - ab) * out
            eps = math.sqrt(1 - ab) * x + math.sqrt(ab) * out
        else:
            eps = out
            x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        x0 = x0.clamp(-1.0, 1.0)  # the data range (as diffusers' DDIM clip_sample); ε is kept as predicted
        x = math.sqrt(ab_next) * x0 + math.sqrt(1 - ab_next) * eps
    return x


@torch.no_grad()
def greedy_caption(model, c, T_c):
    """BOS, then the argmax of the last caption row until EOS, PAD after. Returns the tokens [B, T_c]
    and each decision's margin [B, T_c - 1]: the gap between the best two logits over the row's
    largest |logit| (a near-tie, where a float32 implementation may legitimately pick the other
    token), or 1 where the token is forced (PAD after EOS)."""
    B = c.shape[0]
    tokens = torch.full((B, T_c), PAD, dtype=torch.long)
    tokens[:, 0] = BOS
    margins = torch.ones(B, T_c - 1, dtype=torch.float64)
    done = torch.zeros(B, dtype=torch.bool)
    for j in range(T_c - 1):  # the row of token j predicts token j+1
        logits = model.capdec(c, tokens)[:, j]
        top2 = logits.topk(2, dim=-1).values
        gap = (top2[:, 0] - top2[:, 1]) / logits.abs().max(-1).values
        margins[:, j] = torch.where(done, margins[:, j], gap.double())
        nxt = torch.where(done, torch.full_like(tokens[:, 0], PAD), logits.argmax(-1))
        tokens[:, j + 1] = nxt
        done |= nxt == EOS
    return tokens, margins


# ----------------------------------------------------------------------------------------------
# Files (doc/formats.md)

def header_bytes(cfg, magic, version, n_params):
    ints = [magic, version] + [getattr(cfg, name) for name in HEADER_FIELDS] + [n_params, cfg.n_z if cfg.n_z < cfg.n_q else 0]
    return struct.pack(f'<{HEADER_INTS}i', *(ints + [0] * (HEADER_INTS - len(ints))))


def check_crc(data, path):
    """The CRC32 trailer (doc/formats.md): the last 4 bytes hold zlib's CRC32 of all before them."""
    stored, computed = struct.unpack('<I', data[-CRC_BYTES:])[0], zlib.crc32(memoryview(data)[:-CRC_BYTES])
    if stored != computed:
        raise FormatError(f"'{path}' is corrupt: its CRC32 is {stored:08x} but its contents give {computed:08x}; "
                          'the file was changed or damaged after it was written')


def write_checkpoint(path, model):
    chunks = itertools.chain([header_bytes(model.cfg, CKPT_MAGIC, CKPT_VERSION, num_params(model.cfg))],
                             (p.detach().to(torch.float32).contiguous().numpy().tobytes() for _, p in model.named_parameters()))
    crc = 0
    with open(path, 'wb') as f:
        for chunk in chunks:
            f.write(chunk)
            crc = zlib.crc32(chunk, crc)
        f.write(struct.pack('<I', crc))


def read_checkpoint(path):
    """-> (Config, flat float32 tensor of all parameters); raises FormatError naming the file.
    The checks in vlvc/config.h's order: magic, version, the size the parameter count implies,
    the CRC32, the header's fields."""
    with open(path, 'rb') as f:
        data = f.read()
    n_header, n_fields = 4 * HEADER_INTS, len(HEADER_FIELDS)
    if len(data) < n_header + CRC_BYTES:
        raise FormatError(f'{path}: truncated: {len(data)} bytes, shorter than a header and a CRC32 ({n_header + CRC_BYTES})')
    header = struct.unpack(f'<{HEADER_INTS}i', data[:n_header])
    if header[0] != CKPT_MAGIC:
        raise FormatError(f'{path}: bad magic {header[0]}, expected {CKPT_MAGIC} (not a vlv checkpoint)')
    if header[1] != CKPT_VERSION:
        raise FormatError(f'{path}: unknown version {header[1]} (this reader knows version {CKPT_VERSION})')
    n = header[2 + n_fields]
    if n >= 0 and len(data) != n_header + 4 * n + CRC_BYTES:
        what = 'truncated' if len(data) < n_header + 4 * n + CRC_BYTES else 'trailing bytes'
        raise FormatError(f'{path}: {what}: {len(data)} bytes, expected {n_header + 4 * n + CRC_BYTES} for its {n} parameters')
    check_crc(data, path)
    n_q, n_z = header[2 + HEADER_FIELDS.index('n_q')], header[N_Z_SLOT]
    if n_z != 0 and not 1 <= n_z < n_q:
        raise FormatError(f'{path}: header slot {N_Z_SLOT} (n_z) is {n_z}; it holds 1 to n_q - 1 (n_q = {n_q}), '
                          'or 0 for n_z = n_q')
    reserved = [i for i in range(N_Z_SLOT + 1, HEADER_INTS) if header[i] != 0]
    if reserved:
        raise FormatError(f'{path}: reserved header slot {reserved[0]} is {header[reserved[0]]}, not 0')
    cfg = Config(*header[2:2 + n_fields], n_z=n_z)
    check_config(cfg, path)
    if n != num_params(cfg):
        raise FormatError(f'{path}: num_params is {n} but the config implies {num_params(cfg)}')
    return cfg, torch.frombuffer(bytearray(data), dtype=torch.float32, offset=n_header, count=n)


def load_weights(model, flat, path):
    """Copy the flat checkpoint tensor into the model's parameters, tensor by tensor."""
    offset = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if offset + p.numel() > flat.numel():
                raise FormatError(f'{path}: ends inside {name} {tuple(p.shape)}')
            p.copy_(flat[offset:offset + p.numel()].view(p.shape))
            offset += p.numel()
    if offset != flat.numel():
        raise FormatError(f'{path}: {flat.numel() - offset} floats left over after the last tensor')


def load_model(path):
    """A checkpoint -> the VLV model holding its weights (the probes' start)."""
    cfg, flat = read_checkpoint(path)
    model = VLV(cfg)
    load_weights(model, flat, path)
    return model


def write_state(path, cfg, records):
    """Debug state: header, then records (name, dtype, dims, data) in the given order, then `end`."""
    with open(path, 'wb') as f:
        f.write(header_bytes(cfg, STATE_MAGIC, STATE_VERSION, 0))
        for name, value in list(records.items()) + [('end', torch.tensor(0, dtype=torch.int32))]:
            is_int = not value.is_floating_point()
            data = value.detach().to(torch.int32 if is_int else torch.float32).contiguous()
            f.write(struct.pack('<i', len(name)) + name.encode())
            f.write(struct.pack(f'<ii{data.dim()}i', int(is_int), data.dim(), *data.shape))
            f.write(data.numpy().tobytes())


# ----------------------------------------------------------------------------------------------
# dump: the reference for test_vlv.c

def random_tokens(B, L, V, g):
    """[BOS, words (ids 4..V-1), EOS, PAD...] of length L; sample 0 fills L exactly, the last is short."""
    n_words = torch.randint(0, L - 1, (B,), generator=g)  # 0 .. L-2 words
    n_words[0] = L - 2
    if B > 1:
        n_words[-1] = torch.randint(0, max(L - 2, 1), (1,), generator=g)
    tokens = torch.full((B, L), PAD, dtype=torch.long)
    for b, n in enumerate(n_words.tolist()):
        tokens[b, 0] = BOS
        tokens[b, 1:1 + n] = torch.randint(FIRST_WORD, V, (n,), generator=g)
        tokens[b, 1 + n] = EOS
    return tokens


def empty_caption(B, L):
    tokens = torch.full((B, L), PAD, dtype=torch.long)
    tokens[:, 0], tokens[:, 1] = BOS, EOS
    return tokens


def make_batch(cfg, B, g):
    """A random batch; float inputs are float32 values (what the C code reads) held in float64."""
    shape = (B, cfg.img_size, cfg.img_size, 3)
    batch = {
        'images': torch.rand(shape, generator=g) * 2 - 1,
        't2i_images': torch.rand(shape, generator=g) * 2 - 1,
        'text_tokens': random_tokens(B, cfg.n_q, cfg.vocab, g),
        'caption_tokens': random_tokens(B, cfg.cap_len, cfg.vocab, g),
        'noise': torch.randn(shape, generator=g),
        'timesteps': torch.randint(0, cfg.n_timesteps, (B,), generator=g),
    }
    batch['text_tokens'][-1] = empty_caption(1, cfg.n_q)[0]  # caption dropout, already applied
    return {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}


def train_steps(model0, stage, batch, a, steps, lr, ema_decay=None):
    """Losses before each of `steps` AdamW steps on one objective from model0's weights, and the trained copy.
    With ema_decay, also the moving average of the weights after each step, started at model0's weights
    (as stage 0 keeps it: ema = d ema + (1 - d) w), less model0's weights: [num_params], 0 where frozen."""
    model = copy.deepcopy(model0)
    params = set_trainable(model, stage)
    opt = adamw(params, lr, (a.beta1, a.beta2), a.eps, a.weight_decay)
    ema = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss, _ = model.objective(stage, batch)
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], a.grad_clip)
        opt.step()
        if ema_decay is not None:
            with torch.no_grad():
                for e, p in zip(ema, model.parameters()):
                    e.mul_(ema_decay).add_(p, alpha=1 - ema_decay)
    losses = torch.tensor(losses, dtype=torch.float64)
    if ema_decay is None:
        return losses, model
    return losses, model, torch.cat([(e - p).flatten() for e, p in zip(ema, model0.parameters())])


def dump(a):
    cfg = Config(**{f.name: getattr(a, f.name) for f in fields(Config)})
    check_config(cfg, 'command line')
    if cfg.vocab <= FIRST_WORD or cfg.n_q < 2 or cfg.cap_len < 2:
        raise FormatError('command line: dump needs vocab > 4 (room for words), n_q >= 2 and cap_len >= 2')
    if not (1 <= a.ddim_steps <= cfg.n_timesteps and 0 <= a.ddim_run <= a.ddim_steps and a.steps >= 1
            and 0 <= a.ema < 1):
        raise FormatError('command line: need 1 <= ddim_steps <= n_timesteps, 0 <= ddim_run <= ddim_steps, steps >= 1, 0 <= ema < 1')
    start = time.time()

    # weights: the standard init, plus noise so that no gradient is trivially zero, in float32
    torch.manual_seed(a.seed)
    model = VLV(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    write_checkpoint(a.out_ckpt, model)
    model.double()  # every record is computed in float64 from these float32 weights

    g = torch.Generator().manual_seed(a.seed)
    batch = make_batch(cfg, a.batch, g)
    x_init = torch.randn(a.batch, cfg.img_size, cfg.img_size, 3, generator=g).double()

    rec = {f'hp.{k}': torch.tensor(getattr(a, k), dtype=torch.float64)
           for k in ('lr', 'beta1', 'beta2', 'eps', 'weight_decay', 'grad_clip', 'ema')}
    rec['hp.steps'] = torch.tensor(a.steps, dtype=torch.int32)
    for k in ('images', 't2i_images', 'text_tokens', 'caption_tokens', 'noise', 'timesteps'):
        rec[f'batch.{k}'] = batch[k]

    # one forward + backward per objective; stage 2 with the encoder side unfrozen
    acts, losses, grads = {}, {}, {}
    for stage in STAGES:
        params = set_trainable(model, stage, encoder_unfrozen=True)
        loss, stage_acts = model.objective(stage, batch)
        loss.backward()
        acts.update({k: v.detach() for k, v in stage_acts.items()})
        losses[f'loss.{stage}'] = loss.detach()
        grads.update({f'grad.{stage}.{name}': p.grad.clone() for name, p in params})
    for k in ('act.vit.out', 'act.z', 'act.c_text', 'act.c_z', 'act.dit.out_text', 'act.dit.out_z',
              'act.capdec.logits_lm', 'act.capdec.logits'):
        rec[k] = acts[k]
    rec.update(losses)
    rec.update(grads)

    for stage in STAGES:  # stage 2 here trains capdec only
        if stage == 'stage0':  # and the EMA that becomes the frozen decoder
            rec[f'steps.{stage}'], _, rec['ema.stage0.moved'] = train_steps(model, stage, batch, a, a.steps, a.lr, a.ema)
        else:
            rec[f'steps.{stage}'], _ = train_steps(model, stage, batch, a, a.steps, a.lr)

    with torch.no_grad():
        c_empty = model.textenc(tokens=empty_caption(a.batch, cfg.n_q))  # the empty caption's context
    rec['ddim.x_init'] = x_init
    rec['ddim.guidance'] = torch.tensor(a.guidance, dtype=torch.float64)
    rec['ddim.num_steps'] = torch.tensor(a.ddim_steps, dtype=torch.int32)
    rec['ddim.steps_run'] = torch.tensor(a.ddim_run, dtype=torch.int32)
    rec['ddim.x_out'] = ddim(model, x_init, acts['act.c_z'], c_empty, a.ddim_steps, a.ddim_run, a.guidance)
    # greedy captions from a caption decoder overfitted to the batch's captions (stage 2, a
    # large lr): random weights would repeat one token forever and never reach EOS, so the
    # EOS -> PAD logic would go unchecked. The encoder is frozen, so c_z stays the same. Adam
    # amplifies rounding over the 60 steps, so the C code decodes from these fitted weights
    # (rounded to float32, as it holds them) rather than from its own fit: the tokens then
    # depend only on one forward's rounding, which the margins bound.
    rec['greedy.steps'] = torch.tensor(a.greedy_steps, dtype=torch.int32)
    rec['greedy.lr'] = torch.tensor(a.greedy_lr, dtype=torch.float64)
    rec['greedy.losses'], fitted = train_steps(model, 'stage2', batch, a, a.greedy_steps, a.greedy_lr)
    with torch.no_grad():
        for p in fitted.parameters():
            p.copy_(p.float().double())
    rec['greedy.params'] = torch.cat([p.detach().flatten() for _, p in fitted.named_parameters()])
    rec['greedy.tokens'], rec['greedy.margins'] = greedy_caption(fitted, acts['act.c_z'], cfg.cap_len)
    margin = rec['greedy.margins'].min().item()
    # GELU and AdamW alone, against PyTorch's own (F.gelu and its autograd, torch.optim.AdamW): the
    # records above see them only through whole models, where a slightly different formula (the
    # erf GELU's derivative, the decay after the update) moves a loss or gradient by a few
    # tolerances at most; here each shows at its own size
    x = torch.cat([torch.linspace(-8, 8, 161, dtype=torch.float64), 3 * torch.randn(200, generator=g, dtype=torch.float64)])
    rec['gelu.x'], rec['gelu.dout'] = x.float().double(), torch.randn(x.shape, generator=g, dtype=torch.float64).float().double()
    u = rec['gelu.x'].clone().requires_grad_()
    out = F.gelu(u, approximate='tanh')
    (out * rec['gelu.dout']).sum().backward()
    rec['gelu.out'], rec['gelu.dinp'] = out.detach(), u.grad
    # 3 AdamW updates of every weight from the checkpoint's, with given gradients and no clip; lr·wd
    # is large, so that where the decay sits in the step shows in the move
    stepped = copy.deepcopy(model).requires_grad_(True)
    params = list(stepped.named_parameters())
    opt = adamw(params, a.adamw_lr, (a.beta1, a.beta2), a.eps, a.adamw_wd)
    rec['adamw.lr'], rec['adamw.weight_decay'] = (torch.tensor(v, dtype=torch.float64) for v in (a.adamw_lr, a.adamw_wd))
    for k in range(3):
        grads = [torch.randn(p.shape, generator=g, dtype=torch.float64).float().double() for _, p in params]
        for (_, p), gr in zip(params, grads):
            p.grad = gr
        rec[f'adamw.grads{k}'] = torch.cat([gr.flatten() for gr in grads])
        opt.step()
    rec['adamw.moved'] = torch.cat([(p - p0).detach().flatten() for (_, p), p0 in zip(params, model.parameters())])
    rec['adamw.m'] = torch.cat([opt.state[p]['exp_avg'].flatten() for _, p in params])
    rec['adamw.v'] = torch.cat([opt.state[p]['exp_avg_sq'].flatten() for _, p in params])
    if vit_from_dit_problem(cfg) is None:  # the vision encoder from the DiT, from the checkpoint's weights
        started = copy.deepcopy(model)
        vit_from_dit(started)
        rec.update({f'vit_from_dit.vit.{name}': p.detach() for name, p in started.vit.named_parameters()})
    write_state(a.out_state, cfg, rec)

    print(f'wrote {a.out_ckpt} ({num_params(cfg)} parameters) and {a.out_state} ({len(rec) + 1} records) '
          f'in {time.time() - start:.2f}s')
    for stage in STAGES:
        steps = ' '.join(f'{v:.6f}' for v in rec[f'steps.{stage}'].tolist())
        print(f'  {stage:8s} loss {losses[f"loss.{stage}"].item():.6f}  steps: {steps}')
    print(f'  greedy: stage-2 loss {rec["greedy.losses"][0].item():.4f} -> {rec["greedy.losses"][-1].item():.4f} '
          f'after {a.greedy_steps} steps; tokens {rec["greedy.tokens"].tolist()}; smallest top-2 logit margin {margin:.3g}')


def roundtrip(a):
    cfg, flat = read_checkpoint(a.inp)
    model = VLV(cfg)
    load_weights(model, flat, a.inp)
    write_checkpoint(a.out, model)
    print(f'{a.inp} -> {a.out}: {num_params(cfg)} parameters')



# ----------------------------------------------------------------------------------------------
# Training on the exported shapes world (./train_vlv --export N): the same stages, schedule and
# data as the C pipeline (vlvc/pipeline.h), for trying recipes fast on a GPU. The noise is
# PyTorch's, not the C program's. It writes model.bin and vocab.txt; the C program scores it:
# ./train_vlv --eval_model OUT/model.bin --out OUT

def load_shapes(path):
    """A dataset file of doc/data.md -> (images float32 [n, S, S, 3] in [-1, 1], captions)."""
    raw = open(path, 'rb').read()
    if len(raw) < 256:
        raise FormatError(f'{path}: shorter than its header')
    h = struct.unpack('<64i', raw[:256])
    if h[0] != 20261128 or h[1] != 1:
        raise FormatError(f'{path}: not a vlv.c shapes dataset of version 1 (magic {h[0]}, version {h[1]})')
    n, S, cb = h[3], h[4], h[6]
    if len(raw) != 256 + n * (3 * S * S + 52 + cb):
        raise FormatError(f'{path}: {len(raw)} bytes, not the {256 + n * (3 * S * S + 52 + cb)} its header implies')
    pixels = torch.frombuffer(bytearray(raw[256:256 + n * S * S * 3]), dtype=torch.uint8).view(n, S, S, 3)
    images = (2 * pixels.float() - 255) / 255
    o = 256 + n * S * S * 3 + n * 52
    captions = [raw[o + i * cb:o + (i + 1) * cb].split(b'\0')[0].decode() for i in range(n)]
    return images, captions


def load_vocab(path):
    lines = open(path).read().split('\n')
    head = lines[0].split()
    if len(head) != 3 or head[0] != 'vlv.c-vocabulary' or head[1] != '1':
        raise FormatError(f'{path}: not a vlv.c vocabulary of version 1')
    return {w: i for i, w in enumerate(lines[1:1 + int(head[2])])}


def encode(vocab, captions, L):
    """[BOS, words, EOS, PAD...] of length L per caption (doc/model.md "Tokens")."""
    out = torch.full((len(captions), L), PAD, dtype=torch.long)
    for b, text in enumerate(captions):
        ids = [BOS] + [vocab.get(w, UNK) for w in text.split()] + [EOS]
        if len(ids) > L:
            raise FormatError(f'caption "{text}" does not fit in {L} tokens')
        out[b, :len(ids)] = torch.tensor(ids)
    return out


def clip_rows_to_median(g, k):
    """Stage 1's per-image clip at z (--clip_z; vlvc/clip_z.h clip_rows_to_median): each image's
    gradient at z [B, n_z, d_t] scaled to at most k times the batch's lower median norm."""
    norms = g.flatten(1).double().norm(dim=1).float()
    bound = k * norms.sort().values[(norms.shape[0] - 1) // 2]
    return g * torch.where(norms > bound, bound / norms, torch.ones_like(norms)).view(-1, 1, 1)


def stage_values(text):
    """'0.05' for every stage, or '1,1,0.05,0.05' for stages 0, 0b, 1, 2 -> {stage: value}"""
    try:
        v = [float(x) for x in text.split(',')]
    except ValueError:
        v = []
    if len(v) not in (1, len(STAGES)) or not all(math.isfinite(x) and x >= 0 for x in v):
        raise argparse.ArgumentTypeError(f"'{text}' is neither one non-negative number nor {len(STAGES)} "
                                         'separated by commas (stages 0, 0b, 1, 2)')
    return dict(zip(STAGES, v * len(STAGES) if len(v) == 1 else v))


def train(a):
    dev = torch.device(a.device)
    vocab = load_vocab(f'{a.data}/vocab.txt')
    cfg = Config(**{f.name: getattr(a, f.name) for f in fields(Config)})
    cfg.vocab = len(vocab)
    check_config(cfg, 'command line')
    if a.vit_from_dit and vit_from_dit_problem(cfg):
        raise FormatError(f'command line: --vit_from_dit 1 starts the vision encoder from the DiT, and '
                          f'{vit_from_dit_problem(cfg)}: change the sizes or give --vit_from_dit 0')
    if not (all(b < 1.0 for b in a.beta2.values()) and (a.clip_z == 0 or a.clip_z >= 1) and 1 <= a.t_draws <= 16):
        raise FormatError('command line: need 0 <= beta2 < 1, clip_z 0 (off) or at least 1, and 1 <= t_draws <= 16')
    data = {s: load_shapes(f'{a.data}/shapes_{s}.bin') for s in ('t2i', 'unpaired', 'captioned')}
    torch.manual_seed(a.seed)
    model = VLV(cfg).to(dev)
    ema = None
    steps = {'stage0': a.steps0, 'stage0b': a.steps0b, 'stage1': a.steps1, 'stage2': a.steps2}
    lrs = {'stage0': a.lr0, 'stage0b': a.lr0b, 'stage1': a.lr1, 'stage2': a.lr2}
    source = {'stage0': 't2i', 'stage0b': 't2i', 'stage1': 'unpaired', 'stage2': 'captioned'}
    for stage in STAGES:
        if stage == 'stage1' and a.vit_from_dit:
            vit_from_dit(model)
        params = set_trainable(model, stage)
        opt = adamw(params, lrs[stage], (0.9, a.beta2[stage]), 1e-8, a.weight_decay)
        images, captions = data[source[stage]]
        n, total, warm = images.shape[0], steps[stage], int(0.05 * steps[stage])
        if stage == 'stage0':
            ema = {k: p.detach().clone() for k, p in model.named_parameters() if trainable(k, stage)}
        start = time.time()
        for step in range(total):
            # warm-up, then cosine from lr to lr/10 (vlvc/run.h stage_lr)
            progress = (step - warm) / max(total - warm, 1)
            lr = lrs[stage] * ((step + 1) / warm if step < warm else 0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
            for g in opt.param_groups:
                g['lr'] = lr
            idx = (torch.randint(0, n, (a.batch,)) if stage == 'stage2'
                   else torch.arange(step * a.batch, (step + 1) * a.batch) % n)
            text = [captions[i] for i in idx.tolist()]
            batch = {'images': images[idx].to(dev), 't2i_images': images[idx].to(dev),
                     'text_tokens': encode(vocab, text, cfg.n_q).to(dev),
                     'caption_tokens': encode(vocab, text, cfg.cap_len).to(dev),
                     'noise': torch.randn(a.batch, cfg.img_size, cfg.img_size, 3, device=dev),
                     'timesteps': torch.randint(0, cfg.n_timesteps, (a.batch,), device=dev)}
            if stage == 'stage1' and a.t_draws > 1:  # the largest of t_draws uniform draws (train_vlv --t_draws)
                draws = torch.randint(0, cfg.n_timesteps, (a.t_draws - 1, a.batch), device=dev)
                batch['timesteps'] = torch.maximum(batch['timesteps'], draws.max(dim=0).values)
            if stage == 'stage0':  # caption dropout to the empty caption
                drop = torch.rand(a.batch) < a.dropout
                batch['text_tokens'][drop.to(dev)] = empty_caption(int(drop.sum()), cfg.n_q).to(dev)
            opt.zero_grad()
            loss, acts = model.objective(stage, batch)
            if not math.isfinite(loss.item()):
                raise FormatError(f'{stage} step {step}: the loss is {loss.item()}')
            if stage == 'stage1' and a.clip_z > 0:
                acts['act.z'].register_hook(lambda g: clip_rows_to_median(g, a.clip_z))
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in params], a.grad_clip[stage])
            opt.step()
            if stage == 'stage0':
                with torch.no_grad():
                    for k, p in model.named_parameters():
                        if k in ema:
                            ema[k].mul_(a.ema).add_(p.detach(), alpha=1 - a.ema)
            if (step + 1) % a.log_every == 0 or step + 1 == total:
                ms = 1e3 * (time.time() - start) / (step + 1)
                print(f'{stage:8s} step {step + 1:6d}/{total} | loss {loss.item():.5f} | lr {lr:.2e} | {ms:.1f} ms/step', flush=True)
        if stage == 'stage0':  # from here on the decoder is its EMA
            with torch.no_grad():
                for k, p in model.named_parameters():
                    if k in ema:
                        p.copy_(ema[k])
    model.cpu()
    write_checkpoint(f'{a.out}/model.bin', model)
    with open(f'{a.data}/vocab.txt') as src, open(f'{a.out}/vocab.txt', 'w') as dst:
        dst.write(src.read())
    print(f'wrote {a.out}/model.bin; score it with ./train_vlv --eval_model {a.out}/model.bin --out {a.out}')


# ----------------------------------------------------------------------------------------------
# anchors: the twin's own functions against definitions it did not write
#
# The C code is checked against this twin, so a mistake made the same way in both passes every
# check. Each anchor runs a function that the dump uses (not a copy of it) on small random
# float64 inputs against an independent definition: a PyTorch built-in (multi-head attention,
# the causal mask, tanh-GELU and its autograd derivative, AdamW), a closed form or property of
# the definition (sin-cos tables, the forward process, v as dx_t/dφ, DDIM's exactness on an
# exact model), the DiT reference's adaLN-Zero order, and, when diffusers is importable, its
# schedulers and embeddings. `python3 dev/vlv.py anchors`; the last line counts them.

class AnchorRun:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.no_diffusers = ''

    def result(self, name, ok, detail):
        ok = bool(ok)
        self.passed, self.failed = self.passed + ok, self.failed + (not ok)
        print(f'{"ok  " if ok else "FAIL"} {name:24s} {detail}', flush=True)

    def close(self, name, got, want, tol, against):
        """max|got − want| / max|want| (norm-wise, as test_vlv) within tol; NaN fails."""
        got, want = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64)
        if got.shape != want.shape:
            return self.result(name, False, f'shape {tuple(got.shape)} vs {tuple(want.shape)} of {against}')
        scale = want.abs().max().item()
        err = (got - want).abs().max().item() / (scale if scale > 0 else 1.0)
        self.result(name, err <= tol, f'rel err {err:.1e} (tol {tol:.0e}) vs {against}')

    def skip(self, name, why):
        self.skipped += 1
        print(f'skip {name:24s} {why}', flush=True)


def _mha(x, ctx, n_head, wq, bq, wk, bk, wv, bv, wo, bo, mask=None):
    """torch's multi-head attention (F.multi_head_attention_forward) on batch-first [B, T, C] inputs."""
    out, _ = F.multi_head_attention_forward(
        x.transpose(0, 1), ctx.transpose(0, 1), ctx.transpose(0, 1), wq.shape[0], n_head,
        None, torch.cat([bq, bk, bv]), None, None, False, 0.0, wo, bo, training=False,
        need_weights=False, attn_mask=mask, use_separate_proj_weight=True,
        q_proj_weight=wq, k_proj_weight=wk, v_proj_weight=wv)
    return out.transpose(0, 1)


def _mha_self(m, x, mask=None):  # the twin's SelfAttention m, computed by torch's multi-head attention
    (wq, wk, wv), (bq, bk, bv) = m.qkv.weight.chunk(3), m.qkv.bias.chunk(3)
    return _mha(x, x, m.n_head, wq, bq, wk, bk, wv, bv, m.proj.weight, m.proj.bias, mask)


def _mha_cross(m, x, ctx):  # the twin's CrossAttention m, by torch's multi-head attention
    (wk, wv), (bk, bv) = m.kv.weight.chunk(2), m.kv.bias.chunk(2)
    return _mha(x, ctx, m.n_head, m.q.weight, m.q.bias, wk, bk, wv, bv, m.proj.weight, m.proj.bias)


def _causal_mask(T):  # torch's own causal mask (-inf above the diagonal), as nn.Transformer builds it
    return nn.Transformer.generate_square_subsequent_mask(T).to(torch.float64)


def _try_diffusers():
    try:
        import diffusers
        from diffusers import DDIMScheduler, DDPMScheduler
        from diffusers.models.embeddings import get_2d_sincos_pos_embed, get_timestep_embedding
    except Exception as e:  # not installed, or a version that needs a newer torch
        why = 'diffusers not installed' if isinstance(e, ModuleNotFoundError) else f'diffusers not importable ({e})'
        return None, why
    return dict(version=diffusers.__version__, DDIMScheduler=DDIMScheduler, DDPMScheduler=DDPMScheduler,
                get_2d_sincos_pos_embed=get_2d_sincos_pos_embed, get_timestep_embedding=get_timestep_embedding), ''


def _supported(fn, **kwargs):  # the keyword arguments fn accepts (diffusers' signatures change across versions)
    import inspect
    params = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in params}


def anchor_attention(run, g):
    C, nh, B, T = 12, 3, 2, 5
    x = 2 * torch.randn(B, T, C, generator=g, dtype=torch.float64)
    with torch.no_grad():
        for causal in (False, True):
            m = SelfAttention(C, nh, causal).double()
            name = 'attention.causal' if causal else 'attention.self'
            run.close(name, m(x), _mha_self(m, x, _causal_mask(T) if causal else None), 1e-12,
                      'F.multi_head_attention_forward' + (' + Transformer.generate_square_subsequent_mask' if causal else ''))
        m = CrossAttention(C, 8, nh).double()
        ctx = 2 * torch.randn(B, 4, 8, generator=g, dtype=torch.float64)
        run.close('attention.cross', m(x, ctx), _mha_cross(m, x, ctx), 1e-12,
                  'F.multi_head_attention_forward, separate q / k / v weights')
        # causality by its definition: output row i changes with token i and not with any token j > i
        m = SelfAttention(C, nh, causal=True).double()
        y, leak, least = m(x), 0.0, float('inf')
        for j in range(T):
            x2 = x.clone()
            x2[:, j] += torch.randn(B, C, generator=g, dtype=torch.float64)
            d = (m(x2) - y).abs()
            leak = max(leak, d[:, :j].max().item() if j else 0.0)
            least = min(least, d[:, j].max().item())
        scale = y.abs().max().item()
        run.result('attention.causal-defn', leak / scale <= 1e-14 and least / scale > 1e-3,
                   f'rows before the changed token move by {leak / scale:.1e} (must be 0), '
                   f'its own row by at least {least / scale:.1e} (must be > 1e-3)')
        sdpa = getattr(F, 'scaled_dot_product_attention', None)
        if sdpa is None:
            run.skip('attention.sdpa', f'skipped: F.scaled_dot_product_attention needs torch >= 2.0 (this is {torch.__version__})')
        else:
            q, k, v = (2 * torch.randn(B, T, C, generator=g, dtype=torch.float64) for _ in range(3))
            heads = lambda u: u.reshape(B, T, nh, C // nh).transpose(1, 2)  # noqa: E731
            for causal in (False, True):
                want = sdpa(heads(q), heads(k), heads(v), is_causal=causal).transpose(1, 2).reshape(B, T, C)
                run.close('attention.sdpa' + ('-causal' if causal else ''), attention(q, k, v, nh, causal), want, 1e-12,
                          'F.scaled_dot_product_attention' + (' (is_causal)' if causal else ''))


def anchor_gelu(run, g):
    x = torch.cat([torch.linspace(-6, 6, 121, dtype=torch.float64), 3 * torch.randn(200, generator=g, dtype=torch.float64)])
    run.close('gelu.forward', gelu(x), F.gelu(x, approximate='tanh'), 1e-14, "F.gelu(approximate='tanh')")
    w = torch.randn(x.shape, generator=g, dtype=torch.float64)
    grads = []
    for f in (gelu, lambda u: F.gelu(u, approximate='tanh')):
        u = x.clone().requires_grad_()
        (f(u) * w).sum().backward()
        grads.append(u.grad)
    run.close('gelu.backward', grads[0], grads[1], 1e-14, "autograd of F.gelu(approximate='tanh')")
    ok = torch.autograd.gradcheck(gelu, (x[::7].clone().requires_grad_(),), eps=1e-6, atol=1e-8, rtol=1e-6,
                                  raise_exception=False)
    run.result('gelu.gradcheck', ok, 'torch.autograd.gradcheck: the backward is the derivative of the forward '
               '(finite differences)')
    mlp = MLP(6).double()
    h = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    with torch.no_grad():
        want = F.linear(F.gelu(F.linear(h, mlp.fc.weight, mlp.fc.bias), approximate='tanh'), mlp.proj.weight, mlp.proj.bias)
        run.close('gelu.mlp', mlp(h), want, 1e-14, "Linear, F.gelu(approximate='tanh'), Linear")


def anchor_timestep(run, g, dif):
    t = torch.tensor([0, 1, 2, 10, 100, 500, 999])
    for d_freq in (8, 64):
        f = timestep_features(t, timestep_frequencies(d_freq), torch.float64)
        half = d_freq // 2
        run.close(f'timestep.t0.d{d_freq}', f[0], torch.cat([torch.ones(half), torch.zeros(half)]), 0.0,
                  '[cos 0, ..., sin 0, ...] = [1, ..., 1, 0, ..., 0]')
        # φ_k = 10000^(−k/half): with half = 4 the frequencies are 1, 1/10, 1/100, 1/1000 (column k·half/4)
        cols = [k * half // 4 for k in range(4)]
        omega = torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=torch.float64)
        want = torch.cat([torch.cos(t[:, None] * omega), torch.sin(t[:, None] * omega)], dim=1)
        run.close(f'timestep.freqs.d{d_freq}', f[:, cols + [half + c for c in cols]], want, 1e-12,
                  f'cos / sin of t·(1, 0.1, 0.01, 0.001) at columns {cols} and their sines')
    if dif is None:
        return run.skip('timestep.diffusers', f'skipped: {run.no_diffusers}')
    for d_freq in (8, 64):
        want = dif['get_timestep_embedding'](t, d_freq, flip_sin_to_cos=True, downscale_freq_shift=0)
        run.close(f'timestep.diffusers.d{d_freq}', timestep_features(t, timestep_frequencies(d_freq), torch.float64),
                  want, 1e-4, f"diffusers {dif['version']} get_timestep_embedding(flip_sin_to_cos=True, "
                  'downscale_freq_shift=0), float32')


def anchor_sincos(run, g, dif):
    G, C = 3, 16  # k = 4: ω = 1, 1/10, 1/100, 1/1000
    table = sincos_2d(G, C)
    omega = torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=torch.float64)
    rows = []
    for r in range(G):
        for q in range(G):  # row r·G + q: column q first, then row r
            rows.append(torch.cat([torch.sin(q * omega), torch.cos(q * omega), torch.sin(r * omega), torch.cos(r * omega)]))
    run.close('sincos2d.values', table, torch.stack(rows), 1e-12,
              'rows [sin qω, cos qω, sin rω, cos rω], ω = 1, 0.1, 0.01, 0.001, row n = r·G + q')
    # translation invariance: p(r, q)·p(r', q') = Σ cos((q − q')ω) + Σ cos((r − r')ω) depends on the offset only
    G, C = 5, 24
    table = sincos_2d(G, C)
    dots, spread = table @ table.t(), 0.0
    pos = [(n // G, n % G) for n in range(G * G)]
    groups = {}
    for a in range(G * G):
        for b in range(G * G):
            groups.setdefault((pos[a][0] - pos[b][0], pos[a][1] - pos[b][1]), []).append(dots[a, b].item())
    spread = max(max(v) - min(v) for v in groups.values())
    run.result('sincos2d.relative', spread <= 1e-12 and len(groups) == (2 * G - 1) ** 2,
               f'dot products of rows depend only on the offset (spread {spread:.1e}, must be < 1e-12)')
    if dif is None:
        return run.skip('sincos2d.diffusers', f'skipped: {run.no_diffusers}')
    for G, C in ((3, 16), (4, 20)):
        fn = dif['get_2d_sincos_pos_embed']
        want = fn(C, G, **_supported(fn, base_size=G, interpolation_scale=1.0, output_type='pt'))
        run.close(f'sincos2d.diffusers.{G}x{C}', sincos_2d(G, C), torch.as_tensor(want), 1e-12,
                  f"diffusers {dif['version']} get_2d_sincos_pos_embed (the MAE / DiT table)")


def _scaled_linear_betas(T):  # √β linear from √0.00085 to √0.012, written out (not torch.linspace)
    a, b = 0.00085 ** 0.5, 0.012 ** 0.5
    return torch.tensor([(a + (b - a) * i / (T - 1)) ** 2 for i in range(T)], dtype=torch.float64)


def anchor_schedule(run, g, dif):
    T = 1000
    abar = alphas_cumprod(T)
    run.close('schedule.betas', 1 - abar / torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]]),
              _scaled_linear_betas(T), 1e-9, 'ᾱ_t/ᾱ_{t−1} = 1 − β_t, √β linear from √0.00085 to √0.012')
    # the forward process step by step: x_t = √(1 − β_t)·x_{t−1} + √β_t·ε_t, so x_t = a_t·x₀ + s_t·ε with
    # a_t = a_{t−1}·√(1 − β_t) and s_t² = (1 − β_t)·s_{t−1}² + β_t
    betas, coef, var, a_t, s2 = _scaled_linear_betas(T), [], [], 1.0, 0.0
    for b in betas.tolist():
        a_t, s2 = a_t * math.sqrt(1 - b), (1 - b) * s2 + b
        coef.append(a_t), var.append(s2)
    t = torch.tensor([0, 1, 17, 250, 500, 998, 999])
    x0 = torch.rand(len(t), 2, 2, 3, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    ab = abar[t].view(-1, 1, 1, 1)
    coef, var = torch.tensor(coef, dtype=torch.float64), torch.tensor(var, dtype=torch.float64)
    want = coef[t].view(-1, 1, 1, 1) * x0 + var[t].sqrt().view(-1, 1, 1, 1) * eps
    x_t, target = diffusion_inputs(ab, x0, eps, 0)
    run.close('diffusion.x_t', x_t, want, 1e-10, 'the forward process run step by step')
    run.close('diffusion.eps-target', target, eps, 0.0, 'ε')
    # v = dx_t/dφ with x_t = cos φ·x₀ + sin φ·ε, φ = atan(√(1−ᾱ)/√ᾱ) (Salimans & Ho, 2022)
    phi = torch.atan2((1 - ab).sqrt(), ab.sqrt()).expand_as(x0).clone().requires_grad_()
    v_want, = torch.autograd.grad((torch.cos(phi) * x0 + torch.sin(phi) * eps).sum(), phi)
    x_t, v = diffusion_inputs(ab, x0, eps, 1)
    run.close('diffusion.v-target', v, v_want, 1e-12, 'v = dx_t/dφ, x_t = cos φ·x₀ + sin φ·ε (autograd)')
    if dif is None:
        return run.skip('diffusion.diffusers', f'skipped: {run.no_diffusers}')
    sched = dif['DDPMScheduler'](num_train_timesteps=T, beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear')
    ref = sched.alphas_cumprod.double()
    run.close('diffusion.diffusers-abar', (abar - ref) / ref, torch.zeros(T), 1e-5,
              f"diffusers {dif['version']} DDPMScheduler('scaled_linear').alphas_cumprod (float32; elementwise)")
    run.close('diffusion.diffusers-x_t', diffusion_inputs(ab, x0, eps, 1)[0], sched.add_noise(x0, eps, t), 1e-5,
              'DDPMScheduler.add_noise')
    run.close('diffusion.diffusers-v', v, sched.get_velocity(x0, eps, t), 1e-5, 'DDPMScheduler.get_velocity')


class _DDIMModel:
    """What ddim() reads of a VLV: cfg (n_timesteps, prediction), abar, and dit(x, t, c)."""

    def __init__(self, prediction, dit, T=1000):
        self.cfg, self.abar, self.dit = Config(prediction=prediction, n_timesteps=T), alphas_cumprod(T), dit


def anchor_ddim(run, g, dif):
    T, B = 1000, 2
    x0 = (torch.rand(B, 4, 4, 3, generator=g, dtype=torch.float64) * 2 - 1) * 0.9  # inside the clip
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    for prediction, kind in ((0, 'eps'), (1, 'v')):
        # an exact model: it returns the target (diffusion_inputs) of x₀ and the ε that x_t implies; DDIM (η = 0)
        # must then move along x₀'s line, from the forward-process point at t to the one at the next sampled step
        model = _DDIMModel(prediction, None, T)

        def exact(x, tt, c, model=model, prediction=prediction):
            ab = model.abar[tt].view(-1, 1, 1, 1)
            return diffusion_inputs(ab, x0, (x - ab.sqrt() * x0) / (1 - ab).sqrt(), prediction)[1]
        model.dit = exact
        worst = 0.0
        for S, run_steps in ((10, 3), (10, 10), (7, 5), (1000, 2)):
            delta = T // S
            ts = [(S - 1 - i) * delta for i in range(run_steps + 1)]  # the sampled steps, then where it ends
            ab0, ab1 = model.abar[ts[0]].item(), (model.abar[ts[-1]].item() if ts[-1] >= 0 else 1.0)
            x = math.sqrt(ab0) * x0 + math.sqrt(1 - ab0) * eps
            want = math.sqrt(ab1) * x0 + math.sqrt(1 - ab1) * eps
            got = ddim(model, x, None, None, S, run_steps, 2.0)
            worst = max(worst, ((got - want).abs().max() / want.abs().max()).item())
        run.result(f'ddim.exact-{kind}', worst <= 1e-10,
                   f'rel err {worst:.1e} (tol 1e-10) vs the forward-process point at the next sampled step '
                   '(an exact model; S = 10, 7, 1000)')
    if dif is None:
        return run.skip('ddim.diffusers', f'skipped: {run.no_diffusers}')
    cls = dif['DDIMScheduler']
    W = torch.randn(3, 3, generator=g, dtype=torch.float64)
    for prediction, kind, label in ((0, 'epsilon', 'eps'), (1, 'v_prediction', 'v')):
        def smooth(x, tt, c):  # a fixed model with some structure; c is a number here
            return torch.tanh(x @ W + c + tt.view(-1, 1, 1, 1) / T)
        model = _DDIMModel(prediction, smooth, T)
        S, run_steps, w = 10, 10, 2.0  # every step: the last one, onto t = 0, uses ᾱ = 1 (set_alpha_to_one)
        sched = cls(**_supported(cls.__init__, num_train_timesteps=T, beta_start=0.00085, beta_end=0.012,
                                 beta_schedule='scaled_linear', clip_sample=True, clip_sample_range=1.0,
                                 set_alpha_to_one=True, steps_offset=0, prediction_type=kind,
                                 timestep_spacing='leading', thresholding=False))
        sched.set_timesteps(S)
        x = torch.randn(B, 4, 4, 3, generator=g, dtype=torch.float64)
        want = x.clone()
        for t in sched.timesteps[:run_steps]:
            tt = torch.full((B,), int(t), dtype=torch.long)
            out_e = smooth(want, tt, -0.3)
            out = out_e + w * (smooth(want, tt, 0.2) - out_e)
            want = sched.step(out, t, want, eta=0.0).prev_sample
        got = ddim(model, x, 0.2, -0.3, S, run_steps, w)
        steps = [int(t) for t in sched.timesteps[:run_steps]]
        if steps != [(S - 1 - i) * (T // S) for i in range(run_steps)]:
            run.result(f'ddim.diffusers-{label}', False, f'diffusers samples the steps {steps}')
        else:
            run.close(f'ddim.diffusers-{label}', got, want, 1e-5,
                      f"diffusers {dif['version']} DDIMScheduler.step (eta 0, clip_sample), float32 schedule")


def anchor_adamw(run, g):
    lr, betas, eps, wd = 1e-2, (0.9, 0.95), 1e-8, 0.1

    def params():
        gg = torch.Generator().manual_seed(7)
        return [(n, torch.randn(*shape, generator=gg, dtype=torch.float64).requires_grad_())
                for n, shape in (('w', (5, 4)), ('b', (5,)), ('e', (3, 4)), ('ln', (4,)))]
    grads = [[torch.randn(p.shape, generator=g, dtype=torch.float64) for _, p in params()] for _ in range(4)]
    mine, ref = params(), params()
    opt = adamw(mine, lr, betas, eps, wd)
    ref_opt = torch.optim.AdamW([{'params': [p for _, p in ref if p.dim() >= 2], 'weight_decay': wd},
                                 {'params': [p for _, p in ref if p.dim() < 2], 'weight_decay': 0.0}],
                                lr=lr, betas=betas, eps=eps)
    for step in grads:
        for (_, p), (_, q), gr in zip(mine, ref, step):
            p.grad, q.grad = gr.clone(), gr.clone()
        opt.step(), ref_opt.step()
    run.close('adamw.torch', torch.cat([p.detach().flatten() for _, p in mine]),
              torch.cat([p.detach().flatten() for _, p in ref]), 0.0,
              'torch.optim.AdamW, decay on matrices and embeddings only (4 steps)')
    # decoupled decay (Loshchilov & Hutter): with zero gradients Adam's update is 0 and a matrix only
    # shrinks, p·(1 − lr·wd) per step; vectors do not move
    mine = params()
    start = [p.detach().clone() for _, p in mine]
    opt = adamw(mine, lr, betas, eps, wd)
    for _ in range(3):
        for _, p in mine:
            p.grad = torch.zeros_like(p)
        opt.step()
    want = [s * (1 - lr * wd) ** 3 if s.dim() >= 2 else s for s in start]
    run.close('adamw.decoupled', torch.cat([p.detach().flatten() for _, p in mine]),
              torch.cat([w.flatten() for w in want]), 1e-14, 'p·(1 − lr·wd)³ after 3 steps of zero gradient')
    # the first step in closed form: m̂ = g, v̂ = g², so p ← p·(1 − lr·wd) − lr·g/(|g| + eps)
    mine = params()
    start = [p.detach().clone() for _, p in mine]
    opt = adamw(mine, lr, betas, eps, wd)
    for (_, p), gr in zip(mine, grads[0]):
        p.grad = gr.clone()
    opt.step()
    want = [s * (1 - lr * wd if s.dim() >= 2 else 1.0) - lr * gr / (gr.abs() + eps) for s, gr in zip(start, grads[0])]
    run.close('adamw.first-step', torch.cat([p.detach().flatten() for _, p in mine]),
              torch.cat([w.flatten() for w in want]), 1e-14, 'p·(1 − lr·wd) − lr·g/(|g| + eps)')


def _modulate_ref(x, shift, scale):  # DiT: modulate(x, shift, scale) = x·(1 + scale) + shift, on LN₀(x)
    return F.layer_norm(x, x.shape[-1:], eps=1e-5) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def anchor_adaln(run, g):
    C, Cc, nh, B, T, S = 8, 6, 2, 2, 4, 3
    x = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    s = torch.randn(B, C, generator=g, dtype=torch.float64)
    ctx = torch.randn(B, S, Cc, generator=g, dtype=torch.float64)
    shift, scale = torch.randn(2, B, C, generator=g, dtype=torch.float64)
    with torch.no_grad():
        run.close('adaln.modulate', modulate(x, shift, scale), _modulate_ref(x, shift, scale), 1e-14,
                  'DiT modulate: LN₀(x)·(1 + scale) + shift')
        # DiT's adaLN-Zero block: (shift, scale, gate) for attention, then for the MLP, in that chunk order;
        # this model adds an ungated cross-attention between them (doc/model.md)
        blk = DiTBlock(C, Cc, nh).double()
        shift1, scale1, gate1, shift2, scale2, gate2 = blk.ada(s).chunk(6, dim=1)
        want = x + gate1.unsqueeze(1) * _mha_self(blk.attn, _modulate_ref(x, shift1, scale1))
        want = want + _mha_cross(blk.cross, blk.ln_c(want), ctx)
        h = _modulate_ref(want, shift2, scale2)
        mlp = F.linear(F.gelu(F.linear(h, blk.mlp.fc.weight, blk.mlp.fc.bias), approximate='tanh'),
                       blk.mlp.proj.weight, blk.mlp.proj.bias)
        want = want + gate2.unsqueeze(1) * mlp
        run.close('adaln.block', blk(x, s, ctx), want, 1e-12,
                  'the DiT reference block: chunks shift, scale, gate (attention), shift, scale, gate (MLP)')
        dit = DiT(Config(d_d=C, d_t=Cc, nh_d=nh, L_d=1)).double()
        shift, scale = dit.final_ada(s).chunk(2, dim=1)
        run.close('adaln.final', dit.final_layer(x, s), dit.final(_modulate_ref(x, shift, scale)), 1e-14,
                  'the DiT reference final layer: chunks shift, scale')


def anchors(a):
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    dif, why = _try_diffusers()
    print(f'torch {torch.__version__}; ' + (f"diffusers {dif['version']}" if dif else f'{why}: its anchors are skipped'))
    run = AnchorRun()
    run.no_diffusers = why  # why the diffusers anchors are skipped
    parts = [('attention', lambda: anchor_attention(run, g)), ('gelu', lambda: anchor_gelu(run, g)),
             ('timestep', lambda: anchor_timestep(run, g, dif)), ('sincos2d', lambda: anchor_sincos(run, g, dif)),
             ('diffusion', lambda: anchor_schedule(run, g, dif)), ('ddim', lambda: anchor_ddim(run, g, dif)),
             ('adamw', lambda: anchor_adamw(run, g)), ('adaln', lambda: anchor_adaln(run, g))]
    for name, part in parts:
        try:
            part()
        except Exception as e:  # a broken twin may raise: that part fails, the others still run
            run.result(f'{name}.*', False, f'raised {type(e).__name__}: {e}')
    if run.skipped:
        print(f'{run.skipped} skipped (not counted)')
    print(f'anchors: {run.passed} passed, {run.failed} failed')
    return run.failed == 0


def main():
    parser = argparse.ArgumentParser(description='PyTorch twin of vlv.c (doc/model.md, doc/formats.md)')
    sub = parser.add_subparsers(dest='command', required=True)
    d = sub.add_parser('dump', help='write a checkpoint and the debug state test_vlv.c checks against')
    d.add_argument('--out_ckpt', required=True)
    d.add_argument('--out_state', required=True)
    for f in fields(Config):
        if f.name == 'prediction':
            d.add_argument('--prediction', choices=('eps', 'v'), default='eps')
        else:
            d.add_argument(f'--{f.name}', type=int, default=f.default)
    d.add_argument('--batch', type=int, default=3)
    d.add_argument('--seed', type=int, default=1337)
    d.add_argument('--steps', type=int, default=5, help='AdamW steps per objective')
    d.add_argument('--greedy_steps', type=int, default=60, help='stage-2 steps that fit the captions before greedy decoding')
    d.add_argument('--greedy_lr', type=float, default=3e-3)
    for name, default in (('lr', 1e-3), ('weight_decay', 0.1), ('beta1', 0.9), ('beta2', 0.95), ('eps', 1e-8),
                          ('grad_clip', 1.0), ('guidance', 2.0), ('ema', 0.8),  # AdamW, EMA and DDIM settings
                          ('adamw_lr', 1e-2), ('adamw_wd', 1.0)):  # the AdamW-alone record's
        d.add_argument(f'--{name}', type=float, default=default)
    d.add_argument('--ddim_steps', type=int, default=10, help='S of the DDIM schedule')
    d.add_argument('--ddim_run', type=int, default=10, help='how many of its steps to run (all: the last one lands on t = 0)')
    t = sub.add_parser('train', help='train on ./train_vlv --export data (same stages, schedule and data as the C pipeline)')
    t.add_argument('--data', required=True, help='the folder ./train_vlv --export wrote')
    t.add_argument('--out', required=True)
    defaults = dict(img_size=32, patch=4, n_q=16, vocab=0, cap_len=16, d_v=96, L_v=3, nh_v=3, L_a=2, nh_a=3, d_t=96,
                    L_t=2, nh_t=3, d_d=96, L_d=4, nh_d=3, d_freq=64, d_g=96, L_g=2, nh_g=3, n_timesteps=1000, n_z=0)
    for f in fields(Config):  # the C default preset's sizes
        if f.name == 'prediction':
            t.add_argument('--prediction', choices=('eps', 'v'), default='eps')
        else:
            t.add_argument(f'--{f.name}', type=int, default=defaults[f.name])
    for name, default in (('steps0', 5000), ('steps0b', 500), ('steps1', 2000), ('steps2', 1000), ('batch', 32),
                          ('log_every', 100), ('seed', 1337), ('vit_from_dit', 1), ('t_draws', 1)):
        t.add_argument(f'--{name}', type=int, default=default)
    for name, default in (('lr0', 1e-3), ('lr0b', 1e-3), ('lr1', 3e-4), ('lr2', 1e-3), ('weight_decay', 0.0),
                          ('clip_z', 0.0), ('ema', 0.995), ('dropout', 0.1)):
        t.add_argument(f'--{name}', type=float, default=default)
    for name, default in (('grad_clip', '1'), ('beta2', '0.999')):  # as train_vlv's --clip and --beta2
        t.add_argument(f'--{name}', type=stage_values, default=default,
                       help='one value for every stage, or one per stage (0,0b,1,2)')
    t.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    n = sub.add_parser('anchors', help="check the twin's formulas against definitions it did not write (PyTorch "
                       'built-ins, closed forms, the DiT reference; diffusers when importable)')
    n.add_argument('--seed', type=int, default=1)
    r = sub.add_parser('roundtrip', help='read a checkpoint and write it back')
    r.add_argument('inp', metavar='IN')
    r.add_argument('out', metavar='OUT')
    a = parser.parse_args()
    try:
        if a.command in ('dump', 'train'):
            a.prediction = {'eps': 0, 'v': 1}[a.prediction]
            dump(a) if a.command == 'dump' else train(a)
        elif a.command == 'anchors':
            sys.exit(0 if anchors(a) else 1)
        else:
            roundtrip(a)
    except (FormatError, OSError) as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
