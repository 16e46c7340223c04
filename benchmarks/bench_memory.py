"""Training memory without a GPU: what autograd keeps for the backward in each phase of a step.

    python benchmarks/bench_memory.py                       # the bench_train GPU cases; appends to RESULTS.md
    python benchmarks/bench_memory.py --cfg stylegan3-t --res 256 --batch-gpu 16 --top 12 --no-write

The phases of sg3lib.train (G main, D main, R1) run on PyTorch's `meta` device: real shapes and
dtypes, no data, so a 512 px batch of 16 takes seconds on a laptop. The layers StyleGAN marks for
reduced precision run in float16 (`--precision fp16`, the official default), and the CUDA kernels'
autograd Functions of sg3lib/ops/_cuda.py run with a shape-only stand-in for the compiled kernels,
so each op saves exactly what it saves on a GPU (the filtered_lrelu mask at 2 bits per sample, ...).
A saved_tensors_hooks pair counts every tensor autograd keeps (once per storage; parameters apart),
grouped by the sg3lib source lines that saved it.

Measured this way: activations saved by autograd. A GPU's peak also holds the weights, their
gradients and Adam's moments (listed), the gradients in flight during the backward, and the CUDA
caching allocator's slack; bench_train.py measures that peak on a GPU. Not modelled: ADA
augmentation (p = 0 here, as at the start of training).
"""
import argparse
import collections
import contextlib
import datetime
import os
import sys
import traceback
from unittest import mock

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

GIB = 2 ** 30
CASES = [(cfg, res, bg) for cfg in ("stylegan3-t", "stylegan3-r") for res in (256, 512) for bg in (16, 8)] + \
        [("stylegan2", 256, 16)]


class ShapeOnlyKernels:
    """Stands in for the compiled extension (kernels/sg3_binding.cpp): outputs of the right shape,
    dtype and device, no computation."""

    @staticmethod
    def upfirdn2d(x, w, upx, upy, downx, downy, px0, px1, py0, py1, out_dtype):
        from sg3lib.ops._cuda import _DTYPE_CODES
        fh, fw = w.shape
        oh = (x.shape[2] * upy + py0 + py1 - fh) // downy + 1
        ow = (x.shape[3] * upx + px0 + px1 - fw) // downx + 1
        return x.new_empty([x.shape[0], x.shape[1], oh, ow], dtype=list(_DTYPE_CODES)[out_dtype])

    @staticmethod
    def filtered_lrelu(x, w1, w2, b, mask, f1h, f1w, sep1, f2h, f2w, sep2, up, down, p1x, p1y, p2x, p2y,
                       th, tw, oh, ow, gain, slope, clamp, backward, want_mask):
        y = x.new_empty([x.shape[0], x.shape[1], oh, ow])
        shape = [x.shape[0], x.shape[1], th, (tw + 3) // 4] if want_mask and not backward else [0]
        return [y, x.new_empty(shape, dtype=torch.uint8)]

    @staticmethod
    def bias_act(x, b, dy, ddx, dim, act, mode, alpha, gain, clamp):
        return torch.empty_like(x)


@contextlib.contextmanager
def meta_gpu():
    """sg3lib on the meta device as it runs on a GPU: CUDA ops (shape-only kernels), float16 layers."""
    from sg3lib import ops
    from sg3lib.networks import discriminator, layers, stylegan2, stylegan3
    from sg3lib.ops import _cuda

    def gpu_dtype(use_fp16, x, force_fp32=False, bf16=False):
        return torch.float32 if force_fp32 or not use_fp16 else (torch.bfloat16 if bf16 else torch.float16)

    with contextlib.ExitStack() as stack:
        patch = lambda obj, name, value: stack.enter_context(mock.patch.object(obj, name, value))  # noqa: E731
        patch(ops, "_use_cuda", lambda x, impl: _cuda)
        for name, value in (("done", True), ("ok", True), ("module", ShapeOnlyKernels())):
            patch(_cuda._State, name, value)
        for module in (layers, stylegan3, stylegan2, discriminator):  # each imported compute_dtype by name
            patch(module, "compute_dtype", gpu_dtype)
        yield


class SavedTensors:
    """Counts what autograd saves inside the `with` block, once per storage, parameters apart."""

    def __init__(self, params):
        self.params = {p.untyped_storage()._cdata for p in params}
        self.seen = {}
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t):
        key = t.untyped_storage()._cdata
        if key not in self.params and key not in self.seen:
            frames = [f for f in traceback.extract_stack()[:-1] if "/sg3lib/" in f.filename]
            where = " < ".join(f"{f.filename.split('/sg3lib/')[1]}:{f.lineno}" for f in frames[::-1][:2])
            self.seen[key] = (t.untyped_storage().nbytes(), where or "(outside sg3lib)", t.dtype)
        return t

    def __enter__(self):
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)

    @property
    def total(self):
        return sum(n for n, _, _ in self.seen.values())

    def by_source(self):
        c = collections.Counter()
        for n, where, _ in self.seen.values():
            c[where] += n
        return c


def profile(cfg, res, batch_gpu, precision="fp16"):
    """{phase: SavedTensors} for one round of batch_gpu images, and the bytes of weights + grads + Adam."""
    from sg3lib.networks import build_network
    from sg3lib.train.config import make_config, network_kwargs
    from sg3lib.train.loop import draw_step, slice_step
    from sg3lib.train.loss import Phases
    c = make_config(res, cfg=cfg, batch=batch_gpu, precision=precision)
    (g_class, g_kwargs), (d_class, d_kwargs) = network_kwargs(c)
    dev = torch.device("meta")
    out = {}
    with meta_gpu():
        G, D = build_network(g_class, g_kwargs).to(dev), build_network(d_class, d_kwargs).to(dev)
        params = list(G.parameters()) + list(D.parameters())
        phases = Phases(G, D, c, dev)
        r = slice_step(draw_step(c, 0, "Gmain", batch_gpu, G.z_dim, None, dev), 0, batch_gpu, dev)
        real = torch.empty([batch_gpu, 3, res, res], device=dev)
        real_c = torch.empty([batch_gpu, 0], device=dev)
        sigma = c["blur_sigma"]  # the start of training: StyleGAN3 blurs D's inputs
        G.requires_grad_(True), D.requires_grad_(False)
        with SavedTensors(params) as out["G main"]:
            phases.G_main(r, sigma, 0.0)
        G.requires_grad_(False), D.requires_grad_(True)
        with SavedTensors(params) as out["D main"]:
            phases.D_main(r, real, real_c, sigma, 0.0)
        with SavedTensors(params) as out["D R1"]:
            phases.D_r1(r, real, real_c, sigma, 0.0, c["D_reg_interval"])
    n_g, n_d = sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters())
    # float32 weights, gradients and two Adam moments; G_ema: one more copy of G
    return out, (n_g * 16 + n_d * 16 + n_g * 4), (n_g, n_d)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cfg", nargs="+", default=None, help="only these configs")
    ap.add_argument("--res", type=int, nargs="+", default=None, help="only these resolutions")
    ap.add_argument("--batch-gpu", type=int, nargs="+", default=None, help="only these batch-gpu values")
    ap.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    ap.add_argument("--top", type=int, default=0, help="also list the N largest sources per phase")
    ap.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = ap.parse_args()
    cases = [(cfg, res, bg) for cfg, res, bg in CASES if (args.cfg is None or cfg in args.cfg)
             and (args.res is None or res in args.res) and (args.batch_gpu is None or bg in args.batch_gpu)]
    if args.cfg and args.res and args.batch_gpu:  # an explicit case outside the preset list
        cases = cases or [(args.cfg[0], args.res[0], args.batch_gpu[0])]
    rows = ["| config | res | batch-gpu | G main | D main | D R1 | of which filtered_lrelu masks "
            "| weights, grads, Adam, G_ema |", "|---|---|---|---|---|---|---|---|"]
    for cfg, res, bg in cases:
        phases, fixed, _ = profile(cfg, res, bg, args.precision)
        masks = sum(n for n, _, dtype in phases["G main"].seen.values() if dtype == torch.uint8)
        rows.append(f"| {cfg} | {res} | {bg} | " + " | ".join(f"{p.total / GIB:.2f} GiB" for p in phases.values())
                    + f" | {masks / GIB:.2f} GiB | {fixed / GIB:.2f} GiB |")
        print(rows[-1], flush=True)
        for name, p in phases.items() if args.top else ():
            print(f"  {name}: the {args.top} largest sources")
            for where, n in p.by_source().most_common(args.top):
                print(f"    {n / GIB:6.2f} GiB  {where}")
    text = (f"## Training memory: activations saved by autograd, per phase (meta device) "
            f"({datetime.date.today()})\n\n"
            f"Command: `{' '.join(['python benchmarks/bench_memory.py', *sys.argv[1:]])}` "
            f"(precision {args.precision}; see the script's docstring for what is and is not counted)\n\n"
            + "\n".join(rows) + "\n")
    if args.no_write:
        print("\n" + text)
    else:
        from results import append_results
        append_results(text)


if __name__ == "__main__":
    main()
