"""Saved state of the fused filtered_lrelu during training: the mask each layer keeps for its backward.

    python benchmarks/bench_memory.py             # the bench_train GPU cases; appends to RESULTS.md
    python benchmarks/bench_memory.py --no-write

Computed, not measured: the layer geometry of each generator comes from one forward pass at batch 1
on the CPU (a wrapper records every filtered_lrelu call), and the mask of a layer is
batch x channels x th x ceil(tw / 4) bytes (2 bits per intermediate sample) in the kernel's layout.
The `int8` column is what one byte per sample (before 2026-11-23) kept. Peak memory on a GPU is
measured by bench_train.py; this table says how much of it the masks are.
"""
import argparse
import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CASES = [(cfg, res, bg) for cfg in ("stylegan3-t", "stylegan3-r") for res in (256, 512) for bg in (16, 8)]


def layer_geometry(cfg, res):
    """[(channels, th, tw)] of the intermediate (upsampled) grid of every filtered_lrelu of G."""
    from sg3lib import ops
    from sg3lib.networks import build_network
    from sg3lib.train.config import make_config, network_kwargs
    (g_class, g_kwargs), _ = network_kwargs(make_config(res, cfg=cfg))
    G = build_network(g_class, g_kwargs).eval()
    calls, original = [], ops.filtered_lrelu

    def record(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, **kw):
        px0, px1, py0, py1 = ops.parse_padding(padding)
        fh = 1 if fu is None else fu.shape[0]
        fw = 1 if fu is None else fu.shape[-1]
        calls.append((x.shape[1], x.shape[2] * up + py0 + py1 - fh + 1, x.shape[3] * up + px0 + px1 - fw + 1))
        return original(x, fu, fd, b, up, down, padding, **kw)

    ops.filtered_lrelu = record
    try:
        with torch.no_grad():
            G(torch.randn(1, G.z_dim), torch.zeros(1, G.c_dim), noise_mode="const")
    finally:
        ops.filtered_lrelu = original
    return calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = ap.parse_args()
    gib = 2 ** 30
    rows = ["| config | res | batch-gpu | layers | mask, 2 bits/sample | int8 (before) | largest layer |",
            "|---|---|---|---|---|---|---|"]
    geometry = {}
    for cfg, res, bg in CASES:
        if (cfg, res) not in geometry:
            geometry[cfg, res] = layer_geometry(cfg, res)
        layers = geometry[cfg, res]
        packed = [bg * c * th * ((tw + 3) // 4) for c, th, tw in layers]
        int8 = sum(bg * c * th * tw for c, th, tw in layers)
        c, th, tw = layers[max(range(len(layers)), key=packed.__getitem__)]
        rows.append(f"| {cfg} | {res} | {bg} | {len(layers)} | {sum(packed) / gib:.2f} GiB | {int8 / gib:.2f} GiB "
                    f"| {max(packed) / gib:.2f} GiB ({c} ch, {th}x{tw}) |")
        print(rows[-1], flush=True)
    text = (f"## Training: saved filtered_lrelu masks (computed) ({datetime.date.today()})\n\n"
            f"Command: `python benchmarks/bench_memory.py` (layer shapes from a batch-1 CPU forward; "
            f"bytes = batch x channels x th x ceil(tw/4))\n\n" + "\n".join(rows) + "\n")
    if args.no_write:
        print(text)
    else:
        from results import append_results
        append_results(text)


if __name__ == "__main__":
    main()
