"""Training memory without a GPU: what autograd keeps for the backward in each phase of a step.

    python benchmarks/bench_memory.py                       # the bench_train GPU cases; appends to RESULTS.md
    python benchmarks/bench_memory.py --cfg stylegan3-t --res 256 --batch-gpu 16 --top 12 --no-write

The phases of sg3lib.train (G main, D main, R1) run on PyTorch's `meta` device: real shapes and
dtypes, no data, so a 512 px batch of 16 takes seconds on a laptop. The layers StyleGAN marks for
reduced precision run in float16 (`--precision fp16`, the official default), and the CUDA kernels'
autograd Functions of sg3lib/ops/_cuda.py run around the kernels' fake implementations (the custom
ops' output shapes, which meta tensors dispatch to), so each op saves exactly what it saves on a GPU
(the filtered_lrelu and bias_act masks at 2 bits per element, ...). A saved_tensors_hooks pair counts every tensor
autograd keeps (once per storage; parameters apart), grouped by the sg3lib source lines that saved
it.

A TorchDispatchMode follows every tensor each phase makes, forward and backward (the gradients in
flight, the backward's temporaries, the parameters' new gradients), until its storage is freed: the
phase's peak. Added to what lives across phases (weights, Adam's moments, G_ema), the largest phase
peak estimates torch.cuda.max_memory_allocated() for the training step, the figure bench_train.py
measures on a GPU (and the official code reports). Not modelled: cuDNN's workspaces, the caching
allocator's slack (reserved, not allocated), ADA augmentation (p = 0 here, as at the start of training).
"""
import argparse
import collections
import contextlib
import datetime
import math
import os
import sys
import traceback
import weakref
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

GIB = 2 ** 30
CASES = [(cfg, res, bg) for cfg in ("stylegan3-t", "stylegan3-r") for res in (256, 512) for bg in (16, 8)] + \
        [("stylegan2", 256, 16)]
PHASES = ["G main", "G pl", "D main", "D R1"]
H100_DENSE_FP16 = 989e12  # FLOP/s, H100 SXM, float16 tensor cores without sparsity


@contextlib.contextmanager
def gpu_precision():
    """The networks' compute dtypes as on a GPU, on any device: float16 on the layers StyleGAN marks
    (on the CPU they keep float32)."""
    from sg3lib.networks import discriminator, layers, stylegan2, stylegan3

    def gpu_dtype(use_fp16, x, force_fp32=False, bf16=False):
        return torch.float32 if force_fp32 or not use_fp16 else (torch.bfloat16 if bf16 else torch.float16)

    with contextlib.ExitStack() as stack:
        for module in (layers, stylegan3, stylegan2, discriminator):  # each imported compute_dtype by name
            stack.enter_context(mock.patch.object(module, "compute_dtype", gpu_dtype))
        yield


@contextlib.contextmanager
def meta_gpu():
    """sg3lib on the meta device as it runs on a GPU: the CUDA path's autograd Functions around the
    kernels' fake implementations (output shapes only), float16 layers."""
    from sg3lib import ops
    from sg3lib.ops import _cuda

    # the kernels' fake implementations run on meta
    with gpu_precision(), mock.patch.object(ops, "_use_cuda", lambda x, impl: _cuda):
        yield


Saved = collections.namedtuple("Saved", "nbytes where dtype shape")


class SavedTensors:
    """Counts what autograd saves inside the `with` block, once per storage, parameters apart.
    `seen`: a Saved(nbytes, where (sg3lib source), dtype, shape) per storage. A storage is told apart from a later one at the
    same address by following its life (phases with a double backward free saved tensors early)."""

    def __init__(self, params):
        self.params = {p.untyped_storage()._cdata for p in params}
        self.seen, self.alive = [], set()
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t):
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in self.params and key not in self.alive:
            frames = [f for f in traceback.extract_stack()[:-1] if "/sg3lib/" in f.filename]
            where = " < ".join(f"{f.filename.split('/sg3lib/')[1]}:{f.lineno}" for f in frames[::-1][:2])
            self.seen.append(Saved(storage.nbytes(), where or "(outside sg3lib)", t.dtype, tuple(t.shape)))
            self.alive.add(key)
            weakref.finalize(storage, self.alive.discard, key)
        return t

    def __enter__(self):
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)

    @property
    def total(self):
        return sum(s.nbytes for s in self.seen)

    def by_source(self):
        c = collections.Counter()
        for s in self.seen:
            c[s.where] += s.nbytes
        return c


class PeakMemory(TorchDispatchMode):
    """Bytes of the storages made inside the `with` block that are alive at once: now and the peak.
    Each storage is counted when an op first returns it and let go when it is freed. Also the work
    done: `ops` dispatched and bytes `written` into new storages (a proxy for memory traffic; in-place
    ops and reads not counted)."""

    def __init__(self):
        super().__init__()
        self.live, self.now, self.peak, self.ops, self.written = {}, 0, 0, 0, 0

    def _free(self, key):
        self.now -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for storage in (t.untyped_storage() for t in tree_leaves(out) if isinstance(t, torch.Tensor)):
            if storage._cdata not in self.live:
                self.live[storage._cdata] = storage.nbytes()
                self.now += storage.nbytes()
                self.written += storage.nbytes()
                self.peak = max(self.peak, self.now)
                weakref.finalize(storage, self._free, storage._cdata)
        return out


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                         output_padding, groups, output_mask, out_shape=None):
    """Each gradient of a convolution costs what its forward does: 2 * (elements on the side of w's
    first dimension) * (the rest of w). torch's own formula counts a grouped convolution's weight
    gradient as if ungrouped: `groups` times too much (16x for the per-sample grouped convolution)."""
    forward = 2 * math.prod(x_shape if transposed else grad_out_shape) * math.prod(w_shape[1:])
    return forward * (int(output_mask[0]) + int(output_mask[1]))


CONV_BACKWARD = {torch.ops.aten.convolution_backward: _conv_backward_flops}


def profile(cfg, res, batch_gpu, precision="fp16"):
    """({phase: SavedTensors}, {phase: PeakMemory (with .flops)}, bytes held across phases, (G, D
    parameter counts), FLOPs per 1000 training images) for one round of batch_gpu images; each phase
    runs forward and backward as the training loop does. FLOPs: torch's FlopCounterMode (convolutions
    and matrix products; the FIR kernels, a few percent of the arithmetic, are not counted)."""
    from sg3lib.networks import build_network
    from sg3lib.train.config import make_config, network_kwargs
    from sg3lib.train.loop import draw_step, slice_step
    from sg3lib.train.loss import Phases
    c = make_config(res, cfg=cfg, batch=batch_gpu, precision=precision)
    (g_class, g_kwargs), (d_class, d_kwargs) = network_kwargs(c)
    dev = torch.device("meta")
    saved, peaks = {}, {}
    with meta_gpu():
        G, D = build_network(g_class, g_kwargs).to(dev), build_network(d_class, d_kwargs).to(dev)
        params = list(G.parameters()) + list(D.parameters())
        phases = Phases(G, D, c, dev)
        real = torch.empty([batch_gpu, 3, res, res], device=dev)
        real_c = torch.empty([batch_gpu, 0], device=dev)
        sigma = c["blur_sigma"]  # the start of training: StyleGAN3 blurs D's inputs
        pl_batch = max(batch_gpu // c["pl_batch_shrink"], 1)
        runs = [("G main", G, lambda r: phases.G_main(r, sigma, 0.0), "Gmain", batch_gpu)]
        if c["pl_weight"] > 0:
            noise = torch.empty([pl_batch, 3, res, res], device=dev)
            runs.append(("G pl", G, lambda r: phases.G_pl(r, c["G_reg_interval"], noise), "Greg", pl_batch))
        runs += [("D main", D, lambda r: phases.D_main(r, real, real_c, sigma, 0.0), "Dmain", batch_gpu),
                 ("D R1", D, lambda r: phases.D_r1(r, real, real_c, sigma, 0.0, c["D_reg_interval"]), "Dreg",
                  batch_gpu)]
        # how often each phase sees an image, per image of training (lazy regularization intervals)
        share = {"G main": 1, "D main": 1, "D R1": 1 / c["D_reg_interval"],
                 "G pl": 1 / c["pl_batch_shrink"] / c["G_reg_interval"] if c["pl_weight"] > 0 else 0}
        per_kimg = 0.0
        for name, trained, run, phase_id, n in runs:
            G.requires_grad_(trained is G), D.requires_grad_(trained is D)
            r = slice_step(draw_step(c, 0, phase_id, n, G.z_dim, None, dev), 0, n, dev)
            with PeakMemory() as peak, FlopCounterMode(display=False, custom_mapping=CONV_BACKWARD) as flops:
                with SavedTensors(params) as saved[name]:
                    loss, _ = run(r)
                loss.backward()
                del loss
                G.zero_grad(set_to_none=True), D.zero_grad(set_to_none=True)  # as the optimizer step does
            peak.flops = flops.get_total_flops()
            peaks[name] = peak
            per_kimg += 1000 * peak.flops / n * share[name]
    n_g, n_d = sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters())
    # float32 weights and two Adam moments; G_ema: one more copy of G (gradients: in the phase peaks)
    return saved, peaks, (n_g + n_d) * 12 + n_g * 4, (n_g, n_d), per_kimg


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
    if not cases:  # (a typo such as --cfg stylegan3t would append a dated section of empty tables)
        ap.error("no case matches --cfg/--res/--batch-gpu; the cases are "
                 + ", ".join(f"{c} {r} px batch-gpu {b}" for c, r, b in CASES)
                 + " (or give all three for one case of your own)")
    rows = ["| config | res | batch-gpu | G main | G pl | D main | D R1 | G main: of which 2-bit masks "
            "| weights, Adam, G_ema | step peak (est.) |", "|---|---|---|---|---|---|---|---|---|---|"]
    work = ["| config | res | batch-gpu | " + " | ".join(PHASES) + " | PFLOP per kimg | s/kimg at H100 peak |",
            "|---|---|---|" + "---|" * (len(PHASES) + 2)]
    for cfg, res, bg in cases:
        saved, phases, fixed, _, per_kimg = profile(cfg, res, bg, args.precision)
        peaks = {name: p.peak for name, p in phases.items()}
        work.append(f"| {cfg} | {res} | {bg} | " + " | ".join(
            f"{phases[p].ops} / {phases[p].written / GIB:.1f} / {phases[p].flops / 1e12:.1f}" if p in phases else "-"
            for p in PHASES) + f" | {per_kimg / 1e15:.2f} | {per_kimg / H100_DENSE_FP16:.1f} |")
        masks = sum(s.nbytes for s in saved["G main"].seen if s.dtype == torch.uint8)
        cells = [f"{saved[p].total / GIB:.2f} / {peaks[p] / GIB:.2f}" if p in saved else "-" for p in PHASES]
        rows.append(f"| {cfg} | {res} | {bg} | " + " | ".join(cells) + f" | {masks / GIB:.2f} GiB "
                    f"| {fixed / GIB:.2f} GiB | {(fixed + max(peaks.values())) / GIB:.2f} GiB |")
        print(rows[-1], flush=True)
        for name, p in saved.items() if args.top else ():
            print(f"  {name}: the {args.top} largest sources of saved tensors")
            for where, n in p.by_source().most_common(args.top):
                print(f"    {n / GIB:6.2f} GiB  {where}")
    text = (f"## Training memory per phase, meta device ({datetime.date.today()})\n\n"
            f"Command: `{' '.join(['python benchmarks/bench_memory.py', *sys.argv[1:]])}` "
            f"(precision {args.precision}; see the script's docstring for what is and is not counted)\n\n"
            "Per phase, GiB: saved by autograd for the backward / the phase's peak (saved tensors, the "
            "backward's gradients and temporaries, the new parameter gradients). Step peak: the largest "
            "phase peak plus the weights, Adam moments and G_ema.\n\n"
            + "\n".join(rows) + "\n\nWork per phase, forward and backward: ops dispatched / GiB written into new tensors "
            "(a proxy for memory traffic where no GPU can be profiled; reads and in-place ops not counted) / "
            "TFLOP (convolutions and matrix products). Per kimg: the phases weighted by how often they see an "
            "image (R1 every D_reg_interval steps, path length every G_reg_interval on batch / pl_batch_shrink); "
            "s/kimg at H100 peak: that work at 989 TFLOP/s (dense float16 tensor cores), a bound no run reaches."
            "\n\n"
            + "\n".join(work) + "\n")
    if args.no_write:
        print("\n" + text)
    else:
        from results import append_results
        append_results(text)


if __name__ == "__main__":
    main()
