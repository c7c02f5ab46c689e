#!/usr/bin/env python3
"""Writes a copy of train_vlv.c with its matmul_forward / matmul_backward replaced by the
proposal in dev/cpu/matmul_kernels.h (the lines from the '// out[N, OC] = inp[N, C] @ weight'
comment to the end of matmul_backward), so that the proposal can be tested end to end
(make check, -Ofast, ASan, ./train_vlv) without touching train_vlv.c itself.

usage: dev/cpu/splice.py OUT_DIR [--attention] [--gelu]
  copies the top-level sources, Makefile, vlvc/ and dev/ into OUT_DIR, with the spliced
  train_vlv.c; --attention also replaces attention_forward / attention_backward (from the
  '// Multi-head attention' comment up to '// Input embeddings') by dev/cpu/attention_kernels.h;
  --gelu the GELU section (up to '// SiLU') by dev/cpu/gelu_kernels.h
"""
import os, re, shutil, sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
argv = [a for a in sys.argv[1:] if a not in ("--attention", "--gelu")]
with_attention = "--attention" in sys.argv[1:]
with_gelu = "--gelu" in sys.argv[1:]
out = argv[0] if argv else sys.exit(__doc__)
src = open(os.path.join(root, "train_vlv.c")).read()
kernels = open(os.path.join(root, "dev", "cpu", "matmul_kernels.h")).read()
# drop the file's own header comment (the first comment block), keep the code and its comments
body = kernels[kernels.index("// register tile:"):]
if "matmul_units(" in src: # already integrated (train_vlv.c has the blocked kernel): leave it
    print("train_vlv.c already has matmul_units: its matmul is left as it is")
    start = end = 0
    spliced = src
else:
    start = src.index("// out[N, OC] = inp[N, C] @ weight[OC, C]^T + bias[OC]  (bias may be NULL)\nvoid matmul_forward(")
    end = src.index("// LayerNorm over the last dimension", start)
    spliced = src[:start] + body.rstrip() + "\n\n" + src[end:]
if with_attention:
    a_start = spliced.index("// Multi-head attention, self or cross, with one code path.")
    a_end = spliced.index("// Input embeddings with positions", a_start)
    att = open(os.path.join(root, "dev", "cpu", "attention_kernels.h")).read()
    att_body = att[att.index("// Multi-head attention, self or cross, with one code path."):]
    spliced = spliced[:a_start] + att_body.rstrip() + "\n\n" + spliced[a_end:]
if with_gelu:
    g_start = spliced.index("// GELU, tanh approximation")
    g_end = spliced.index("// SiLU: x * sigmoid(x)", g_start)
    gel = open(os.path.join(root, "dev", "cpu", "gelu_kernels.h")).read()
    gel_body = gel[gel.index("// min(y, 88) without a branch"):]
    spliced = spliced[:g_start] + gel_body.rstrip() + "\n\n" + spliced[g_end:]
os.makedirs(out, exist_ok=True)
for name in os.listdir(root): # the other sources at the top (test_vlv.c, caption.c, Makefile, ...)
    path = os.path.join(root, name)
    if os.path.isfile(path) and name != "train_vlv.c" and (name.endswith((".c", ".cu", ".h", ".py", ".sh")) or name == "Makefile"):
        shutil.copy(path, out)
for d in ("vlvc", "dev"):
    shutil.copytree(os.path.join(root, d), os.path.join(out, d), dirs_exist_ok=True)
open(os.path.join(out, "train_vlv.c"), "w").write(spliced)
print(f"wrote {out}/train_vlv.c: " + (f"{src[start:end].count(chr(10))} lines of matmul replaced by {body.count(chr(10))}" if end else "matmul as it was")
      + (" + attention" if with_attention else "") + (" + GELU" if with_gelu else ""))
