#!/usr/bin/env bash
# Mutation test of test_vlv: break train_vlv.c on purpose, one way at a time (a flipped sign,
# a dropped term, a wrong factor, a frozen part that trains, ...), rebuild test_vlv and
# check that it FAILS against the PyTorch reference. A mutant that passes means the tests
# cannot see that bug. Usage: dev/test/mutants.sh data/test/small   (the reference's path stem)
set -euo pipefail
ref=${1:?usage: dev/test/mutants.sh REFERENCE_STEM (e.g. data/test/small)}
CC=${CC:-gcc}
CFLAGS=${CFLAGS:--O2}
LDLIBS=${LDLIBS:--lm}
PYTHON_BIN=${PYTHON_BIN:-python3}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/dev"
cp -r "$root/vlvc" "$root/test_vlv.c" "$work/"
cp -r "$root/dev/test" "$work/dev/"
cp "$ref.ckpt" "$ref.state" "$work/"
ckpt="$work/$(basename "$ref").ckpt"
state="$work/$(basename "$ref").state"

# name @@ text in train_vlv.c or the leaf headers it includes (vlvc/vlv.h, clip_z.h, tokenizer.h, beams.h) @@ its replacement (each text must occur exactly once; \n is a newline)
mutants=(
  "layernorm backward: sign of the n*mean(g*n) term@@dx[c] += s * (g - g_mean - (x[c] - m) * s * gn_mean);@@dx[c] += s * (g - g_mean + (x[c] - m) * s * gn_mean);"
  "layernorm backward: weight gradient not normalized@@dw += dy * (inp[(size_t)n * C + c] - mean[n]) * rstd[n];@@dw += dy * inp[(size_t)n * C + c];"
  "attention backward: dk from dO instead of q@@dsh, 1, Tk, qh, q_stride, 1, NULL, 0,@@dsh, 1, Tk, doh, C, 1, NULL, 0,"
  "attention backward: softmax's centering term dropped@@float ds = a[j] * (da[j] - a_da) * scale;@@float ds = a[j] * da[j] * scale;"
  "gelu backward: 0.5 (1 + tanh) term dropped@@float grad = 0.5f * (1.0f + th) + 0.5f@@float grad = 0.5f"
  "silu backward: derivative of x dropped@@dinp[i] += dout[i] * s * (1.0f + inp[i] * (1.0f - s));@@dinp[i] += dout[i] * s;"
  "modulate backward: dscale without x@@dsc[c] += dy * x[row + c];@@dsc[c] += dy;"
  "gated residual backward: no gate gradient@@dg[c] += d * y[row + c];@@dg[c] += 0.0f;"
  "matmul backward: bias gradient doubled@@float db = sum[o - o0]; dbias[o] += db;@@float db = sum[o - o0]; dbias[o] += 2.0f * db;"
  "embed backward: position gradient dropped@@if (dpos) { dpos[c] += d[c]; }@@if (dpos) { dpos[c] += 0.0f; }"
  "cross-attention backward: no gradient to the context@@matmul_backward(dctx, g->kv.w, g->kv.b, d->kv, ctx, p->kv.w, B * S, Cc, 2 * C);@@matmul_backward(NULL, g->kv.w, g->kv.b, d->kv, ctx, p->kv.w, B * S, Cc, 2 * C);"
  "cross-entropy: PAD targets counted@@if (targets[n] != TOKEN_PAD) {@@if (targets[n] >= 0) {"
  "text encoder: not causal@@c->L_t, B, Nq, C, c->nh_t, 1);\n    norm_forward@@c->L_t, B, Nq, C, c->nh_t, 0);\n    norm_forward"
  "stage 1: the frozen text encoder trains@@case STAGE1: return 1 << GROUP_VIT | 1 << GROUP_ADAPTER;@@case STAGE1: return 1 << GROUP_VIT | 1 << GROUP_ADAPTER | 1 << GROUP_TEXTENC;"
  "backward: the DiT's activation gradients not zeroed@@? 1 << ACTS_TEXTENC | 1 << ACTS_DIT :@@? 1 << ACTS_TEXTENC :"
  "gradient norm: half of the accumulators left out@@+ ((acc[4] + acc[5]) + (acc[6] + acc[7]));@@+ 0.0;"
  "exp: the polynomial's r^2 coefficient off by 1%@@p = p * r + 5.0000001201e-1f;@@p = p * r + 5.05e-1f;"
  "clip at z: the lower median taken one rank up@@if (rank == (B - 1) / 2) { return v[b]; }@@if (rank == B / 2) { return v[b]; }"
  "clip at z: rows scaled by the bound itself@@float scale = bound / norms[b];@@float scale = bound;"
  "AdamW: no bias correction of v@@(sqrtf(vel[j] / bc2) + eps)@@(sqrtf(vel[j]) + eps)"
  "AdamW: weight decay on biases and norms too@@float decay = t->ndim >= 2 ?@@float decay = t->ndim >= 1 ?"
  "AdamW: gradient clipping ignored@@if (clip > 1.0f) { clip = 1.0f; }@@clip = 1.0f;"
  "DDIM: x0 from eps with swapped coefficients@@eps = out; x0 = (x[j] - sb * eps) / sa;@@eps = out; x0 = (x[j] - sa * eps) / sb;"
  "DDIM: predicted x0 not clipped to the data range@@x0 = fminf(fmaxf(x0, -1.0f), 1.0f);@@x0 = x0;"
  "greedy: decoding does not stop at EOS@@if (pos > 1 && (prev == TOKEN_EOS || prev == TOKEN_PAD)) { continue; }@@if (0) { continue; }"
)

caught=0; missed=0; broken=0
printf '%-58s %s\n' "mutant" "result"
for entry in "${mutants[@]}"; do
  name=${entry%%@@*}; rest=${entry#*@@}
  find=${rest%%@@*}; repl=${rest#*@@}
  # the text is looked for in train_vlv.c and the leaf headers above
  if ! FIND="$find" REPL="$repl" "$PYTHON_BIN" - "$root" "$work" <<'PY'
import os, sys
root, work = sys.argv[1], sys.argv[2]
find, repl = (os.environ[k].replace('\\n', '\n') for k in ('FIND', 'REPL'))
files = ["train_vlv.c", "vlvc/vlv.h", "vlvc/clip_z.h", "vlvc/tokenizer.h", "vlvc/beams.h"]
texts = {f: open(os.path.join(root, f)).read() for f in files}
if sum(t.count(find) for t in texts.values()) != 1:
    sys.exit(1)
for f, t in texts.items():
    open(os.path.join(work, f), 'w').write(t.replace(find, repl))
PY
  then
    printf '%-58s %s\n' "$name" "NOT APPLIED (the text is not exactly once in train_vlv.c and its leaf headers)"; broken=$((broken + 1)); continue
  fi
  if ! $CC $CFLAGS -o "$work/test_vlv" "$work/test_vlv.c" $LDLIBS 2>"$work/cc.log"; then
    printf '%-58s %s\n' "$name" "DOES NOT COMPILE"; cat "$work/cc.log"; broken=$((broken + 1)); continue
  fi
  if "$work/test_vlv" "$ckpt" "$state" > "$work/run.log" 2>&1; then
    printf '%-58s %s\n' "$name" "MISSED: the checks still pass"; missed=$((missed + 1))
  else
    fails=$(grep -c '^FAIL' "$work/run.log" || true)
    first=$(grep -m1 '^FAIL' "$work/run.log" | awk '{print $2}' || true)
    [ -n "$first" ] || first="(exited: $(tail -n 1 "$work/run.log"))"
    printf '%-58s %s\n' "$name" "caught: $fails checks fail, first $first"; caught=$((caught + 1))
  fi
done
echo "$caught of ${#mutants[@]} mutants caught, $missed missed, $broken not applied"
echo "mutants: $caught passed, $((missed + broken)) failed"
[ "$missed" -eq 0 ] && [ "$broken" -eq 0 ]
