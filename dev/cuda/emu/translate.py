#!/usr/bin/env python3
"""Rewrites the kernel launches of a CUDA C++ file for the CPU emulator (cuda_emu.h):

    name<<<grid, block>>>(args)   ->   emu_launch_named("name", emu::cfg(grid, block), name)(args)

`name` may carry template arguments (kernel<T><<<...>>>); templated kernels must name them
explicitly, since the emulator takes the kernel's address. Everything else is left as is.
Usage: translate.py IN.cu OUT"""
import re
import sys

LAUNCH = re.compile(r'([A-Za-z_]\w*(?:<[^<>;(){}]*>)?)\s*<<<(.*?)>>>\s*\(', re.S)


def translate(src):
    def launch(m):
        name, config = m.group(1), ' '.join(m.group(2).split())
        return f'emu_launch_named("{name}", emu::cfg({config}), {name})('
    out, n = LAUNCH.subn(launch, src)
    if '<<<' in out:
        line = out[:out.index('<<<')].count('\n') + 1
        sys.exit(f'translate.py: a launch it cannot rewrite near line {line}')
    return out, n


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    text, count = translate(open(sys.argv[1]).read())
    with open(sys.argv[2], 'w') as f:
        f.write(text)
    print(f'{sys.argv[1]}: {count} launches rewritten -> {sys.argv[2]}', file=sys.stderr)
