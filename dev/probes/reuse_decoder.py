#!/usr/bin/env python3
"""dev/probes/reuse_decoder.py TRAINED.bin INIT_STATE OUT.bin — a stage0.bin that starts the pipeline
again after stage 0 with a decoder already trained.

OUT gets TRAINED's text encoder and DiT (after stage 0 they are the EMA decoder, frozen from
then on) and, for the vision encoder, the adapter and the caption decoder, the weights of
INIT_STATE: the train_state.bin of a run stopped after one stage-0 step, whose other parts are
still at their initialisation (stage 0 trains only the text encoder and the DiT). Use it when
only a later checkpoint of a run came back (model.bin, from dev/gpu/gpu_train.sh) and stage 1 must
run again from scratch on its decoder:

    ./train_vlv --preset full --seed S --stop_after 1 --out /tmp/init     # the initial weights
    mkdir -p runs/again && python3 dev/probes/reuse_decoder.py model.bin /tmp/init/train_state.bin runs/again/stage0.bin
    ./train_vlv --preset full --seed S --out runs/again --from 0b           # stage 0b, 1, 2 ...

Both files must have the same config (doc/formats.md); anything else is an error.
"""
import os
import struct
import sys
from dataclasses import fields

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vlv  # noqa: E402

TRAIN_STATE_MAGIC, TRAIN_STATE_VERSION = 20261129, 4  # doc/formats.md, "Training state" (vlv.STATE_MAGIC is the debug state's)
# between the header and the buffers: where the run stands (4 int32), 31 settings (int64), the
# SHA-256 of the pretrained parts (64 bytes), 5 stage times (float64), the invocations (2 int32)
TRAIN_STATE_FIXED = 4 * 4 + 8 * 31 + 64 + 8 * 5 + 2 * 4
DECODER = ('textenc', 'dit')


def initial_weights(path, cfg, n):
    """The weights buffer of a train_state.bin with the config `cfg` and n parameters."""
    with open(path, 'rb') as f:
        data = f.read()
    n_header = 4 * vlv.HEADER_INTS
    if len(data) < n_header:
        raise vlv.FormatError(f'{path}: truncated: {len(data)} bytes')
    header = struct.unpack(f'<{vlv.HEADER_INTS}i', data[:n_header])
    if header[0] != TRAIN_STATE_MAGIC:
        raise vlv.FormatError(f'{path}: bad magic {header[0]}, expected {TRAIN_STATE_MAGIC} (not a train_state.bin)')
    if header[1] != TRAIN_STATE_VERSION:
        raise vlv.FormatError(f'{path}: unknown version {header[1]} (this reader knows version {TRAIN_STATE_VERSION})')
    state_cfg = vlv.Config(*header[2:2 + len(fields(vlv.Config))])
    if state_cfg != cfg:
        raise vlv.FormatError(f'{path}: another model config than the trained checkpoint\'s (same preset and flags?)')
    want = n_header + TRAIN_STATE_FIXED + 4 * 4 * n + vlv.CRC_BYTES
    if len(data) != want:
        raise vlv.FormatError(f'{path}: {len(data)} bytes, expected {want} for {n} parameters')
    vlv.check_crc(data, path)
    return torch.frombuffer(bytearray(data), dtype=torch.float32, offset=n_header + TRAIN_STATE_FIXED, count=n)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    trained_path, state_path, out_path = sys.argv[1:]
    try:
        cfg, trained = vlv.read_checkpoint(trained_path)
        init = initial_weights(state_path, cfg, trained.numel())
    except (OSError, vlv.FormatError) as e:
        sys.exit(f'reuse_decoder: {e}')
    model = vlv.VLV(cfg)
    weights, offset, kept = init.clone(), 0, 0
    for name, p in model.named_parameters():
        if name.split('.')[0] in DECODER:
            weights[offset:offset + p.numel()] = trained[offset:offset + p.numel()]
            kept += p.numel()
        offset += p.numel()
    vlv.load_weights(model, weights, trained_path)
    vlv.write_checkpoint(out_path, model)
    print(f'{out_path}: the decoder of {trained_path} ({kept} parameters), the other {offset - kept} from {state_path}')


if __name__ == '__main__':
    main()
