#!/usr/bin/env bash
# Mutation test of the checks: make one mistake on purpose at a time (a flipped sign, a dropped
# term, a wrong factor, a frozen part that trains, ...) and check that the tests see it. Two kinds:
#   C only:      the mistake is in train_vlv.c (or a leaf header); test_vlv is rebuilt and must FAIL
#                against the PyTorch references.
#   C and twin:  the same mistake in train_vlv.c and in the twin dev/vlv.py. References written by
#                that twin would agree with that C code, so test_vlv cannot see it; the mutated twin's
#                `anchors` (its formulas against definitions it did not write) must fail instead. The C
#                text must still apply and compile (-fsyntax-only), but test_vlv is not rebuilt.
# A mutant that passes means the tests cannot see that mistake.
# Usage: dev/test/mutants.sh REFERENCE_STEM [STEM...]   (e.g. data/test/small). A C-only mutant is
# run against each reference in turn until one fails; with a single stem, the other references
# beside it (X.ckpt with X.state: the v-prediction config) follow it.
set -euo pipefail
ref=${1:?usage: dev/test/mutants.sh REFERENCE_STEM [STEM...] (e.g. data/test/small)}
CC=${CC:-gcc}
CFLAGS=${CFLAGS:--O2}
LDLIBS=${LDLIBS:--lm}
PYTHON_BIN=${PYTHON_BIN:-python3}          # for the text replacement (any python 3)
TWIN_PYTHON=${TWIN_PYTHON:-${PYTHON:-/usr/bin/python3}}  # runs the twin: a python with torch, as the Makefile's PYTHON
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/dev"
cp -r "$root/vlvc" "$root/test_vlv.c" "$work/"
cp -r "$root/dev/test" "$work/dev/"
refs=("$@")
if [ $# -eq 1 ]; then
  for s in "$(dirname "$ref")"/*.state; do
    [ -f "${s%.state}.ckpt" ] && [ "${s%.state}" != "$ref" ] && refs+=("${s%.state}")
  done
fi
stems=()
for r in "${refs[@]}"; do
  cp "$r.ckpt" "$r.state" "$work/"
  stems+=("$work/$(basename "$r")")
done

# name @@ text @@ its replacement [@@ text @@ replacement ...]: each text must occur exactly once in
# train_vlv.c, the leaf headers it includes (vlvc/vlv.h, clip_z.h, tokenizer.h, beams.h) and
# dev/vlv.py together; \n is a newline. A mutant that changes dev/vlv.py is a C-and-twin mutant.
mutants=(
  "layernorm backward: sign of the n*mean(g*n) term@@dx[c] += s * (g - g_mean - (x[c] - m) * s * gn_mean);@@dx[c] += s * (g - g_mean + (x[c] - m) * s * gn_mean);"
  "layernorm backward: weight gradient not normalized@@dw[j] += dy[j] * (x[j] - m) * s;@@dw[j] += dy[j] * x[j];"
  "attention backward: dk from dO instead of q@@dsh, 1, Tk, qh, q_stride, 1, NULL, 0,@@dsh, 1, Tk, doh, C, 1, NULL, 0,"
  "attention backward: softmax's centering term dropped@@float ds = a[j] * (da[j] - a_da) * scale;@@float ds = a[j] * da[j] * scale;"
  "gelu backward: 0.5 (1 + tanh) term dropped@@float grad = 0.5f * (1.0f + th) + 0.5f@@float grad = 0.5f"
  "silu backward: derivative of x dropped@@dinp[i] += dout[i] * s * (1.0f + inp[i] * (1.0f - s));@@dinp[i] += dout[i] * s;"
  "modulate backward: dscale without x@@dsc[c] += dy * x[row + c];@@dsc[c] += dy;"
  "gated residual backward: no gate gradient@@dg[c] += d * y[row + c];@@dg[c] += 0.0f;"
  "matmul backward: bias gradient doubled@@float db = sum[o - o0]; dbias[o] += db;@@float db = sum[o - o0]; dbias[o] += 2.0f * db;"
  "embed backward: position gradient dropped@@if (dpos) { dpos[c] += d[c]; }@@if (dpos) { dpos[c] += 0.0f; }"
  "ViT from the DiT: LN1's bias is the adaLN scale@@vb->ln1.b[i] = mod[i];@@vb->ln1.b[i] = mod[C + i];"
  "ViT from the DiT: MLP projection scaled by attention's gate@@scale_rows(vb->mlp.proj.w, db->mlp.proj.w, mod + 5 * C, C, 4 * C);@@scale_rows(vb->mlp.proj.w, db->mlp.proj.w, mod + 2 * C, C, 4 * C);"
  "cross-attention backward: no gradient to the context@@matmul_backward(dctx, g->kv.w, g->kv.b, d->kv, ctx, p->kv.w, B * S, Cc, 2 * C);@@matmul_backward(NULL, g->kv.w, g->kv.b, d->kv, ctx, p->kv.w, B * S, Cc, 2 * C);"
  "cross-entropy: PAD targets counted@@if (targets[n] != TOKEN_PAD) {@@if (targets[n] >= 0) {"
  "text encoder: not causal@@c->L_t, B, Nq, C, c->nh_t, 1);\n    norm_forward@@c->L_t, B, Nq, C, c->nh_t, 0);\n    norm_forward"
  "stage 1: the frozen text encoder trains@@case STAGE1: return 1 << GROUP_VIT | 1 << GROUP_ADAPTER;@@case STAGE1: return 1 << GROUP_VIT | 1 << GROUP_ADAPTER | 1 << GROUP_TEXTENC;"
  "backward: the DiT's activation gradients not zeroed@@? 1 << ACTS_TEXTENC | 1 << ACTS_DIT :@@? 1 << ACTS_TEXTENC :"
  "gradient norm: half of the accumulators left out@@+ ((acc[4] + acc[5]) + (acc[6] + acc[7]));@@+ 0.0;"
  "exp: the polynomial's r^2 coefficient off by 1%@@p = p * r + 5.0000001201e-1f;@@p = p * r + 5.05e-1f;"
  "clip at z: the lower median taken one rank up@@if (rank == (B - 1) / 2) { return v[b]; }@@if (rank == B / 2) { return v[b]; }"
  "clip at z: rows scaled by the bound itself@@float scale = bound / mine[b];@@float scale = bound;"
  "AdamW: no bias correction of v@@(sqrtf(vel[j] / bc2) + eps)@@(sqrtf(vel[j]) + eps)"
  "AdamW: weight decay on biases and norms too@@float decay = t->ndim >= 2 ?@@float decay = t->ndim >= 1 ?"
  "AdamW: gradient clipping ignored@@if (clip > 1.0f) { clip = 1.0f; }@@clip = 1.0f;"
  "AdamW: the decay after the Adam update, not before@@w[j] -= decay * w[j];\n            mom[j]@@mom[j]@@w[j] -= lr * (mom[j] / bc1) / (sqrtf(vel[j] / bc2) + eps);@@w[j] -= lr * (mom[j] / bc1) / (sqrtf(vel[j] / bc2) + eps);\n            w[j] -= decay * w[j];"
  "AdamW: the second moment from the unclipped gradient@@vel[j] = beta2 * vel[j] + (1.0f - beta2) * g * g;@@vel[j] = beta2 * vel[j] + (1.0f - beta2) * grad[j] * grad[j];"
  "DDIM: x0 from eps with swapped coefficients@@eps = out; x0 = (x[j] - sb * eps) / sa;@@eps = out; x0 = (x[j] - sa * eps) / sb;"
  "DDIM: predicted x0 not clipped to the data range@@x0 = fminf(fmaxf(x0, -1.0f), 1.0f);@@x0 = x0;"
  "DDIM: the last step lands on abar[0], not on the data (abar 1)@@ab_prev = t_prev >= 0 ? m->alphas_cumprod[t_prev] : 1.0f;@@ab_prev = t_prev >= 0 ? m->alphas_cumprod[t_prev] : m->alphas_cumprod[0];"
  "EMA: decay and 1 - decay swapped@@m->ema[j] = decay * m->ema[j] + (1.0f - decay) * m->params[j];@@m->ema[j] = (1.0f - decay) * m->ema[j] + decay * m->params[j];"
  "EMA: written into the weights instead of the EMA buffer@@m->ema[j] = decay * m->ema[j] + (1.0f - decay) * m->params[j];@@m->params[j] = decay * m->ema[j] + (1.0f - decay) * m->params[j];"
  "EMA swap: the weights keep their own values@@float w = m->params[j]; m->params[j] = m->ema[j]; m->ema[j] = w;@@float w = m->params[j]; m->ema[j] = w;"
  "greedy: decoding does not stop at EOS@@if (pos > 1 && (prev == TOKEN_EOS || prev == TOKEN_PAD)) { continue; }@@if (0) { continue; }"
)

# Mistakes that the C code and the twin could share (doc/testing.md "Anchors"): each once in the C
# code alone, caught by test_vlv against the references, and once in both, caught by the anchors.
# The C text is the same in both variants.
c_scale='attention_flops_counted += 4.0 * B * Tq * Tk * C;\n    int hs = C / NH;\n    float scale = 1.0f / sqrtf((float)hs);@@attention_flops_counted += 4.0 * B * Tq * Tk * C;\n    int hs = C / NH;\n    float scale = 1.0f / (float)hs;@@attention_flops_counted += 8.0 * B * Tq * Tk * C;\n    int hs = C / NH;\n    float scale = 1.0f / sqrtf((float)hs);@@attention_flops_counted += 8.0 * B * Tq * Tk * C;\n    int hs = C / NH;\n    float scale = 1.0f / (float)hs;'
t_scale='att = q @ k.transpose(-2, -1) / math.sqrt(hs)@@att = q @ k.transpose(-2, -1) / hs'
c_mask='float* a = s + (size_t)i * Tk;\n                int jend = causal ? i + 1 : Tk;@@float* a = s + (size_t)i * Tk;\n                int jend = causal ? (i + 2 < Tk ? i + 2 : Tk) : Tk;@@float* da = dsh + (size_t)i * Tk;\n                int jend = causal ? i + 1 : Tk;@@float* da = dsh + (size_t)i * Tk;\n                int jend = causal ? (i + 2 < Tk ? i + 2 : Tk) : Tk;'
t_mask='dtype=torch.bool, device=q.device).triu(1)@@dtype=torch.bool, device=q.device).triu(2)'
c_freq='double arg = t[b] * exp(-log(10000.0) * i / half);@@double arg = t[b] * exp(-log(10000.0) * i / (half - 1));'
t_freq='torch.arange(half, dtype=torch.float64) / half)@@torch.arange(half, dtype=torch.float64) / (half - 1))'
c_l2='float g = grad[j] * clip;\n            w[j] -= decay * w[j];@@float g = grad[j] * clip + decay / lr * w[j];'
t_l2='return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)@@return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps)'
c_ddim='ab_prev = t_prev >= 0 ? m->alphas_cumprod[t_prev] : 1.0f;@@ab_prev = t - 1 >= 0 ? m->alphas_cumprod[t - 1] : 1.0f; (void)t_prev;'
t_ddim='ab_next = model.abar[t_next].item() if t_next >= 0 else 1.0@@ab_next = model.abar[t - 1].item() if t - 1 >= 0 else 1.0'
c_gelu='float grad = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);@@float grad = 0.5f * (1.0f + erff(x * 0.70710678f)) + x * expf(-0.5f * x * x) * 0.39894228f; (void)th;'
t_gelu="def gelu(x):  # tanh approximation\n    return F.gelu(x, approximate='tanh')@@def gelu(x):  # tanh approximation\n    class Gelu(torch.autograd.Function):\n        @staticmethod\n        def forward(ctx, u):\n            ctx.save_for_backward(u)\n            return F.gelu(u, approximate='tanh')\n\n        @staticmethod\n        def backward(ctx, g):\n            u, = ctx.saved_tensors\n            return g * (0.5 * (1 + torch.erf(u / math.sqrt(2))) + u * torch.exp(-u * u / 2) / math.sqrt(2 * math.pi))\n    return Gelu.apply(x)"
c_v='sa * noise[i] - sb * x0[i] : noise[i];@@sb * noise[i] - sa * x0[i] : noise[i];'
t_v='else ab.sqrt() * noise - (1 - ab).sqrt() * x0@@else (1 - ab).sqrt() * noise - ab.sqrt() * x0'
c_adaln='modulate_forward(a->mod1, a->ln1.out, mod, mod + C, M, B, T, C);@@modulate_forward(a->mod1, a->ln1.out, mod + C, mod, M, B, T, C);@@modulate_backward(d->ln1.out, dmod, dmod + C, d->mod1, a->ln1.out, mod + C, M, B, T, C);@@modulate_backward(d->ln1.out, dmod + C, dmod, d->mod1, a->ln1.out, mod, M, B, T, C);'
t_adaln='shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(s).chunk(6, dim=-1)@@scale1, shift1, gate1, shift2, scale2, gate2 = self.ada(s).chunk(6, dim=-1)'
shared=(
  "attention: scores scaled by 1/hs, not 1/sqrt(hs)@@$c_scale@@$t_scale"
  "attention: causal mask shifted by one (sees i+1)@@$c_mask@@$t_mask"
  "timestep features: frequency exponent over half-1@@$c_freq@@$t_freq"
  "AdamW: coupled L2 instead of decoupled decay@@$c_l2@@$t_l2"
  "DDIM: abar[t-1] instead of the next sampled step's@@$c_ddim@@$t_ddim"
  "gelu backward: the erf GELU's derivative@@$c_gelu@@$t_gelu"
  "v target: coefficients swapped@@$c_v@@$t_v"
  "adaLN: shift and scale swapped (attention branch)@@$c_adaln@@$t_adaln"
)
for entry in "${shared[@]}"; do
  name=${entry%%@@*}; rest=${entry#*@@}
  mutants+=("$name@@${rest%@@*@@*}" "$name [C and twin]@@$rest")
done

caught=0; missed=0; broken=0; n_twin=0
printf '%-66s %s\n' "mutant" "result"
for entry in "${mutants[@]}"; do
  name=${entry%%@@*}
  # apply every (text, replacement) pair to a fresh copy; prints "c" or "twin" (dev/vlv.py changed)
  if ! kind=$(ENTRY="${entry#*@@}" "$PYTHON_BIN" - "$root" "$work" 2>"$work/apply.log" <<'PY'
import os, sys
root, work = sys.argv[1], sys.argv[2]
parts = os.environ['ENTRY'].replace('\\n', '\n').split('@@')
if len(parts) % 2:
    sys.exit('not pairs of text @@ replacement')
c_files = ["train_vlv.c", "vlvc/vlv.h", "vlvc/clip_z.h", "vlvc/tokenizer.h", "vlvc/beams.h"]
texts = {f: open(os.path.join(root, f)).read() for f in c_files + ["dev/vlv.py"]}
changed = set()
for find, repl in zip(parts[::2], parts[1::2]):
    where = [f for f, t in texts.items() if find in t]
    if sum(texts[f].count(find) for f in where) != 1:
        sys.exit(f'the text is not exactly once in train_vlv.c, its leaf headers and dev/vlv.py: {find[:60]!r}')
    texts[where[0]] = texts[where[0]].replace(find, repl)
    changed.add(where[0])
if changed == {"dev/vlv.py"}:
    sys.exit('a twin mutant must also change the C code (the shared mistake)')
for f, t in texts.items():
    os.makedirs(os.path.dirname(os.path.join(work, f)), exist_ok=True)
    open(os.path.join(work, f), 'w').write(t)
print('twin' if "dev/vlv.py" in changed else 'c')
PY
  ); then
    printf '%-66s %s\n' "$name" "NOT APPLIED: $(tail -n 1 "$work/apply.log")"; broken=$((broken + 1)); continue
  fi
  if [ "$kind" = twin ]; then
    n_twin=$((n_twin + 1))
    if ! $CC $CFLAGS -fsyntax-only "$work/test_vlv.c" 2>"$work/cc.log"; then
      printf '%-66s %s\n' "$name" "DOES NOT COMPILE"; cat "$work/cc.log"; broken=$((broken + 1)); continue
    fi
    "$TWIN_PYTHON" "$work/dev/vlv.py" anchors > "$work/anchors.log" 2>&1 || true
    summary=$(grep -E '^anchors: [0-9]+ passed, [0-9]+ failed$' "$work/anchors.log" || true)
    if [ -z "$summary" ]; then
      printf '%-66s %s\n' "$name" "BROKEN: the mutated twin's anchors did not run"; tail -n 5 "$work/anchors.log"; broken=$((broken + 1))
    elif [ "$(echo "$summary" | awk '{print $4}')" -eq 0 ]; then
      printf '%-66s %s\n' "$name" "MISSED: the anchors still pass"; missed=$((missed + 1))
    else
      fails=$(echo "$summary" | awk '{print $4}')
      first=$(grep -m1 '^FAIL' "$work/anchors.log" | awk '{print $2}')
      printf '%-66s %s\n' "$name" "caught by the anchors: $fails fail, first $first"; caught=$((caught + 1))
    fi
    continue
  fi
  if ! $CC $CFLAGS -o "$work/test_vlv" "$work/test_vlv.c" $LDLIBS 2>"$work/cc.log"; then
    printf '%-66s %s\n' "$name" "DOES NOT COMPILE"; cat "$work/cc.log"; broken=$((broken + 1)); continue
  fi
  result="MISSED: the checks still pass"
  for stem in "${stems[@]}"; do
    if ! "$work/test_vlv" "$stem.ckpt" "$stem.state" > "$work/run.log" 2>&1; then
      fails=$(grep -c '^FAIL' "$work/run.log" || true)
      first=$(grep -m1 '^FAIL' "$work/run.log" | awk '{print $2}' || true)
      [ -n "$first" ] || first="(exited: $(tail -n 1 "$work/run.log"))"
      on=""; [ "$stem" = "${stems[0]}" ] || on=" (on $(basename "$stem"))"
      result="caught: $fails checks fail, first $first$on"
      break
    fi
  done
  case $result in
    caught*) caught=$((caught + 1)) ;;
    *) missed=$((missed + 1)) ;;
  esac
  printf '%-66s %s\n' "$name" "$result"
done
echo "$caught of ${#mutants[@]} mutants caught ($n_twin of them C and twin, by the anchors), $missed missed, $broken not applied"
echo "mutants: $caught passed, $((missed + broken)) failed"
[ "$missed" -eq 0 ] && [ "$broken" -eq 0 ]
