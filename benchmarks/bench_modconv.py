"""Modulated convolution in training, grouped vs batched: ms per forward + backward and peak memory
for every synthesis layer of a generator, to decide which form each layer should take.

    python benchmarks/bench_modconv.py                    # GPU: SG3-T/-R and SG2 at 256 px, batch 16, fp16
    python benchmarks/bench_modconv.py --cfg stylegan3-t --res 512 --batch 16
    python benchmarks/bench_modconv.py --device cpu --cfg stylegan2 --res 32 --batch 2 --no-write   # fp32

The two forms compute the same thing (StyleGAN2 eq. 1-3; sg3lib/ops/conv.py):
- grouped: per-sample weights w * s_n * d_n [N*O, I, k, k], one convolution with N groups (the
  official code's form; keeps only the layer input for the backward);
- batched: scale the input by s, one dense convolution shared by the batch, scale the output by d
  (keeps about three activations; no per-sample weights, which outweigh the activations in the
  low-resolution, wide layers).
The layers are read off a forward of the real network on the meta device (shapes, dtypes, up,
padding, as the training config builds them), so the cases follow the architectures by themselves.
Backward: gradients w.r.t. the input, the weight and the styles, as in G's main phase.

Appends a section (date, machine, command, table) to benchmarks/RESULTS.md unless --no-write.
"""
import argparse
import collections
import datetime
import math
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import meta_gpu  # noqa: E402
from bench_ops import timeit  # noqa: E402
from results import append_results, machine_line, stop_on_sigterm  # noqa: E402

Layer = collections.namedtuple("Layer", "x_shape dtype weight_shape up padding demodulate filter_shape input_gain")


def synthesis_layers(cfg, res, precision="fp16"):
    """{Layer: count} of the modulated convolutions in one synthesis forward (batch 1), network order."""
    from sg3lib.networks import build_network, stylegan2, stylegan3
    from sg3lib.ops import conv
    from sg3lib.train.config import make_config, network_kwargs
    (g_class, g_kwargs), _ = network_kwargs(make_config(res, cfg=cfg, precision=precision))
    layers = collections.Counter()

    def record(x, weight, styles, demodulate=True, padding=0, up=1, resample_filter=None, input_gain=None,
               noise=None, grouped=None):
        layers[Layer(tuple(x.shape[1:]), x.dtype, tuple(weight.shape), up, padding, demodulate,
                     None if resample_filter is None else tuple(resample_filter.shape),
                     input_gain is not None)] += 1
        return conv.modulated_conv2d(x, weight, styles, demodulate, padding, up, resample_filter, input_gain, noise,
                                     grouped)

    with meta_gpu(), mock.patch.object(stylegan3, "modulated_conv2d", record), \
            mock.patch.object(stylegan2, "modulated_conv2d", record), torch.no_grad():
        G = build_network(g_class, g_kwargs).to("meta")
        G.synthesis(torch.empty([1, G.synthesis.num_ws, G.w_dim], device="meta"))
    return layers


def make_step(layer, batch, device, grouped):
    """() -> None: one forward and backward of the layer in the given form, on random inputs."""
    from sg3lib.ops.conv import modulated_conv2d
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn([batch, *layer.x_shape], generator=g, device=device).to(layer.dtype).requires_grad_(True)
    w = torch.randn(layer.weight_shape, generator=g, device=device, requires_grad=True)
    s = torch.randn([batch, layer.weight_shape[1]], generator=g, device=device, requires_grad=True)
    f = None if layer.filter_shape is None else torch.ones(layer.filter_shape, device=device) / 16
    gain = torch.tensor(0.5, device=device) if layer.input_gain else None

    def step():
        y = modulated_conv2d(x, w, s, demodulate=layer.demodulate, padding=layer.padding, up=layer.up,
                             resample_filter=f, input_gain=gain, grouped=grouped)
        torch.autograd.grad(y, [x, w, s], torch.ones_like(y))
    return step


def measure(layer, batch, device, grouped, warmup, iters):
    """(median ms per forward + backward, peak MiB above what the inputs hold; nan on the CPU)."""
    try:
        step = make_step(layer, batch, device, grouped)
        if device.type != "cuda":
            return timeit(step, device, warmup, iters), math.nan
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        ms = timeit(step, device, warmup, iters)
        return ms, (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    except torch.cuda.OutOfMemoryError:
        return math.nan, math.nan
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _mib(m):
    return "-" if math.isnan(m) else f"{m:.0f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cfg", nargs="+", default=["stylegan3-t", "stylegan3-r", "stylegan2"])
    p.add_argument("--res", type=int, nargs="+", default=[256])
    p.add_argument("--batch", type=int, default=16, help="images per layer call (training's batch-gpu)")
    p.add_argument("--precision", default=None, choices=["fp16", "fp32"],
                   help="the training config's precision (default GPU fp16; CPU fp32: float16 convolutions crawl there)")
    p.add_argument("--iters", type=int, default=None, help="timed steps (default GPU 10, CPU 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default GPU 3, CPU 1)")
    p.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.precision = args.precision or ("fp16" if gpu else "fp32")
    iters = args.iters or (10 if gpu else 2)
    warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    if gpu:
        torch.backends.cudnn.benchmark = True  # as training sets it

    from tqdm.auto import tqdm
    jobs = [(cfg, res, layer, n) for cfg in args.cfg for res in args.res
            for layer, n in synthesis_layers(cfg, res, args.precision).items()]
    lines = ["| config | res | input | weight | up | dtype | layers | batched ms | grouped ms | faster | "
             "batched MiB | grouped MiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    totals = collections.defaultdict(lambda: [0.0, 0.0, 0.0])  # (cfg, res): batched, grouped, best of each
    with stop_on_sigterm() as stop:  # the stage budget's SIGTERM: the finished layers are still written
        for cfg, res, layer, n in tqdm(jobs, desc="bench", unit="layer"):
            (tb, mb), (tg, mg) = (measure(layer, args.batch, device, grouped, warmup, iters)
                                  for grouped in (False, True))
            tot = totals[(cfg, res)]
            tot[0] += n * tb
            tot[1] += n * tg
            tot[2] += n * min(tb, tg)
            faster = "-" if math.isnan(tb) or math.isnan(tg) else ("grouped" if tg < tb else "batched")
            lines.append(f"| {cfg} | {res} | {'x'.join(map(str, layer.x_shape))} | "
                         f"{'x'.join(map(str, layer.weight_shape))} | {layer.up} | "
                         f"{str(layer.dtype).replace('torch.', '')} | {n} | {tb:.2f} | {tg:.2f} | {faster} "
                         f"| {_mib(mb)} | {_mib(mg)} |")
    stopped = stop.note(len(lines) - 2, len(jobs))
    summary = ["", "| config | res | all batched ms | all grouped ms | each layer's faster form ms |",
               "|---|---|---|---|---|"]
    summary += [f"| {cfg} | {res} | {t[0]:.1f} | {t[1]:.1f} | {t[2]:.1f} |" for (cfg, res), t in totals.items()]
    cmd = "python benchmarks/bench_modconv.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = (f"## Modulated convolution, batched vs grouped: "
               f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {'GPU' if gpu else 'CPU'}\n\n"
               f"- machine: {machine_line(device)}\n- command: `{cmd.strip()}`\n"
               f"- batch {args.batch}, precision {args.precision} (each layer in the dtype training gives it); "
               f"median of {iters} forward + backward steps (gradients w.r.t. input, weight and styles) after "
               f"{warmup} warm-up; MiB: peak allocated above the inputs during the steps\n{stopped}\n"
               + "\n".join(lines + summary) + "\n")
    print(section)
    if not args.no_write and len(lines) > 2:
        append_results(section)
    stop.exit_if_stopped()
    return section


if __name__ == "__main__":
    main()
