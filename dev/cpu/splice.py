#!/usr/bin/env python3
"""Writes a copy of train_vlv.c with its matmul_forward / matmul_backward replaced by the
proposal in dev/cpu/matmul_kernels.h (the lines from the '// out[N, OC] = inp[N, C] @ weight'
comment to the end of matmul_backward), so that the proposal can be tested end to end
(make check, -Ofast, ASan, ./train_vlv) without touching train_vlv.c itself.

usage: dev/cpu/splice.py OUT_DIR [--attention]
  copies train_vlv.c, test_vlv.c, vlvc/, dev/, Makefile into OUT_DIR, with the spliced
  train_vlv.c; --attention also replaces attention_forward / attention_backward (from the
  '// Multi-head attention' comment up to '// Input embeddings') by dev/cpu/attention_kernels.h
"""
import os, re, shutil, sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
argv = [a for a in sys.argv[1:] if a != "--attention"]
with_attention = "--attention" in sys.argv[1:]
out = argv[0] if argv else sys.exit(__doc__)
src = open(os.path.join(root, "train_vlv.c")).read()
start = src.index("// out[N, OC] = inp[N, C] @ weight[OC, C]^T + bias[OC]  (bias may be NULL)\nvoid matmul_forward(")
end_marker = "// LayerNorm over the last dimension"
end = src.index(end_marker, start)
kernels = open(os.path.join(root, "dev", "cpu", "matmul_kernels.h")).read()
# drop the file's own header comment (the first comment block), keep the code and its comments
body = kernels[kernels.index("// register tile:"):]
spliced = src[:start] + body.rstrip() + "\n\n" + src[end:]
if with_attention:
    a_start = spliced.index("// Multi-head attention, self or cross, with one code path.")
    a_end = spliced.index("// Input embeddings with positions", a_start)
    att = open(os.path.join(root, "dev", "cpu", "attention_kernels.h")).read()
    att_body = att[att.index("// Multi-head attention, self or cross, with one code path."):]
    spliced = spliced[:a_start] + att_body.rstrip() + "\n\n" + spliced[a_end:]
os.makedirs(out, exist_ok=True)
for name in ("test_vlv.c", "Makefile"):
    shutil.copy(os.path.join(root, name), out)
for d in ("vlvc", "dev"):
    shutil.copytree(os.path.join(root, d), os.path.join(out, d), dirs_exist_ok=True)
open(os.path.join(out, "train_vlv.c"), "w").write(spliced)
print(f"wrote {out}/train_vlv.c: {src[start:end].count(chr(10))} lines of matmul replaced by {body.count(chr(10))}"
      + (" and the attention replaced" if with_attention else ""))
